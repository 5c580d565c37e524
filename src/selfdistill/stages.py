"""The stage table: every stage of the method once, with what the rest of the package draws from it.

    name     the command `ssd NAME` (cli.py), the run config's section, the `stage` its manifests record
    config   its config class (config.py); None for the report, which reads a run directory instead
    entry    its function, "module:function", imported when the stage runs (torch and vLLM take seconds)
    help     the command's help
    outputs  the directories it writes in an `ssd run` directory: `NAME-<hash>/`, linked from `RUN_DIR/NAME`
             (pipeline.StagePlan), with its share of the run's time (the ETA between stages) and whether the
             report lists it among the run's stages (report.py)

A new stage is a row here, its module, and the lines of pipeline.py that chain it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from .config import AnalyzeConfig, Checked, EvalConfig, SampleConfig, TrainConfig


@dataclass(frozen=True)
class Output:
    """A directory a stage writes in an `ssd run` directory."""

    name: str
    weight: float  # rough share of the default run's wall time
    listed: bool = True  # among the report's stages (wall times, manifests, "not run")


@dataclass(frozen=True)
class Stage:
    name: str
    config: type[Checked] | None
    entry: str
    help: str
    outputs: tuple[Output, ...]

    def function(self) -> Callable:
        module, name = self.entry.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)


STAGES = (
    Stage(
        "sample",
        SampleConfig,
        "sample:sample",
        "Sample the frozen model once per prompt at T_train with truncation (stage 1).",
        (Output("samples", 0.15),),
    ),
    Stage("train", TrainConfig, "train:train", "SFT on the raw samples (stage 2).", (Output("train", 0.2),)),
    Stage(
        "eval",
        EvalConfig,
        "evaluate:evaluate",
        "Evaluate a model on a benchmark: sandboxed pass@k with CIs over a temperature sweep (stage 3).",
        (
            Output("eval-base", 0.25),
            # the base model at its recommended decoding, where the config names one; the report shows it
            # beside the base model's best T_eval (compare.json), not as a stage of its own
            Output("eval-base-recommended", 0.05, listed=False),
            Output("eval-ssd", 0.25),
        ),
    ),
    Stage(
        "analyze",
        AnalyzeConfig,
        "analyze:analyze",
        "The paper's Figure 6 diagnostics: how SSD reshapes token distributions at locks and forks.\n"
        "`ssd analyze fit --train-dir D [--step N]`: the distillation fit of a trained model or checkpoint, one row "
        "per step.\n"
        "`ssd analyze summarize DIR`: rewrite a finished analysis's analysis.json and figures from its scored "
        "positions, no model.",
        (Output("analysis", 0.1),),
    ),
    Stage(
        "report",
        None,
        "report:report",
        "Write the report of a run directory (self-contained HTML and a Markdown twin), or of an\n"
        "experiment's sweeps (REPORT.md: per-benchmark and pooled headline, T_eff baseline, grid, training, times).",
        (Output("report", 0.05, listed=False),),
    ),
)
OUTPUTS = {output.name: output for stage in STAGES for output in stage.outputs}
LISTED = tuple(name for name, output in OUTPUTS.items() if output.listed)  # the report's stages of a run


def stage(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def stage_of(config: Checked) -> Stage:
    """The stage a config configures."""
    return next(s for s in STAGES if s.config is type(config))
