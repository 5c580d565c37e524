"""`ssd run`: the whole loop in one command.

    sample (base, T_train) -> train (SFT) -> eval base (sweep, and its recommended decoding) -> eval SSD (sweep)
    -> compare -> analyze -> report

Each stage writes its own directory under the run directory, named after the stage and a hash of
everything that determines its output (its config and the stages before it). A rerun therefore
skips finished stages, resumes an interrupted one, and a changed setting redoes only what depends
on it. `RUN_DIR/<stage>` is a symlink to the stage's current directory; `RUN_DIR/manifest.json`
records the stage directories and their wall times.

Training runs in new processes (`train_command`): `accelerate launch -m selfdistill train` with
`train.num_processes` processes and the `train.accelerate_config` recipe. The process that sampled
and evaluated keeps a CUDA context, and would train on one device only; its generators are closed
first (vLLM's engine process exits, the hf model and the CUDA cache are freed), so the launched
processes find the GPUs free. One process on a CPU trains here instead, as it always did.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console

from .config import ConfigError, EvalConfig, RunConfig, TrainConfig, fingerprint_dict
from .manifest import RunDir, atomic_write_json, load_manifest, sha256_json
from .prompts import DecontaminationTarget

console = Console(stderr=True)

# Rough share of the default run's wall time per stage, in run order, for the ETA between stages.
STAGE_WEIGHTS = {"samples": 0.15, "eval-base": 0.25, "eval-base-recommended": 0.05, "train": 0.2, "eval-ssd": 0.25, "analysis": 0.1, "report": 0.05}


@dataclass
class StagePlan:
    """Where each stage writes, derived from the config alone, so a rerun finds the same dirs."""

    root: Path
    dirs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: RunConfig) -> "StagePlan":
        root = Path(cfg.output_dir)
        sample_key = sha256_json(fingerprint_dict(cfg.sample))[:10]
        train_key = sha256_json([sample_key, fingerprint_dict(cfg.train)])[:10]
        eval_cfg = fingerprint_dict(cfg.eval)
        dirs = {
            "samples": root / f"samples-{sample_key}",
            "train": root / f"train-{train_key}",
            "eval-base": root / f"eval-base-{sha256_json([cfg.model, eval_cfg])[:10]}",
            "eval-ssd": root / f"eval-ssd-{sha256_json([train_key, eval_cfg])[:10]}",
        }
        dirs["analysis"] = root / f"analysis-{sha256_json([train_key, str(dirs['eval-base']), fingerprint_dict(cfg.analyze)])[:10]}"
        recommended = recommended_base_eval(cfg.eval)
        if recommended:
            dirs["eval-base-recommended"] = root / f"eval-base-recommended-{sha256_json([cfg.model, fingerprint_dict(recommended)])[:10]}"
        dirs["report"] = root / "report"
        return cls(root, dirs)


class StageClock:
    """Prints one line per stage with the overall elapsed time and an ETA from the stages done so far."""

    def __init__(self, stages: list[str]):
        self.stages, self.start, self.done_weight, self.times = stages, time.time(), 0.0, {}

    def begin(self, name: str) -> float:
        elapsed = time.time() - self.start
        total_weight = sum(STAGE_WEIGHTS[s] for s in self.stages)
        eta = f"ETA ~{_fmt(elapsed / self.done_weight * (total_weight - self.done_weight))}" if self.done_weight and elapsed > 5 else "ETA after the first stage"
        console.rule(f"[bold]{self.stages.index(name) + 1}/{len(self.stages)} {name}[/]  elapsed {_fmt(elapsed)}, {eta}")
        return time.time()

    def end(self, name: str, started: float, skipped: bool = False) -> None:
        self.times[name] = {"seconds": round(time.time() - started, 1), "skipped": skipped}
        self.done_weight += STAGE_WEIGHTS[name]
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
    if entry in cfg.sample.decontaminate or (twin in cfg.sample.decontaminate and not (ev.benchmark_path or ev.release_from or ev.release_to)):
        return cfg
    return replace(cfg, sample=replace(cfg.sample, decontaminate=[*cfg.sample.decontaminate, entry]))


def finished(path: Path) -> bool:
    try:
        return bool(load_manifest(path).get("finished_at"))
    except FileNotFoundError:
        return False


def run(cfg: RunConfig) -> Path:
    from .evaluate import base_settings, compare, evaluate
    from .generate import load_generator
    from .models import resolve_model
    from .sample import sample

    cfg = decontaminated_against_eval(cfg)
    plan = StagePlan.of(cfg)
    manifest = RunDir.open(plan.root, "run", cfg, extra={"stages": {}}, index=True)
    d = plan.dirs
    clock = StageClock([s for s in STAGE_WEIGHTS if s in d])

    sample_cfg = replace(cfg.sample, output_dir=str(d["samples"]))
    train_cfg = replace(cfg.train, samples=str(d["samples"]), output_dir=str(d["train"]))
    base_stages = [("samples", sample_cfg, sample), ("eval-base", replace(cfg.eval, model=cfg.model, output_dir=str(d["eval-base"])), evaluate)]
    if "eval-base-recommended" in d:
        recommended = replace(recommended_base_eval(cfg.eval), model=cfg.model, output_dir=str(d["eval-base-recommended"]))
        base_stages.append(("eval-base-recommended", recommended, evaluate))

    # One engine serves every base-model stage: on CPU an engine start costs minutes.
    generator = None
    if not all(finished(d[name]) for name, *_ in base_stages):
        max_len = max(cfg.sample.max_model_len, cfg.eval.max_model_len)
        generator = load_generator(resolve_model(cfg.model), cfg.sample.backend, max_len, cfg.sample.tensor_parallel_size, cfg.sample.seed,
                                    ray_address=cfg.sample.ray_address)
    try:
        for name, stage_cfg, fn in base_stages:
            t = clock.begin(name)
            cached = finished(d[name])
            if not cached:
                fn(stage_cfg, generator=generator)
            clock.end(name, t, cached)
            _link(plan.root, name, d[name])
    finally:
        if generator is not None:
            generator.close()

    t = clock.begin("train")
    cached = finished(d["train"])
    if cached:
        model_dir = trained_model_dir(d["train"])
    else:
        model_dir = train_stage(train_cfg)
    clock.end("train", t, cached)
    _link(plan.root, "train", d["train"])

    t = clock.begin("eval-ssd")
    cached = finished(d["eval-ssd"])
    if not cached:
        evaluate(replace(cfg.eval, model=str(model_dir), output_dir=str(d["eval-ssd"])))
    clock.end("eval-ssd", t, cached)
    _link(plan.root, "eval-ssd", d["eval-ssd"])

    atomic_write_json(plan.root / "compare.json", {**compare(d["eval-base"], d["eval-ssd"]),
                                                   "base_settings": base_settings(d["eval-base"], d.get("eval-base-recommended"))})

    t = clock.begin("analysis")
    cached = finished(d["analysis"])
    if not cached:
        from .analyze import analyze

        analyze(
            replace(
                cfg.analyze,
                base_model=cfg.model,
                ssd_model=str(model_dir),
                replies=str(d["eval-base"]),
                t_train=cfg.sample.temperature,
                top_k=cfg.sample.top_k,
                top_p=cfg.sample.top_p,
                eval_top_k=cfg.eval.top_k,
                eval_top_p=cfg.eval.top_p,
                output_dir=str(d["analysis"]),
            )
        )
    clock.end("analysis", t, cached)
    _link(plan.root, "analysis", d["analysis"])

    manifest.update(stages={name: {**clock.times.get(name, {}), "dir": str(d[name])} for name in d})
    t = clock.begin("report")
    from .report import report

    report_path = report(plan.root)
    clock.end("report", t)
    manifest.finish(stages={name: {**clock.times.get(name, {}), "dir": str(d[name])} for name in d}, total_seconds=round(time.time() - clock.start, 1))
    console.print(f"[bold]report:[/] {report_path}")
    return plan.root


def trained_model_dir(train_dir: Path) -> Path:
    return Path(load_manifest(train_dir)["model_dir"])


# ---------------------------------------------------------------- launching the training stage

ACCELERATE_CONFIGS = ("ddp", "fsdp", "zero3")  # shipped in selfdistill/accelerate/


def accelerate_config_path(name: str) -> Path:
    if name in ACCELERATE_CONFIGS:
        return Path(str(resources.files("selfdistill") / "accelerate" / f"{name}.yaml"))
    if not Path(name).is_file():
        raise ConfigError(f"train.accelerate_config {name!r} is neither one of {', '.join(ACCELERATE_CONFIGS)} nor a file")
    return Path(name)


def train_command(cfg: TrainConfig, gpus: int) -> list[str] | None:
    """The command that trains `cfg` in new processes on a machine with `gpus` GPUs, or None: train in
    this process (one process on a CPU). Every config field is passed as key=value."""
    processes = cfg.num_processes or max(gpus, 1)
    if gpus == 0 and processes == 1:
        return None
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config_path(cfg.accelerate_config)),
                "--num_processes", str(processes), "--num_machines", "1"]  # fmt: skip
    return launcher + ["-m", "selfdistill", "train"] + [f"{f.name}={_yaml_value(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)]


def _yaml_value(value) -> str:
    """A value as YAML, which the command line parses back to the same value (a bare 5e-06 would be
    read as a string, a string "true" as a boolean)."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("\n...\n").strip()


def train_stage(cfg: TrainConfig) -> Path:
    """Train `cfg` here or in launched processes (train_command); the trained model's directory."""
    import torch

    command = train_command(cfg, torch.cuda.device_count())
    if command is None:
        from .train import train  # imported only when needed, like analyze: trl and the Trainer take seconds to import

        return train(cfg)
    console.print(f"launching: {shlex.join(command)}", highlight=False, soft_wrap=True)
    returncode = subprocess.run(command).returncode
    if returncode:
        from .train import TrainError

        raise TrainError(f"training exited with status {returncode}; rerun to resume from its last complete checkpoint: {shlex.join(command)}")
    return trained_model_dir(Path(cfg.output_dir))
