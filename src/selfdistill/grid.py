"""The grid of `ssd sweep` (pipeline.sweep): the paper's T_train x T_eval grid (section 3.4), read from its evals.

One SSD model per T_train (sampled at T_train with the preset's truncation, then trained), each
evaluated at every T_eval with the eval truncation. The base model is evaluated at the same T_eval
as a reference row, and once more at its recommended decoding (paper Table 4) where the config names
one. The grid's cells are pass@1 on all problems of the eval; the effective-temperature fit regresses
them on T_eff = T_train * T_eval with a quadratic (paper: R^2 = 0.75, peak near 1.2). Beside grid.json:
heatmap.png and teff_fit.png.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import RunConfig
from .metrics import effective_temperature_fit
from .results import EvalSummary, load_summary

console = Console(stderr=True, highlight=False)


def grid(cfg: RunConfig, base_dir: Path, recommended_dir: Path | None, ssd_dirs: dict[float, Path]) -> dict:
    """grid.json but its T_eff baseline: the base row, the SSD rows (one per T_train) and their cells, the fit."""
    sweep_cfg = cfg.sweep
    rows = {"base": _row(load_summary(base_dir), sweep_cfg.metric)} | {
        t: _row(load_summary(ssd_dirs[t]), sweep_cfg.metric) for t in sweep_cfg.t_trains
    }
    cells = [(t, te, rows[t][te]) for t in sweep_cfg.t_trains for te in sweep_cfg.t_evals]
    fit = (
        effective_temperature_fit([c[0] for c in cells], [c[1] for c in cells], [c[2] for c in cells])
        if len({a * b for a, b, _ in cells}) >= 3
        else None
    )
    return {
        "metric": sweep_cfg.metric,
        "split": "dev" if cfg.eval.test_n else "all",
        "t_trains": sweep_cfg.t_trains,
        "t_evals": sweep_cfg.t_evals,
        "base": rows["base"],
        "base_recommended": _recommended(recommended_dir, sweep_cfg.metric),
        "ssd": {str(t): rows[t] for t in sweep_cfg.t_trains},
        "cells": [{"t_train": a, "t_eval": b, "t_eff": a * b, "score": s} for a, b, s in cells],
        "t_eff_fit": fit,
        "eval_dirs": {"base": str(base_dir), **{str(t): str(ssd_dirs[t]) for t in sweep_cfg.t_trains}},
    }


def _recommended(eval_dir: Path | None, metric: str) -> dict | None:
    """The base model at its recommended decoding: T, truncation and metric on the grid's split."""
    if eval_dir is None:
        return None
    summary = load_summary(eval_dir)
    ((T, score),) = _row(summary, metric).items()
    return {"T": T, "top_k": summary.decoding.top_k, "top_p": summary.decoding.top_p, "score": score}


def _row(summary: EvalSummary, metric: str) -> dict[float, float]:
    """metric (pass@K) per T_eval, from an eval's summary: on all problems, or on the dev split where the
    eval ran the two-phase protocol (only dev is decoded at every temperature)."""
    k, split = int(metric.removeprefix("pass@")), summary.swept_split("all")
    return {e.temperature: getattr(e.pass_at[k], split).mean for e in summary.entries}


def plot(grid: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t_trains, t_evals = grid["t_trains"], grid["t_evals"]
    scores = np.array([[grid["ssd"][str(t)][te] for te in t_evals] for t in t_trains]) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(t_evals), 1.4 + 0.8 * len(t_trains)))
    im = ax.imshow(scores, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(t_evals)), [f"{t:g}" for t in t_evals])
    ax.set_yticks(range(len(t_trains)), [f"{t:g}" for t in t_trains])
    ax.set_xlabel("T_eval")
    ax.set_ylabel("T_train")
    for i in range(len(t_trains)):
        for j in range(len(t_evals)):
            ax.text(
                j,
                i,
                f"{scores[i, j]:.1f}",
                ha="center",
                va="center",
                color="w" if scores[i, j] < scores.mean() else "k",
            )
    fig.colorbar(im, label=f"{grid['metric']} on {grid['split']} problems (%)")
    ax.set_title(f"SSD {grid['metric']} ({grid['split']}) over T_train x T_eval")
    fig.tight_layout()
    fig.savefig(out / "heatmap.png", dpi=120)
    plt.close(fig)

    fit = grid["t_eff_fit"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for t in t_trains:
        ax.scatter(
            [t * te for te in t_evals], [100 * grid["ssd"][str(t)][te] for te in t_evals], label=f"T_train {t:g}"
        )
    if fit:
        xs = np.linspace(min(c["t_eff"] for c in grid["cells"]), max(c["t_eff"] for c in grid["cells"]), 100)
        ax.plot(
            xs,
            100 * (fit["a"] + fit["b"] * xs + fit["c"] * xs**2),
            "k--",
            label=f"quadratic fit, R² = {fit['r2']:.2f}",
        )
    ax.set_xlabel("T_eff = T_train x T_eval")
    ax.set_ylabel(f"{grid['metric']} on {grid['split']} problems (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "teff_fit.png", dpi=120)
    plt.close(fig)


def print_grid(grid: dict) -> None:
    table = Table(title=f"{grid['metric']} on {grid['split']} problems (%) over T_train x T_eval")
    table.add_column("T_train")
    for te in grid["t_evals"]:
        table.add_column(f"T_eval {te:g}", justify="right")
    table.add_row("base", *[f"{100 * grid['base'][te]:.1f}" if te in grid["base"] else "-" for te in grid["t_evals"]])
    for t in grid["t_trains"]:
        table.add_row(f"{t:g}", *[f"{100 * grid['ssd'][str(t)][te]:.1f}" for te in grid["t_evals"]])
    Console().print(table)
    teff = grid["teff_baseline"]
    if teff and "test" in teff["compare"]:
        c = teff["compare"]["test"]
        console.print(
            f"SSD (T_train {teff['t_train']:g}, T_eval {teff['t_eval']:g}) vs the base model at T_eff "
            f"{teff['t_eff']:g} on test: {100 * c['mean_diff']:+.1f} points [{100 * c['ci_lo']:+.1f}, "
            f"{100 * c['ci_hi']:+.1f}], p={c['p_value']:.3g}"
        )
    rec = grid["base_recommended"]
    if rec:
        console.print(
            f"base at its recommended decoding (T {rec['T']:g}, top-k {rec['top_k'] or 'none'}, top-p "
            f"{rec['top_p']:g}): {grid['metric']} {100 * rec['score']:.1f}"
        )
    fit = grid["t_eff_fit"]
    if fit:
        peak = (
            f"peak T_eff {fit['peak_T_eff']:.2f}"
            if fit["peak_T_eff"] is not None
            else "no interior peak (the fit opens upward)"
        )
        console.print(f"effective-temperature fit: R^2 = {fit['r2']:.3f}, {peak} (paper: R^2 0.75, peak near 1.2)")
