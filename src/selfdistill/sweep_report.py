"""`ssd report CONFIG.yaml [CONFIG.yaml ...] --out DIR`: the report of an experiment made of `ssd sweep`s
of one model, one config per benchmark. The configs differ only in their eval section, so the sweeps
share their samples and trained models (the same hashed stage directories under one output_dir).

Every number is read from the stages' files (grid.json, eval summaries and results, stage manifests,
the analysis of an `ssd run` with the same config where one ran) or recomputed from them with the same
functions the stages use, so rerunning the command regenerates the report. The stage directories are
the ones each sweep recorded in its manifest as it started. A missing stage (or a sweep not started)
shows as "not run": a partial experiment still gets a report. Writes DIR/REPORT.md and its PNGs under
DIR/figures/.

Pooled results weight every test problem of every benchmark equally: the per-problem pass@1 vectors
of each benchmark (each model at the temperature it chose on that benchmark's dev split) are joined,
and the paired comparison runs on the joined vector.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from rich.console import Console

from . import metrics
from .config import OBJECTIVES, ConfigError, RunConfig, SweepConfig, load_run_config
from .document import Heading, Image, Para, Table, percent, remove_unshown_images, render_markdown
from .manifest import MANIFEST, atomic_write_bytes, atomic_write_text, finished, load_manifest, read_json, read_jsonl
from .pipeline import Stages, is_run_of, recorded_dirs, sweep_dir, sweep_stages
from .report import (
    TIME_FORMAT,
    Run,
    endpoint_blocks,
    not_run,
    pass_at_k_blocks,
    rate_text,
    section_fig6,
    section_fit,
    section_lengths,
    section_training,
    training_rate,
)
from .results import EvalSummary, load_results, load_summary, per_problem_pass_at_k, primary_endpoints, records_at
from .sample import RECOMPUTED_TARGETS, targets_source

console = Console(stderr=True, highlight=False)


@dataclass
class Benchmark:
    """One config of the experiment: its benchmark's sweep and the stage directories the sweep recorded."""

    config_path: Path
    cfg: RunConfig
    sweep_dir: Path
    stages: dict[float, dict[str, Path]]  # per T_train: stage name -> directory; {} before the sweep started
    grid: dict | None  # grid.json of its sweep, once the sweep finished
    swept: bool = True  # False: a run config (`ssd run`, one T_train), whose evals form no T_train x T_eval grid

    @property
    def fixed(self) -> bool:
        """Temperatures fixed in advance (eval.dev_fraction 0): every problem is scored at every T_eval, none
        is chosen on a dev split."""
        return self.cfg.eval.dev_fraction == 0

    @property
    def name(self) -> str:
        return self.cfg.eval.benchmark

    @property
    def base_dir(self) -> Path | None:
        return next(iter(self.stages.values())).get("eval-base")

    def ssd_dir(self, t_train: float) -> Path | None:
        return self.stages[t_train].get("eval-ssd")

    @classmethod
    def load(cls, path: str | Path) -> Benchmark:
        cfg = load_run_config(config_file=str(path))
        out = sweep_dir(cfg)
        manifest = read_json(out / MANIFEST) or {}
        recorded = manifest.get("stages", {})
        run = read_json(Path(cfg.output_dir) / MANIFEST)  # `ssd run`'s, where this config was run rather than swept
        swept = bool(manifest) or not (run or cfg.sweep == SweepConfig())
        if not swept:
            # A run config (experiment 2): one T_train, its evals at the eval temperatures, and the directories
            # RUN_DIR/manifest.json records if it is this config's run; otherwise (before `ssd run` started,
            # or another config sharing the output_dir ran last) the ones `ssd run` derives, where the stage
            # commands (`ssd sample`, `ssd train` with those output dirs) may have run already.
            t = cfg.sample.temperature
            derived = Stages.of(cfg)
            recorded = (
                {str(t): {name: s["dir"] for name, s in run["stages"].items() if name != "report"}}
                if run and "stages" in run and is_run_of(run, derived)
                else recorded_dirs({t: derived})
            )
            cfg = replace(cfg, sweep=replace(cfg.sweep, t_trains=[t], t_evals=cfg.eval.temperatures))
        elif manifest and "stages" not in manifest:
            # Only a sweep started before sweeps recorded their stage directories (December 2026) takes this
            # path: its directories are derived from its config, as that sweep derived them.
            recorded = recorded_dirs(sweep_stages(cfg))
        stages = {t: {name: Path(d) for name, d in recorded.get(str(t), {}).items()} for t in cfg.sweep.t_trains}
        return cls(Path(path), cfg, out, stages, read_json(out / "grid.json"), swept)


def _finished(stage_dir: Path | None) -> bool:
    """Whether a recorded stage directory holds a finished stage (None: the sweep recorded none yet)."""
    return stage_dir is not None and finished(stage_dir)


def recomputed_targets(b: Benchmark, t: float) -> dict | None:
    """targets.json of the samples a soft-target run trained on, when `ssd samples targets` recomputed
    their distributions by teacher forcing (finished); None otherwise."""
    samples = b.stages.get(t, {}).get("samples")
    if b.cfg.train.objective != "soft" or not _finished(samples) or targets_source(samples) != "teacher forcing":
        return None
    return read_json(samples / RECOMPUTED_TARGETS)


@dataclass
class ChosenScores:
    """A model's per-problem pass@1 on the test split, at the temperature it chose on dev."""

    T: float
    scores: list[float]


def chosen_test_scores(eval_dir: Path | None) -> ChosenScores | None:
    if not _finished(eval_dir):
        return None
    summary, results = load_results(eval_dir)
    chosen = summary.chosen(1)
    if not chosen:
        return None
    per_problem = per_problem_pass_at_k(results[chosen.best_T], summary.test_ids, 1)
    return ChosenScores(chosen.best_T, [per_problem[i] for i in summary.test_ids])


def finished_results(eval_dir: Path | None) -> tuple[EvalSummary, dict[float | None, list[dict]]] | None:
    """A finished eval's summary and records (load_results), None where it has not finished."""
    return load_results(eval_dir) if _finished(eval_dir) else None


def scores_at(loaded: tuple[EvalSummary, dict], T: float, k: int) -> dict[str, float]:
    """Per-problem pass@k at temperature T on every problem of a loaded eval."""
    return per_problem_pass_at_k(records_at(loaded[1], T), loaded[0].problem_ids, k)


def _score_cell(scores: list[float]) -> str:
    mean, lo, hi = metrics.bootstrap_ci(scores)
    return f"{percent(mean)} [{percent(lo)}, {percent(hi)}]"


def _diff_cell(a: list[float], b: list[float]) -> str:
    c = metrics.paired_comparison(a, b)
    return (
        f"{100 * c['mean_diff']:+.1f} [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}], p={c['p_value']:.2g} "
        f"({c['wins']} better / {c['losses']} worse)"
    )


def paired_rows(pairs: list[tuple[str, Path | None, Path | None]]) -> tuple[list[list[str]], dict | None]:
    """Table rows "a vs b on test" per benchmark and pooled; the pooled comparison, for the verdict."""
    rows, pooled_a, pooled_b, done = [], [], [], 0
    for label, a_dir, b_dir in pairs:
        a, b = chosen_test_scores(a_dir), chosen_test_scores(b_dir)
        if not a or not b:
            rows.append([label, "-", "not run" if not a else "", "not run" if not b else "", "-"])
            continue
        done += 1
        pooled_a += a.scores
        pooled_b += b.scores
        rows.append(
            [
                label,
                str(len(a.scores)),
                f"{_score_cell(a.scores)} at T={a.T:g}",
                f"{_score_cell(b.scores)} at T={b.T:g}",
                _diff_cell(a.scores, b.scores),
            ]
        )
    if done > 1:
        rows.append(
            [
                f"pooled ({done} benchmarks)",
                str(len(pooled_a)),
                _score_cell(pooled_a),
                _score_cell(pooled_b),
                _diff_cell(pooled_a, pooled_b),
            ]
        )
    return rows, metrics.paired_comparison(pooled_a, pooled_b) if done else None


# ---------------------------------------------------------------- sections


def section_setup(benches: list[Benchmark]) -> list:
    cfg = benches[0].cfg
    sc, tc, ec = cfg.sample, cfg.train, cfg.eval
    blocks = [
        Para(
            f"Model {cfg.model}. Training prompts: {sc.limit or 'all'} of {sc.prompts} (decontaminated against "
            f"{', '.join(sc.decontaminate)}), one sample each at T_train in "
            f"{', '.join(f'{t:g}' for t in cfg.sweep.t_trains)} with top-k {sc.top_k}, top-p {sc.top_p}, max "
            f"{sc.max_tokens} new tokens. {'LoRA r=' + str(tc.lora_r) if tc.use_lora else 'Full'} "
            f"{OBJECTIVES[tc.objective]}: lr {tc.learning_rate:g} -> {tc.min_learning_rate:g} (cosine), global batch "
            f"{tc.global_batch_size}, {tc.max_steps if tc.max_steps > 0 else tc.num_train_epochs} "
            f"{'steps' if tc.max_steps > 0 else 'epochs'}."
        )
    ]
    for t in cfg.sweep.t_trains:
        recomputed = recomputed_targets(benches[0], t)
        if recomputed:
            counts = recomputed["counts"]
            blocks.append(
                Para(
                    f"T_train {t:g}: the samples were drawn without their distributions; q was recomputed after "
                    f"sampling by teacher forcing the sampling model in {recomputed['precision']} (`ssd samples "
                    f"targets`): {counts['reply_tokens']:,} reply tokens, {counts['mean_survivors']} survivors on "
                    f"average. The sampled token lies outside its recomputed support at "
                    f"{counts['sampled_outside_support']:,} of them "
                    f"({100 * counts['sampled_outside_support'] / max(counts['reply_tokens'], 1):.2f}%): a sampler "
                    "serving another precision drew from a slightly different q (the soft loss does not use the "
                    "sampled token)."
                )
            )
    rows = []
    for b in benches:
        s = load_summary(b.base_dir) if _finished(b.base_dir) else None
        split = "-" if not s else f"all {s.n_problems}" if b.fixed else f"{len(s.dev_ids)} / {len(s.test_ids)}"
        per_problem = (
            f"{b.cfg.eval.n}" if b.fixed else f"{b.cfg.eval.n} on dev, {b.cfg.eval.test_n or b.cfg.eval.n} on test"
        )
        rows.append(
            [
                b.name,
                str(b.config_path),
                split,
                ", ".join(f"{t:g}" for t in b.cfg.sweep.t_evals),
                per_problem,
                f"top-k {b.cfg.eval.top_k}, top-p {b.cfg.eval.top_p}, max {b.cfg.eval.max_tokens}",
            ]
        )
    blocks.append(
        Table(["benchmark", "config", "problems dev / test", "T_eval grid", "samples per problem", "decoding"], rows)
    )
    if all(b.fixed for b in benches):
        protocol = (
            "Protocol: fixed temperatures (eval.dev_fraction 0). Both models decode every problem at every T_eval "
            "above, fixed before the evaluation; no temperature is chosen, so every problem is scored and nothing "
            "is held out. Greedy (T=0) is one sample per problem."
        )
    else:
        protocol = (
            f"Protocol: {ec.test_n and 'two-phase' or 'grid'}. Each model (the base model and every SSD model alike) "
            "picks its T_eval by pass@1 on the dev split; only that temperature is scored on the test split. Greedy "
            "(T=0) is one sample per problem."
        )
    return blocks + [Para(protocol)]


def section_headline(benches: list[Benchmark]) -> tuple[list, dict]:
    blocks: list = [Heading("Headline: base vs SSD, each at its dev-chosen T_eval (pass@1 on test, %)")]
    verdicts = {}
    for t in benches[0].cfg.sweep.t_trains:
        rows, pooled = paired_rows([(b.name, b.base_dir, b.ssd_dir(t)) for b in benches])
        blocks.append(Heading(f"SSD trained on samples at T_train = {t:g}", 3))
        blocks.append(
            Table(["benchmark", "test problems", "base", "SSD", "SSD - base [95% CI], paired sign-flip p"], rows)
        )
        verdicts[t] = pooled
    blocks.append(
        Para(
            "CIs: percentile bootstrap over problems; the difference resamples problems jointly (paired). The base "
            "model's optimistic number (its best temperature picked on test) exists only in the grid protocol: in the "
            "two-phase protocol the test split is decoded at the dev-chosen temperature alone.",
            "muted",
        )
    )
    return blocks, verdicts


def section_fixed(benches: list[Benchmark]) -> list:
    """Base vs SSD at each fixed temperature, paired on every problem: pass@1 and the eval's other ks, on all
    problems and per difficulty (the pre-registered secondary comparisons: no adjustment)."""
    blocks: list = [Heading("Base vs SSD at each fixed T_eval (paired, every problem)")]
    for t in benches[0].cfg.sweep.t_trains:
        rows = []
        for b in benches:
            base, ssd = finished_results(b.base_dir), finished_results(b.ssd_dir(t))  # each read once
            for T in b.cfg.eval.temperatures:
                for k in [1] if T == 0 else [k for k in b.cfg.eval.ks if k <= b.cfg.eval.n]:
                    label = f"{b.name}: pass@{k} at T_eval {T:g}"
                    if not base or not ssd:
                        rows.append([label, "all", "-", "-" if base else "not run", "-" if ssd else "not run", "-"])
                        continue
                    base_scores, ssd_scores = scores_at(base, T, k), scores_at(ssd, T, k)
                    for group, ids in {"all": base[0].problem_ids, **base[0].by_difficulty}.items():
                        a, c = [base_scores[i] for i in ids], [ssd_scores[i] for i in ids]
                        first = label if group == "all" else ""
                        rows.append([first, group, str(len(ids)), _score_cell(a), _score_cell(c), _diff_cell(a, c)])
        if len(benches[0].cfg.sweep.t_trains) > 1:
            blocks.append(Heading(f"SSD trained on samples at T_train = {t:g}", 3))
        blocks.append(
            Table(
                [
                    "comparison",
                    "difficulty",
                    "problems",
                    "base (%)",
                    "SSD (%)",
                    "SSD - base [95% CI], paired sign-flip p",
                ],
                rows,
            )
        )
    blocks.append(
        Para(
            "Unbiased pass@k per problem from its samples; CIs: percentile bootstrap over problems, the difference "
            "resampling problems jointly (paired); no adjustment for the number of rows: these are estimates beside "
            "the primary endpoints.",
            "muted",
        )
    )
    return blocks


def models(b: Benchmark) -> dict[str, Path | None]:
    """The eval dirs an endpoint can name: base, ssd-tT_TRAIN per T_train, and ssd when there is one."""
    ssd = {f"ssd-t{t:g}": b.ssd_dir(t) for t in b.stages}
    return {"base": b.base_dir, **ssd, **({"ssd": next(iter(ssd.values()))} if len(ssd) == 1 else {})}


def declared_endpoints(benches: list[Benchmark]) -> list[dict]:
    """The endpoints every config declares (report.primary), Holm-adjusted as one family."""
    declared = [
        (f"{b.config_path}: report.primary[{i}]", spec, models(b))
        for b in benches
        for i, spec in enumerate(b.cfg.report.primary)
    ]
    endpoints = primary_endpoints(declared)
    if len(benches) > 1:
        owners = [b.name for b in benches for _ in b.cfg.report.primary]
        endpoints = [{**e, "name": f"{e['name']} ({owner})"} for e, owner in zip(endpoints, owners, strict=True)]
    return endpoints


def section_primary(endpoints: list[dict]) -> list:
    return [Heading("Primary endpoints (pre-registered)")] + endpoint_blocks(endpoints) if endpoints else []


def section_pass_at_k(benches: list[Benchmark]) -> list:
    blocks: list = [Heading("pass@k for every k")]
    for b in benches:
        blocks.append(Heading(b.name, 3))
        summaries = {name: load_summary(d) if _finished(d) else None for name, d in models(b).items() if name != "ssd"}
        blocks += (
            pass_at_k_blocks(summaries) if any(summaries.values()) else [not_run(f"the evals of {b.config_path}")]
        )
    return blocks


def section_teff(benches: list[Benchmark]) -> tuple[list, dict | None]:
    blocks: list = [Heading("SSD vs the base model at the same effective temperature")]
    grids = [(b, b.grid["teff_baseline"]) for b in benches if b.grid and b.grid.get("teff_baseline")]
    if not grids:
        return blocks + [not_run("the sweeps' T_eff baselines (sweep.teff_baseline)")], None
    blocks.append(
        Para(
            "The paper's claim is that SSD beats any single global temperature of the base model. Per benchmark, "
            "SSD's best cell of the grid (on dev) implies T_eff = T_train x T_eval; the base model is evaluated at "
            "T_eff with the same protocol, and both are compared on test."
        )
    )
    rows, pooled = paired_rows(
        [
            (
                f"{b.name}: cell T_train {g['t_train']:g} x T_eval {g['t_eval']:g} = T_eff {g['t_eff']:g}",
                Path(g["eval_dir"]),
                Path(g["ssd_eval_dir"]),
            )
            for b, g in grids
        ]
    )
    blocks.append(
        Table(
            ["benchmark and cell", "test problems", "base at T_eff", "SSD", "SSD - base [95% CI], paired sign-flip p"],
            rows,
        )
    )
    return blocks, pooled


def section_grid(benches: list[Benchmark], out: Path) -> list:
    blocks: list = [Heading("T_train x T_eval grid and the effective-temperature fit")]
    for b in benches:
        blocks.append(Heading(b.name, 3))
        if not b.grid:
            blocks.append(not_run(f"ssd sweep --config {b.config_path}"))
            continue
        g = b.grid
        split = g.get("split", "all")
        header = ["model"] + [f"T_eval {te:g}" for te in g["t_evals"]]
        rows = [["base"] + [percent(g["base"].get(str(te))) for te in g["t_evals"]]]  # JSON keys: str(float)
        rows += [
            [f"SSD, T_train {t:g}"] + [percent(g["ssd"][str(t)].get(str(te))) for te in g["t_evals"]]
            for t in g["t_trains"]
        ]
        blocks.append(Para(f"{g['metric']} in % on the {split} problems (every temperature is decoded there)."))
        blocks.append(Table(header, rows))
        fit = g.get("t_eff_fit")
        if fit:
            peak = (
                f"peak at T_eff {fit['peak_T_eff']:.2f}"
                if fit.get("peak_T_eff") is not None
                else "no interior peak (the parabola opens upward)"
            )
            blocks.append(
                Para(
                    f"Quadratic fit of the SSD cells on T_eff = T_train x T_eval: R^2 = {fit['r2']:.2f}, {peak} "
                    f"(paper: R^2 0.75, peak near 1.2). Only {len(g['cells'])} cells: a weak test of the collapse "
                    "onto one curve."
                )
            )
        for png, caption in (
            ("heatmap.png", f"{b.name}: SSD {g['metric']} over T_train x T_eval"),
            ("teff_fit.png", f"{b.name}: cells against T_eff"),
        ):
            src = b.sweep_dir / png
            if src.is_file():
                dst = out / "figures" / f"{b.name}-{png}"
                atomic_write_bytes(dst, src.read_bytes())
                blocks.append(Image(dst, caption))
    return blocks


def _run_of(b: Benchmark, t: float, out: Path) -> Run:
    """The stage directories of one T_train as a report.Run, so the run report's sections serve here.
    The analysis is `ssd run`'s: it exists where the config's own T_train was run with `ssd run`."""
    return Run(out, {}, {name: d for name, d in b.stages[t].items() if finished(d)})


def section_models(benches: list[Benchmark], out: Path) -> list:
    blocks: list = []
    for t in benches[0].cfg.sweep.t_trains:
        figures = out / "figures" / f"t_train-{t:g}"
        figures.mkdir(parents=True, exist_ok=True)
        run = _run_of(benches[0], t, figures)
        blocks.append(
            Heading(f"T_train = {t:g}: training samples, loss and reply lengths ({benches[0].name} replies)")
        )
        train_dir = benches[0].stages[t].get("train")
        if "train" not in run.dirs and train_dir and train_dir.is_dir():
            blocks += [Heading("Training", 3), training_progress(train_dir)]
        else:
            blocks += [_demote(x) for x in section_training(run, figures)]
        blocks += [_demote(x) for x in section_fit(train_dir, figures) + section_lengths(run, figures)]
        if "analysis" in run.dirs:
            blocks += [_demote(x) for x in section_fig6(run, figures)]
    return blocks


def training_progress(train_dir: Path) -> Para:
    """Where an unfinished training stage stands, from its loss.csv and manifest."""
    rate = training_rate(train_dir)
    if not rate:
        return Para(f"Training unfinished in {train_dir}: no step timed yet.")
    return Para(
        f"Training unfinished in {train_dir} (running, or stopped before its last step): step {rate['steps']} of "
        f"{rate['planned_steps'] or '?'}. So far: {rate_text(rate)}"
    )


def _demote(block):
    return Heading(block.text, 3) if isinstance(block, Heading) else block


def section_times(benches: list[Benchmark]) -> list:
    blocks: list = [Heading("Wall time per stage on this machine")]
    stages: dict = {}  # directory (its label where the sweep recorded none) -> (label, directory)

    def add(label: str, d: Path | None) -> None:
        stages.setdefault(d or label, (label, d))  # benchmarks share the samples and trained models: one row

    recomputed: dict = {}  # samples directory -> (T_train, targets.json), where a soft run's targets were recomputed
    for b in benches:
        for t, dirs in b.stages.items():
            for name in ("samples", "train", "eval-ssd"):
                add(f"{name} (T_train {t:g}{', ' + b.name if name == 'eval-ssd' else ''})", dirs.get(name))
            if record := recomputed_targets(b, t):
                recomputed[dirs["samples"]] = t, record
        add(f"eval-base ({b.name})", b.base_dir)
        if b.grid and b.grid.get("teff_baseline"):
            add(f"eval-base at T_eff ({b.name})", Path(b.grid["teff_baseline"]["eval_dir"]))
    rows = []
    for label, d in stages.values():
        rows.append(_time_row(label, d, load_manifest(d) if _finished(d) else None, "generated_tokens"))
        if d in recomputed:
            t, record = recomputed[d]
            rows.append(_time_row(f"targets by teacher forcing (T_train {t:g})", d, record, "teacher_forced_tokens"))
    blocks.append(Table(["stage", "first start to finish (min)", "working (min)", "tokens/s", "directory"], rows))
    blocks.append(
        Para(
            "First start to finish spans every sitting of a resumed stage (and what else ran on the machine "
            "meanwhile); working is the sum of the stage's generation sessions, tokens/s their generated tokens"
            + (" (teacher-forced prompt and reply tokens for the recomputed targets)." if recomputed else "."),
            "muted",
        )
    )
    return blocks


def _time_row(label: str, d: Path | None, record: dict | None, tokens: str) -> list[str]:
    """A stage's wall time from its record (a manifest, or targets.json): its span, its sessions' seconds
    and their `tokens` per second."""
    if record is None:
        return [label, "-", "-", "-", "not run or unfinished"]
    span = datetime.strptime(record["finished_at"], TIME_FORMAT) - datetime.strptime(record["started_at"], TIME_FORMAT)
    sessions = record.get("sessions", [])
    busy = sum(s.get("seconds", 0) for s in sessions)
    rate = (
        f"{sum(s.get(tokens, 0) for s in sessions) / busy:.1f}" if busy and any(tokens in s for s in sessions) else "-"
    )
    return [label, f"{span.total_seconds() / 60:.1f}", f"{busy / 60:.1f}" if busy else "-", rate, d.name]


def section_verdict(headline: dict, teff: dict | None) -> list:
    blocks: list = [Heading("Verdict (from the pooled paired comparisons below)")]
    for t, c in headline.items():
        if c is None:
            blocks.append(Para(f"T_train {t:g}: not run yet."))
            continue
        blocks.append(
            Para(
                f"T_train {t:g}: SSD - base = {100 * c['mean_diff']:+.1f} points pass@1 [{100 * c['ci_lo']:+.1f}, "
                f"{100 * c['ci_hi']:+.1f}] on {c['n_problems']} test problems, p = {c['p_value']:.2g}: {_reading(c)}"
            )
        )
    if teff:
        blocks.append(
            Para(
                f"Against the base model at the same T_eff: {100 * teff['mean_diff']:+.1f} "
                f"[{100 * teff['ci_lo']:+.1f}, {100 * teff['ci_hi']:+.1f}], p = {teff['p_value']:.2g}: "
                f"{_reading(teff)}"
            )
        )
    return blocks


def section_endpoint_verdict(endpoints: list[dict]) -> list:
    """The verdict of fixed-temperature evals: the pre-registered primary endpoints, read at their Holm p."""
    blocks: list = [Heading("Verdict (the pre-registered primary endpoints)")]
    for e in endpoints:
        c, (b, tb), (a, ta) = e["comparison"], e["b"], e["a"]
        what = f"{e['name']} ({e['metric']}, {b}@{tb:g} vs {a}@{ta:g})"
        if c is None:
            blocks.append(Para(f"{what}: not run yet."))
            continue
        blocks.append(
            Para(
                f"{what}: {100 * c['mean_diff']:+.1f} points [{100 * c['ci_lo']:+.1f}, {100 * c['ci_hi']:+.1f}] on "
                f"{c['n_problems']} problems, p = {c['p_value']:.2g}, Holm p = {e['holm_p']:.2g}: "
                f"{_reading(c, e['holm_p'], 'its Holm-adjusted p', f'{b}@{tb:g}')}"
            )
        )
    return blocks


def _reading(c: dict, p: float | None = None, test: str = "the sign-flip test", first: str = "SSD") -> str:
    """What a paired comparison (first minus second) says, at `p` (its own sign-flip p unless given)."""
    p = c["p_value"] if p is None else p
    if c["ci_lo"] > 0:
        return f"{first} is better: the 95% bootstrap CI of the difference excludes 0" + (
            "." if p < 0.05 else f", though {test} does not reach p < 0.05."
        )
    if c["ci_hi"] < 0:
        return f"{first} is worse: the 95% bootstrap CI of the difference excludes 0" + (
            "." if p < 0.05 else f", though {test} does not reach p < 0.05."
        )
    half = 100 * (c["ci_hi"] - c["ci_lo"]) / 2
    return (
        "no difference detectable at this size: the 95% CI includes 0, and effects smaller than about "
        f"{half:.0f} points cannot be told from noise here."
    )


def fit_commands(train_dir: Path | None) -> list[str]:
    """The `ssd analyze fit` commands that wrote TRAIN_DIR/fit's rows, from its manifest and rows."""
    fit_dir = train_dir / "fit" if train_dir else None
    if not fit_dir or not (fit_dir / "fit.jsonl").is_file():
        return []
    options = load_manifest(fit_dir)["fingerprint"]["config"]
    flags = " ".join(f"--{key.replace('_', '-')} {value}" for key, value in options.items())
    final = (read_json(train_dir / MANIFEST) or {}).get("model_dir")
    return [
        f"ssd analyze fit {flags}" + ("" if row["model"] == final else f" --step {row['step']}")
        for row in read_jsonl(fit_dir / "fit.jsonl")
    ]


def section_commands(benches: list[Benchmark], out: Path) -> list:
    paths = [b.config_path for b in benches]
    configs = " ".join(str(p) for p in paths)
    if all(b.swept for b in benches):
        lines = [f"ssd sweep --config {p}" for p in paths] + [
            f"ssd run --config {paths[0]}    # Figure 6 analysis and the HTML run report"
        ]
    else:
        lines = [f"ssd run --config {p}" for p in paths]
        for t in benches[0].cfg.sweep.t_trains:
            if recomputed_targets(benches[0], t):  # `ssd run` would sample storing q: these samples came first
                samples = benches[0].stages[t]["samples"]
                lines[:0] = [
                    f"ssd sample --config {paths[0]} --output-dir {samples}",
                    f"ssd samples targets {samples}",
                ]
            lines += fit_commands(benches[0].stages[t].get("train"))
    lines.append(f"ssd report {configs} --out {out}")
    return [
        Heading("Reproduce"),
        Para("Every stage resumes where it stopped; rerunning a finished command reuses its outputs."),
        Table(["command"], [[line] for line in lines]),
    ]


# ---------------------------------------------------------------- entry point


def sweep_report(configs: list[str | Path], out: str | Path) -> Path:
    paths = [Path(p) for p in configs]
    benches = [Benchmark.load(p) for p in paths]
    models = {
        (b.cfg.model, json.dumps([b.cfg.sample.__dict__, b.cfg.train.__dict__], default=str, sort_keys=True))
        for b in benches
    }
    if len(models) > 1:
        raise ConfigError(
            f"{', '.join(map(str, paths))}: the configs must share model, sample and train sections (one experiment, "
            "one config per benchmark)"
        )
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    endpoints = declared_endpoints(benches)
    blocks = section_setup(benches) + section_primary(endpoints)
    if all(b.fixed for b in benches):  # no T_eval is chosen: the verdict is the pre-registered endpoints'
        blocks += section_endpoint_verdict(endpoints) + section_fixed(benches)
    else:
        headline, verdicts = section_headline(benches)
        teff_blocks, teff = section_teff(benches)
        blocks += section_verdict(verdicts, teff) + headline + teff_blocks
    blocks += section_pass_at_k(benches)
    if all(b.swept for b in benches):
        blocks += section_grid(benches, out)
    blocks += section_models(benches, out) + section_times(benches) + section_commands(benches, out)
    blocks.insert(
        0,
        Para(
            f"Generated by `ssd report {' '.join(map(str, paths))} --out {out}` from the stage files under "
            f"{benches[0].cfg.output_dir}; rerun it to regenerate. Figures are under figures/.",
            "muted",
        ),
    )
    path = out / "REPORT.md"
    atomic_write_text(path, render_markdown(blocks, f"SSD experiment: {benches[0].cfg.model}", root=out))
    remove_unshown_images(out / "figures", blocks)
    console.print(f"report: {path}")
    return path
