"""`ssd analyze`: the paper's Figure 6 diagnostics. The base and the SSD model score the same held-out
replies by teacher forcing (one transformers forward pass per reply; the prompt is context, only reply
positions count), and we compare their next-token distributions position by position:

  (a) cumulative probability mass of the top-r tokens against the rank r (raw distribution: T = 1, no truncation)
  (b) mean number of survivors against T_eval: tokens with nonzero probability after truncation at
      (T_eval, eval_top_k, eval_top_p), in the paper's order (temperature, then top-k, then top-p; the
      reference `generate.truncate_logits`)
  (c) mean entropy after truncation against T_eval: the entropy of the renormalized truncated
      distribution, in nats
  (d) entropy after truncation at the T_eval nearest 1.0, binned by the base model's top-20 mass (raw
      distribution) into equal-count bins (deciles), so both models are compared on the same positions in
      every bin. Code models put most positions within 1e-3 of mass 1, so the bins are placed by the mass
      outside the top 20 (1 - top-20 mass, computed as a tail sum, not a difference) on a log axis

Fork-like positions have >= 3 survivors at the training truncation (t_train, top_k, top_p), lock-like
ones 1 or 2 (FORK_MIN_SURVIVORS). Each model's counts use its own distribution; the curves split by
fork/lock (and `lock_fork`) classify positions once, by the base model, which produced the training data.
That classification favours SSD by regression to the mean, so the paired entropies (`paired_entropy`)
also classify by the SSD model and by a symmetric rule (fork_classes), with bootstrap CIs over replies.
Unless the config gives them, the training truncation is the one the SSD model's training samples were
drawn with (its `ssd train` manifest names the samples), and the eval truncation (eval_top_k,
eval_top_p) the one the replies were decoded with (with_truncations).

Replies (`replies`): a finished eval output dir or samples dir (read through results.load_summary and
results_path, or sample.load_samples); both records carry `prompt_text`, the templated prompt exactly
as it was fed. One reply per problem, a seeded choice, up to `limit` replies. Prompt and reply are
tokenized apart, so the scored positions are exactly the reply text's tokens.

Output dir:
  manifest.json                   RunDir manifest; inputs hash both models and the reply files
  positions_base.npz, positions_ssd.npz
                                  per-position statistics of each model (a rerun after kill -9 reuses
                                  them, and continues a model's .partial.npz, saved every SAVE_EVERY s):
                                  reply, token, top20_tail (1 - top-20 mass), cum_mass[N, RANKS], train_survivors,
                                  train_entropy, eval_survivors[N, len(t_evals)], eval_entropy[N, len(t_evals)]
  analysis.json                   every curve plotted, fork/lock counts, the paired lock/fork summary, and the
                                  paired entropies under three fork classifications with bootstrap CIs
  fig6a_cumulative_mass.png  fig6b_survivors.png  fig6c_entropy.png  fig6d_entropy_by_top20.png
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import SelfdistillError, plots, rows
from .config import AnalyzeConfig
from .generate import truncate_logits
from .manifest import RunDir, atomic_write_bytes, atomic_write_json, hash_inputs, load_manifest
from .models import resolve_model
from .results import load_summary, results_path

console = Console(stderr=True)

RANKS = 100  # (a) is drawn for ranks 1..RANKS
TOP_MASS_K = 20  # (d) bins positions by the mass of the top 20 tokens
TOP_MASS_BINS = 10  # equal-count bins of it
FORK_MIN_SURVIVORS = 3  # >= 3 survivors at the training truncation: fork-like; 1-2: lock-like
CHUNK = 512  # positions whose full-vocabulary logits are held at once (bounds memory: 512 x 152k fp32 = 311 MB)
SAVE_EVERY = 30.0  # seconds between saves of the scored replies, for resume
MODELS = ("base", "ssd")
BOOTSTRAP_RESAMPLES = 1000  # resamples of the replies for the paired entropies' CIs
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
FORK_RULES = {  # fork_classes: whose survivors (>= FORK_MIN_SURVIVORS at the training truncation) make a fork
    "base": "the base model",
    "ssd": "the SSD model",
    "both": "both models (symmetric)",
}
FAIR_RULE = "both"


class AnalyzeError(SelfdistillError, ValueError):
    pass


# ---------------------------------------------------------------- replies


def load_replies(source: str | Path, limit: int, seed: int) -> tuple[list[dict], list[Path]]:
    """Up to `limit` {id, prompt_text, reply} from an eval or samples dir, one per problem (seeded
    choice), and the files they came from (hashed into the manifest)."""
    source = Path(source)
    stage = _stage(source)
    if stage == "eval":
        records, files = _eval_records(source)
    elif stage == "sample":
        from .sample import load_samples, shard_files

        kept, _ = load_samples(source)
        records = [{"id": str(r["prompt_id"]), "prompt_text": r["prompt_text"], "reply": r["reply"]} for r in kept]
        files = shard_files(source)
    else:
        raise AnalyzeError(f"{source}: neither an eval output dir nor a samples dir")
    by_problem: dict[str, list[dict]] = {}
    for r in records:
        if r["reply"].strip():
            by_problem.setdefault(r["id"], []).append(r)
    if not by_problem:
        raise AnalyzeError(f"{source}: no non-empty replies to score")
    rng = random.Random(seed)
    ids = sorted(by_problem)
    rng.shuffle(ids)
    return [rng.choice(by_problem[i]) for i in ids[:limit]], files


def _stage(path: Path) -> str | None:
    """The stage whose outputs `path` holds (sample, eval, ...); None for a directory of no stage."""
    try:
        return load_manifest(path).get("stage")
    except FileNotFoundError:
        return None


def _eval_records(eval_dir: Path) -> tuple[list[dict], list[Path]]:
    files = [results_path(eval_dir, e.temperature) for e in load_summary(eval_dir).entries]
    records = []
    for path in files:
        for line_no, row in rows.jsonl(path, raises=AnalyzeError):
            for key in ("problem_id", "prompt_text", "reply"):
                if key not in row:
                    raise AnalyzeError(f"{path}:{line_no}: missing field {key!r}")
            records.append({"id": str(row["problem_id"]), "prompt_text": row["prompt_text"], "reply": row["reply"]})
    return records, files


def with_truncations(cfg: AnalyzeConfig) -> AnalyzeConfig:
    """cfg with each truncation it leaves unset read from the stage outputs it describes: the training
    truncation from the samples the SSD model was trained on, the eval truncation from the replies'
    eval (or samples)."""
    from .sample import sampled_with
    from .train import trained_on

    train, ev = {}, {}
    if None in (cfg.t_train, cfg.top_k, cfg.top_p):
        samples = trained_on(cfg.ssd_model)
        if samples is None:
            raise AnalyzeError(
                f"{cfg.ssd_model} is not the model of an `ssd train` directory: give t_train, top_k and top_p, "
                "the truncation its training samples were drawn with"
            )
        train = sampled_with(samples)
    if None in (cfg.eval_top_k, cfg.eval_top_p):
        stage = _stage(Path(cfg.replies))
        if stage == "eval":
            decoding = load_summary(cfg.replies).decoding  # None for replies graded from a file
            ev = decoding and asdict(decoding)
        elif stage == "sample":
            ev = sampled_with(cfg.replies)
        if not ev:
            raise AnalyzeError(
                f"{cfg.replies}: no record of the truncation its replies were decoded with: "
                "give eval_top_k and eval_top_p"
            )

    def given(value, source: dict, key: str):
        return source[key] if value is None else value

    return replace(
        cfg,
        t_train=given(cfg.t_train, train, "temperature"),
        top_k=given(cfg.top_k, train, "top_k"),
        top_p=given(cfg.top_p, train, "top_p"),
        eval_top_k=given(cfg.eval_top_k, ev, "top_k"),
        eval_top_p=given(cfg.eval_top_p, ev, "top_p"),
    )


# ---------------------------------------------------------------- scoring


def truncated_stats(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Survivors (tokens with nonzero probability) and entropy in nats of the truncated, renormalized
    distribution, per row of `logits`."""
    probs = torch.softmax(truncate_logits(logits, temperature, top_k, top_p, 0.0).float(), dim=-1)
    return (probs > 0).sum(-1), torch.special.entr(probs).sum(-1)


def position_stats(logits: torch.Tensor, cfg: AnalyzeConfig) -> dict[str, np.ndarray]:
    """Every per-position statistic the figures need, from next-token logits [positions, vocab] (one
    chunk of them: reply_logits)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    width = max(RANKS, TOP_MASS_K, cfg.top_k + 1, cfg.eval_top_k + 1)
    top, top_ids = logprobs.topk(min(width, logprobs.shape[-1]), dim=-1)  # sorted, descending
    tail = (
        logprobs.scatter(-1, top_ids[:, :TOP_MASS_K], float("-inf")).logsumexp(-1).exp()
    )  # exact where 1 - mass would round to 0

    def stats(temperature: float, top_k: int, top_p: float):
        # Top-k after temperature keeps the k largest logits and their ties, so truncating just the
        # `width` > k largest is exact unless a tie with the k-th runs past them; it spares sorting
        # the whole vocabulary for every temperature.
        exact = 0 < top_k < top.shape[-1] and bool((top[:, top_k - 1] > top[:, -1]).all())
        return truncated_stats(top if exact else logprobs, temperature, top_k, top_p)

    train_survivors, train_entropy = stats(cfg.t_train, cfg.top_k, cfg.top_p)
    evals = [stats(t, cfg.eval_top_k, cfg.eval_top_p) for t in cfg.t_evals]
    return {
        "cum_mass": top[:, :RANKS].exp().cumsum(-1).numpy(),
        "top20_tail": tail.numpy(),
        "train_survivors": train_survivors.numpy(),
        "train_entropy": train_entropy.numpy(),
        "eval_survivors": torch.stack([s for s, _ in evals], -1).numpy(),
        "eval_entropy": torch.stack([e for _, e in evals], -1).numpy(),
    }


def tokenize(tokenizer, replies: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids) per reply. Tokenized apart, so reply positions are exactly the reply's
    tokens whatever the tokenizer would merge across the boundary."""
    return [
        (
            tokenizer(r["prompt_text"], add_special_tokens=False).input_ids,
            tokenizer(r["reply"], add_special_tokens=False).input_ids,
        )
        for r in replies
    ]


def load_model(model_path: str, adapter: str | Path | None = None, bf16_on_gpu: bool = False):
    """A model for teacher forcing, in eval mode: fp32 weights, or bf16 on GPUs when asked (`adapter`: a
    LoRA adapter directory merged onto it). fp32 by default, GPUs included: bf16 logits step by 1/8 at
    magnitude 16, which ties top tokens (tiny-random on an H200: +0.5 survivors on average, up to +4, two
    at T -> 0) and moves per-position entropies by up to 0.5 nats (Qwen2.5-Coder-0.5B); on CPUs bf16 was
    also 2-4x slower. device_map="auto" spreads a model too big for one GPU over all of them (and the CPU)."""
    from transformers import AutoModelForCausalLM

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda and bf16_on_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, device_map="auto" if cuda else None)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    for key in ("final_logit_softcapping", "logit_scale"):  # reply_logits applies the LM head alone
        if getattr(model.config, key, None):
            raise AnalyzeError(
                f"{model_path}: its config sets {key}, which rescales the LM head's logits; "
                "teacher forcing here applies the head alone"
            )
    return model.eval()


def reply_logits(model, prompt_ids: list[int], reply_ids: list[int], chunk: int = CHUNK) -> Iterator[torch.Tensor]:
    """The next-token logits that predict each reply token, fp32 on the CPU, `chunk` positions at a time.
    The decoder runs once over prompt + reply; the LM head runs per chunk of its hidden states, so a long
    reply never holds positions x vocabulary floats at once (65k x 152k in fp32 would be 40 GB)."""
    ids = torch.tensor([prompt_ids + reply_ids], device=model.device)
    # The hidden state at position j predicts token j+1: positions len(prompt)-1 ... end-1 predict the reply.
    hidden = model.get_decoder()(input_ids=ids).last_hidden_state[0, len(prompt_ids) - 1 : -1]
    head = model.get_output_embeddings()
    for part in hidden.split(chunk):
        yield head(part).float().cpu()


@torch.inference_mode()
def score(
    model,
    label: str,
    sequences: list[tuple[list[int], list[int]]],
    stats: Callable[[torch.Tensor, int], dict[str, np.ndarray]],
    out: Path,
) -> dict[str, np.ndarray]:
    """Teacher-force every reply through `model` (batch 1: no padding to get wrong) and collect
    `stats(logits, first)` of the logits that predict each reply token, chunk by chunk (`first`: the
    index of the chunk's first position among all replies' positions). Writes them to `out` (.npz);
    finished replies are saved to a .partial.npz beside it every SAVE_EVERY seconds and a rerun
    continues after them."""
    partial = out.with_suffix(".partial.npz")
    rows = [_load_npz(partial)] if partial.is_file() else []
    first = int(rows[0]["reply"].max()) + 1 if rows else 0
    if first:
        console.print(f"{label}: resuming after {first} scored replies ({partial})", markup=False)
    total = sum(len(r) for _, r in sequences)
    columns = [
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("replies"),
        TextColumn("{task.fields[rate]:.0f} tok/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(label, total=len(sequences), completed=first, rate=0.0)
        start = saved = time.time()
        done = 0
        starts = np.cumsum([0] + [len(r) for _, r in sequences])
        for i, (prompt_ids, reply_ids) in enumerate(sequences[first:], start=first):
            row = _concat(
                [
                    stats(logits, starts[i] + j * CHUNK)
                    for j, logits in enumerate(reply_logits(model, prompt_ids, reply_ids, CHUNK))
                ]
            )
            row["reply"] = np.full(len(reply_ids), i, dtype=np.int32)
            row["token"] = np.asarray(reply_ids, dtype=np.int64)
            rows.append(row)
            done += len(prompt_ids) + len(reply_ids)
            progress.update(task, advance=1, rate=done / max(time.time() - start, 1e-9))
            if time.time() - saved > SAVE_EVERY:
                rows = [_concat(rows)]
                _save_npz(partial, rows[0])
                saved = time.time()
    console.print(f"{label}: scored {total} reply positions in {time.time() - start:.1f}s", markup=False)
    positions = _concat(rows)
    _save_npz(out, positions)
    partial.unlink(missing_ok=True)
    return positions


def _concat(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# ---------------------------------------------------------------- summaries


def fork_classes(pos: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Fork masks over positions under each rule of FORK_RULES (the rest are locks).

    Classifying by one model selects positions where that model happened to spread its mass, so any
    other model looks sharper there on average (regression to the mean): by the base model's forks SSD
    looks sharper, by SSD's forks flatter, even when the two differ only by noise. A rule that treats both
    models alike has no such bias: if the models were exchangeable, swapping them would leave the classes
    unchanged, so the expected paired difference is 0. Of the symmetric rules we take "a fork for both
    models" (both have >= FORK_MIN_SURVIVORS survivors) rather than "the average of the two truncated
    distributions has >= FORK_MIN_SURVIVORS survivors": it needs only each model's survivor count, which
    positions_*.npz stores, so committed analyses can be re-summarized without the models, and it keeps
    positions that are forks to both models, the ones the paper's mechanism is about."""
    base, ssd = (pos[name]["train_survivors"] >= FORK_MIN_SURVIVORS for name in MODELS)
    return {"base": base, "ssd": ssd, "both": base & ssd}


def reply_bootstrap(
    series: dict[str, np.ndarray], reply: np.ndarray, mask: np.ndarray, weights: np.ndarray
) -> dict[str, dict | None]:
    """Mean of each per-position series [positions, T] over the positions in `mask`, per column, with its
    percentile bootstrap CI (CI_LEVEL) over replies: `weights` [resamples, replies] counts how often each
    reply is drawn in each resample (replies drawn with replacement), and a resample's mean is over all
    positions of its drawn replies. Replies, not positions, are resampled: positions of one reply are
    not independent. None where `mask` holds no position."""
    n_replies = weights.shape[1]
    counts = np.bincount(reply[mask], minlength=n_replies).astype(np.float64)
    if counts.sum() == 0:
        return dict.fromkeys(series)
    tail = (1 - CI_LEVEL) / 2
    out = {}
    for name, x in series.items():
        x = x.astype(np.float64)
        sums = np.stack([np.bincount(reply[mask], x[mask, j], minlength=n_replies) for j in range(x.shape[1])], -1)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample may draw no position of the class: left out
            means = (weights @ sums) / (weights @ counts)[:, None]
        lo, hi = np.nanquantile(means, [tail, 1 - tail], axis=0)
        out[name] = {"mean": (sums.sum(0) / counts.sum()).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
    return out


def paired_entropy(pos: dict[str, dict[str, np.ndarray]], t_evals: list[float]) -> list[dict]:
    """Per T_eval and fork classification (fork_classes): the number of forks and locks and, at each, the
    mean entropy after truncation of base and SSD and their paired difference (SSD - base, position by
    position), each with its bootstrap CI over replies (reply_bootstrap; the same seeded resamples for
    every class and T_eval)."""
    reply = pos["base"]["reply"]
    n_replies = int(reply.max()) + 1
    weights = np.random.default_rng(BOOTSTRAP_SEED).multinomial(
        n_replies, np.full(n_replies, 1 / n_replies), size=BOOTSTRAP_RESAMPLES
    )
    base, ssd = pos["base"]["eval_entropy"], pos["ssd"]["eval_entropy"]
    series = {"base": base, "ssd": ssd, "ssd_minus_base": ssd.astype(np.float64) - base}
    by_rule = {}
    for rule, fork in fork_classes(pos).items():
        by_rule[rule] = {"n_fork": int(fork.sum()), "n_lock": int((~fork).sum())}
        for kind, mask in (("fork", fork), ("lock", ~fork)):
            by_rule[rule][kind] = reply_bootstrap(series, reply, mask, weights)

    def at(stat: dict | None, j: int) -> dict | None:
        return None if stat is None else {k: v[j] for k, v in stat.items()}

    return [
        {
            "t_eval": t,
            **{
                rule: {
                    "n_fork": r["n_fork"],
                    "n_lock": r["n_lock"],
                    **{kind: {name: at(r[kind][name], j) for name in series} for kind in ("fork", "lock")},
                }
                for rule, r in by_rule.items()
            },
        }
        for j, t in enumerate(t_evals)
    ]


def summarize(pos: dict[str, dict[str, np.ndarray]], cfg: AnalyzeConfig) -> dict:
    """Curves and counts from the per-position statistics of both models (aligned position by position)."""
    base = pos["base"]
    fork = base["train_survivors"] >= FORK_MIN_SURVIVORS  # positions classified once, by the base model
    lock = ~fork
    ref = int(np.argmin([abs(t - 1.0) for t in cfg.t_evals]))
    tail = base["top20_tail"].astype(np.float64)
    edges = np.unique(np.quantile(tail, np.linspace(0, 1, min(TOP_MASS_BINS, len(tail)) + 1)))
    bins = np.searchsorted(
        edges[1:-1], tail, side="right"
    )  # bin b holds edges[b] <= tail < edges[b + 1]; the last is closed
    n_bins = max(len(edges) - 1, 1)

    def mean(x: np.ndarray, mask: np.ndarray | None = None) -> list[float] | float | None:
        x = x if mask is None else x[mask]
        if len(x) == 0:
            return None
        m = x.astype(np.float64).mean(0)
        return m.tolist() if np.ndim(m) else float(m)

    out: dict = {
        "units": {"entropy": "nats", "mass": "probability"},
        "n_replies": int(base["reply"].max()) + 1,
        "n_positions": len(fork),
        "ranks": list(range(1, base["cum_mass"].shape[1] + 1)),
        "t_evals": list(cfg.t_evals),
        "eval_truncation": {"top_k": cfg.eval_top_k, "top_p": cfg.eval_top_p},
        "train_truncation": {"temperature": cfg.t_train, "top_k": cfg.top_k, "top_p": cfg.top_p},
        "thresholds": {
            "fork": f">= {FORK_MIN_SURVIVORS} survivors at the training truncation",
            "lock": f"1 to {FORK_MIN_SURVIVORS - 1} survivors",
        },
        "cumulative_mass": {},
        "survivors": {},
        "entropy": {},
        "top20_bins": {
            "binned_by": "mass outside the base model's top 20 tokens (1 - top-20 mass; T=1, "
            "untruncated), equal-count bins",
            "tail_edges": edges.tolist(),
            "tail_median": [float(np.median(tail[bins == b])) for b in range(n_bins)],
            "count": np.bincount(bins, minlength=n_bins).tolist(),
            "t_eval": cfg.t_evals[ref],
            "entropy": {},
        },
        "counts": {},
        "transitions": {},
        "lock_fork": [],
    }
    for name in MODELS:
        p = pos[name]
        out["cumulative_mass"][name] = mean(p["cum_mass"])
        out["survivors"][name] = {
            "all": mean(p["eval_survivors"]),
            "fork": mean(p["eval_survivors"], fork),
            "lock": mean(p["eval_survivors"], lock),
        }
        out["entropy"][name] = {
            "all": mean(p["eval_entropy"]),
            "fork": mean(p["eval_entropy"], fork),
            "lock": mean(p["eval_entropy"], lock),
        }
        out["top20_bins"]["entropy"][name] = [mean(p["eval_entropy"][:, ref], bins == b) for b in range(n_bins)]
        own_fork = p["train_survivors"] >= FORK_MIN_SURVIVORS
        out["counts"][name] = {
            "fork": int(own_fork.sum()),
            "lock": int((~own_fork).sum()),
            "mean_train_survivors": mean(p["train_survivors"]),
            "mean_train_entropy": mean(p["train_entropy"]),
            "mean_top20_mass": 1 - mean(p["top20_tail"]),
        }
    ssd_fork = pos["ssd"]["train_survivors"] >= FORK_MIN_SURVIVORS
    for a, ma in (("fork", fork), ("lock", lock)):
        for b, mb in (("fork", ssd_fork), ("lock", ~ssd_fork)):
            out["transitions"][f"base {a} -> ssd {b}"] = int((ma & mb).sum())
    for j, t in enumerate(cfg.t_evals):
        row = {"t_eval": t, "n_lock": int(lock.sum()), "n_fork": int(fork.sum())}
        for name in MODELS:
            for kind, mask in (("lock", lock), ("fork", fork)):
                row[f"{name}_{kind}_entropy"] = mean(pos[name]["eval_entropy"][:, j], mask)
                row[f"{name}_{kind}_survivors"] = mean(pos[name]["eval_survivors"][:, j], mask)
        out["lock_fork"].append(row)
    out["fork_rules"] = FORK_RULES
    out["fair_rule"] = FAIR_RULE
    out["bootstrap"] = {"unit": "reply", "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "ci": CI_LEVEL}
    out["paired_entropy"] = paired_entropy(pos, cfg.t_evals)
    return out


# ---------------------------------------------------------------- figures


def plot(summary: dict, out_dir: Path) -> list[Path]:
    ranks, ts = summary["ranks"], summary["t_evals"]
    trunc = f"top-k {summary['eval_truncation']['top_k']}, top-p {summary['eval_truncation']['top_p']}"
    paths = []

    fig, ax = plots.figure()
    for name in MODELS:
        ax.plot(ranks, summary["cumulative_mass"][name], color=plots.COLORS[name], label=plots.LABELS[name])
    ax.set(
        xscale="log",
        xlabel="token rank",
        ylabel="mean cumulative probability mass",
        title="(a) cumulative mass vs rank (T=1, untruncated)",
    )
    ax.legend()
    paths.append(plots.save(fig, out_dir / "fig6a_cumulative_mass.png"))

    for key, ylabel, title, fname in (
        ("survivors", "mean surviving tokens", "(b) tokens surviving truncation", "fig6b_survivors.png"),
        ("entropy", "mean entropy after truncation (nats)", "(c) entropy after truncation", "fig6c_entropy.png"),
    ):
        fig, ax = plots.figure()
        for name in MODELS:
            for subset, style in (("all", "-"), ("fork", "--"), ("lock", ":")):
                if summary[key][name][subset] is not None:
                    ax.plot(
                        ts,
                        summary[key][name][subset],
                        style,
                        marker="o",
                        ms=3,
                        color=plots.COLORS[name],
                        label=f"{plots.LABELS[name]}, {subset} positions",
                    )
        ax.set(xlabel="T_eval", ylabel=ylabel, title=f"{title} ({trunc})")
        ax.legend(fontsize=7, ncol=2)
        paths.append(plots.save(fig, out_dir / fname))

    bins = summary["top20_bins"]
    fig, ax = plots.figure()
    for name in MODELS:
        ax.plot(
            bins["tail_median"],
            [np.nan if v is None else v for v in bins["entropy"][name]],
            marker="o",
            color=plots.COLORS[name],
            label=plots.LABELS[name],
        )
    ax.set(
        xscale="log",
        xlabel="1 - top-20 mass of the base model (bin median; equal-count bins)",
        ylabel="mean entropy after truncation (nats)",
        title=f"(d) entropy by top-20 mass (T_eval={bins['t_eval']:g}, {trunc})",
    )
    ax.legend()
    paths.append(plots.save(fig, out_dir / "fig6d_entropy_by_top20.png"))
    return paths


FORK_DIFFERENCE_HEADER = [
    f"forks (>= {FORK_MIN_SURVIVORS} survivors) of",
    "T_eval",
    "forks",
    "base",
    "SSD",
    "SSD - base [95% CI]",
]
FAIR_RULE_WHY = (
    "Forks chosen by one model are where that model happened to spread, so any other model looks sharper there "
    "(regression to the mean); the symmetric rule (a fork for both models) treats both alike, "
    "so it is the fair comparison."
)


def fork_difference_table(summary: dict) -> list[list[str]]:
    """Table lines (FORK_DIFFERENCE_HEADER) of the paired fork entropies under every fork classification, at
    the T_eval nearest 1 and the one nearest T_train: mean [95% CI over replies], nats."""
    ts = summary["t_evals"]
    refs = sorted(
        {min(range(len(ts)), key=lambda j: abs(ts[j] - t)) for t in (1.0, summary["train_truncation"]["temperature"])}
    )

    def fmt(stat: dict | None, ci: bool = False) -> str:
        if stat is None:
            return "-"
        return f"{stat['mean']:+.3f} [{stat['lo']:+.3f}, {stat['hi']:+.3f}]" if ci else f"{stat['mean']:.3f}"

    return [
        [
            summary["fork_rules"][rule],
            f"{ts[j]:g}",
            str(row["n_fork"]),
            fmt(row["fork"]["base"]),
            fmt(row["fork"]["ssd"]),
            fmt(row["fork"]["ssd_minus_base"], ci=True),
        ]
        for j in refs
        for rule, row in ((rule, summary["paired_entropy"][j][rule]) for rule in summary["fork_rules"])
    ]


def format_measure(value: float | None) -> str:
    """Three decimals, or "-" where the measure is undefined."""
    return "-" if value is None else f"{value:.3f}"


def print_summary(summary: dict) -> None:
    from rich.table import Table

    c = summary["counts"]
    console.print(
        f"{summary['n_positions']} positions from {summary['n_replies']} replies; fork-like (>= {FORK_MIN_SURVIVORS} "
        f"survivors at T_train={summary['train_truncation']['temperature']:g}): base {c['base']['fork']}, SSD "
        f"{c['ssd']['fork']}; lock-like: base {c['base']['lock']}, SSD {c['ssd']['lock']}"
    )
    table = Table(title="entropy after truncation (nats) at base-classified lock and fork positions")
    for col in ("T_eval", "base lock", "SSD lock", "base fork", "SSD fork"):
        table.add_column(col, justify="right")
    for r in summary["lock_fork"]:
        table.add_row(
            f"{r['t_eval']:g}",
            format_measure(r["base_lock_entropy"]),
            format_measure(r["ssd_lock_entropy"]),
            format_measure(r["base_fork_entropy"]),
            format_measure(r["ssd_fork_entropy"]),
        )
    console.print(table)
    table = Table(
        *FORK_DIFFERENCE_HEADER,
        title="entropy after truncation (nats) at forks, by three classifications; CIs over replies",
    )
    for line in fork_difference_table(summary):
        table.add_row(*line)
    console.print(table)
    console.print(FAIR_RULE_WHY)


# ---------------------------------------------------------------- entry point


def analyze(cfg: AnalyzeConfig) -> Path:
    from transformers import AutoTokenizer

    out = Path(cfg.output_dir)
    cfg = with_truncations(cfg)
    replies, files = load_replies(cfg.replies, cfg.limit, cfg.seed)  # before models are fetched: bad input fails fast
    paths = {"base": resolve_model(cfg.base_model), "ssd": resolve_model(cfg.ssd_model)}
    inputs = hash_inputs([paths["base"], paths["ssd"], *files])
    run = RunDir.open(out, "analyze", cfg, inputs, extra={"models": paths})

    tokenizer = AutoTokenizer.from_pretrained(paths["base"])
    if AutoTokenizer.from_pretrained(paths["ssd"]).get_vocab() != tokenizer.get_vocab():
        raise AnalyzeError(
            f"{paths['ssd']} and {paths['base']} have different vocabularies: positions cannot be compared"
        )
    sequences = tokenize(tokenizer, replies)
    positions = {}
    for name in MODELS:
        npz = out / f"positions_{name}.npz"
        if npz.is_file():
            positions[name] = _load_npz(npz)
            console.print(f"{name}: reusing {npz}", markup=False)
        else:
            model = load_model(paths[name], bf16_on_gpu=cfg.bf16_on_gpu)
            positions[name] = score(model, name, sequences, lambda logits, _: position_stats(logits, cfg), npz)
            del model
    if not np.array_equal(positions["base"]["token"], positions["ssd"]["token"]):
        raise AnalyzeError(
            f"{out}: positions_base.npz and positions_ssd.npz score different tokens; delete them and rerun"
        )

    summary = summarize(positions, cfg)
    summary["replies"] = [{"id": r["id"], "reply_tokens": len(s[1])} for r, s in zip(replies, sequences, strict=True)]
    summary["models"] = {
        name: {"model": getattr(cfg, f"{name}_model"), "path": paths[name], "sha256": inputs.get(paths[name])}
        for name in MODELS
    }
    figures = _write(summary, out)
    run.finish(figures=[p.name for p in figures], n_positions=summary["n_positions"])
    console.print(f"[bold]analysis:[/] {out}")
    return out


def resummarize(out_dir: str | Path) -> Path:
    """`ssd analyze summarize DIR`: rewrite a finished analysis's analysis.json and figures from its
    positions_*.npz and the config its manifest recorded, without the models, so an analysis made by an
    older version gets the current summary (the replies and the models' hashes are kept from its
    analysis.json; the manifest is left as it was)."""
    from .config import from_dict

    out = Path(out_dir)
    manifest = load_manifest(out)
    if manifest.get("stage") != "analyze" or not manifest.get("finished_at"):
        raise AnalyzeError(f"{out}: not a finished `ssd analyze` directory")
    cfg = from_dict(AnalyzeConfig, manifest["config"], str(out / "manifest.json"))
    positions = {name: _load_npz(out / f"positions_{name}.npz") for name in MODELS}
    old = json.loads((out / "analysis.json").read_text())
    _write({**summarize(positions, cfg), "replies": old["replies"], "models": old["models"]}, out)
    console.print(f"[bold]analysis:[/] {out}")
    return out


def _write(summary: dict, out: Path) -> list[Path]:
    """analysis.json and the figures; the tables on the console."""
    atomic_write_json(out / "analysis.json", summary)
    figures = plot(summary, out)
    print_summary(summary)
    return figures
