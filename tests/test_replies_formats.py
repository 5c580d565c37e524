"""Replies in and out in the reference harnesses' formats: EvalPlus samples.jsonl and LiveCodeBench's
custom-evaluator JSON. Round trips grade an eval's export again and must give the same verdicts."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from test_grading import CORPUS, write_fixture, write_replies
from typer.testing import CliRunner

from selfdistill import benchmarks as B
from selfdistill.cli import app
from selfdistill.manifest import read_jsonl
from selfdistill.replies import read_replies


def ssd(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def statuses(eval_dir: Path) -> dict[tuple[str, int], tuple[str, bool]]:
    return {
        (r["problem_id"], r["sample_index"]): (r["status"], r["passed"])
        for r in read_jsonl(eval_dir / "results" / "Tnone.jsonl")
    }


def round_trip(tmp_path: Path, bench_args: list[str], replies: Path) -> dict:
    """Grade `replies`, export the eval in both formats, grade each export: {format: (verdicts, exported file)}."""
    ssd("eval", *bench_args, "--replies", replies, "--output-dir", tmp_path / "ours", "--workers", "4")
    graded = {"ours": (statuses(tmp_path / "ours"), replies)}
    for fmt in ("evalplus", "lcb"):
        ssd(
            "export-replies",
            tmp_path / "ours",
            "--format",
            fmt,
            "--out",
            tmp_path / f"{fmt}.{'jsonl' if fmt == 'evalplus' else 'json'}",
        )
        exported = tmp_path / f"{fmt}.{'jsonl' if fmt == 'evalplus' else 'json'}"
        ssd("eval", *bench_args, "--replies", exported, "--output-dir", tmp_path / fmt, "--workers", "4")
        graded[fmt] = (statuses(tmp_path / fmt), exported)
    return graded


def test_lcb_corpus_round_trips_through_both_formats_with_the_same_verdicts(tmp_path):
    fixture = write_fixture(tmp_path / "lcb.jsonl")
    graded = round_trip(
        tmp_path,
        ["--benchmark", "livecodebench", "--benchmark-path", fixture],
        write_replies(tmp_path / "replies.jsonl", CORPUS),
    )
    ours = graded["ours"][0]
    assert len(ours) == len(CORPUS) and {s for s, _ in ours.values()} >= {"passed", "failed", "extraction_failed"}
    assert graded["evalplus"][0] == ours and graded["lcb"][0] == ours
    exported = json.loads(graded["lcb"][1].read_text())
    assert {row["question_id"] for row in exported} == {c.problem for c in CORPUS}
    assert sum(len(row["code_list"]) for row in exported) == len(CORPUS)


def test_humaneval_round_trip_and_evalplus_completions(tmp_path):
    bench = B.get("humaneval")
    with gzip.open(bench.source(), "rt") as f:
        rows = [json.loads(line) for line in f][:4]
    replies = tmp_path / "replies.jsonl"
    mine = [
        rows[0]["prompt"] + rows[0]["canonical_solution"],
        "    return None\n",
        "I cannot solve this.",
        rows[3]["canonical_solution"],
    ]
    replies.write_text(
        "".join(
            json.dumps({"problem_id": r["task_id"], "reply": f"```python\n{m}\n```" if i < 2 else m}) + "\n"
            for i, (r, m) in enumerate(zip(rows, mine, strict=True))
        )
    )
    graded = round_trip(tmp_path, ["--benchmark", "humaneval"], replies)
    ours = graded["ours"][0]
    assert [ours[r["task_id"], 0] for r in rows] == [
        ("passed", True),
        ("failed", False),
        ("extraction_failed", False),
        ("passed", True),
    ]
    assert graded["evalplus"][0] == ours and graded["lcb"][0] == ours
    # EvalPlus's other field: a completion continues the prompt, as EvalPlus grades it
    completions = tmp_path / "completions.jsonl"
    completions.write_text(
        "".join(json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) + "\n" for r in rows)
    )
    ssd(
        "eval",
        "--benchmark",
        "humaneval",
        "--replies",
        completions,
        "--output-dir",
        tmp_path / "completions",
        "--workers",
        "4",
    )
    assert all(passed for _, passed in statuses(tmp_path / "completions").values())


def test_formats_are_detected_or_named_and_bad_rows_name_file_and_field(tmp_path):
    evalplus = tmp_path / "samples.jsonl"
    evalplus.write_text('{"task_id": "HumanEval/0", "solution": "def f(): pass"}\n')
    lcb = tmp_path / "lcb.json"
    lcb.write_text(json.dumps([{"question_id": "q1", "code_list": ["print(1)", "print(2)"]}]))
    (r,) = read_replies(evalplus)
    assert (r.problem_id, r.temperature, B.extract_code(r.text, False)) == ("HumanEval/0", None, "def f(): pass")
    assert [(r.problem_id, r.where) for r in read_replies(lcb)] == [
        ("q1", f"{lcb}[0].code_list[0]"),
        ("q1", f"{lcb}[0].code_list[1]"),
    ]
    with pytest.raises(B.BenchmarkError, match=r"samples.jsonl:1: missing field 'problem_id'"):
        read_replies(evalplus, "selfdistill")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"question_id": "q1", "code_list": "print(1)"}]))
    with pytest.raises(B.BenchmarkError, match=r"bad.json\[0\]: field 'code_list' must be a list of strings"):
        read_replies(bad)
    bad.write_text(json.dumps([{"task_id": "q1"}]))
    with pytest.raises(B.BenchmarkError, match=r"bad.json: a JSON replies file is LiveCodeBench's"):
        read_replies(bad)
    evalplus.write_text('{"task_id": "HumanEval/0", "completion": 3}\n')
    with pytest.raises(B.BenchmarkError, match=r"samples.jsonl:1: field 'completion' must be a string, got int"):
        read_replies(evalplus)
