"""`ssd report RUN_DIR`: a self-contained HTML page (images inline as base64) and its Markdown twin
(images as files beside it), regenerated from the run directory alone.

Reads what `ssd run` leaves in RUN_DIR: `manifest.json` (the resolved RunConfig and each stage's
directory and wall time), the stage directories `samples/`, `train/`, `eval-base/`, `eval-ssd/`,
`analysis/` (symlinks to hashed directories; the manifest's paths are the fallback), and
`compare.json`. Every number shown is read from those files (the eval summaries' dev-chosen
temperatures and test scores, compare.json's paired difference); the report recomputes none of them.
A stage that is missing or unfinished is shown as "not run", so a partial run still gets a report.

Writes RUN_DIR/report/: report.html, report.md and the PNGs the Markdown links to. Returns report.html.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console

from . import plots
from .config import OBJECTIVES
from .document import (
    Code,
    Details,
    Heading,
    Image,
    Para,
    Row,
    Table,
    percent,
    percent_ci,
    remove_unshown_images,
    render_html,
    render_markdown,
)
from .hub import write_model_card
from .manifest import MANIFEST, atomic_write_bytes, atomic_write_text, finished, load_manifest, read_json, read_jsonl
from .results import EvalSummary, Score, load_summary, primary_endpoints, results_path
from .stages import LISTED

console = Console(stderr=True, highlight=False)

SMOKE_TEST_PROBLEMS = 100  # below either size the report calls its numbers a smoke-level signal
SMOKE_TRAIN_SAMPLES = 200
FIG6 = (
    ("fig6a_cumulative_mass.png", "(a) cumulative probability mass against token rank"),
    ("fig6b_survivors.png", "(b) tokens surviving truncation against T_eval"),
    ("fig6c_entropy.png", "(c) entropy after truncation against T_eval"),
    ("fig6d_entropy_by_top20.png", "(d) entropy after truncation, binned by top-20 mass"),
)
EXAMPLE_MAX_LINES = 80
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"  # manifest.py's timestamps


# ---------------------------------------------------------------- reading the run directory


@dataclass
class Run:
    root: Path
    manifest: dict  # RUN_DIR/manifest.json; {} when absent
    dirs: dict[str, Path]  # stages whose directory holds a finished manifest

    @classmethod
    def load(cls, root: str | Path) -> Run:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root} is not a directory: pass an `ssd run` output directory")
        manifest = read_json(root / "manifest.json") or {}
        dirs = {}
        for name in LISTED:
            recorded = Path(manifest.get("stages", {}).get(name, {}).get("dir", name))
            found = next((d for d in (root / name, recorded, root / recorded.name) if finished(d)), None)
            if found:
                dirs[name] = found
        if not manifest and not dirs:
            raise FileNotFoundError(
                f"{root} holds no `ssd run` output (no manifest.json, no finished stage directory): "
                "pass the run's output_dir"
            )
        return cls(root, manifest, dirs)

    def stage_manifest(self, name: str) -> dict | None:
        return load_manifest(self.dirs[name]) if name in self.dirs else None

    def summary(self, name: str) -> EvalSummary | None:
        """An eval stage's summary."""
        return load_summary(self.dirs[name]) if name in self.dirs else None


def not_run(what: str) -> Para:
    return Para(f"Not run: {what}.", "muted")


# ---------------------------------------------------------------- sections


def section_overview(run: Run) -> list:
    cfg = run.manifest.get("config", {})
    blocks = [
        Para(
            f"Run directory: {run.root.resolve()}. Report generated {time.strftime('%Y-%m-%d %H:%M:%S %z')} from the "
            "files in it.",
            "muted",
        )
    ]
    if cfg.get("sample") and cfg.get("train") and cfg.get("eval"):
        sc, tc, ec = cfg["sample"], cfg["train"], cfg["eval"]
        blocks.append(
            Para(
                f"Setup: {cfg['model']} answered {sc['limit'] or 'all'} prompts of {sc['prompts']} {sc['n']}x at "
                f"T_train={sc['temperature']:g} (top-k {sc['top_k']}, top-p {sc['top_p']}); "
                f"{'LoRA' if tc['use_lora'] else 'full'} {OBJECTIVES[tc.get('objective', 'hard')]}; both models "
                f"evaluated on {ec['benchmark']} ({ec['limit'] or 'all'} problems, n={ec['n']} samples each, "
                f"top-k {ec['top_k']}, top-p {ec['top_p']})."
            )
        )
    if cfg.get("notes"):
        blocks.append(Para(f"Preset notes: {cfg['notes']}"))
    base = run.summary("eval-base")
    samples = run.stage_manifest("samples")
    n_test = len(base.test_ids) if base else None
    n_train = samples["counts"]["kept"] if samples and "counts" in samples else None
    small = []
    if n_test is not None and n_test < SMOKE_TEST_PROBLEMS:
        small.append(f"{n_test} held-out test problems (< {SMOKE_TEST_PROBLEMS})")
    if n_train is not None and n_train < SMOKE_TRAIN_SAMPLES:
        small.append(f"{n_train} training samples (< {SMOKE_TRAIN_SAMPLES})")
    if small:
        blocks.append(
            Para(
                "This is a small run: " + " and ".join(small) + ". Its numbers are a smoke-level signal that the "
                "pipeline works, not evidence for or against SSD; differences within the confidence intervals mean "
                "nothing.",
                "warn",
            )
        )
    missing = [s for s in LISTED if s not in run.dirs]
    if missing:
        blocks.append(
            Para("Stages not run or unfinished: " + ", ".join(missing) + '. Their sections say "not run".', "warn")
        )
    return blocks


def section_headline(run: Run) -> list:
    blocks: list = [Heading("Headline: base vs SSD, each at its best T_eval")]
    base, ssd, compare = run.summary("eval-base"), run.summary("eval-ssd"), read_json(run.root / "compare.json")
    if not base or not ssd:
        return blocks + [not_run("both evaluations are needed (eval-base, eval-ssd)")]
    if base.skipped or ssd.skipped:
        return blocks + [Para(f"No best-temperature selection: {base.skipped or ssd.skipped}", "warn")]
    label = "" if base.label == "all tests" else f" ({base.label})"
    blocks.append(
        Para(
            f"{base.benchmark}{label}: each model's T_eval is chosen on the dev split ({len(base.dev_ids)} problems) "
            f"and scored on the held-out test split ({len(base.test_ids)} problems). pass@k in %, 95% bootstrap CI "
            f"over problems. Decoding: top-k {base.decoding.top_k}, top-p {base.decoding.top_p}, max "
            f"{base.decoding.max_tokens} tokens."
        )
    )
    rows = []
    for k in base.selection:
        b, s = base.chosen(k), ssd.chosen(k)
        if not b or not s:
            continue
        metric, diff = f"pass@{k}", "-"
        if compare and compare.get("metric") == metric and "test" in compare:
            c = compare["test"]
            diff = (
                f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}], p={c['p_value']:.3g}"
            )
        rows.append(
            [
                f"{metric} (test)",
                f"{percent(b.test_score)} [{percent(b.test_ci_lo)}, {percent(b.test_ci_hi)}] at T={b.best_T:g}",
                f"{percent(s.test_score)} [{percent(s.test_ci_lo)}, {percent(s.test_ci_hi)}] at T={s.best_T:g}",
                diff,
            ]
        )
    blocks.append(Table(["metric", "base", "SSD", "SSD - base (paired, test)"], rows))
    if compare and "test" in compare:
        c = compare["test"]
        blocks.append(
            Para(
                f"Paired comparison on the {c['n_problems']} test problems ({compare['metric']} only, from "
                f"compare.json): SSD better on {c['wins']}, worse on {c['losses']}, tied on {c['ties']}; sign-flip p "
                f"= {c['p_value']:.3g}"
                + (f", Wilcoxon p = {c['wilcoxon_p']:.3g}." if c.get("wilcoxon_p") is not None else ".")
            )
        )
    else:
        blocks.append(not_run("the paired comparison (compare.json)"))
    return blocks + _base_settings(compare)


BASE_SETTINGS = (
    ("recommended", "its recommended decoding (paper Table 4)"),
    ("dev_chosen", "the T_eval chosen on dev (the fair baseline above)"),
    ("optimistic", "the T_eval best on all problems (optimistic)"),
)


def _base_settings(compare: dict | None) -> list:
    """The base model three ways, side by side, from compare.json's base_settings."""
    settings = (compare or {}).get("base_settings")
    if not settings:
        return []

    def score(x: dict | None) -> Score | None:  # compare.json holds a summary's scores as they are in summary.json
        return x and Score(**x)

    rows = [
        [
            label,
            f"{s['T']:g}",
            f"{s['top_k'] or 'none'} / {s['top_p']:g}",
            percent_ci(score(s["test"])),
            percent_ci(score(s["all"])),
        ]
        for key, label in BASE_SETTINGS
        if (s := settings.get(key))
    ]
    return [
        Para(
            f"The base model three ways ({settings['metric']} in %, 95% CI): the paper compares SSD with the base "
            "model at its recommended decoding; the dev-chosen T_eval is this report's fair baseline; the best T_eval "
            "on all problems is chosen on the problems it is scored on, so it flatters the base model."
        ),
        Table(["base model at", "T", "top-k / top-p", "test", "all problems"], rows),
    ]


def plot_sweep(base: EvalSummary | None, ssd: EvalSummary | None, path: Path) -> Path:
    ks = (base or ssd).ks
    split = (base or ssd).swept_split("test")
    fig, axes = plots.plt.subplots(1, len(ks), figsize=(5.2 * len(ks), 3.8), squeeze=False)
    for ax, k in zip(axes[0], ks, strict=True):
        for name, summary in (("base", base), ("ssd", ssd)):
            if not summary:
                continue
            entries = sorted((e for e in summary.entries if getattr(e.pass_at[k], split)), key=lambda e: e.temperature)
            T = np.array([e.temperature for e in entries])
            s = [getattr(e.pass_at[k], split) for e in entries]
            y = np.array([100 * x.mean for x in s])
            err = np.array([[100 * (x.mean - x.ci_lo) for x in s], [100 * (x.ci_hi - x.mean) for x in s]])
            ax.errorbar(
                T, y, yerr=err, marker="o", ms=4, capsize=3, color=plots.COLORS[name], label=plots.LABELS[name]
            )
            best = summary.chosen(k)
            if best and best.best_T in T:
                chosen = 100 * getattr(summary.entry(best.best_T).pass_at[k], split).mean
                ax.plot([best.best_T], [chosen], "o", ms=11, mfc="none", mec=plots.COLORS[name])
        ax.set(xlabel="T_eval", ylabel=f"pass@{k} on {split} (%)", title=f"pass@{k} vs T_eval (ring: T chosen on dev)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    return plots.save(fig, path)


def section_sweep(run: Run, out: Path) -> list:
    blocks: list = [Heading("pass@k against T_eval")]
    base, ssd = run.summary("eval-base"), run.summary("eval-ssd")
    if not base and not ssd:
        return blocks + [not_run("no evaluation")]
    split = (base or ssd).swept_split("test")
    blocks.append(
        Image(
            plot_sweep(base, ssd, out / "pass_at_k_vs_T.png"),
            f"pass@k on the {split} split against T_eval, 95% CI bars",
        )
    )
    ks = (base or ssd).ks
    temps = sorted({e.temperature for s in (base, ssd) if s for e in s.entries})
    header = (
        ["T_eval"]
        + [f"{m} pass@{k} ({split})" for k in ks for m in ("base", "SSD")]
        + ["base truncated", "SSD truncated"]
    )
    rows = []
    for T in temps:
        cells = {
            m: next((e for e in s.entries if e.temperature == T), None) if s else None
            for m, s in (("base", base), ("SSD", ssd))
        }
        row = [f"{T:g}" + (" (greedy)" if T == 0 else "")]
        row += [
            percent_ci(getattr(cells[m].pass_at[k], split)) if cells[m] else "-" for k in ks for m in ("base", "SSD")
        ]
        row += [f"{100 * cells[m].truncated:.1f}%" if cells[m] else "-" for m in ("base", "SSD")]
        rows.append(row)
    blocks.append(Table(header, rows))
    return blocks


def section_difficulty(run: Run) -> list:
    blocks: list = [Heading("By difficulty")]
    base, ssd = run.summary("eval-base"), run.summary("eval-ssd")
    chosen = {m: s.chosen(base.ks[0]) for m, s in (("base", base), ("SSD", ssd))} if base and ssd else {}
    if not chosen or not all(chosen.values()):
        return blocks + [not_run("both evaluations with a best-temperature selection are needed")]
    ks = base.ks
    entries = {m: s.entry(chosen[m].best_T) for m, s in (("base", base), ("SSD", ssd))}
    order = {"easy": 0, "medium": 1, "hard": 2}
    groups = sorted(
        set(entries["base"].pass_at[ks[0]].by_difficulty) | set(entries["SSD"].pass_at[ks[0]].by_difficulty),
        key=lambda g: (order.get(g.lower(), 3), g),
    )
    if not groups:
        return blocks + [Para(f"{base.benchmark} has no difficulty labels.", "muted")]
    blocks.append(
        Para(
            "pass@k in % [95% CI] over all problems of each difficulty (dev and test), each model at its dev-chosen T "
            f"for pass@{ks[0]} (base T={entries['base'].temperature:g}, SSD T={entries['SSD'].temperature:g})."
        )
    )
    rows = []
    for g in groups:
        first = entries["base"].pass_at[ks[0]].by_difficulty.get(g)
        rows.append(
            [g, str(first.n_problems if first else "-")]
            + [percent_ci(entries[m].pass_at[k].by_difficulty.get(g)) for k in ks for m in ("base", "SSD")]
        )
    blocks.append(Table(["difficulty", "problems"] + [f"{m} pass@{k}" for k in ks for m in ("base", "SSD")], rows))
    return blocks


def pass_at_k_blocks(summaries: dict[str, EvalSummary | None]) -> list:
    """pass@k for every k the samples allow, each model at each sampled temperature, on all problems and by
    difficulty (summary.json's numbers: unbiased estimator per problem, bootstrap CI over problems)."""
    columns = [
        (f"{label} T={e.temperature:g}", e)
        for label, s in summaries.items()
        if s
        for e in s.entries
        if not e.greedy and len(e.ks) > 1
    ]
    if not columns:
        return [Para("No temperature with several samples per problem: pass@k for k > 1 needs them.", "muted")]
    ks = sorted({k for _, e in columns for k in e.ks})

    def cell(e, k, pick) -> str:
        return percent_ci(pick(e.pass_at[k])) if k in e.pass_at else "-"

    blocks = [
        Para(
            "pass@k in % [95% bootstrap CI over problems] on all problems (the unbiased estimator from each problem's "
            "n samples; no temperature is chosen here). Greedy decoding has pass@k = pass@1."
        ),
        Table(
            ["k"] + [c for c, _ in columns],
            [[str(k)] + [cell(e, k, lambda x: x.all) for _, e in columns] for k in ks],
        ),
    ]
    order = {"easy": 0, "medium": 1, "hard": 2}
    groups = sorted(
        {g for _, e in columns for g in e.pass_at[1].by_difficulty},
        key=lambda g: (order.get(g.lower(), 3), g),
    )
    if groups:
        blocks.append(Para("By difficulty (problems of each difficulty, pass@k in % [95% CI]):"))
        blocks.append(
            Table(
                ["difficulty", "k"] + [c for c, _ in columns],
                [
                    [g, str(k)] + [cell(e, k, lambda x, g=g: x.by_difficulty.get(g)) for _, e in columns]
                    for g in groups
                    for k in ks
                ],
            )
        )
    return blocks


def endpoint_blocks(endpoints: list[dict]) -> list:
    """The pre-registered primary endpoints with their paired CIs and Holm-adjusted p-values."""
    rows = []
    for e in endpoints:
        (b, tb), (a, ta), c = e["b"], e["a"], e["comparison"]
        if c is None:
            rows.append(
                [
                    e["name"],
                    f"{e['metric']}: {b}@{tb:g} vs {a}@{ta:g}",
                    "-",
                    "-",
                    "not run",
                    "-",
                    "-",
                    "-",
                ]
            )
            continue
        rows.append(
            [
                e["name"],
                f"{e['metric']}: {b}@{tb:g} vs {a}@{ta:g}",
                str(c["n_problems"]),
                f"{percent(c['mean_b'])} vs {percent(c['mean_a'])}",
                f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}]",
                f"{c['wins']} / {c['losses']} / {c['ties']}",
                f"{c['p_value']:.3g}",
                f"{e['holm_p']:.3g}",
            ]
        )
    return [
        Para(
            "Declared before the evaluation (config report.primary). Each is a paired comparison on the problems both "
            "evals decoded at those temperatures: difference in points, 95% bootstrap CI over problems (resampled "
            f"jointly), two-sided sign-flip p, and Holm's adjustment over the {len(endpoints)} endpoints (an endpoint "
            "not run yet counts as p = 1 in the others' adjustment). An endpoint is significant at 5% when its Holm p "
            "< 0.05."
        ),
        Table(
            [
                "endpoint",
                "comparison",
                "problems",
                "first vs second (%)",
                "difference [95% CI]",
                "better / worse / tied",
                "p",
                "Holm p",
            ],
            rows,
        ),
    ]


def section_pass_at_k(run: Run) -> list:
    blocks: list = [Heading("pass@k for every k")]
    summaries = {"base": run.summary("eval-base"), "SSD": run.summary("eval-ssd")}
    if not any(summaries.values()):
        return blocks + [not_run("no evaluation")]
    return blocks + pass_at_k_blocks(summaries)


def section_primary(run: Run) -> list:
    specs = run.manifest.get("config", {}).get("report", {}).get("primary")
    if not specs:
        return []
    evals = {name: run.dirs.get(f"eval-{name}", run.root / f"eval-{name}") for name in ("base", "ssd")}
    declared = [(f"{run.root / 'manifest.json'}: report.primary[{i}]", spec, evals) for i, spec in enumerate(specs)]
    return [Heading("Primary endpoints (pre-registered)")] + endpoint_blocks(primary_endpoints(declared))


def plot_lengths(samples: dict | None, replies: dict[str, list[int]], path: Path) -> Path:
    panels = (1 if samples else 0) + (1 if replies else 0)
    fig, axes = plots.plt.subplots(1, panels, figsize=(5.5 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if samples:
        ax = axes.pop(0)
        hist = samples["length_histogram"]
        ax.bar(range(len(hist)), [b["samples"] for b in hist], color=plots.COLORS["base"])
        ax.set_xticks(
            range(len(hist)),
            [f"{b['from']}-{b['to']}" if b["to"] > b["from"] else str(b["from"]) for b in hist],
            rotation=45,
            ha="right",
            fontsize=7,
        )
        ax.set(xlabel="reply tokens", ylabel="samples", title="training samples (base model at T_train)")
    if replies:
        ax = axes.pop(0)
        top = max(max(v, default=0) for v in replies.values()) or 1
        bins = np.linspace(0, top, 21)
        for name, lengths in replies.items():
            ax.hist(lengths, bins=bins, histtype="step", lw=1.8, color=plots.COLORS[name], label=plots.LABELS[name])
        ax.set(xlabel="reply tokens", ylabel="replies", title="eval replies at each model's chosen T")
        ax.legend()
    return plots.save(fig, path)


def _chosen_records(run: Run, name: str) -> tuple[float, list[dict]] | None:
    """Results at the model's dev-chosen temperature (for pass@1, else the first k)."""
    s = run.summary(name)
    best = s and s.chosen(s.ks[0])
    if not best:
        return None
    return best.best_T, read_jsonl(results_path(run.dirs[name], best.best_T))


def section_lengths(run: Run, out: Path) -> list:
    blocks: list = [Heading("Sample lengths")]
    samples = run.stage_manifest("samples")
    chosen = {name: _chosen_records(run, f"eval-{name}") for name in ("base", "ssd")}
    replies = {name: [r["reply_tokens"] for r in c[1]] for name, c in chosen.items() if c}
    if not samples and not replies:
        return blocks + [not_run("neither sampling nor evaluation")]
    blocks.append(Image(plot_lengths(samples, replies, out / "lengths.png"), "reply-length histograms"))
    if samples:
        c = samples["counts"]
        keys = [
            k
            for k in (
                "samples",
                "kept",
                "dropped",
                "truncated",
                "looping",
                "empty",
                "stub",
                "shortest",
                "prompt_too_long",
            )
            if k in c
        ]
        blocks.append(
            Para(
                "Training samples: dropped = empty, one-line stub, shortest or prompt too long; truncated (hit "
                "max_tokens) and looping samples are flagged but kept, as in the paper."
            )
        )
        blocks.append(Table([k.replace("_", " ") for k in keys], [[str(c[k]) for k in keys]]))
    else:
        blocks.append(not_run("sampling"))
    if replies:
        rows = []
        for name, (T, records) in ((n, c) for n, c in chosen.items() if c):
            lengths = sorted(replies[name])
            rows.append(
                [
                    plots.LABELS[name],
                    f"{T:g}",
                    str(len(records)),
                    str(int(np.median(lengths))),
                    str(lengths[-1]),
                    str(sum(r["finish_reason"] == "length" for r in records)),
                    str(sum(r["status"] == "extraction_failed" for r in records)),
                ]
            )
        blocks.append(
            Table(
                [
                    "eval replies",
                    "T",
                    "replies",
                    "median tokens",
                    "max tokens",
                    "truncated (max_tokens)",
                    "no code extracted",
                ],
                rows,
            )
        )
    return blocks


def training_rate(train_dir: Path) -> dict | None:
    """A training stage's steps, tokens/s and MFU from its own files, finished or not: loss.csv's timed steps
    (a step's tokens are its rise in the cumulative num_tokens, all processes) and the manifest's
    `compute` (train.compute_budget, measured at the latest sitting). None before any step was timed."""
    path = train_dir / "loss.csv"
    if not path.is_file():
        return None
    with path.open() as f:
        rows = list(csv.DictReader(f))
    timed, previous = [], 0.0
    for row in rows:
        tokens = float(row["num_tokens"] or 0)
        if row.get("seconds"):
            timed.append((tokens - previous, float(row["seconds"])))
        previous = tokens
    if not timed:
        return None
    seconds = sum(t for _, t in timed)
    manifest = read_json(train_dir / MANIFEST) or {}
    plan = manifest.get("plan", {})
    rate = {
        "steps": len(rows),
        "planned_steps": plan.get("optimizer_steps"),
        "timed_steps": len(timed),
        "seconds_per_step": seconds / len(timed),
        "tokens_per_second": sum(n for n, _ in timed) / seconds,
    }
    compute = manifest.get("compute")
    if compute:
        peak = compute["matmul_peak_flops"] * plan.get("processes", 1)
        rate["mfu"] = compute["flops_per_token"] * rate["tokens_per_second"] / peak
        rate["compute"] = compute
    return rate


def rate_text(rate: dict) -> str:
    text = (
        f"{rate['tokens_per_second']:.1f} tokens/s (prompt and reply tokens) over {rate['timed_steps']} timed steps "
        f"of {rate['steps']}, {rate['seconds_per_step'] / 60:.1f} min a step"
    )
    if "mfu" not in rate:
        return text + "."
    c = rate["compute"]
    return text + (
        f"; MFU {100 * rate['mfu']:.1f}% of the {c['peak_dtype']} matmul peak measured as the latest sitting started "
        f"({c['matmul_peak_flops'] / 1e12:.2f} TFLOP/s per device, {c['device']}; jobs beside it lower both), "
        f"counting {c['flops_per_token'] / 1e9:.2f} GFLOPs per token (6 per multiplying weight; attention left out)."
    )


def section_training(run: Run, out: Path) -> list:
    blocks: list = [Heading("Training")]
    m = run.stage_manifest("train")
    if not m:
        return blocks + [not_run("training")]
    cfg = m.get("config", {})
    loss = f"{m['final_loss']:.4f}" if isinstance(m.get("final_loss"), float) else "-"
    blocks.append(
        Para(
            f"{'LoRA' if cfg.get('use_lora') else 'Full fine-tune'} of {cfg.get('model')}, "
            f"{OBJECTIVES[cfg.get('objective', 'hard')]}: lr "
            f"{cfg.get('learning_rate')} -> {cfg.get('min_learning_rate')} (cosine), global batch "
            f"{cfg.get('global_batch_size')}, epochs {cfg.get('num_train_epochs')}, max_steps {cfg.get('max_steps')}. "
            f"Final loss: {loss}."
        )
    )
    rate = training_rate(run.dirs["train"])
    if rate:
        blocks.append(Para(f"Training rate: {rate_text(rate)}"))
    png = run.dirs["train"] / "loss.png"
    if png.is_file():
        atomic_write_bytes(out / "loss.png", png.read_bytes())
        blocks.append(Image(out / "loss.png", "training loss"))
    return blocks


def section_fit(train_dir: Path | None, out: Path) -> list:
    """The distillation fit's rows (`ssd analyze fit`, in TRAIN_DIR/fit), when it was run, finished training or not."""
    fit_dir = train_dir / "fit" if train_dir else None
    if fit_dir is None or not (fit_dir / "fit.jsonl").is_file():
        return []
    from .fit import FIT_HEADER, fit_table

    rows = read_jsonl(fit_dir / "fit.jsonl")
    blocks: list = [
        Heading("Distillation fit: has the model learned the SSD target?"),
        Para(
            "Per-token means against the target q (the base model at the training temperature and truncation), on "
            "held-out samples (never trained on) and training samples, at forks (>= 3 tokens in q's support S) and "
            "locks; step 0 is the base model. KL(q||p) = tail term -log p(S) + within-support KL; SSD's target is "
            "reached when both fall and H(p|S) meets H(q). A fit on training samples only is memorisation."
        ),
    ]
    if (fit_dir / "fit.png").is_file():
        atomic_write_bytes(out / "fit.png", (fit_dir / "fit.png").read_bytes())
        blocks.append(
            Image(
                out / "fit.png",
                "tail term, within-support KL and entropy within the support against the target, over training steps",
            )
        )
    return blocks + [Table(FIT_HEADER, fit_table(rows, classes=("fork", "lock")))] + fit_changes(rows)


def fit_changes(rows: list[dict]) -> list:
    """Each fitted step against the base model (step 0), relative: what the stop rule of a run reads."""
    base = next((r for r in rows if r["step"] == 0), None)
    later = [r for r in rows if r["step"] > 0]
    if not base or not later:
        return []

    def change(row: dict, cell: str, key: str) -> str:
        before, now = base[cell][key], row[cell][key]
        return "-" if not before or now is None else f"{100 * (now - before) / before:+.0f}%"

    columns = [
        ("held-out tail, all", "heldout_all", "tail"),
        ("held-out tail, forks", "heldout_fork", "tail"),
        ("held-out within-S KL, forks", "heldout_fork", "within_kl"),
        ("held-out H(p|S), forks", "heldout_fork", "entropy"),
        ("train tail, all", "train_all", "tail"),
        ("train within-S KL, forks", "train_fork", "within_kl"),
    ]
    return [
        Para(
            "Change from the base model (step 0), per-token means; H(q) at held-out forks is "
            f"{base['heldout_fork']['target_entropy']:.3f} nats, the base model's H(p|S) "
            f"{base['heldout_fork']['entropy']:.3f}. Held-out changes that trail the training ones are memorisation."
        ),
        Table(
            ["step"] + [name for name, *_ in columns],
            [[str(r["step"])] + [change(r, *c[1:]) for c in columns] for r in later],
        ),
    ]


def section_fig6(run: Run, out: Path) -> list:
    blocks: list = [Heading("How SSD reshapes token distributions (paper Figure 6)")]
    if "analysis" not in run.dirs:
        return blocks + [not_run("ssd analyze")]
    d = run.dirs["analysis"]
    a = read_json(d / "analysis.json")
    tr = a["train_truncation"]
    blocks.append(
        Para(
            f"Both models score the same {a['n_replies']} held-out replies ({a['n_positions']} reply tokens) by "
            f"teacher forcing. Entropy in nats. Fork-like: {a['thresholds']['fork']} (T={tr['temperature']:g}, top-k "
            f"{tr['top_k']}, top-p {tr['top_p']}); lock-like: {a['thresholds']['lock']}. Curves split by fork/lock "
            "classify positions by the base model."
        )
    )
    figures = []
    for fname, caption in FIG6:
        if (d / fname).is_file():
            atomic_write_bytes(out / fname, (d / fname).read_bytes())
            figures.append(Image(out / fname, caption))
    blocks += [Row(figures[i : i + 2]) for i in range(0, len(figures), 2)]
    c, t = a["counts"], a["transitions"]
    blocks.append(
        Para(
            "Fork-like and lock-like positions under each model's own distribution; rows: the base model, columns: "
            "SSD, at the same positions."
        )
    )
    blocks.append(
        Table(
            ["", "SSD fork-like", "SSD lock-like", "base total"],
            [
                [f"base {x}-like", str(t[f"base {x} -> ssd fork"]), str(t[f"base {x} -> ssd lock"]), str(c["base"][x])]
                for x in ("fork", "lock")
            ]
            + [["SSD total", str(c["ssd"]["fork"]), str(c["ssd"]["lock"]), str(a["n_positions"])]],
        )
    )
    blocks.append(
        Para(
            f"Mean entropy after truncation (nats; top-k {a['eval_truncation']['top_k']}, top-p "
            f"{a['eval_truncation']['top_p']}) at the {a['lock_fork'][0]['n_lock']} lock-like and "
            f"{a['lock_fork'][0]['n_fork']} fork-like positions of the base model:"
        )
    )

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    blocks.append(
        Table(
            ["T_eval", "base lock", "SSD lock", "base fork", "SSD fork"],
            [
                [
                    f"{r['t_eval']:g}",
                    fmt(r["base_lock_entropy"]),
                    fmt(r["ssd_lock_entropy"]),
                    fmt(r["base_fork_entropy"]),
                    fmt(r["ssd_fork_entropy"]),
                ]
                for r in a["lock_fork"]
            ],
        )
    )
    if "paired_entropy" in a:  # analyses before the three classifications have only the base model's
        from .analyze import FAIR_RULE_WHY, FORK_DIFFERENCE_HEADER, fork_difference_table

        b = a["bootstrap"]
        blocks.append(
            Para(
                "The same at forks classified three ways, with the paired difference (position by position) and its "
                f"{b['ci']:.0%} bootstrap CI over replies ({b['resamples']} resamples of the {a['n_replies']} "
                f"replies). {FAIR_RULE_WHY}"
            )
        )
        blocks.append(Table(FORK_DIFFERENCE_HEADER, fork_difference_table(a)))
    return blocks


def _trim(text: str) -> str:
    lines = text.splitlines()
    return (
        text
        if len(lines) <= EXAMPLE_MAX_LINES
        else "\n".join(lines[:EXAMPLE_MAX_LINES] + [f"... ({len(lines) - EXAMPLE_MAX_LINES} more lines)"])
    )


def section_examples(run: Run) -> list:
    blocks: list = [Heading("Example replies on the same problem")]
    chosen = {name: _chosen_records(run, f"eval-{name}") for name in ("base", "ssd")}
    if not all(chosen.values()):
        return blocks + [not_run("both evaluations are needed")]
    first = {name: {r["problem_id"]: r for r in c[1] if r["sample_index"] == 0} for name, c in chosen.items()}
    test = run.summary("eval-base").test_ids
    picks = []
    for wanted, why in (
        ((False, True), "SSD passes, base fails"),
        ((True, False), "base passes, SSD fails"),
        (None, "the first test problem"),
    ):
        pid = next(
            (
                p
                for p in test
                if p in first["base"]
                and p in first["ssd"]
                and (wanted is None or (first["base"][p]["passed"], first["ssd"][p]["passed"]) == wanted)
            ),
            None,
        )
        if pid is not None and pid not in [p for p, _ in picks]:
            picks.append((pid, why))
        if len(picks) == 2:
            break
    for pid, why in picks:
        blocks.append(Heading(f"{pid} ({why})", 3))
        blocks.append(
            Row(
                [
                    Code(
                        _trim(first[name][pid]["reply"]),
                        f"{plots.LABELS[name]} at T={chosen[name][0]:g}, sample 0: {first[name][pid]['status']} "
                        f"({first[name][pid]['reply_tokens']} tokens, finish: {first[name][pid]['finish_reason']})",
                    )
                    for name in ("base", "ssd")
                ]
            )
        )
    return blocks


def section_times(run: Run) -> list:
    """Wall times as `ssd run` measured them; for a stage it did not record (an interrupted or a
    hand-run stage), the span from its manifest's first start to its finish."""
    blocks: list = [Heading("Stage wall times")]
    recorded = run.manifest.get("stages", {})
    rows = []
    for name in LISTED:
        s, m = recorded.get(name, {}), run.stage_manifest(name)
        if "seconds" in s:
            rows.append([name, f"{s['seconds']:.1f}", "cached (time of this run)" if s.get("skipped") else "done"])
        elif m and m.get("started_at") and m.get("finished_at"):
            span = datetime.strptime(m["finished_at"], TIME_FORMAT) - datetime.strptime(m["started_at"], TIME_FORMAT)
            rows.append([name, f"{span.total_seconds():.1f}", "first start to finish, from its manifest"])
        else:
            rows.append([name, "-", "not run"])
    if run.manifest.get("total_seconds") is not None:
        rows.append(["total", f"{run.manifest['total_seconds']:.1f}", ""])
    return blocks + [Table(["stage", "seconds", "source"], rows)]


def section_config(run: Run) -> list:
    blocks: list = [Heading("Configuration and manifests")]
    if run.manifest.get("config"):
        blocks.append(
            Details("run config (resolved)", [Code(yaml.safe_dump(run.manifest["config"], sort_keys=False))])
        )
    if run.manifest:
        blocks.append(Details("RUN_DIR/manifest.json", [Code(json.dumps(run.manifest, indent=2))]))
    for name in LISTED:
        m = run.stage_manifest(name)
        blocks.append(Details(f"{name}/manifest.json", [Code(json.dumps(m, indent=2))]) if m else not_run(name))
    return blocks


# ---------------------------------------------------------------- entry point


def report(run_dir: Path) -> Path:
    run = Run.load(run_dir)
    out = run.root / "report"
    out.mkdir(exist_ok=True)
    base = run.summary("eval-base")
    model = run.manifest.get("config", {}).get("model") or (base.model if base else "")
    title = f"SSD report: {model}" if model else "SSD report"
    sections = {
        "Overview": lambda: section_overview(run),
        "Primary endpoints": lambda: section_primary(run),
        "Headline": lambda: section_headline(run),
        "Sweep": lambda: section_sweep(run, out),
        "Difficulty": lambda: section_difficulty(run),
        "pass@k": lambda: section_pass_at_k(run),
        "Lengths": lambda: section_lengths(run, out),
        "Training": lambda: section_training(run, out),
        "Distillation fit": lambda: section_fit(run.dirs.get("train"), out),
        "Figure 6": lambda: section_fig6(run, out),
        "Examples": lambda: section_examples(run),
        "Times": lambda: section_times(run),
        "Configuration": lambda: section_config(run),
    }
    blocks = []
    for name, build in sections.items():
        try:
            blocks += build()
        except (
            KeyError,
            TypeError,
            AttributeError,  # a field the summary leaves None (replies evals have no decoding)
            ValueError,
            OSError,
            StopIteration,
        ) as e:  # a file of an unexpected shape spoils one section, not the report
            console.print(f"[yellow]warning:[/] report section {name}: {type(e).__name__}: {e}")
            blocks += [Heading(name), Para(f"Could not be rendered: {type(e).__name__}: {e}", "warn")]
    if (
        "train" in run.dirs and run.summary("eval-base") and run.summary("eval-ssd")
    ):  # the trained model's card gets the results
        try:
            card = write_model_card(
                run.dirs["train"],
                {
                    "base": run.summary("eval-base"),
                    "ssd": run.summary("eval-ssd"),
                    "compare": read_json(run.root / "compare.json"),
                },
            )
            console.print(f"model card: {card}")
        except (
            KeyError,
            TypeError,
            AttributeError,
            ValueError,
            OSError,
        ) as e:  # as a section: a stage file of an unexpected shape spoils the card, not the report
            console.print(f"[yellow]warning:[/] model card not updated: {type(e).__name__}: {e}")
    atomic_write_text(out / "report.md", render_markdown(blocks, title))
    atomic_write_text(out / "report.html", render_html(blocks, title))
    remove_unshown_images(out, blocks)
    console.print(f"report: {out / 'report.html'} (and report.md)")
    return out / "report.html"
