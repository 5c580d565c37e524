"""`ssd samples targets`: the sampling distributions of samples drawn without them (sample.store_targets
off), recomputed by teacher forcing, so that `train.objective: soft` can train on them.

Each reply token was drawn from q, the model's next-token distribution after the sampling's temperature,
min-p, top-k and top-p (generate.truncate_logits). Teacher forcing the same model over prompt + reply gives
the logits of every reply position at once; q follows from them exactly as the fit builds its target
(fit.target), and each shard gets the side file the sampler would have written (sample.write_targets), so
training reads it unchanged. Only the sampling model gives the samples' q: a model other than the one the
manifest records is refused before it loads.

fp32 on CPUs (analyze.load_model; bf16 only on GPUs when asked), so q is the model's distribution at full
precision, the one `ssd analyze fit` measures against. A sampler that served bf16 drew from a slightly
different q: a sampled token at the top-p boundary can fall outside its recomputed support
(`sampled_outside_support` in targets.json; the soft loss does not involve the sampled token).

The shard is the unit of resume: its side file is written atomically once all its records are scored,
so a killed run redoes at most one shard. The decoder runs once per reply and the LM head per chunk of
analyze.CHUNK positions, so a long reply never holds positions x vocabulary floats. SAMPLES_DIR/targets.json
records the model and its hash, the truncation, the precision, sessions (tokens/s; rewritten after every
shard, so a killed session keeps its time) and, once every shard has its file, finished_at (what
sample.targets_source reads).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from .analyze import CHUNK, AnalyzeError, load_model, reply_logits
from .fit import target
from .generate import GenerationProgress, Targets
from .manifest import _lock, _now, atomic_write_json, finished, hash_inputs, read_jsonl
from .models import resolve_model
from .sample import (
    RECOMPUTED_TARGETS,
    _samples_manifest,
    prompt_ids,
    shard_files,
    shard_targets,
    targets_path,
    write_targets,
)

console = Console(stderr=True, highlight=False)


class TargetsError(AnalyzeError):
    pass


def recompute_targets(samples_dir: str | Path, model: str | None = None, bf16_on_gpu: bool = False) -> Path:
    """Write every missing side file of a finished samples directory drawn without store_targets, by
    teacher forcing `model` (default: the one the manifest records, which any other must equal)."""
    samples_dir = Path(samples_dir)
    manifest = _checked_manifest(samples_dir)
    config = manifest["config"]
    truncation = {key: config[key] for key in ("temperature", "top_k", "top_p", "min_p")}
    model_path = sampling_model(samples_dir, manifest, model)
    _lock(samples_dir)  # one writer: two would score the same shards
    cuda = torch.cuda.is_available()
    settings = {
        "source": "teacher forcing",
        "model": model_path,
        "model_sha256": hash_inputs([model_path]).get(model_path),
        "truncation": truncation,
        "precision": "bfloat16" if cuda and bf16_on_gpu else "float32",
    }
    record_path = samples_dir / RECOMPUTED_TARGETS
    recorded = json.loads(record_path.read_text()) if record_path.is_file() else {}
    same = [key for key in settings if key != "model"]  # the weights count, not the path they were given by
    if recorded and {k: recorded.get(k) for k in same} != {k: settings[k] for k in same}:
        raise TargetsError(
            f"{record_path}: its side files were recomputed with other settings "
            f"({ {k: recorded.get(k) for k in same} }); "
            "delete it and the shards' .targets.safetensors files to start over"
        )
    record = {**settings, "started_at": recorded.get("started_at", _now()), "finished_at": None}
    earlier = recorded.get("sessions", [])
    record["sessions"] = earlier
    atomic_write_json(record_path, record)

    shards = shard_files(samples_dir)
    todo = {shard: read_jsonl(shard) for shard in shards if not targets_path(shard).is_file()}
    if todo:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        sequences = {shard: [_sequence(tokenizer, r, shard) for r in records] for shard, records in todo.items()}
        console.print(f"loading {model_path} ({settings['precision']})")
        lm = load_model(model_path, bf16_on_gpu=bf16_on_gpu)
        progress = GenerationProgress(console, "teacher forcing", sum(map(len, todo.values())))
        with progress, torch.inference_mode():
            for k, (shard, records) in enumerate(todo.items()):
                targets = []
                for prompt_ids, reply_ids in sequences[shard]:
                    targets.append(replay(lm, prompt_ids, reply_ids, truncation))
                    progress(1, len(prompt_ids) + len(reply_ids))
                write_targets(shard, records, targets)
                # this session's totals so far, rewritten with every shard: a killed run keeps its time
                record["sessions"] = [*earlier, _session(progress)]
                atomic_write_json(record_path, record)
                progress.checkpoint(f"shard {k + 1}/{len(todo)} ({shard.name}) written")
    # a rerun with nothing left to score keeps the finishing time of the run that scored the last shard
    record.update(finished_at=(not todo and recorded.get("finished_at")) or _now(), counts=_counts(shards))
    atomic_write_json(record_path, record)
    counts = record["counts"]
    console.print(
        f"{samples_dir}: distributions of {counts['reply_tokens']} reply tokens in {len(shards)} shards "
        f"(mean {counts['mean_survivors']} survivors; sampled token outside its recomputed support: "
        f"{counts['sampled_outside_support']}); wrote {record_path}"
    )
    return samples_dir


def _session(progress: GenerationProgress) -> dict:
    """A teacher-forcing session's totals for targets.json: the samples it scored (nothing is restored
    mid-shard), and its tokens, which were read, not generated."""
    session = progress.session()
    samples, tokens = session.pop("decoded"), session.pop("generated_tokens")
    return {**session, "samples": samples, "teacher_forced_tokens": tokens}


def replay(model, prompt_ids: list[int], reply_ids: list[int], truncation: dict, chunk: int = CHUNK) -> Targets:
    """The truncated distribution each reply token was drawn from, by teacher forcing, `chunk` positions
    at a time."""
    parts = []
    if reply_ids:  # a prompt_too_long record has no reply
        for logits in reply_logits(model, prompt_ids, reply_ids, chunk):
            ids, q = target(logits, **truncation)
            kept = q > 0  # the support, most likely first within each row
            parts.append(Targets(kept.sum(-1).numpy().astype(np.int32), ids[kept].numpy().astype(np.int32),
                                 q[kept].numpy().astype(np.float32)))  # fmt: skip
    return Targets.concat(parts)


def sampling_model(samples_dir: Path, manifest: dict, model: str | None) -> str:
    """The model to teacher-force: `model` (default: the one that drew the samples), which must hold the
    weights the manifest hashed when sampling began (a hub id, not hashed: the same id)."""
    sampled = manifest.get("model_path") or resolve_model(manifest["config"]["model"])
    given = resolve_model(model) if model else sampled
    recorded = manifest.get("inputs", {}).get(sampled)
    if given != sampled if recorded is None else hash_inputs([given]).get(given) != recorded:
        raise TargetsError(
            f"{samples_dir} was sampled from {sampled} (sha256 {recorded}), not {given}: "
            "only the sampling model's distributions are the samples' targets"
        )
    return given


def _checked_manifest(samples_dir: Path) -> dict:
    try:
        manifest = _samples_manifest(samples_dir)
    except ValueError as e:  # another stage's directory
        raise TargetsError(str(e)) from None
    if not finished(samples_dir):
        raise TargetsError(f"{samples_dir}: sampling did not finish; rerun its `ssd sample` command first")
    config = manifest["config"]
    if config.get("store_targets"):
        raise TargetsError(
            f"{samples_dir} already holds the distributions its samples were drawn from (store_targets)"
        )
    if config["temperature"] == 0 or config["top_k"] == 0:
        raise TargetsError(
            f"{samples_dir}: sampled at temperature {config['temperature']}, top_k {config['top_k']}; targets need "
            "temperature > 0 (a greedy token's target is the token) and top_k > 0, as sample.store_targets does"
        )
    return manifest


def _sequence(tokenizer, record: dict, shard: Path) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids) as the sampler fed and drew them: the prompt tokenized without added
    special tokens, which must give the count it recorded, and the reply's own token ids."""
    where = f"{shard}: sample {record.get('prompt_id')!r}#{record.get('sample_index')}"
    prompt, differs = prompt_ids(tokenizer, record)
    if differs:
        raise TargetsError(f"{where}: field 'prompt_text' gives {differs}")
    if not isinstance(record.get("reply_token_ids"), list):
        raise TargetsError(f"{where}: field 'reply_token_ids' is missing")
    return prompt, record["reply_token_ids"]


def _counts(shards: list[Path]) -> dict:
    """The recomputed distributions' size, and how often the sampled token fell outside its support."""
    survivors, outside = [], 0
    for shard in shards:
        for r, targets in zip(read_jsonl(shard), shard_targets(shard), strict=True):
            survivors.append(targets.counts)
            outside += sum(
                token not in ids for token, (ids, _) in zip(r["reply_token_ids"], targets.rows(), strict=True)
            )
    counts = np.concatenate([np.zeros(0, np.int32), *survivors])
    return {
        "reply_tokens": int(len(counts)),
        "mean_survivors": round(float(counts.mean()), 2) if len(counts) else None,
        "sampled_outside_support": outside,
    }
