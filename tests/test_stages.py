"""The stage table drives the CLI, the run's directories and the manifests' stage names; every error of bad
input derives from SelfdistillError, which the CLI turns into one `error:` line in one place."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

import selfdistill
from selfdistill import SelfdistillError
from selfdistill.cli import app
from selfdistill.config import RunConfig
from selfdistill.stages import LISTED, OUTPUTS, STAGES

PACKAGE = Path(selfdistill.__file__).parent
TOOLS = {"run", "sweep", "plan", "export-replies", "toy", "models", "config", "sandbox", "samples"}  # not stages


def test_every_stage_has_its_command_and_every_command_is_a_stage_or_a_tool():
    commands = set(typer.main.get_group(app).commands)
    assert {s.name for s in STAGES} <= commands
    assert commands - {s.name for s in STAGES} == TOOLS


@pytest.mark.parametrize("stage", [s for s in STAGES if s.config], ids=lambda s: s.name)
def test_a_stage_command_shows_the_tables_help_and_its_configs_fields(stage):
    result = CliRunner().invoke(app, [stage.name, "--help"], env={"COLUMNS": "400"})
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert " ".join(stage.help.splitlines()[0].split()) in output
    assert all(f"{f.name} (" in output for f in dataclasses.fields(stage.config))


def test_stage_names_are_the_run_configs_sections():
    sections = {f.name: type(getattr(RunConfig(), f.name)) for f in dataclasses.fields(RunConfig)}
    assert all(sections[s.name] is s.config for s in STAGES if s.config)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_entry_points_exist_and_their_modules_open_directories_under_the_stages_name(stage):
    module, function = stage.entry.split(":")
    assert callable(stage.function()) and stage.function() is getattr(
        importlib.import_module(f"selfdistill.{module}"), function
    )
    opened = {
        node.args[1].value
        for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text()))
        if isinstance(node, ast.Call)
        and ast.unparse(node.func) == "RunDir.open"
        and isinstance(node.args[1], ast.Constant)
    }
    assert opened == ({stage.name} if stage.config else set())  # the report writes no manifest


def test_the_run_outputs_are_unique_and_the_report_lists_the_stages_it_reports():
    assert len(OUTPUTS) == sum(len(s.outputs) for s in STAGES)
    assert LISTED == ("samples", "train", "eval-base", "eval-ssd", "analysis")


def package_error_classes() -> list[str]:
    """module.Class of every exception the package defines below the base, found in the source (the sandbox
    child runs alone, importing nothing of the package; private classes never leave their module)."""
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("__init__.py", "_sandbox_child.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            bases = [ast.unparse(b) for b in getattr(node, "bases", [])]
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and any(b.endswith(("Error", "Exception", "Mismatch", "Unavailable")) for b in bases)
            ):
                found.append(f"{path.stem}.{node.name}")
    return found


def test_every_error_of_the_package_is_a_selfdistill_error():
    classes = package_error_classes()
    assert {"config.ConfigError", "manifest.ManifestMismatch", "rows.RowError", "fit.FitError"} <= set(classes)
    for name in classes:
        module, cls = name.split(".")
        assert issubclass(getattr(importlib.import_module(f"selfdistill.{module}"), cls), SelfdistillError), name


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["sample", "--temperature", "-1"], 2, "sample.temperature: -1.0 is not in [0, inf)"),  # loading: usage
        (["models", "fetch", "no-such-model"], 1, "no-such-model"),  # a tool's FetchError
        (["sandbox", "exec", "missing.py"], 1, "missing.py"),  # a missing file, from any command
        (["report", "."], 1, "holds no `ssd run` output"),
    ],
)
def test_the_cli_prints_bad_input_as_one_line_with_its_exit_code(tmp_path, monkeypatch, args, code, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, args)
    output = " ".join(result.output.split())
    assert (result.exit_code, isinstance(result.exception, SystemExit)) == (code, True), output
    assert output.count("error:") == 1 and message in output and "Traceback" not in output, output
