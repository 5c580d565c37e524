"""Library log noise goes to the stage directory's library.log, not the console (unless --verbose), and
no ETA is shown before it can mean something."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from selfdistill import pipeline

LOGGING = textwrap.dedent("""
    import logging, sys, warnings
    from selfdistill.logs import quiet_libraries
    quiet_libraries()
    import transformers
    logging.getLogger("vllm.engine").info("vllm info before the stage directory")
    transformers.utils.logging.get_logger("transformers.modeling_utils").warning("transformers warning")
    library_code = "import warnings; warnings.warn('a library deprecation', DeprecationWarning)"
    exec(compile(library_code, "/site-packages/lib.py", "exec"))
    from selfdistill.manifest import RunDir
    from selfdistill.config import EvalConfig
    RunDir.open(sys.argv[1], "eval", EvalConfig())
    logging.getLogger("accelerate").warning("accelerate warning after it")
    print("our own output")
""")


def test_library_logs_go_to_the_stage_directory_not_the_console(tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", LOGGING, str(tmp_path / "stage")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "our own output\n" and result.stderr == ""
    log = (tmp_path / "stage" / "library.log").read_text()
    for line in (
        "INFO vllm.engine: vllm info before the stage directory",
        "WARNING transformers.modeling_utils: transformers warning",
        "WARNING py.warnings: /site-packages/lib.py:1: DeprecationWarning: a library deprecation",
        "WARNING accelerate: accelerate warning after it",
    ):
        assert line in log, log


def test_held_warnings_are_printed_when_no_stage_directory_opens():
    code = (
        "import logging; from selfdistill.logs import quiet_libraries; quiet_libraries(); "
        "logging.getLogger('vllm').warning('engine warning')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "WARNING vllm: engine warning" in result.stderr


def test_verbose_is_a_flag_of_the_stage_commands_not_a_config_key(tmp_path):
    (tmp_path / "replies.jsonl").write_text("{bad json\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfdistill",
            "eval",
            "--benchmark",
            "humaneval",
            "--replies",
            str(tmp_path / "replies.jsonl"),
            "--output-dir",
            str(tmp_path / "out"),
            "--verbose",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = " ".join(result.stderr.split())  # rich wraps long lines
    assert result.returncode == 1 and "replies.jsonl:1: invalid JSON" in output and "unknown key" not in output, output


def test_the_run_eta_waits_for_a_computed_stage(capsys, monkeypatch):
    monkeypatch.setattr(pipeline.console, "width", 200)
    clock = pipeline.StageClock(["samples", "eval-base", "train"])
    clock.end("samples", clock.begin("samples"), skipped=True)  # cached: took no time, says nothing of the pace
    started = clock.begin("eval-base")
    clock.end("eval-base", started - 100)  # computed in 100 s
    clock.begin("train")
    lines = [line for line in capsys.readouterr().err.splitlines() if "elapsed" in line]
    assert (
        "ETA after the first stage computed" in lines[1] and "ETA ~1m20s" in lines[2]
    )  # train weighs 0.2 to eval-base's 0.25
