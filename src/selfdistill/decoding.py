"""The decoding skeleton that every stage decoding a model shares (`ssd sample`, `ssd eval`): prompts ->
engine -> journaled stream -> the stage's files, resumable after kill -9.

    decoder = Decoder(cfg, generator)               # the engine lent by `ssd run`, or one loaded on first use
    texts = decoder.render({id: messages, ...})     # each prompt exactly as the model is fed it
    inputs = decoder.inputs(texts)                  # the model's and the rendered prompts' hashes
    run = RunDir.open(cfg.output_dir, stage, cfg, inputs, extra)
    with decoder:                                   # closes an engine it loaded
        generator = decoder.engine()
        units = {key: [Request(texts[id], SamplingSpec.from_config(cfg, temperature=T),
                               request_seed(cfg.seed, id, j, T)), ...]}
        with decoder.decode(run, units, "label", name_of_unit) as (progress, finished):
            for key, completions in finished:       # a unit as soon as its last request is decoded
                ...write the unit's file...

A unit (a shard of samples, a block of eval replies) is what a stage writes at once; every request is
journaled as it finishes, so a kill loses only the requests in flight, and the journal is deleted once
the stage has written every unit.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager

from rich.console import Console

from .chat import chat_prompt
from .engine import EngineSettings
from .generate import JOURNAL, Completion, GenerationProgress, Generator, Request, stream_journaled
from .manifest import RunDir, hash_inputs, sha256_json
from .models import resolve_model

SESSION_EVERY = 60.0  # seconds between rewrites of a running session's totals in the manifest
console = Console(stderr=True, highlight=False)


def request_seed(run_seed: int, prompt_id: str, sample_index: int, temperature: float | None = None) -> int:
    """A request's seed from (run seed, prompt id, temperature, sample index): reruns reproduce it, samples
    are independent, and it does not depend on the prompt's position, the shard size, the subset or the
    other temperatures. A stage decoding at one temperature (sampling) leaves it out of the seed."""
    key = [run_seed, prompt_id, *([repr(temperature)] if temperature is not None else []), sample_index]
    digest = hashlib.sha256("\0".join(map(str, key)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: vLLM and torch take int64 seeds


class Decoder:
    """A decoding stage's model, cfg.model (cfg: a SampleConfig or an EvalConfig): the tokenizer its
    prompts are rendered with, and its engine, lent (`ssd run` shares one between stages) or loaded on
    first use and closed when the `with` block ends."""

    def __init__(self, cfg, generator: Generator | None = None):
        self.cfg = cfg
        self.model_path = resolve_model(cfg.model)
        if generator is not None and generator.model_path != self.model_path:
            raise ValueError(f"the generator holds {generator.model_path}, but the config decodes {self.model_path}")
        self.generator, self.owned = generator, generator is None
        if generator is not None:
            self.tokenizer = generator.tokenizer
        else:  # the prompts are rendered, hashed and checked against the stage directory before any engine loads
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self.template_args = {"date": cfg.chat_date, "reasoning_effort": cfg.reasoning_effort}

    def render(self, messages: dict[str, list[dict]]) -> dict[str, str]:
        """{prompt id: the templated prompt exactly as fed} from {prompt id: chat messages}."""
        return {key: chat_prompt(self.tokenizer, m, **self.template_args) for key, m in messages.items()}

    def inputs(self, prompt_texts: dict[str, str]) -> dict[str, str]:
        """The stage's inputs from the model: its hash (its name, for a hub id not on disk) and the hash
        of the rendered prompts, in order."""
        inputs = hash_inputs([self.model_path]) or {"model": self.model_path}
        inputs["prompts"] = sha256_json([[key, text] for key, text in prompt_texts.items()])
        return inputs

    def engine(self) -> Generator:
        if self.generator is None:
            console.print(f"loading {self.model_path} ({self.cfg.backend})")
            self.generator = EngineSettings.of(self.cfg).load(self.model_path)
        return self.generator

    def __enter__(self) -> Decoder:
        return self

    def __exit__(self, *exc) -> None:
        if self.owned and self.generator is not None:
            self.generator.close()
            self.generator = None

    @contextmanager
    def decode(
        self, run: RunDir, units: dict[Hashable, list[Request]], label: str, unit_name: Callable[[Hashable], str]
    ) -> Iterator[tuple[GenerationProgress, Iterator[tuple[Hashable, list[Completion]]]]]:
        """All `units` (requests of one completion each) in one stream through the engine and run's
        journal, at most cfg.max_num_seqs at once: yields the progress display and the finished units,
        (key, one completion per request), in the order they finish. Once a unit is handled, the
        replica that made it (on Ray) is recorded in the manifest's `placements` under unit_name(key).
        The session's totals so far are the last of the manifest's `sessions`, rewritten at least every
        SESSION_EVERY seconds and when the block ends, so a sitting that is killed keeps its time. When the
        block ends without an error every unit is written and the journal goes."""
        journal = run.path / JOURNAL
        earlier = run.manifest.get("sessions", [])

        def record(progress: GenerationProgress) -> dict:
            session = progress.session()
            run.update(sessions=[*earlier, session])
            return session

        def finished(progress: GenerationProgress) -> Iterator[tuple[Hashable, list[Completion]]]:
            stream = stream_journaled(self.engine(), units, journal, self.cfg.max_num_seqs, progress)
            recorded = time.perf_counter()
            for key, completions, where in stream:
                yield key, [c for (c,) in completions]
                if where:
                    run.update(placements={**run.manifest.get("placements", {}), unit_name(key): where})
                if time.perf_counter() - recorded >= SESSION_EVERY:
                    record(progress)
                    recorded = time.perf_counter()

        with GenerationProgress(console, label, sum(map(len, units.values()))) as progress:
            try:
                yield progress, finished(progress)
            except BaseException:
                if progress.tokens:  # a crashed sitting keeps the time of what it decoded
                    record(progress)
                raise
        journal.unlink()
        session = record(progress)
        console.print(
            f"{label}: generated {session['generated_tokens']} tokens for {session['samples']} samples in "
            f"{session['seconds']:.0f} s ({session['tokens_per_second']} tokens/s)"
        )
