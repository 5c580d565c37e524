"""Bad input through the CLI, as a new user would type it: one line naming what is wrong (and the file,
line and field where there is one), a non-zero exit, no traceback, and nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from selfdistill.cli import app


def ssd(tmp_path, monkeypatch, *args: str):
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(app, list(args))


def written(tmp_path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.suffix not in (".yaml", ".jsonl"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--prompts", "/nope.jsonl", "--output-dir", "out"], "prompts '/nope.jsonl': no such file"),
        (
            ["sample", "--prompts", "unusable.jsonl", "--output-dir", "out"],
            "unusable.jsonl: no usable prompts (1 rows, 1 malformed; first: unusable.jsonl:1: missing field",
        ),
        (["sample", "--backend", "nope", "--output-dir", "out"], "sample.backend: 'nope' is not one of vllm, hf"),
        (["eval", "--benchmark", "nope", "--output-dir", "out"], "unknown benchmark 'nope'; benchmarks: humaneval,"),
        (
            ["eval", "--prompt-format", "chatml", "--output-dir", "out"],
            "eval.prompt_format: 'chatml' is not one of system, lcb",
        ),
        (["run", "--output-dir", "out", "--eval.benchmark", "nope"], "unknown benchmark 'nope'"),
        (["run", "--output-dir", "out", "--sample.backend", "vlm"], "sample.backend: 'vlm' is not one of vllm, hf"),
        (
            ["sweep", "--config", "bad.yaml"],
            "bad.yaml:3: unknown key 'eval.top_kk' for EvalConfig; did you mean 'eval.top_k'?",
        ),
        (
            ["eval", "--replies", "replies.jsonl", "--benchmark", "humaneval", "--output-dir", "out"],
            "replies.jsonl:2: invalid JSON",
        ),
        (["report", "."], "holds no `ssd run` output"),
        (["report", "bad.yaml"], "sweep configs need --out DIR"),
        (["train", "--samples", "nowhere", "--output-dir", "out"], "nowhere"),
        (["config", "show", "no-such-preset"], "unknown preset 'no-such-preset'"),
        # values out of range or breaking a relation: refused at load, before a model loads or a directory is made
        (
            ["sample", "--temperature", "-1", "--output-dir", "out"],
            "command line: sample.temperature: -1.0 is not in [0, inf)",
        ),
        (["eval", "--top-p", "1.5", "--output-dir", "out"], "command line: eval.top_p: 1.5 is not in (0, 1]"),
        (
            ["eval", "--n", "2", "--ks", "1,4", "--output-dir", "out"],
            "command line: eval.ks: pass@4 needs as many samples per problem, n is 2",
        ),
        (
            ["eval", "--release-from", "2025-02-30", "--output-dir", "out"],
            "command line: eval.release_from: '2025-02-30' is not a date YYYY-MM-DD",
        ),
        (
            ["eval", "--replies", "replies.jsonl", "--test-n", "4", "--output-dir", "out"],
            "eval.test_n: the two-phase decoding protocol does not apply",
        ),
        (
            ["train", "--min-learning-rate", "1e-3", "--output-dir", "out"],
            "command line: train.min_learning_rate: 0.001 is above learning_rate 5e-06",
        ),
        (
            ["analyze", "--t-evals", "[]", "--output-dir", "out"],
            "command line: analyze.t_evals: needs at least one value",
        ),
        (["run", "--output-dir", "out", "--eval.top-k", "-5"], "command line: eval.top_k: -5 is not in [0, inf)"),
        (
            ["sweep", "--config", "range.yaml"],
            "range.yaml:4: sample.max_tokens: 4096 leaves no room for the prompt in max_model_len 2048",
        ),
        (["config", "show", "sweep.t_evals=[]"], "command line: sweep.t_evals: needs at least one value"),
        (
            ["analyze", "fit", "--train-dir", "nowhere", "--model", "m"],
            "command line: step: give the training step that model m holds",
        ),
    ],
)
def test_user_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, args, message):
    (tmp_path / "bad.yaml").write_text("eval:\n  temperatures: [0.2]\n  top_kk: 3\n")
    (tmp_path / "range.yaml").write_text("sample:\n  temperature: 1.0\n  max_tokens: 4096\n  max_model_len: 2048\n")
    (tmp_path / "unusable.jsonl").write_text('{"title": "no statement"}\n')
    (tmp_path / "replies.jsonl").write_text('{"problem_id": "HumanEval/0", "reply": "pass"}\n{bad json\n')
    result = ssd(tmp_path, monkeypatch, *args)
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code != 0, output
    assert isinstance(result.exception, SystemExit), result.exception  # handled, not a crash
    assert "Traceback" not in output
    assert output.count("error:") == 1 and message in output.split("error:")[1], output  # after warnings, if any
    assert written(tmp_path) == []


def test_config_show_takes_overrides_without_a_preset(tmp_path, monkeypatch):
    (tmp_path / "run.yaml").write_text("sweep:\n  t_trains: [1.0, 1.6]\n")
    for args in (["sweep.t_trains=[1.6]"], ["--sweep.t_trains", "[1.6]"]):
        result = ssd(tmp_path, monkeypatch, "config", "show", "--config", "run.yaml", *args)
        assert result.exit_code == 0, result.output
        assert "t_trains:\n  - 1.6\n  t_evals" in result.output
