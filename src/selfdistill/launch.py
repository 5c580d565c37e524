"""Training in new processes, as `ssd run` and `ssd sweep` launch it: `accelerate launch -m selfdistill
train` with `train.num_processes` processes and the `train.accelerate_config` recipe.

The process that sampled and evaluated keeps a CUDA context, and would train on one device only; its
generators are closed first (vLLM's engine process exits, the hf model and the CUDA cache are freed),
so the launched processes find the GPUs free. One process on a CPU trains here instead, as it always did.
"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml
from rich.console import Console

from .config import ConfigError, TrainConfig

console = Console(stderr=True)

ACCELERATE_CONFIGS = ("ddp", "fsdp", "zero3")  # shipped in selfdistill/accelerate/


def accelerate_config_path(name: str) -> Path:
    if name in ACCELERATE_CONFIGS:
        return Path(str(resources.files("selfdistill") / "accelerate" / f"{name}.yaml"))
    if not Path(name).is_file():
        raise ConfigError(
            f"train.accelerate_config {name!r} is neither one of {', '.join(ACCELERATE_CONFIGS)} nor a file"
        )
    return Path(name)


def train_command(cfg: TrainConfig, gpus: int) -> list[str] | None:
    """The command that trains `cfg` in new processes on a machine with `gpus` GPUs, or None: train in
    this process (one process on a CPU). Every config field is passed as key=value."""
    processes = cfg.num_processes or max(gpus, 1)
    if gpus == 0 and processes == 1:
        return None
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(accelerate_config_path(cfg.accelerate_config)),
                "--num_processes", str(processes), "--num_machines", "1"]  # fmt: skip
    return (
        launcher
        + ["-m", "selfdistill", "train"]
        + [f"{f.name}={_yaml_value(getattr(cfg, f.name))}" for f in dataclasses.fields(cfg)]
    )


def _yaml_value(value) -> str:
    """A value as YAML, which the command line parses back to the same value (a bare 5e-06 would be
    read as a string, a string "true" as a boolean)."""
    return yaml.safe_dump(value, default_flow_style=True, width=float("inf")).removesuffix("\n...\n").strip()


def train_stage(cfg: TrainConfig) -> Path:
    """Train `cfg` here or in launched processes (train_command); the trained model's directory."""
    import torch

    from .train import (
        TrainError,
        train,
        trained_model_dir,
    )  # trl and the Trainer take seconds to import: only when training

    command = train_command(cfg, torch.cuda.device_count())
    if command is None:
        return train(cfg)
    console.print(f"launching: {shlex.join(command)}", highlight=False, soft_wrap=True)
    returncode = subprocess.run(command).returncode
    if returncode:
        raise TrainError(
            f"training exited with status {returncode}; "
            f"rerun to resume from its last complete checkpoint: {shlex.join(command)}"
        )
    return trained_model_dir(cfg.output_dir)
