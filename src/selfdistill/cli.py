"""`ssd`: one subcommand per stage. Prompts -> `sample` -> `train` -> `eval` -> `analyze` -> `report`;
`run` chains them, `sweep` repeats them over a T_train x T_eval grid.

Stage commands take `--preset NAME` and/or `--config FILE`, then any config field as a flag
(`--top-k 20`, `--use-lora`) or as `key=value`; `ssd config show` prints what they resolve to.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from . import SelfdistillError
from . import config as cfgmod
from .config import ConfigError, FitConfig
from .stages import STAGES, Stage, stage

console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


class BadInputAsOneLine(typer.core.TyperGroup):
    """The one place where bad input (a config, file, model or output dir) from any command becomes one
    `error:` line without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (SelfdistillError, FileNotFoundError) as e:
            _fail(str(e), getattr(e, "exit_code", 1))


app = typer.Typer(
    help=__doc__, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=BadInputAsOneLine
)
models_app = typer.Typer(help="The model registry: list and fetch models.", invoke_without_command=True)
config_app = typer.Typer(help="Presets and resolved configs.", no_args_is_help=True)
sandbox_app = typer.Typer(help="Run untrusted code in the sandbox.", no_args_is_help=True)
samples_app = typer.Typer(
    help="Samples: recompute their sampling distributions, export to the official SSD formats, push to the Hub.",
    no_args_is_help=True,
)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(samples_app, name="samples")

STAGE_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
PRESET = typer.Option(None, "--preset", "-p", help="A preset name (`ssd config presets`).")
CONFIG = typer.Option(None, "--config", "-c", help="A YAML config file.")


def flags_to_overrides(args: list[str]) -> list[str]:
    """`--top-k 20 --use-lora --no-packing seed=3` -> ['top_k=20', 'use_lora=true', 'packing=false', 'seed=3']."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            key = key.replace("-", "_")
            if eq:
                out.append(f"{key}={value}")
            elif i + 1 < len(args) and not args[i + 1].startswith("--") and "=" not in args[i + 1]:
                out.append(f"{key}={args[i + 1]}")
                i += 1
            elif key.startswith("no_"):
                out.append(f"{key[3:]}=false")
            else:
                out.append(f"{key}=true")
        elif "=" in arg:
            out.append(arg)
        else:
            raise ConfigError(f"unexpected argument {arg!r}: use --key value or key=value")
        i += 1
    return out


def _on_usable_gpus() -> None:
    """Stages that would use GPUs stop when the driver sees GPUs that torch cannot use (plan.require_usable_cuda)."""
    from .plan import require_usable_cuda

    require_usable_cuda()


VERBOSE = "--verbose"  # a stage command's flag: library logs on the console too, not only in the stage's library.log


def _overrides(ctx: typer.Context) -> list[str]:
    """The config overrides of a stage command; without --verbose, library log noise goes to the stage
    directory's library.log (logs.py)."""
    if VERBOSE not in ctx.args:
        from .logs import quiet_libraries

        quiet_libraries()
    return flags_to_overrides([a for a in ctx.args if a != VERBOSE])


def _load_config(load: Callable, *args):
    """A config that does not load is a usage error: exit code 2, as click's own (a stage that fails later: 1)."""
    try:
        return load(*args)
    except ConfigError as e:
        e.exit_code = 2
        raise


def _run_config(preset, config_file, ctx: typer.Context, default_preset: str | None = None):
    return _load_config(
        cfgmod.load_run_config, preset or (default_preset if not config_file else None), config_file, _overrides(ctx)
    )


def _fields(cls) -> str:
    """Every config field of a stage with its type, default and help, for the command's --help."""
    hints = cfgmod.typing.get_type_hints(cls)
    default = cls()

    def type_name(tp) -> str:
        # list[str], not list
        return tp.__name__ if isinstance(tp, type) and not cfgmod.typing.get_origin(tp) else str(tp)

    def in_range(check) -> str:
        return f"; range {check.interval}" if isinstance(check, cfgmod.Within) else ""

    rows = [
        f"{f.name} ({type_name(hints[f.name])} = {getattr(default, f.name)!r}): "
        f"{f.metadata.get('help', '')}{in_range(f.metadata.get('check'))}"
        for f in cfgmod.dataclasses.fields(cls)
    ]
    # \b keeps click from rewrapping the block into one paragraph
    from rich.markup import escape  # typer renders help as rich markup, where "[float]" would be a style tag

    return "Config fields (flags --name VALUE, or name=VALUE):\n\n\b\n" + "\n".join(map(escape, rows))


def _analyze_summarize(ctx: typer.Context, preset: str | None, config: str | None) -> None:
    if preset or config or len(ctx.args) != 2:
        _fail("`ssd analyze summarize DIR` takes one finished analysis directory and nothing else")
    from .analyze import resummarize

    resummarize(ctx.args[1])


def _analyze_fit(ctx: typer.Context, preset: str | None, config: str | None) -> None:
    if preset:
        _fail("`ssd analyze fit` reads its settings from the train directory: give --train-dir, not --preset")
    cfg = _load_config(cfgmod.load_config, FitConfig, config, flags_to_overrides(ctx.args[1:]))
    from .fit import fit

    fit(cfg)


# A stage command's first argument that picks another of the stage's entry points, with its own arguments
# (and its config's fields in the command's help).
MODES: dict[str, dict[str, tuple[Callable, type | None]]] = {
    "analyze": {"summarize": (_analyze_summarize, None), "fit": (_analyze_fit, FitConfig)}
}


def _stage_command(s: Stage) -> None:
    """`ssd NAME` of a stage of the table: its config from --preset, --config and flags, then its entry point."""
    modes = MODES.get(s.name, {})

    def command(ctx: typer.Context, preset: str = PRESET, config: str = CONFIG):
        if ctx.args[:1] and ctx.args[0] in modes:
            return modes[ctx.args[0]][0](ctx, preset, config)
        cfg = _load_config(cfgmod.load_stage_config, s.config, preset, config, _overrides(ctx))
        _on_usable_gpus()
        s.function()(cfg)

    epilog = _fields(s.config) + "".join(
        f"\n\n`ssd {s.name} {mode}`: " + _fields(cls) for mode, (_, cls) in modes.items() if cls
    )
    app.command(s.name, help=s.help, context_settings=STAGE_SETTINGS, epilog=epilog)(command)


for _stage in STAGES:
    if _stage.config:  # the report reads a run directory: its command is below
        _stage_command(_stage)


@app.command(context_settings=STAGE_SETTINGS)
def run(ctx: typer.Context, preset: str = PRESET, config: str = CONFIG):
    """The whole loop: sample, train, evaluate base and SSD, analyze, report (default: the embedded Qwen preset)."""
    cfg = _run_config(preset, config, ctx, default_preset="qwen2.5-coder-0.5b-instruct")
    _on_usable_gpus()
    from .pipeline import run as run_stages

    run_stages(cfg)


@app.command(context_settings=STAGE_SETTINGS)
def sweep(ctx: typer.Context, preset: str = PRESET, config: str = CONFIG):
    """The paper's T_train x T_eval grid, with the effective-temperature fit
    (sweep.t_trains=..., sweep.t_evals=...)."""
    cfg = _run_config(preset, config, ctx)
    _on_usable_gpus()
    from .pipeline import sweep as sweep_stages

    sweep_stages(cfg)


@app.command(context_settings=STAGE_SETTINGS)
def plan(
    ctx: typer.Context,
    preset: str = PRESET,
    config: str = CONFIG,
    gpus: int = typer.Option(8, "--gpus", help="GPUs to train on (train.num_processes wins when set)."),
    gpu_memory: float = typer.Option(80, "--gpu-memory", help="GiB per GPU (an H100: 80, an H200: 141)."),
    markdown: bool = typer.Option(
        False, "--markdown", help="Print docs/training.md's table of the paper presets on --gpus x --gpu-memory."
    ),
):
    """The memory plan per GPU of a preset or config: training (state, activations, LM head, FSDP buffers)
    and vLLM's KV cache for sample and eval, with the options that would fit."""
    from . import plan as planmod

    if markdown:
        print(planmod.markdown_table(gpus, gpu_memory), end="")
        return
    cfg = _run_config(preset, config, ctx, default_preset="qwen2.5-coder-0.5b-instruct")

    print("\n".join(planmod.report_lines(planmod.run_plan(cfg, gpus, gpu_memory))))


@app.command(help=stage("report").help)
def report(
    paths: list[Path] = typer.Argument(
        ..., help="An `ssd run` output directory, or the sweep configs of one experiment (one YAML per benchmark)."
    ),
    out: Path = typer.Option(None, "--out", help="With sweep configs: the directory for REPORT.md and its figures."),
):
    if all(p.suffix in (".yaml", ".yml") for p in paths):
        if out is None:
            _fail("sweep configs need --out DIR (where REPORT.md goes)")
        from .sweep_report import sweep_report

        sweep_report(paths, out)
    elif len(paths) == 1 and out is None:
        stage("report").function()(paths[0])
    else:
        _fail("give one `ssd run` output directory, or sweep config files (.yaml) with --out DIR")


@app.command("export-replies")
def export_replies(
    eval_dir: Path = typer.Argument(..., help="A finished `ssd eval` directory."),
    fmt: str = typer.Option(
        ...,
        "--format",
        help="evalplus (samples.jsonl: task_id, solution) or lcb (LiveCodeBench custom evaluator: "
        "[{question_id, code_list}]).",
    ),
    out: Path = typer.Option(
        None, "--out", help="The file to write; default EVAL_DIR/export/<format>-T<temperature>.json(l)."
    ),
    temperature: float = typer.Option(
        None,
        "--temperature",
        help="Which temperature's replies; default the eval's only one, or its pass@1 choice on dev.",
    ),
):
    """Write an eval's replies (the code graded) for EvalPlus or LiveCodeBench's custom evaluator."""
    from .replies import export_replies as export

    export(eval_dir, fmt, out, temperature)


@app.command()
def toy(out: Path = typer.Option(None, "--out", help="Write toy.json and toy_curves.png here.")):
    """The paper's toy simulation of locks and forks (appendix C.4), computed exactly."""
    from .toy import main

    main(str(out) if out else None)


# ---------------------------------------------------------------- models


@models_app.callback()
def models_list(ctx: typer.Context):
    """List the registry (also: `ssd models fetch NAME`)."""
    if ctx.invoked_subcommand:
        return
    from .models import describe

    table = Table()
    table.add_column("name", no_wrap=True)  # never wrapped: users copy it
    table.add_column("fetched")
    table.add_column("description")
    for m in describe():
        table.add_row(
            m["name"],
            "yes" if m["fetched"] else "no",
            f"{m['description']} [{m['license']}; upstream {m['upstream']}]",
        )
    Console().print(table)


@models_app.command("fetch")
def models_fetch(name: str):
    """Prepare a registry model in the cache ($SELFDISTILL_CACHE, default ~/.cache/selfdistill)."""
    from .models import fetch

    print(fetch(name, log=lambda m: console.print(m, highlight=False)))


@models_app.command("merge-lora")
def models_merge_lora(
    adapter: Path = typer.Argument(..., help="The adapter/ directory of a LoRA `ssd train` run."),
    out: Path = typer.Argument(..., help="Where to write the merged model directory."),
    base: str = typer.Option("qwen2.5-coder-0.5b-instruct", help="The base model the adapter was trained on."),
):
    """Merge a LoRA adapter onto its base model: a plain model directory for `ssd eval --model OUT`."""
    from .train import merge_adapter

    merge_adapter(adapter, out, base)
    print(out)


PRIVATE = typer.Option(False, "--private", help="Create the repository private.")


@models_app.command("push")
def models_push(
    path: Path = typer.Argument(..., help="A model directory, or an `ssd train` output directory (its model/)."),
    repo_id: str = typer.Argument(..., help="The Hub model repository, owner/name (created if missing)."),
    private: bool = PRIVATE,
):
    """Upload a trained model with its model card to the Hugging Face Hub
    (needs a token: `hf auth login` or HF_TOKEN)."""
    from .hub import push_model

    print(push_model(path, repo_id, private))


# ---------------------------------------------------------------- samples


@samples_app.command("targets")
def samples_targets(
    path: Path = typer.Argument(..., help="A finished `ssd sample` directory drawn without store_targets."),
    model: str = typer.Option(
        None, "--model", help="The sampling model (default: the manifest's); another one is refused."
    ),
    bf16_on_gpu: bool = typer.Option(False, "--bf16-on-gpu", help="Teacher-force in bf16 on GPUs (default fp32)."),
):
    """Recompute each reply token's sampling distribution by teacher forcing, for `train.objective: soft`:
    the side files `sample.store_targets` would have written. A rerun resumes after the finished shards."""
    from .targets import recompute_targets

    _on_usable_gpus()
    recompute_targets(path, model, bf16_on_gpu)


@samples_app.command("export")
def samples_export(
    path: Path = typer.Argument(..., help="A finished `ssd sample` directory."),
    fmt: str = typer.Option(
        ..., "--format", help="messages (train.jsonl: {messages: [user, assistant]}) or parquet (train.parquet)."
    ),
    out: Path = typer.Option(
        None, "--out", help="The file to write; default DIR/export/train.jsonl or train.parquet."
    ),
):
    """Write the samples in the official SSD pipeline's formats, for other SFT stacks;
    `ssd train --samples FILE` reads them back."""
    from .sample import export_samples

    try:
        export_samples(path, fmt, out)
    except ValueError as e:  # not a finished samples directory, or an unknown format
        _fail(str(e), code=1)


@samples_app.command("push")
def samples_push(
    path: Path = typer.Argument(..., help="A finished `ssd sample` directory."),
    repo_id: str = typer.Argument(..., help="The Hub dataset repository, owner/name (created if missing)."),
    private: bool = PRIVATE,
):
    """Upload a samples directory (shards, manifest, a dataset card) to a Hugging Face dataset repository."""
    from .hub import push_samples

    print(push_samples(path, repo_id, private))


# ---------------------------------------------------------------- config


@config_app.command("presets")
def config_presets():
    """List presets."""
    for name in cfgmod.preset_names():
        print(name)


@config_app.command("show", context_settings=STAGE_SETTINGS)
def config_show(ctx: typer.Context, preset: str = PRESET, config: str = CONFIG):
    """Print the resolved run config of a preset and/or file, with overrides applied
    (`ssd config show [PRESET] [--config FILE] [key=value ...]`)."""
    args = list(ctx.args)
    if (
        preset is None and args and not args[0].startswith("-") and "=" not in args[0]
    ):  # the preset may also come first, bare
        preset = args.pop(0)
    print(cfgmod.to_yaml(_load_config(cfgmod.load_run_config, preset, config, flags_to_overrides(args))), end="")


# ---------------------------------------------------------------- sandbox


@sandbox_app.command("exec")
def sandbox_exec(
    file: Path,
    stdin: Path = typer.Option(None, "--stdin", help="A file fed to the program's standard input."),
    timeout: float = typer.Option(10.0, "--timeout", help="Wall-clock seconds."),
    memory_mb: int = typer.Option(1024, "--memory-mb", help="Address-space limit."),
    isolation: str = typer.Option("auto", "--isolation", help="auto, strict or basic."),
):
    """Run FILE in the sandbox and print the result as one JSON object."""
    from .sandbox import Limits, execute

    result = execute(
        file.read_text(),
        stdin.read_text() if stdin else None,
        Limits(timeout=timeout, memory_mb=memory_mb, isolation=isolation),
    )
    print(json.dumps(result.to_dict()))


def main() -> None:  # `python -m selfdistill`
    app()


if __name__ == "__main__":
    sys.exit(main())
