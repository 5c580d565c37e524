"""`ssd analyze fit`: has the trained model learned the SSD target? One training step in, one row out.

SSD's fixed point is the base model's own truncated distribution. At each reply position, the target q
is the base model's next-token distribution at the training temperature and truncation (temperature,
then top-k, then top-p: generate.truncate_logits), renormalised on its support S. A model p (at T=1,
untruncated) is scored against it per token:

  KL(q || p) = -log p(S) + KL(q || p|S)    the tail term (mass outside the support) and the within-support
                                            KL, p|S = p renormalised on S
  H(p|S) against H(q)                       entropy within the support against the target's
  TV(q, p) = (sum over S of |q - p| + 1 - p(S)) / 2

split into forks (>= FORK_MIN_SURVIVORS tokens in S) and locks, for held-out samples (never trained on)
and training samples: a model that fits training contexts and not held-out ones is memorising.
Everything is exact, from full-vocabulary logits, chunked (analyze.reply_logits) so that no reply holds
positions x vocabulary floats at once; fp32 on CPUs.

The base model's pass is made once and cached (target.npz): the support and q of every position (ragged:
`support_len` entries each in `support_ids` / `support_q`), and the base model's own scores, the row of
step 0; another training run on the same samples takes it from the first run's fit (`target_from`).
A step's pass scores one model against the cached target: a checkpoint (TRAIN_DIR/checkpoints/checkpoint-N,
a LoRA adapter there is merged onto the base model), a kept snapshot (TRAIN_DIR/snapshots/step-N), the
finished TRAIN_DIR/model, or any model directory (`model`). So a long run can be checked while it trains.

Output dir (TRAIN_DIR/fit unless output_dir):
  manifest.json      RunDir manifest (the base model, the train directory, the scored samples)
  target.npz         the cached target and the base model's scores (a killed pass resumes: .partial.npz)
  step-N.npz         per-position scores of step N's model (tail, within_kl, entropy, tv)
  fit.jsonl          one row per step, sorted by step, rewritten atomically after each step; a row names its
                     model's path and weights_sha256 (its weight files' hash: a rebuilt run's row can be
                     checked to be the same weights)
  fit.png            the rows over steps
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from . import plots
from .analyze import FORK_MIN_SURVIVORS, AnalyzeError, _load_npz, format_measure, load_model, score
from .config import FitConfig
from .generate import truncate_logits
from .manifest import (
    MANIFEST,
    RunDir,
    atomic_write_bytes,
    atomic_write_jsonl,
    hash_inputs,
    load_manifest,
    read_jsonl,
    weights_sha256,
)

console = Console(stderr=True, highlight=False)

SETS = ("heldout", "train")
CLASSES = ("fork", "lock", "all")
MEASURES = ("kl", "tail", "within_kl", "entropy", "target_entropy", "tv")  # row keys, per set and class


class FitError(AnalyzeError):
    pass


# ---------------------------------------------------------------- the measures, per chunk of positions


def target(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """q from the base model's logits [positions, vocab]: (support ids, q), padded to the widest support
    with probability 0 (id 0). min-p compares each token with the most likely one, which the k + 1
    largest logits hold, so it too is exact on them."""
    logits, vocab_ids = logits.float(), None
    if 0 < top_k < logits.shape[-1] - 1:
        # Truncating the k + 1 largest logits is exact unless a tie with the k-th reaches the last of
        # them (vLLM's top-k keeps ties), and spares sorting the vocabulary for top-p.
        top, top_ids = logits.topk(top_k + 1, dim=-1)
        if bool((top[:, top_k - 1] > top[:, -1]).all()):
            logits, vocab_ids = top, top_ids
    truncated = truncate_logits(logits, temperature, top_k, top_p, min_p)
    width = int(torch.isfinite(truncated).sum(-1).max())
    values, ids = truncated.topk(width, dim=-1)  # the support holds the largest logits; -inf past a row's own
    if vocab_ids is not None:
        ids = vocab_ids.gather(-1, ids)
    q = torch.softmax(values.double(), dim=-1)
    return ids.masked_fill(q == 0, 0), q


def measures(logits: torch.Tensor, ids: torch.Tensor, q: torch.Tensor) -> dict[str, np.ndarray]:
    """The model's scores against q (support `ids`, probabilities `q`; 0 where padded), per position."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids).double()  # log p on the support
    inside = q > 0
    logp_support = logp.masked_fill(~inside, float("-inf")).logsumexp(-1)  # log p(S)
    log_within = (logp - logp_support[:, None]).masked_fill(~inside, 0.0)  # log p|S
    within_kl = torch.where(inside, q * (q.clamp_min(1e-300).log() - log_within), 0.0).sum(-1)
    p_tail = -torch.expm1(logp_support)  # 1 - p(S), exact where p(S) is near 1
    return {
        "tail": (-logp_support).numpy(),
        "within_kl": within_kl.numpy(),
        "entropy": -(log_within.exp() * log_within).masked_fill(~inside, 0.0).sum(-1).numpy(),
        "tv": (0.5 * ((q - logp.exp()).abs().masked_fill(~inside, 0.0).sum(-1) + p_tail)).numpy(),
    }


def target_positions(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> dict[str, np.ndarray]:
    """The cached target of these positions (ragged support) and the base model's own scores against it."""
    ids, q = target(logits, temperature, top_k, top_p)
    inside = q > 0
    return {
        "support_len": inside.sum(-1).numpy(),
        "support_ids": ids[inside].numpy(),
        "support_q": q[inside].numpy(),
        "target_entropy": torch.special.entr(q).sum(-1).numpy(),
        **measures(logits, ids, q),
    }


@dataclass
class Target:
    """The cached target, with random access to any run of positions."""

    arrays: dict[str, np.ndarray]

    def __post_init__(self):
        self.offsets = np.concatenate([[0], np.cumsum(self.arrays["support_len"])])

    def chunk(self, first: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.arrays["support_len"][first : first + count]
        ids = torch.zeros(count, int(lengths.max()), dtype=torch.int64)
        q = torch.zeros(count, int(lengths.max()), dtype=torch.float64)
        for row, (start, n) in enumerate(zip(self.offsets[first : first + count], lengths, strict=True)):
            ids[row, :n] = torch.from_numpy(self.arrays["support_ids"][start : start + n])
            q[row, :n] = torch.from_numpy(self.arrays["support_q"][start : start + n])
        return ids, q


# ---------------------------------------------------------------- what is scored


def scored_samples(cfg: FitConfig, manifest: dict) -> tuple[list[dict], list[dict], list[Path]]:
    """(held-out records, training records, the shard files they came from): the held-out ones are the
    samples the train directory set aside, or every kept sample of `cfg.heldout`; the training ones a
    seeded choice among the samples it trained on."""
    from .sample import load_samples, shard_files
    from .train import sample_key

    samples = Path(manifest["config"]["samples"])
    records, _ = load_samples(samples)
    held_keys = {tuple(k) for k in manifest.get("holdout", [])}
    trained = [r for r in records if sample_key(r) not in held_keys]
    files = shard_files(samples)
    if cfg.heldout:
        held, _ = load_samples(cfg.heldout)
        files += shard_files(cfg.heldout)
        overlap = {str(r["prompt_id"]) for r in held} & {str(r["prompt_id"]) for r in trained}
        if overlap:
            raise FitError(
                f"{cfg.heldout}: {len(overlap)} of its prompts were trained on (e.g. {sorted(overlap)[0]!r}); "
                "held-out samples must be of other prompts"
            )
    else:
        held = [r for r in records if sample_key(r) in held_keys]
    if not held:
        raise FitError(
            f"{cfg.train_dir} set no samples aside (train.holdout = 0): give heldout, "
            "a samples dir of prompts it never trained on"
        )
    rng = random.Random(cfg.seed)

    def pick(records: list, n: int | None) -> list:
        return records if n is None or n >= len(records) else rng.sample(records, n)

    return pick(held, cfg.heldout_samples), pick(trained, cfg.train_samples), files


def model_of(cfg: FitConfig, manifest: dict) -> tuple[str | None, int]:
    """The model directory to fit and its step: None for the base model (step 0)."""
    train_dir = Path(cfg.train_dir)
    if cfg.model:
        return cfg.model, cfg.step
    if cfg.step == 0:
        return None, 0
    if cfg.step is None:
        if not manifest.get("finished_at"):
            raise FitError(f"{train_dir} has not finished training: give --step N of a checkpoint")
        return manifest["model_dir"], int(manifest["steps"])
    for candidate in (
        train_dir / "checkpoints" / f"checkpoint-{cfg.step}",
        train_dir / "snapshots" / f"step-{cfg.step}",
    ):
        if candidate.is_dir():
            return str(candidate), cfg.step
    raise FitError(
        f"{train_dir}: no checkpoints/checkpoint-{cfg.step} or snapshots/step-{cfg.step} (checkpoints are kept every "
        "train.save_steps, the last two)"
    )


# ---------------------------------------------------------------- rows


def summarize(
    step: int, model: str, scores: dict[str, np.ndarray], target: dict[str, np.ndarray], heldout_replies: int
) -> dict:
    """One row: the mean of every measure per token, per set (held-out, train) and class (fork, lock, all)."""
    fork = target["support_len"] >= FORK_MIN_SURVIVORS
    heldout = target["reply"] < heldout_replies
    row = {"step": step, "model": model}
    for name, in_set in (("heldout", heldout), ("train", ~heldout)):
        for kind, mask in (("fork", fork), ("lock", ~fork), ("all", np.ones_like(fork))):
            chosen = in_set & mask
            cell = {"positions": int(chosen.sum()), "replies": len(np.unique(target["reply"][chosen]))}
            values = {"kl": scores["tail"] + scores["within_kl"], "target_entropy": target["target_entropy"], **scores}
            for key in MEASURES:
                cell[key] = float(values[key][chosen].mean()) if chosen.any() else None
            row[f"{name}_{kind}"] = cell
    return row


def write_row(out: Path, row: dict) -> list[dict]:
    """fit.jsonl with `row` in, replacing the same step's row: the rows sorted by step."""
    path = out / "fit.jsonl"
    rows = [r for r in (read_jsonl(path) if path.is_file() else []) if r["step"] != row["step"]] + [row]
    rows.sort(key=lambda r: r["step"])
    atomic_write_jsonl(path, rows)
    return rows


FIT_HEADER = [
    "step",
    "set",
    "class",
    "positions",
    "KL(q||p)",
    "tail -log p(S)",
    "within-S KL",
    "H(p|S)",
    "target H(q)",
    "TV",
]


def fit_table(rows: list[dict], classes: tuple[str, ...] = CLASSES) -> list[list[str]]:
    """The rows as table lines (FIT_HEADER): per step, set and class."""
    return [
        [
            str(r["step"]),
            name,
            kind,
            str(r[f"{name}_{kind}"]["positions"]),
            *(format_measure(r[f"{name}_{kind}"][k]) for k in MEASURES),
        ]
        for r in rows
        for name in SETS
        for kind in classes
    ]


def print_rows(rows: list[dict]) -> None:
    table = Table(
        *FIT_HEADER, title="distillation fit: per-token means against the SSD target q (nats; TV in probability)"
    )
    for line in fit_table(rows):
        table.add_row(*line)
    console.print(table)


def plot(rows: list[dict], path: Path) -> Path:
    """The rows over steps: tail term, within-support KL, and entropy within the support against the
    target's, at forks and locks, held-out (solid) and training (dashed) contexts."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    steps = [r["step"] for r in rows]
    colors = {"fork": "tab:orange", "lock": "tab:blue"}
    for ax, key, title in zip(
        axes,
        ("tail", "within_kl", "entropy"),
        ("tail term -log p(S)", "within-support KL(q || p|S)", "entropy within the support H(p|S)"),
        strict=True,
    ):
        for name, style in (("heldout", "-"), ("train", "--")):
            for kind in ("fork", "lock"):
                values = [np.nan if r[f"{name}_{kind}"][key] is None else r[f"{name}_{kind}"][key] for r in rows]
                ax.plot(steps, values, style, marker="o", ms=3, color=colors[kind], label=f"{name}, {kind}s")
                if key == "entropy" and name == "heldout":
                    target = [
                        np.nan
                        if r[f"heldout_{kind}"]["target_entropy"] is None
                        else r[f"heldout_{kind}"]["target_entropy"]
                        for r in rows
                    ]
                    ax.plot(steps, target, ":", color=colors[kind], label=f"target H(q), {kind}s")
        ax.set(xlabel="optimizer step (0 = base model)", ylabel="nats per token", title=title)
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7)
    return plots.save(fig, path)


# ---------------------------------------------------------------- entry point


def reuse_target(other: Path, manifest: dict, cached: Path) -> None:
    """Copy another fit's cached target, which is this fit's when both scored the same samples of the same
    files with the same base model and truncation: the base model's pass is the costliest part of a fit."""
    try:
        theirs = load_manifest(other)
    except FileNotFoundError:
        raise FitError(f"{other}: no manifest.json; give target_from an `ssd analyze fit` output directory") from None
    for field in ("inputs", "truncation", "scored"):
        if theirs.get(field) != manifest.get(field):
            raise FitError(f"{other / MANIFEST}: field {field!r} differs from this fit's: not its target")
    if not (other / "target.npz").is_file():
        raise FitError(f"{other}: no target.npz; run its fit first")
    atomic_write_bytes(cached, (other / "target.npz").read_bytes())


def fit(cfg: FitConfig) -> Path:
    from transformers import AutoTokenizer

    from .models import resolve_model
    from .sample import sampled_with
    from .train import quiet_library_progress_bars, sample_key, training_examples

    quiet_library_progress_bars()
    train_dir = Path(cfg.train_dir)
    try:
        manifest = load_manifest(train_dir)
    except FileNotFoundError:
        raise FitError(f"{train_dir}: no manifest.json; give the output directory of `ssd train`") from None
    if manifest.get("stage") != "train":
        raise FitError(f"{train_dir}: not an `ssd train` directory (stage {manifest.get('stage')!r})")
    out = Path(cfg.output_dir) if cfg.output_dir else train_dir / "fit"
    base_path = resolve_model(manifest["config"]["model"])
    model_dir, step = model_of(cfg, manifest)
    truncation = sampled_with(manifest["config"]["samples"])
    if truncation.get("top_k", 0) <= 0 and truncation.get("top_p", 1.0) >= 1.0:
        raise FitError(
            f"{manifest['config']['samples']}: sampled untruncated, so the target's support is the whole vocabulary "
            "and cannot be cached; the fit needs a top-k or top-p truncation"
        )
    held, trained, files = scored_samples(cfg, manifest)
    run = RunDir.open(
        out, "fit", cfg, hash_inputs([base_path, *files]), extra={"base_model": base_path, "truncation": truncation}
    )

    tokenizer = AutoTokenizer.from_pretrained(base_path)
    samples_manifest = load_manifest(manifest["config"]["samples"])
    examples, _ = training_examples(
        held + trained, base_path, tokenizer, samples_manifest, Path(manifest["config"]["samples"])
    )
    sequences = [(e["input_ids"][: e["prompt_len"]], e["input_ids"][e["prompt_len"] :]) for e in examples]
    run.update(
        scored={
            name: [list(key) for key in map(sample_key, records)]
            for name, records in (("heldout", held), ("train", trained))
        }
    )

    cached = out / "target.npz"
    if cfg.target_from and not cached.is_file():
        reuse_target(Path(cfg.target_from), run.manifest, cached)
    if cached.is_file():
        arrays = _load_npz(cached)
    else:
        base = load_model(base_path, bf16_on_gpu=cfg.bf16_on_gpu)
        t, k, p = truncation["temperature"], truncation["top_k"], truncation["top_p"]
        arrays = score(base, "base (target)", sequences, lambda logits, _: target_positions(logits, t, k, p), cached)
        del base

    def write_row_of(step: int, model: str, scores: dict[str, np.ndarray]) -> list[dict]:
        row = summarize(step, model, scores, arrays, len(held))
        return write_row(out, row | {"weights_sha256": weights_sha256(model)})

    rows = write_row_of(0, base_path, arrays)
    if model_dir is not None:
        scores_path = out / f"step-{step}.npz"
        if scores_path.is_file():
            scores = _load_npz(scores_path)
        else:
            adapter = model_dir if (Path(model_dir) / "adapter_config.json").is_file() else None
            model = load_model(base_path if adapter else model_dir, adapter=adapter, bf16_on_gpu=cfg.bf16_on_gpu)
            cache = Target(arrays)
            scores = score(
                model,
                f"step {step}",
                sequences,
                lambda logits, first: measures(logits, *cache.chunk(first, len(logits))),
                scores_path,
            )
            del model
        if not np.array_equal(scores["token"], arrays["token"]):
            raise FitError(f"{scores_path} scores other tokens than {cached}; delete it and rerun")
        rows = write_row_of(step, model_dir, scores)
    plot(rows, out / "fit.png")
    print_rows(rows)
    run.update(steps=[r["step"] for r in rows])
    console.print(f"[bold]fit:[/] {out / 'fit.jsonl'}")
    return out
