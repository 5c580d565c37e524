"""The engine a stage starts: in this process (generate.py: vLLM or transformers), or replicas of the
model on a Ray cluster (distributed.py), from the settings its config records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from . import generate


@dataclass(frozen=True)
class EngineSettings:
    """What a stage starts its engine with, read from its config (a SampleConfig or an EvalConfig). Stages
    with equal settings may share one engine; a stage given an engine of other settings would decode
    under settings its config does not record."""

    backend: str
    max_model_len: int
    tensor_parallel_size: int
    seed: int
    max_num_seqs: int | None
    ray_address: str | None

    @classmethod
    def of(cls, cfg) -> EngineSettings:
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    def load(self, model: str) -> generate.Generator:
        local = {k: v for k, v in asdict(self).items() if k != "ray_address"}
        if self.ray_address:
            from .distributed import RayGenerator
            from .models import resolve_model

            return RayGenerator(resolve_model(model), **local, address=self.ray_address)
        return generate.load_generator(model, **local)
