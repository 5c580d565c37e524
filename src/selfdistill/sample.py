"""Stage 1, `ssd sample`: the frozen model answers each training prompt n times (the paper: once) at
T_train with truncation. Nothing is verified; empty replies and one-line stubs are dropped, looping
replies are flagged but kept.

Output directory:
    manifest.json          config, versions, input hashes, effective sampling params, chat template and
                           its arguments (the pinned date, reasoning effort), tokenizer specials, prompt counts
                           (dedup, decontamination, malformed rows),
                           skips, length histogram, counts of truncated (hit max_tokens) / looping / dropped;
                           with ray_address, `placements`: the node and replica that made each shard
    prompts_report.json    every malformed row (file:line, reason), duplicate and contaminated prompt, and the
                           decontamination entries whose data could not be loaded here (not checked)
    shards/shard-00000.jsonl ...   one JSON record per sample, `shard_size` prompts per shard
    shards/shard-00000.targets.safetensors ...   with store_targets: for every reply token of the shard's
                           records (in record order), the truncated distribution q it was drawn from:
                           `reply_tokens` (int32, per record), `counts` (int32, survivors per token), then
                           the survivors' token `ids` (int32) and `probs` (float32), most likely first.
                           ~4 + 8 x survivors bytes per reply token; written before its shard, atomically
    targets.json           samples drawn without store_targets whose side files `ssd samples targets`
                           recomputed by teacher forcing (targets.py): the model, truncation and precision

A shard is the unit of resume: all missing shards' requests go through the engine as one continuously
batched stream (Generator.stream: up to max_num_seqs sequences decode at once, and each finished one
makes room for the next), and a shard is written atomically as soon as its last request finishes. A
rerun of the same command skips finished shards, so after kill -9 only the requests in flight are lost
and the final data equal an uninterrupted run's: every request has its own seed, so its reply does not
depend on which others share the engine with it (byte for byte where the backend's numerics do not
depend on the batch either; see generate.py). With ray_address, or on a machine with several GPUs
(local_replicas, engine.py), the shards stream on replicas of the model on Ray instead
(distributed.py), each shard whole on one replica: the same files.

Record fields: prompt_id, sample_index, seed, messages, prompt_text (the templated prompt exactly as
fed), reply, reply_token_ids, prompt_tokens, reply_tokens, finish_reason ("stop", "length",
"prompt_too_long"), flags (["truncated", "looping", "empty", "stub", "shortest", "prompt_too_long"]),
keep (false for a dropped sample, its reason in flags). `load_samples` gives training the kept ones.
The shards load as a dataset: `datasets.load_dataset("json", data_files="DIR/shards/*.jsonl")`.
`export_samples` writes the official pipeline's train.jsonl (messages) and train.parquet;
`read_samples_file` reads those back, made here or elsewhere, for training.
"""

from __future__ import annotations

import hashlib
import json
from itertools import pairwise
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from . import rows
from .chat import build_messages
from .config import SampleConfig
from .decoding import Decoder, request_seed
from .generate import Generator, Request, SamplingSpec, Targets
from .manifest import (
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_jsonl,
    finished,
    load_manifest,
    read_jsonl,
)
from .prompts import Prompt, PromptError, collect_prompts

DROP_FLAGS = {"empty", "stub", "prompt_too_long", "shortest"}  # a sample with one of these is not trained on
console = Console(stderr=True, highlight=False)


def is_looping(token_ids: list[int], max_period: int = 64, min_span: int = 64, min_repeats: int = 4) -> bool:
    """A degenerate reply: it ends in one block of up to `max_period` tokens repeated back to back, at
    least `min_repeats` times and over at least `min_span` tokens."""
    n = len(token_ids)
    for period in range(1, max_period + 1):
        k = 0
        while k + period < n and token_ids[n - 1 - k] == token_ids[n - 1 - k - period]:
            k += 1
        if k + period >= max(min_span, min_repeats * period):
            return True
    return False


def reply_flags(reply: str, token_ids: list[int], finish_reason: str) -> list[str]:
    if finish_reason == "prompt_too_long":
        return ["prompt_too_long"]
    flags = []
    if not reply.strip():
        flags.append("empty")
    elif "\n" not in reply.strip():
        flags.append("stub")  # the paper drops one-line replies: no code block fits on one line
    if finish_reason == "length":
        flags.append("truncated")
    if is_looping(token_ids[:-1] if finish_reason == "stop" else token_ids):  # the stop token ends any loop
        flags.append("looping")
    return flags


def _record(prompt: Prompt, messages: list[dict], prompt_text: str, index: int, seed: int, completion) -> dict:
    flags = reply_flags(completion.text, completion.token_ids, completion.finish_reason)
    return {
        "prompt_id": prompt.id,
        "sample_index": index,
        "seed": seed,
        "messages": messages,
        "prompt_text": prompt_text,
        "reply": completion.text,
        "reply_token_ids": completion.token_ids,
        "prompt_tokens": completion.prompt_tokens,
        "reply_tokens": len(completion.token_ids),
        "finish_reason": completion.finish_reason,
        "flags": flags,
        "keep": not DROP_FLAGS & set(flags),
    }


def prompt_ids(tokenizer, record: dict) -> tuple[list[int], str | None]:
    """A sample's prompt token ids as the sampler fed them (prompt_text tokenized without added special
    tokens), and where they disagree with the count the sampler recorded (prompt_tokens), how."""
    ids = tokenizer(record["prompt_text"], add_special_tokens=False).input_ids
    recorded = record.get("prompt_tokens")
    if isinstance(recorded, int) and recorded != len(ids):
        return ids, f"{recorded} tokens at sampling, {len(ids)} here"
    return ids, None


def _shard_path(out: Path, k: int) -> Path:
    return out / "shards" / f"shard-{k:05d}.jsonl"


def targets_path(shard: Path) -> Path:
    """The side file of a shard's sampling distributions (store_targets)."""
    return shard.with_suffix(".targets.safetensors")


RECOMPUTED_TARGETS = "targets.json"  # beside the shards: how `ssd samples targets` recomputed their side files


def targets_source(path: str | Path) -> str | None:
    """Where a finished samples directory's side files came from: "sampling" (store_targets), "teacher
    forcing" (recomputed by `ssd samples targets`, finished), or None (there are none yet)."""
    path = Path(path)
    if _samples_manifest(path)["config"].get("store_targets"):
        return "sampling"
    recomputed = path / RECOMPUTED_TARGETS
    if recomputed.is_file() and json.loads(recomputed.read_text()).get("finished_at"):
        return "teacher forcing"
    return None


def write_targets(shard: Path, records: list[dict], targets: list[Targets]) -> None:
    """A shard's side file: `targets[i]` holds the distributions of records[i]'s reply tokens. Written
    atomically, before its shard (sampling) or beside a finished one (`ssd samples targets`)."""
    from safetensors.numpy import save

    if any(len(t) != r["reply_tokens"] for r, t in zip(records, targets, strict=True)):
        raise RuntimeError(f"{shard}: a distribution count differs from its reply's token count")
    joined = Targets.concat(targets)
    arrays = {
        "reply_tokens": np.array([len(t) for t in targets], dtype=np.int32),
        "counts": joined.counts,
        "ids": joined.ids,
        "probs": joined.probs,
    }
    atomic_write_bytes(targets_path(shard), save(arrays, metadata={"format": "selfdistill-targets", "version": "1"}))


def shard_targets(shard: Path) -> list[Targets]:
    """The sampling distributions of a shard's records, one Targets per record, in record order."""
    from safetensors.numpy import load_file

    path = targets_path(shard)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the shard {shard.name} was written without its sampling distributions"
        )
    arrays = load_file(path)
    return Targets(arrays["counts"], arrays["ids"], arrays["probs"]).split(arrays["reply_tokens"].tolist())


def shard_files(path: str | Path) -> list[Path]:
    """A samples directory's shard files, in shard order."""
    return sorted((Path(path) / "shards").glob("shard-*.jsonl"))


def sample(cfg: SampleConfig, generator: Generator | None = None) -> Path:
    """Run (or resume) the sampling stage; returns the output directory. `generator`: an engine that
    is already loaded (`ssd run` shares one between sampling and base evaluation); it must hold cfg.model."""
    found = collect_prompts(
        cfg.prompts, cfg.prompt_field, cfg.decontaminate, cfg.prompt_selection
    )  # before the model: bad prompts fail in seconds
    prompts = found.prompts[: cfg.limit] if cfg.limit is not None else found.prompts
    spec = SamplingSpec.from_config(cfg, temperature=cfg.temperature)
    for e in found.errors:
        console.print(f"[yellow]skipped[/] {e['where']}: {e['reason']}")
    for c in found.unchecked:
        console.print(f"[bold red]NOT DECONTAMINATED[/] against {c['entry']}: {c['not_checked']}")
    if not prompts:
        raise PromptError(f"{found.source}: no prompts left ({found.summary()})")
    decoder = Decoder(cfg, generator)
    tokenizer = decoder.tokenizer
    messages = {p.id: build_messages(p.text, p.starter_code, cfg.prompt_format) for p in prompts}
    prompt_texts = decoder.render(messages)
    inputs = decoder.inputs(prompt_texts)
    if found.source_sha256:
        inputs[found.source] = found.source_sha256
    run = RunDir.open(
        cfg.output_dir,
        "sample",
        cfg,
        inputs,
        extra={
            "model_path": decoder.model_path,
            "prompt_source": {
                **found.summary(),
                "limit": cfg.limit,
                "selected": len(prompts),
                "errors_first": found.errors[:20],
            },
            "chat_template": tokenizer.chat_template,
            "chat_template_sha256": hashlib.sha256((tokenizer.chat_template or "").encode()).hexdigest(),
            "chat_template_args": decoder.template_args,  # what training renders the samples' messages with
            "tokenizer": {
                k: getattr(tokenizer, k)
                for k in ("eos_token", "eos_token_id", "pad_token", "pad_token_id", "bos_token", "bos_token_id")
            },
        },
    )
    out = run.path
    # The shard size of the first run holds for its resumes: shard_size is volatile, yet shards must line up.
    shard_size = run.manifest.setdefault("shard_size", cfg.shard_size)
    if shard_size != cfg.shard_size:
        console.print(
            f"[yellow]note[/] {out} was started with shard_size={shard_size}; keeping it (asked: {cfg.shard_size})"
        )
    atomic_write_json(
        out / "prompts_report.json",
        {
            "errors": found.errors,
            "duplicates": found.duplicates,
            "contaminated": found.contaminated,
            "not_decontaminated_against": found.unchecked,
        },
    )
    shards = [prompts[k : k + shard_size] for k in range(0, len(prompts), shard_size)]
    todo = [k for k in range(len(shards)) if not _shard_path(out, k).is_file()]
    for k in range(len(shards)):
        if k not in todo:
            _check_shard(_shard_path(out, k), shards[k], cfg.n, cfg.store_targets)

    if todo:
        with decoder:
            run.update(effective_params=decoder.engine().effective_params(spec))
            _generate_shards(run, decoder, shards, todo, messages, prompt_texts, spec, cfg)
    records = [r for k in range(len(shards)) for r in read_jsonl(_shard_path(out, k))]
    if _drop_shortest(records, cfg.drop_shortest_fraction):
        for k in range(len(shards)):
            begin = k * shard_size * cfg.n
            atomic_write_jsonl(_shard_path(out, k), records[begin : begin + len(shards[k]) * cfg.n])
    stats = _stats(records, cfg.max_tokens)
    if cfg.store_targets:
        stats["counts"]["targets"] = _targets_stats(shard_files(out))
    run.finish(counts=stats["counts"], length_histogram=stats["histogram"], skipped=stats["skipped"])
    _print_summary(stats, out, cfg.max_tokens)
    return out


def _check_shard(path: Path, prompts: list[Prompt], n: int, store_targets: bool) -> None:
    """A finished shard must hold exactly this block's samples (it does unless files were edited), and
    with store_targets its side file (written before it) must be there."""
    expected = [(p.id, j) for p in prompts for j in range(n)]
    found = [(r["prompt_id"], r["sample_index"]) for r in read_jsonl(path)]
    if found != expected:
        raise RuntimeError(
            f"{path} does not hold the samples this run plans for it ({len(found)} records, {len(expected)} "
            "expected): the directory was modified; delete the shard to regenerate it"
        )
    if store_targets and not targets_path(path).is_file():
        raise RuntimeError(
            f"{targets_path(path)} is missing beside its finished shard: the directory was modified; "
            "delete the shard to regenerate it"
        )


def _targets_stats(shards: list[Path]) -> dict:
    """What the stored distributions cost on disk, per reply token."""
    counts = np.concatenate([np.zeros(0, np.int32)] + [Targets.concat(shard_targets(s)).counts for s in shards])
    size = sum(targets_path(s).stat().st_size for s in shards)
    return {
        "file_bytes": size,
        "reply_tokens": int(len(counts)),
        "bytes_per_reply_token": round(size / max(len(counts), 1), 1),
        "mean_survivors": round(float(counts.mean()), 2) if len(counts) else None,
        "single_survivor_share": round(float((counts == 1).mean()), 3) if len(counts) else None,
    }


def _generate_shards(
    run: RunDir,
    decoder: Decoder,
    shards: list[list[Prompt]],
    todo: list[int],
    messages: dict,
    prompt_texts: dict,
    spec: SamplingSpec,
    cfg: SampleConfig,
) -> None:
    """Every missing shard's requests in one stream, so the engine stays full across shards; a shard
    is written as soon as its last request finishes (on a Ray cluster the shards stream on several
    replicas, and the manifest records which made each)."""
    samples = {k: [(p, j) for p in shards[k] for j in range(cfg.n)] for k in todo}
    units = {
        k: [Request(prompt_texts[p.id], spec, request_seed(cfg.seed, p.id, j)) for p, j in samples[k]] for k in todo
    }
    with decoder.decode(run, units, "sampling", lambda k: _shard_path(run.path, k).name) as (progress, finished):
        for k, completions in finished:
            records = [
                _record(p, messages[p.id], prompt_texts[p.id], j, r.seed, c)
                for (p, j), r, c in zip(samples[k], units[k], completions, strict=True)
            ]
            if spec.targets:  # first: a shard on disk has its distributions beside it
                write_targets(_shard_path(run.path, k), records, [c.targets for c in completions])
            atomic_write_jsonl(_shard_path(run.path, k), records)
            progress.checkpoint(f"shard {k + 1}/{len(shards)} written")


def _drop_shortest(records: list[dict], fraction: float) -> bool:
    """Flag the shortest `fraction` of the otherwise kept samples (by reply tokens; ties broken by
    prompt id and sample index), as the official code's optional filter does. Recomputed from scratch,
    so reruns agree. True when any record changed."""
    changed = False
    for r in records:
        if "shortest" in r["flags"]:
            r["flags"].remove("shortest")
            r["keep"], changed = not DROP_FLAGS & set(r["flags"]), True
    if fraction > 0:
        kept = sorted(
            (r for r in records if r["keep"]), key=lambda r: (r["reply_tokens"], r["prompt_id"], r["sample_index"])
        )
        for r in kept[: int(len(kept) * fraction)]:
            r["flags"].append("shortest")
            r["keep"], changed = False, True
    return changed


def _stats(records: list[dict], max_tokens: int) -> dict:
    flags = {
        f: sum(f in r["flags"] for r in records)
        for f in ("truncated", "looping", "empty", "stub", "shortest", "prompt_too_long")
    }
    kept = [r for r in records if r["keep"]]
    edges = [0, 1] + [2**i for i in range(5, 31) if 2**i < max_tokens] + [max_tokens, max_tokens + 1]
    histogram = [
        {
            "from": lo,
            "to": hi - 1,
            "samples": sum(lo <= r["reply_tokens"] < hi for r in records if r["finish_reason"] != "prompt_too_long"),
        }
        for lo, hi in pairwise(edges)
    ]
    counts = {
        "samples": len(records),
        "kept": len(kept),
        "dropped": len(records) - len(kept),
        **flags,
        "reply_tokens_kept": sum(r["reply_tokens"] for r in kept),
    }
    skipped = [
        {
            "prompt_id": r["prompt_id"],
            "prompt_tokens": r["prompt_tokens"],
            "reason": "prompt_too_long: no room in max_model_len",
        }
        for r in records
        if r["finish_reason"] == "prompt_too_long" and r["sample_index"] == 0
    ]
    return {"counts": counts, "histogram": histogram, "skipped": skipped}


def _print_summary(stats: dict, out: Path, max_tokens: int) -> None:
    table = Table("reply tokens", "samples", "", title="reply length histogram", title_justify="left")
    top = max((b["samples"] for b in stats["histogram"]), default=0) or 1
    for b in stats["histogram"]:
        label = f"{b['from']}" if b["from"] == b["to"] else f"{b['from']}-{b['to']}"
        table.add_row(label, str(b["samples"]), "#" * round(30 * b["samples"] / top))
    console.print(table)
    c = stats["counts"]
    console.print(
        f"{c['samples']} samples: {c['kept']} kept, {c['dropped']} dropped (empty {c['empty']}, one-line stub "
        f"{c['stub']}, shortest {c['shortest']}, prompt too long {c['prompt_too_long']}); "
        f"looping {c['looping']} (kept)"
    )
    console.print(
        f"hit the max_tokens cap of {max_tokens:,}: {c['truncated']} of {c['samples']} samples "
        f"({100 * c['truncated'] / max(c['samples'], 1):.1f}%; "
        "kept, trained without a stop token)"
    )
    console.print(f"wrote {out}")


def _samples_manifest(path: Path) -> dict:
    manifest = load_manifest(path)
    if manifest.get("stage") != "sample":
        raise ValueError(f"{path} holds {manifest.get('stage')} outputs, not samples")
    return manifest


def sampled_with(path: str | Path) -> dict:
    """The temperature and truncation a samples directory was drawn with: {temperature, top_k, top_p}."""
    config = _samples_manifest(Path(path))["config"]
    return {key: config[key] for key in ("temperature", "top_k", "top_p")}


def load_samples(path: str | Path, with_targets: bool = False) -> tuple[list[dict], dict]:
    """The kept samples of a finished `ssd sample` directory, in shard order (prompt order, then sample
    index), and its manifest. `with_targets`: each record gets "targets", the Targets its reply tokens
    were drawn from (samples made with store_targets only)."""
    path = Path(path)
    manifest = _samples_manifest(path)
    if not finished(path):
        raise ValueError(f"{path}: sampling did not finish; rerun the same `ssd sample` command to complete it")
    if with_targets and targets_source(path) is None:
        raise ValueError(
            f"{path} holds no sampling distributions (sampled without sample.store_targets); resample with "
            f"store_targets=true, or recompute them by teacher forcing (`ssd samples targets {path}`), "
            "to train with objective soft"
        )
    records = []
    for shard in shard_files(path):
        rows = read_jsonl(shard)
        if with_targets:
            for r, targets in zip(rows, shard_targets(shard), strict=True):
                r["targets"] = targets
        records += rows
    if len(records) != manifest["counts"]["samples"]:
        raise ValueError(
            f"{path}: the shards hold {len(records)} samples but the manifest counts {manifest['counts']['samples']}"
        )
    return [r for r in records if r["keep"]], manifest


# ---------------------------------------------------------------- other tools' formats

SAMPLE_FORMATS = ("messages", "parquet")


def export_samples(path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """A samples directory in the official SSD pipeline's formats (apple/ml-ssd data_generation):
    `messages`: train.jsonl of the kept samples, {"messages": [..prompt messages, assistant reply]} per
    line (what TRL and most SFT stacks read), with prompt_text, prompt_id and sample_index beside it;
    `parquet`: train.parquet of every sample with the official `prompt` (the last user message) and
    `output` (the reply) columns beside all of ours (keep says which were dropped). Default `out`:
    DIR/export/train.jsonl or train.parquet. Both load back into `ssd train --samples FILE`."""
    if fmt not in SAMPLE_FORMATS:
        raise ValueError(f"unknown samples format {fmt!r}: {' or '.join(SAMPLE_FORMATS)}")
    path = Path(path)
    load_samples(path)  # a finished samples directory, or a clear error
    records = [r for shard in shard_files(path) for r in read_jsonl(shard)]
    out = Path(out) if out else path / "export" / ("train.jsonl" if fmt == "messages" else "train.parquet")
    if fmt == "messages":
        atomic_write_jsonl(
            out,
            [
                {
                    "messages": [*r["messages"], {"role": "assistant", "content": r["reply"]}],
                    "prompt_text": r["prompt_text"],
                    "prompt_id": r["prompt_id"],
                    "sample_index": r["sample_index"],
                }
                for r in records
                if r["keep"]
            ],
        )
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [
            {
                "prompt": next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user"),
                "output": r["reply"],
                **r,
            }
            for r in records
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), out)
    console.print(
        f"wrote {out} ({fmt}: {sum(r['keep'] for r in records) if fmt == 'messages' else len(records)} samples)"
    )
    return out


def read_samples_file(path: str | Path) -> list[dict]:
    """Samples made elsewhere, as training records: a JSONL, JSON or parquet file whose rows hold
    `messages` ending in the assistant's reply (the official train.jsonl, `ssd samples export`), or the
    official train.parquet's `prompt` (one user message) and `output`. Rows with keep false are left
    out; prompt_text, reply_token_ids and finish_reason are kept where a row has them (our exports),
    else the reply is taken as finished ("stop"), as an SFT stack training on messages takes it."""
    records = []
    for where, row in rows.read(path, "train", raises=ValueError):
        if row.get("keep") is False:
            continue
        messages = row.get("messages")
        if (
            isinstance(messages, list)
            and messages
            and isinstance(messages[-1], dict)
            and messages[-1].get("role") == "assistant"
        ):
            prompt_messages, reply = messages[:-1], messages[-1].get("content")
        elif isinstance(row.get("output"), str) and (isinstance(messages, list) or isinstance(row.get("prompt"), str)):
            prompt_messages, reply = (
                messages if isinstance(messages, list) else [{"role": "user", "content": row["prompt"]}],
                row["output"],
            )
        else:
            raise ValueError(
                f"{where}: expected field 'messages' ending with the assistant's reply, "
                "or fields 'prompt' and 'output'"
            )
        if not isinstance(reply, str) or not prompt_messages:
            raise ValueError(
                f"{where}: field 'messages': no prompt before the assistant's reply, or a reply that is not a string"
            )
        records.append(
            {
                "prompt_id": row.get("prompt_id") or where,
                "sample_index": row.get("sample_index") or 0,
                "messages": prompt_messages,
                "prompt_text": row.get("prompt_text"),
                "reply": reply,
                "reply_token_ids": row.get("reply_token_ids"),
                "finish_reason": row.get("finish_reason") or "stop",
            }
        )
    if not records:
        raise ValueError(f"{path}: no samples to train on")
    return records
