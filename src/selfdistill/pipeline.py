"""`ssd run` and `ssd sweep`: the stages chained, every stage's config derived from the run config here.

    ssd run:   sample (base, T_train) -> train (SFT) -> eval base (sweep, and its recommended decoding)
               -> eval SSD (sweep) -> compare -> analyze -> report
    ssd sweep: the run's stages once per T_train of the paper's T_train x T_eval grid (section 3.4),
               each SSD model evaluated at every T_eval; grid.py makes the grid, its fit and figures

Each stage writes its own directory under the run directory, named after the stage and a hash of
everything that determines its output (its config and the stages before it). A rerun therefore
skips finished stages, resumes an interrupted one, and a changed setting redoes only what depends
on it; a sweep and a run with the same output_dir share samples, models and evaluations.
`RUN_DIR/<stage>` is a symlink to the stage's current directory; `RUN_DIR/manifest.json` records the
stage directories and their wall times; a sweep writes `RUN_DIR/sweep-<hash>/` (a manifest.json that
records every T_train's stage directories as the sweep starts, grid.json, heatmap.png, teff_fit.png).

`Stages` derives the stage configs. The base and the SSD model are evaluated with one eval config
that differs in the model alone, so they get the same decoding and the same engine settings, precision
included: when the SSD model is exported in float32 (train.export_dtype), both are served in float32
(`matched_eval_dtype`), and where the export check decides that only at the end of a full fine-tune, the
base model's evals wait for training. The base
model's stages share an engine where their engine settings are equal (on CPU an engine start costs
minutes), and get one each where they differ. Training runs in new processes (launch.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console

from .config import AnalyzeConfig, EvalConfig, RunConfig, SampleConfig, TrainConfig, fingerprint_dict
from .engine import EngineSettings
from .launch import train_stage
from .manifest import RunDir, atomic_write_json, finished, sha256_json
from .plan import check_training_fits
from .prompts import DecontaminationTarget
from .stages import OUTPUTS

console = Console(stderr=True)


@dataclass
class StagePlan:
    """Where each stage writes, derived from the config alone, so a rerun finds the same dirs: `NAME-<hash>`
    for each output of the stage table (stages.OUTPUTS), in its order, the hash of everything it depends on."""

    root: Path
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: RunConfig) -> StagePlan:
        root = Path(cfg.output_dir)
        sample_key = sha256_json(fingerprint_dict(cfg.sample))[:10]
        train_key = sha256_json([sample_key, fingerprint_dict(cfg.train)])[:10]
        eval_cfg = fingerprint_dict(cfg.eval)
        keys = {
            "samples": sample_key,
            "train": train_key,
            "eval-base": sha256_json([cfg.model, eval_cfg])[:10],
            "eval-ssd": sha256_json([train_key, eval_cfg])[:10],
        }
        eval_base_dir = root / f"eval-base-{keys['eval-base']}"
        keys["analysis"] = sha256_json([train_key, str(eval_base_dir), fingerprint_dict(cfg.analyze)])[:10]
        if recommended := recommended_base_eval(cfg.eval):
            keys["eval-base-recommended"] = sha256_json([cfg.model, fingerprint_dict(recommended)])[:10]
        keys["report"] = None  # one report per run directory: rewritten, never hashed
        return cls(
            root, {name: root / (f"{name}-{keys[name]}" if keys[name] else name) for name in OUTPUTS if name in keys}
        )


def recommended_base_eval(ev: EvalConfig) -> EvalConfig | None:
    """The eval at the base model's recommended decoding (paper Table 4): its one temperature with its own
    truncation; None when the config names none."""
    if ev.base_temperature is None:
        return None
    return replace(ev, temperatures=[ev.base_temperature], t_eval=None, top_k=ev.base_top_k, top_p=ev.base_top_p)


def decontaminated_against_eval(cfg: RunConfig) -> RunConfig:
    """The run's config with the samples decontaminated against the benchmark data its evals read (the
    eval's file or hub id and date window), which the configured entries need not name."""
    from .benchmarks import get

    ev = cfg.eval
    entry = str(DecontaminationTarget(ev.benchmark, ev.benchmark_path, ev.release_from, ev.release_to))
    twin = get(ev.benchmark).same_problems_as  # HumanEval+ has HumanEval's statements: checking one checks both
    if entry in cfg.sample.decontaminate or (
        twin in cfg.sample.decontaminate and not (ev.benchmark_path or ev.release_from or ev.release_to)
    ):
        return cfg
    return replace(cfg, sample=replace(cfg.sample, decontaminate=[*cfg.sample.decontaminate, entry]))


def refuse_without_eval_data(ev: EvalConfig) -> None:
    """Stop in seconds when the evaluated benchmark's data cannot be read here (offline without a local
    copy): decontamination would skip it, and the evals would fail after hours of sampling."""
    from .benchmarks import get

    get(ev.benchmark).sources(ev.benchmark_path)


def with_targets_for_soft_training(cfg: RunConfig) -> RunConfig:
    """`train.objective: soft` is the one switch of the variant: the samples then store the distributions it
    trains on, unless the run's samples drawn without them have them recomputed (`ssd samples targets`)."""
    from .sample import targets_source

    if cfg.train.objective != "soft" or cfg.sample.store_targets:
        return cfg
    samples = StagePlan.of(cfg).dirs["samples"]
    if finished(samples) and targets_source(samples) == "teacher forcing":
        return cfg
    return replace(cfg, sample=replace(cfg.sample, store_targets=True))


def exported_dtype(train_dir: Path) -> str | None:
    """The dtype a finished train directory exported its model in, "float32" or "base"; None if unfinished."""
    from .generate import serves_float32
    from .train import trained_model_dir

    if not finished(train_dir):
        return None
    return "float32" if serves_float32("auto", str(trained_model_dir(train_dir))) else "base"


def matched_eval_dtype(cfg: RunConfig, train_dirs: list[Path]) -> str | None:
    """The eval.dtype of both models, so that their comparison is about the weights alone: float32 when
    asked, or when an SSD model is exported in float32 (the base model is then served from its weights
    upcast exactly, as the float32 export is served); else the config's. None while a full fine-tune whose
    export check decides its dtype (export_dtype auto) has not finished."""
    if cfg.eval.dtype == "float32":
        return "float32"
    if cfg.train.use_lora or cfg.train.export_dtype == "base":  # a LoRA merge is exported in the base model's dtype
        return cfg.eval.dtype
    exports = ["float32" if cfg.train.export_dtype == "float32" else exported_dtype(d) for d in train_dirs]
    if "float32" in exports:
        return "float32"
    return None if None in exports else cfg.eval.dtype


def with_eval_dtype(cfg: RunConfig, dtype: str | None) -> RunConfig:
    return cfg if dtype is None else replace(cfg, eval=replace(cfg.eval, dtype=dtype))


@dataclass(frozen=True)
class Stages:
    """Every stage's config, derived from one run config: `ssd run`'s, or one T_train of `ssd sweep`."""

    cfg: RunConfig  # decontaminated against its eval, its eval.dtype matched to the SSD export's
    plan: StagePlan
    evals_wait_for_training: bool = False  # the export's dtype, unknown until training ends, sets the evals'

    @classmethod
    def of(cls, cfg: RunConfig) -> Stages:
        cfg = with_targets_for_soft_training(decontaminated_against_eval(cfg))
        dtype = matched_eval_dtype(cfg, [StagePlan.of(cfg).dirs["train"]])
        cfg = with_eval_dtype(cfg, dtype)
        return cls(cfg, StagePlan.of(cfg), dtype is None)

    @property
    def dirs(self) -> dict[str, Path]:
        return self.plan.dirs

    def sample(self) -> SampleConfig:
        return replace(self.cfg.sample, output_dir=str(self.dirs["samples"]))

    def train(self) -> TrainConfig:
        return replace(self.cfg.train, samples=str(self.dirs["samples"]), output_dir=str(self.dirs["train"]))

    def eval_base(self) -> EvalConfig:
        return self._eval(self.cfg.model, "eval-base")

    def eval_ssd(self, model_dir: str | Path) -> EvalConfig:
        return self._eval(str(model_dir), "eval-ssd")

    def _eval(self, model: str, stage: str) -> EvalConfig:
        """The one eval config of both models: they differ in the model and the directory, never in
        decoding or engine."""
        return replace(self.cfg.eval, model=model, output_dir=str(self.dirs[stage]))

    def base_evals(self) -> list[tuple[str, EvalConfig]]:
        """The base model's evals: over the T_eval grid, and at its recommended decoding where the config names one."""
        recommended = recommended_base_eval(self.cfg.eval)
        evals = [("eval-base", self.eval_base())]
        if recommended:
            evals.append(
                (
                    "eval-base-recommended",
                    replace(recommended, model=self.cfg.model, output_dir=str(self.dirs["eval-base-recommended"])),
                )
            )
        return evals

    def analyze(self, model_dir: str | Path) -> AnalyzeConfig:
        """Figure 6 on the base model's eval replies, at the truncations the samples and the evals were drawn with."""
        return replace(
            self.cfg.analyze,
            base_model=self.cfg.model,
            ssd_model=str(model_dir),
            replies=str(self.dirs["eval-base"]),
            t_train=self.cfg.sample.temperature,
            top_k=self.cfg.sample.top_k,
            top_p=self.cfg.sample.top_p,
            eval_top_k=self.cfg.eval.top_k,
            eval_top_p=self.cfg.eval.top_p,
            output_dir=str(self.dirs["analysis"]),
        )


def done(stage_cfg) -> bool:
    """Whether the stage of this config has nothing left to do (an eval: also a verdict on every reply)."""
    from .results import eval_done

    return eval_done(stage_cfg) if isinstance(stage_cfg, EvalConfig) else finished(stage_cfg.output_dir, stage_cfg)


def on_shared_engines(stages: list[tuple[str, SampleConfig | EvalConfig, Callable]], step: Callable) -> None:
    """step(name, cfg, fn, generator=...) for each stage of `stages`, grouped by model and engine settings:
    one engine per group, started only if a stage of the group is unfinished, and closed before the
    next group starts its own (a GPU holds one)."""
    groups: dict[tuple[str, EngineSettings], list] = {}
    for stage in stages:
        groups.setdefault((stage[1].model, EngineSettings.of(stage[1])), []).append(stage)
    for (model, engine), group in groups.items():
        pending = not all(done(stage_cfg) for _, stage_cfg, _ in group)
        with engine.load(model) if pending else nullcontext() as generator:
            for name, stage_cfg, fn in group:
                step(name, stage_cfg, fn, generator=generator)


# ---------------------------------------------------------------- ssd run


class StageClock:
    """Prints one line per stage with the overall elapsed time and an ETA from the stages done so far,
    weighing each by its share of a run (stages.OUTPUTS)."""

    def __init__(self, stages: list[str]):
        self.stages, self.start, self.done_weight, self.times = stages, time.time(), 0.0, {}
        self.run_weight, self.run_seconds = 0.0, 0.0  # stages computed, not cached: only they tell the pace

    def begin(self, name: str) -> float:
        elapsed = time.time() - self.start
        remaining = sum(OUTPUTS[s].weight for s in self.stages) - self.done_weight
        eta = (
            f"ETA ~{_fmt(self.run_seconds / self.run_weight * remaining)}"
            if self.run_weight
            else "ETA after the first stage computed"
        )
        console.rule(f"[bold]{len(self.times) + 1}/{len(self.stages)} {name}[/]  elapsed {_fmt(elapsed)}, {eta}")
        return time.time()

    def end(self, name: str, started: float, skipped: bool = False) -> None:
        self.times[name] = {"seconds": round(time.time() - started, 1), "skipped": skipped}
        self.done_weight += OUTPUTS[name].weight
        if not skipped:
            self.run_weight += OUTPUTS[name].weight
            self.run_seconds += self.times[name]["seconds"]
        console.print(f"[green]{name}[/] {'cached' if skipped else 'done'} in {_fmt(self.times[name]['seconds'])}")


def _fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _link(root: Path, name: str, target: Path) -> None:
    """RUN_DIR/<name> -> the stage's current directory (relative, so the run dir can move)."""
    link = root / name
    tmp = link.with_name(f".{link.name}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


def stage_records(dirs: dict[str, Path]) -> dict[str, dict[str, str]]:
    """What `ssd run`'s manifest records under `stages` before the stages run (then with their times too)."""
    return {name: {"dir": str(d)} for name, d in dirs.items()}


def is_run_of(manifest: dict, stages: Stages) -> bool:
    """Whether RUN_DIR/manifest.json is `ssd run` of the config these stages derive from: run configs that
    share an output_dir take it over in turn (experiment 2's hard and soft runs). Compared as `ssd run`
    fingerprints it, but for eval.dtype, which a run learns only once training ends."""

    def comparable(config: dict) -> dict:
        return {**config, "eval": {k: v for k, v in config.get("eval", {}).items() if k != "dtype"}}

    ours = json.loads(json.dumps(fingerprint_dict(stages.cfg), default=str))
    return comparable(manifest.get("fingerprint", {}).get("config", {})) == comparable(ours)


def run(cfg: RunConfig) -> Path:
    from .analyze import analyze
    from .evaluate import evaluate
    from .report import report
    from .results import base_settings, compare
    from .sample import sample
    from .train import trained_model_dir

    check_training_fits(cfg)  # in seconds, before hours of sampling and evaluation
    s = Stages.of(cfg)
    refuse_without_eval_data(s.cfg.eval)
    root, d = s.plan.root, s.dirs
    # the stage directories recorded before any stage runs, so the report of a partial run finds them too
    manifest = RunDir.open(root, "run", s.cfg, extra={"stages": stage_records(d)}, index=True)
    clock = StageClock(list(d))

    def step(name: str, stage_cfg, fn: Callable, **kwargs) -> None:
        """Time a stage, doing it unless it is finished, then point RUN_DIR/<name> at its directory."""
        started = clock.begin(name)
        cached = done(stage_cfg)
        if not cached:
            fn(stage_cfg, **kwargs)
        clock.end(name, started, cached)
        _link(root, name, d[name])

    base_evals = [] if s.evals_wait_for_training else [(name, ev, evaluate) for name, ev in s.base_evals()]
    on_shared_engines([("samples", s.sample(), sample), *base_evals], step)
    step("train", s.train(), train_stage)
    if s.evals_wait_for_training:
        s = Stages.of(cfg)  # the export's dtype is known now, and with it the evals' directories
        d = s.dirs
        manifest.update(stages=stage_records(d))  # for the report of a partial run
        console.print(
            f"eval.dtype {s.cfg.eval.dtype} for both models, from the SSD model's export (train.export_dtype)"
        )
        on_shared_engines([(name, ev, evaluate) for name, ev in s.base_evals()], step)
    model_dir = trained_model_dir(d["train"])
    step("eval-ssd", s.eval_ssd(model_dir), evaluate)
    atomic_write_json(
        root / "compare.json",
        {
            **compare(d["eval-base"], d["eval-ssd"]),
            "base_settings": base_settings(d["eval-base"], d.get("eval-base-recommended")),
        },
    )
    step("analysis", s.analyze(model_dir), analyze)

    def stages() -> dict:
        return {name: {**clock.times.get(name, {}), "dir": str(d[name])} for name in d}

    manifest.update(stages=stages())
    started = clock.begin("report")
    report_path = report(root)
    clock.end("report", started)
    manifest.finish(stages=stages(), total_seconds=round(time.time() - clock.start, 1))
    console.print(f"[bold]report:[/] {report_path}")
    return root


# ---------------------------------------------------------------- ssd sweep


def t_train_variants(cfg: RunConfig) -> dict[float, RunConfig]:
    """One run config per T_train: its samples at that T_train, decontaminated against the evaluated data
    as `ssd run`'s are (the two share stage directories), its evals over the sweep's T_evals, all in one
    precision (matched_eval_dtype over every T_train's SSD model: they share the base model's evals)."""
    cfg = decontaminated_against_eval(cfg)
    variants = {
        t: replace(
            cfg,
            sample=replace(cfg.sample, temperature=t),
            eval=replace(cfg.eval, temperatures=cfg.sweep.t_evals, t_eval=None),
        )
        for t in cfg.sweep.t_trains
    }
    train_dirs = [StagePlan.of(with_targets_for_soft_training(v)).dirs["train"] for v in variants.values()]
    return {t: with_eval_dtype(v, matched_eval_dtype(cfg, train_dirs)) for t, v in variants.items()}


def sweep_dir(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / f"sweep-{sha256_json(fingerprint_dict(cfg))[:10]}"


def sweep_stages(cfg: RunConfig) -> dict[float, Stages]:
    return {t: Stages.of(variant) for t, variant in t_train_variants(cfg).items()}


def recorded_dirs(runs: dict[float, Stages]) -> dict[str, dict[str, str]]:
    """What a sweep's manifest records under `stages`, for `ssd report CONFIG.yaml`: per T_train (keyed
    str(t), as grid.json's), each stage's directory. The analysis is where `ssd run` of that T_train
    writes it (the sweep runs none); the run's report directory is not the sweep's."""
    return {str(t): {name: str(d) for name, d in r.dirs.items() if name != "report"} for t, r in runs.items()}


def open_sweep(cfg: RunConfig, runs: dict[float, Stages]) -> RunDir:
    """The sweep's directory, its manifest recording the stage directories before any stage runs, so the
    report of a partial sweep finds them too."""
    return RunDir.open(sweep_dir(cfg), "sweep", cfg, extra={"stages": recorded_dirs(runs)})


def teff_base_eval(cfg: RunConfig, t_eff: float) -> EvalConfig:
    """The base model's eval at the one temperature T_eff, with the sweep's eval protocol and precision."""
    swept = next(iter(t_train_variants(cfg).values()))
    return Stages.of(replace(swept, eval=replace(swept.eval, temperatures=[t_eff], t_eval=None))).eval_base()


def sweep(cfg: RunConfig) -> Path:
    from . import grid
    from .evaluate import evaluate
    from .sample import sample
    from .train import trained_model_dir

    check_training_fits(cfg)
    runs = sweep_stages(cfg)
    refuse_without_eval_data(cfg.eval)
    base = next(iter(runs.values()))  # the base model's evals are the same stages for every T_train
    wait = any(r.evals_wait_for_training for r in runs.values())
    manifest = open_sweep(cfg, runs)
    out = manifest.path

    def step(_name: str, stage_cfg, fn: Callable, **kwargs) -> None:
        if not done(stage_cfg):
            fn(stage_cfg, **kwargs)

    # Base-model work first: every T_train's samples, the reference row and the recommended decoding.
    on_shared_engines(
        [(f"samples T_train {t:g}", r.sample(), sample) for t, r in runs.items()]
        + ([] if wait else [(name, ev, evaluate) for name, ev in base.base_evals()]),
        step,
    )
    for r in runs.values():
        step("train", r.train(), train_stage)
        if not wait:
            step("eval-ssd", r.eval_ssd(trained_model_dir(r.dirs["train"])), evaluate)
    if wait:  # every export's dtype is known now, and with it the evals' precision and directories
        runs = {t: Stages.of(variant) for t, variant in t_train_variants(cfg).items()}
        base = next(iter(runs.values()))
        on_shared_engines([(name, ev, evaluate) for name, ev in base.base_evals()], step)
        for r in runs.values():
            step("eval-ssd", r.eval_ssd(trained_model_dir(r.dirs["train"])), evaluate)

    result = grid.grid(
        cfg,
        base.dirs["eval-base"],
        base.dirs.get("eval-base-recommended"),
        {t: r.dirs["eval-ssd"] for t, r in runs.items()},
    )
    result["teff_baseline"] = _teff_baseline(cfg, result, runs) if cfg.sweep.teff_baseline else None
    atomic_write_json(out / "grid.json", result)
    grid.plot(result, out)
    grid.print_grid(result)
    manifest.finish(grid=str(out / "grid.json"))
    return out


def _teff_baseline(cfg: RunConfig, result: dict, runs: dict[float, Stages]) -> dict:
    """The base model at the effective temperature of SSD's best cell (best on the grid's split, ties
    to the lower T_eff), evaluated like every model (its one temperature, same protocol), then compared
    with that SSD model on the test split."""
    from .evaluate import evaluate
    from .results import compare

    best = max(result["cells"], key=lambda c: (c["score"], -c["t_eff"]))
    t_eff = round(best["t_eff"], 2)  # eval result files are named at two decimals
    ev = teff_base_eval(cfg, t_eff)
    if not done(ev):
        evaluate(ev)
    ssd_dir = runs[best["t_train"]].dirs["eval-ssd"]
    return {
        "t_train": best["t_train"],
        "t_eval": best["t_eval"],
        "t_eff": t_eff,
        "cell_score": best["score"],
        "eval_dir": ev.output_dir,
        "ssd_eval_dir": str(ssd_dir),
        "compare": compare(ev.output_dir, ssd_dir),
    }
