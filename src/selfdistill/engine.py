"""The engine a stage starts: in this process (generate.py: vLLM or transformers), or replicas of the
model on a Ray cluster (distributed.py), from the settings its config records. Without a cluster, a
machine with several GPUs gets one replica per GPU (or per tensor-parallel group) on a Ray instance
that the engine starts here and stops when it closes: every GPU busy, with the same units, files,
seeds and resume as a single engine."""

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
    local_replicas: int | None
    targets: bool = False  # returns the sampling distributions (SampleConfig.store_targets; an eval never asks)
    dtype: str = "auto"  # the precision it serves the model in (EvalConfig.dtype; sampling: the checkpoint's)

    @classmethod
    def of(cls, cfg) -> EngineSettings:
        settings = {f.name: getattr(cfg, f.name) for f in fields(cls) if f.name not in ("targets", "dtype")}
        return cls(**settings, targets=getattr(cfg, "store_targets", False), dtype=getattr(cfg, "dtype", "auto"))

    def replicas_here(self, visible_gpus: int) -> int:
        """Replicas on this machine without ray_address: local_replicas, else one per
        tensor_parallel_size visible GPUs (1, one engine in this process, on a CPU or one GPU)."""
        if self.local_replicas is not None:
            return self.local_replicas
        return max(1, visible_gpus // self.tensor_parallel_size)

    def load(self, model: str) -> generate.Generator:
        import torch

        engine = {k: v for k, v in asdict(self).items() if k not in ("ray_address", "local_replicas")}
        replicas = 1 if self.ray_address else self.replicas_here(torch.cuda.device_count())
        if self.ray_address or replicas > 1:
            from .distributed import LOCAL, RayGenerator
            from .models import resolve_model

            return RayGenerator(
                resolve_model(model),
                **engine,
                address=self.ray_address or LOCAL,
                replicas=None if self.ray_address else replicas,
            )
        return generate.load_generator(model, **engine)
