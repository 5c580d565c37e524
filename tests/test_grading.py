"""Grading profiles through `ssd eval --replies`: a corpus of tricky replies graded under the `lcb` profile
on a LiveCodeBench-format fixture written here, each verdict with the lcb_runner rule it comes from; the
cases where the profiles differ, under `strict`; and the replies file's checks, layout and manifest.

With LCB_RUNNER=<a LiveCodeBench checkout> (github.com/LiveCodeBench/LiveCodeBench), the last test grades
the corpus with lcb_runner itself, outside any sandbox (the corpus is harmless), and checks that it gives
every verdict the corpus says it gives.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfdistill import benchmarks as B
from selfdistill import evaluate as E
from selfdistill.cli import app
from selfdistill.config import EvalConfig
from selfdistill.manifest import load_manifest, read_jsonl, sha256_file
from selfdistill.results import eval_done

# ---------------------------------------------------------------------------- the fixture: LiveCodeBench rows

PROBLEMS = {  # question_id: (metadata.func_name or None for stdin tests, [(input, output), ...])
    "add": ("add", [("1\n2", "3"), ("10\n-4", "6")]),
    "minmax": ("minMax", [("[3, 1, 2]", "[1, 3]"), ("[5]", "[5, 5]")]),
    "pairs": ("pairs", [("[1, 2, 3, 4]", "[[1, 2], [3, 4]]")]),
    "sum": (None, [("2\n1 2\n3 4\n", "3\n7\n"), ("1\n10 20\n", "30\n")]),
    "echo": (None, [("hello\n", "hello\n")]),
    "big": (None, [("600000\n", "1\n" * 600_000)]),  # 1.2 MB of expected output
}


def lcb_row(qid: str) -> dict:
    func_name, tests = PROBLEMS[qid]
    kind = "functional" if func_name else "stdin"
    cases = [{"input": i, "output": o, "testtype": kind} for i, o in tests]
    return {
        "question_title": qid,
        "question_content": f"Solve {qid}.",
        "platform": "leetcode" if func_name else "atcoder",
        "question_id": qid,
        "contest_id": "c",
        "contest_date": "2025-02-01T00:00:00",
        "difficulty": "easy",
        "starter_code": f"class Solution:\n    def {func_name}(self, *args):\n        " if func_name else "",
        "public_test_cases": json.dumps(cases),
        "private_test_cases": "",
        "metadata": json.dumps({"func_name": func_name} if func_name else {}),
    }


def write_fixture(path: Path) -> Path:
    path.write_text("".join(json.dumps(lcb_row(qid)) + "\n" for qid in PROBLEMS))
    return path


def fenced(code: str, tag: str = "python") -> str:
    return f"Here is the solution.\n\n```{tag}\n{code}\n```\n"


def method(name: str, body: str, extra: str = "") -> str:
    return f"{extra}class Solution:\n    def {name}(self, *args):\n        {body}\n"


SUM = "n = int(input())\nfor _ in range(n):\n    a, b = map(int, input().split())\n    print(a + b)"
SUM_IN_MAIN = (
    "def main():\n" + "\n".join("    " + line for line in SUM.split("\n")) + "\nif __name__ == '__main__':\n    main()"
)
ADD = method("add", "return args[0] + args[1]")

# ---------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    problem: str
    reply: str
    passes: bool  # the lcb profile's verdict
    rule: str  # the lcb_runner rule (testing_util.py, extraction_utils.py) that gives it
    lcb_runner: bool | None = (
        None  # lcb_runner's own verdict where we differ on purpose (docs/grading.md); None: the same
    )
    strict: bool | None = None  # the strict profile's verdict, for the cases that tell the profiles apart


CORPUS = [
    # ---- extraction: the text between the last two lines that contain ``` (extract_code, extraction_utils.py)
    Case("sum", fenced(SUM), True, "a correct program in a python block"),
    Case(
        "sum",
        "First try:\n```python\nprint(0)\n```\nBetter:\n" + fenced(SUM),
        True,
        "two code blocks: the last one is graded",
    ),
    Case(
        "sum",
        fenced(SUM) + "Output:\n```text\n3\n7\n```\n",
        False,
        "an output block after the code: its fences are the last two, so the program is `3 7`, which prints nothing",
        strict=True,
    ),
    Case("sum", f"```\n{SUM}\n```", True, "an untagged fence counts like any other"),
    Case(
        "sum",
        fenced(SUM, "cpp"),
        True,
        "a fence whatever its tag: a `cpp` block holding Python is graded",
        strict=False,
    ),
    Case(
        "sum",
        f"Solution: ```python\n{SUM}\n``` (end)",
        True,
        "a fence anywhere in a line counts, not only at its start",
        strict=False,
    ),
    Case(
        "sum",
        fenced(SUM + "\nmarker = '```'"),
        False,
        "a line of code holding ``` is a fence line: the code graded is the nothing after it",
        strict=True,
    ),
    Case("sum", f"```python\n{SUM}", False, "one fence line (a reply cut off): fewer than two, no code"),
    Case("sum", SUM, False, "no fence at all: no code (chat models get no completion fallback)"),
    Case(
        "sum",
        "<think>\n```python\nprint(0)\n```\n</think>\n" + fenced(SUM),
        True,
        "thinking with a code block, then the answer: the answer's fences are the last two",
    ),
    Case(
        "sum",
        "<think>\n" + fenced(SUM) + "</think>\nI could not finish.",
        False,
        "code only inside <think>: we strip thinking first, as reasoning APIs do for the leaderboard",
        lcb_runner=True,
    ),
    # ---- call-based tests (grade_call_based, compile_code)
    Case("add", fenced(ADD), True, "Solution().add compared with == to the JSON output"),
    Case("add", fenced(method("add", "return args[0] - args[1]")), False, "a wrong answer"),
    Case(
        "add",
        fenced("def add(a, b):\n    return a + b"),
        True,
        "no `class Solution` in the code: the top-level function is called (compiled_sol is the module)",
        strict=False,
    ),
    Case(
        "add",
        fenced("class Solution:\n    pass\n\ndef add(a, b):\n    return a + b"),
        False,
        "the code contains `class Solution`, so Solution().add is looked up and is missing",
    ),
    Case(
        "add",
        fenced(ADD + "\nif __name__ == '__main__':\n    import sys\n    print('debug')\n    sys.exit(1)"),
        True,
        "the program runs as module tmp_sol: its __main__ block (which prints and exits 1) does not run",
        strict=False,
    ),
    Case(
        "add",
        fenced(method("add", "return float(args[0] + args[1])")),
        True,
        "3.0 == 3: plain == on the returned value",
    ),
    Case("add", fenced(method("add", "raise SystemExit(0)")), False, "SystemExit in a call ends the run: fail"),
    Case(
        "add",
        fenced(method("add", "time.sleep(3.5)\n        return args[0] + args[1]", "import time\n")),
        True,
        "two calls of 3.5 s: 7 s in all, but 6 s is a limit per call (signal.alarm around each call)",
    ),
    Case(
        "minmax",
        fenced(method("minMax", "return min(args[0]), max(args[0])")),
        True,
        "a returned tuple becomes a list",
    ),
    Case(
        "pairs",
        fenced(method("pairs", "return [(a, b) for a, b in zip(args[0][::2], args[0][1::2])]")),
        False,
        "only the returned tuple becomes a list: [(1, 2), (3, 4)] != [[1, 2], [3, 4]]",
        strict=True,
    ),
    Case(
        "pairs",
        fenced(method("pairs", "return tuple([a, b] for a, b in zip(args[0][::2], args[0][1::2]))")),
        True,
        "a returned tuple of lists becomes a list of lists",
    ),
    # ---- stdin/stdout tests (grade_stdio, call_method)
    Case(
        "sum",
        fenced(SUM + "\nimport sys\nsys.exit(0)"),
        True,
        "SystemExit after the output: caught, the output is graded",
    ),
    Case(
        "sum",
        fenced(SUM + "\nimport sys\nsys.exit(1)"),
        True,
        "SystemExit(1) after the output: caught too, exit code ignored",
        strict=False,
    ),
    Case(
        "sum",
        fenced(SUM + "\nexit('done')"),
        True,
        "exit('done') is sys.exit (from sys import *): caught",
        strict=False,
    ),
    Case("sum", fenced(SUM + "\nraise ValueError('late')"), False, "an exception after correct output: runtime error"),
    Case("sum", fenced(SUM.replace("a + b", "a * b")), False, "a wrong line"),
    Case(
        "sum",
        fenced(SUM.replace("print(a + b)", "print(f'  {a + b}.0  ')") + "\nprint()\nprint()"),
        True,
        "lines are stripped, trailing blank lines dropped, and 3.0 equals 3 as Decimals",
    ),
    Case("sum", fenced(SUM_IN_MAIN), True, "a last statement `if __name__ == '__main__':` is run (clean_if_name)"),
    Case("echo", fenced("import time\ntime.sleep(5)\nprint(input())"), True, "5 s is under the 6 s limit per test"),
    Case("echo", fenced("import time\ntime.sleep(7)\nprint(input())"), False, "7 s is over the 6 s limit per test"),
    Case(
        "big",
        fenced("import sys\nn = int(input())\nsys.stdout.write('1\\n' * n)"),
        True,
        "1.2 MB of output: lcb_runner captures output without a cap",
        strict=False,
    ),
    Case(
        "echo",
        fenced("import mmap\nm = mmap.mmap(-1, 2 << 30)\nprint(input())"),
        True,
        "2 GiB of address space: lcb_runner sets no memory limit",
        strict=False,
    ),
    # ---- where lcb_runner is wrong by accident and we judge as a real judge (docs/grading.md)
    Case(
        "sum",
        fenced(
            "import sys\nn = int(sys.stdin.buffer.readline())\nfor _ in range(n):\n"
            "    a, b = map(int, sys.stdin.buffer.readline().split())\n    print(a + b)"
        ),
        True,
        "sys.stdin.buffer.readline() reads the next line (lcb_runner's mock returns line 1 every time)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced(
            "total = 0\ndef add(x):\n    global total\n    total += x\nn = int(input())\nfor _ in range(n):\n"
            "    total = 0\n    for v in map(int, input().split()):\n        add(v)\n    print(total)"
        ),
        True,
        "`global` reaches a top-level variable (lcb_runner wraps the program in a function: NameError)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced(
            "import sys\nlines = [line for line in sys.stdin]\nfor line in lines[1:]:\n"
            "    a, b = map(int, line.split())\n    print(a + b)"
        ),
        True,
        "sys.stdin is iterable (lcb_runner's mock is not: TypeError)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced(SUM + "\nquit()"),
        True,
        "quit() ends the program like exit() (lcb_runner set quit to None)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced(SUM_IN_MAIN + "\nDONE = True"),
        True,
        "the __main__ block runs wherever it is (lcb_runner runs it only as the last statement)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced(SUM + "\nimport os, sys\nsys.stdout.flush()\nos._exit(0)"),
        True,
        "os._exit(0) after the output is a normal end (it kills lcb_runner's worker: no result)",
        lcb_runner=False,
    ),
    Case(
        "sum",
        fenced("import os\nhome = os.getcwd()\n" + SUM),
        True,
        "os.getcwd() works (lcb_runner's reliability_guard set it to None)",
        lcb_runner=False,
    ),
    Case(
        "add",
        fenced(
            method("add", "return Always()", "class Always:\n    def __eq__(self, other):\n        return True\n\n")
        ),
        False,
        "only plain values are compared (lcb_runner's == lets an object that equals everything pass)",
        lcb_runner=True,
    ),
    Case(
        "add",
        fenced(method("add", "return numpy.int64(args[0] + args[1])", "import numpy\n")),
        False,
        "a numpy scalar is not a plain value (lcb_runner's == accepts it)",
        lcb_runner=True,
    ),
]


def write_replies(path: Path, cases: list[Case]) -> Path:
    path.write_text("".join(json.dumps({"problem_id": c.problem, "reply": c.reply}) + "\n" for c in cases))
    return path


def verdicts(out: Path, temperature: str = "none") -> dict[int, dict]:
    """The records of an eval directory by their line in the replies file."""
    return {r["replies_line"]: r for r in read_jsonl(out / "results" / f"T{temperature}.jsonl")}


def check(cases: list[Case], records: dict[int, dict], expected) -> None:
    wrong = [
        f"line {i}: {c.rule}: expected {'pass' if expected(c) else 'fail'}, "
        f"got {records[i]['status']} ({records[i]['detail']})"
        for i, c in enumerate(cases, 1)
        if records[i]["passed"] != expected(c)
    ]
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------------------- the lcb profile, through the CLI


def test_lcb_profile_gives_lcb_runners_verdicts_on_the_corpus(tmp_path):
    fixture = write_fixture(tmp_path / "lcb.jsonl")
    replies = write_replies(tmp_path / "replies.jsonl", CORPUS)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--benchmark",
            "livecodebench",
            "--benchmark-path",
            str(fixture),
            "--replies",
            str(replies),
            "--output-dir",
            str(out),
            "--workers",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    check(CORPUS, verdicts(out), lambda c: c.passes)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grading"] == "lcb" and summary["n_problems"] == len(PROBLEMS)


def test_strict_profile_where_the_profiles_differ(tmp_path):
    """Without sanitizing, which would drop the __main__ block that tells call_runs_main apart (below)."""
    cases = [c for c in CORPUS if c.strict is not None]
    cfg = EvalConfig(
        benchmark="livecodebench",
        benchmark_path=str(write_fixture(tmp_path / "lcb.jsonl")),
        grading="strict",
        sanitize=False,
        replies=str(write_replies(tmp_path / "replies.jsonl", cases)),
        output_dir=str(tmp_path / "eval"),
        workers=4,
    )
    check(cases, verdicts(E.evaluate(cfg)), lambda c: c.strict)


# what a model adds after its function: stdin is empty, so input() fails
EXAMPLE_CALLS = "\nprint(Solution().add(1, 2))\nx = int(input())\n"


def test_strict_profile_sanitizes_function_style_replies_only(tmp_path):
    cases = [
        Case("add", fenced(ADD + EXAMPLE_CALLS), True, "example calls after a correct class: dropped"),
        Case(
            "add",
            fenced(ADD + "\nif __name__ == '__main__':\n    import sys\n    sys.exit(1)"),
            True,
            "a __main__ block: dropped",
        ),
        Case(
            "add",
            fenced(
                method("add", "return helper(*args)") + "\ndef helper(a, b):\n    return a + b\nprint(helper(1, 2))"
            ),
            True,
            "a helper the class calls is kept, the print is dropped",
        ),
        Case("sum", fenced(SUM), True, "a stdin program is never sanitized: its top-level code is the program"),
    ]
    replies = write_replies(tmp_path / "replies.jsonl", cases)
    fixture = write_fixture(tmp_path / "lcb.jsonl")
    cfg = EvalConfig(
        benchmark="livecodebench",
        benchmark_path=str(fixture),
        grading="strict",
        replies=str(replies),
        output_dir=str(tmp_path / "eval"),
        workers=4,
    )
    out = E.evaluate(cfg)
    check(cases, verdicts(out), lambda c: c.passes)
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["grading_rules"]["sanitize"] is True
        and load_manifest(out)["grading_rules"] == summary["grading_rules"]
    )
    unsanitized = E.evaluate(replace(cfg, sanitize=False, output_dir=str(tmp_path / "unsanitized")))
    assert [r["passed"] for r in verdicts(unsanitized).values()] == [False, False, True, True]


def test_an_eval_graded_under_other_rules_is_regraded_when_it_reopens(tmp_path):
    """A directory from before sanitizing (no grading_rules in its manifest) has the same fingerprint as
    today's default config: the eval must not pass it off as graded under today's rules."""
    cases = [Case("add", fenced(ADD + EXAMPLE_CALLS), True, "example calls after a correct class")]
    cfg = EvalConfig(
        benchmark="livecodebench",
        benchmark_path=str(write_fixture(tmp_path / "lcb.jsonl")),
        grading="strict",
        replies=str(write_replies(tmp_path / "replies.jsonl", cases)),
        output_dir=str(tmp_path / "eval"),
        workers=2,
    )
    old = E.evaluate(cfg)
    assert eval_done(cfg)
    manifest = load_manifest(old)
    del manifest["grading_rules"]  # as written before rules were recorded, with the verdict of then
    (old / "manifest.json").write_text(json.dumps(manifest))
    results = old / "results" / "Tnone.jsonl"
    results.write_text(json.dumps({**verdicts(old)[1], "passed": False, "status": "runtime_error"}) + "\n")
    assert not eval_done(cfg)  # the fingerprint is the same: sanitize=None is the default
    E.evaluate(cfg)
    assert verdicts(old)[1]["passed"] and eval_done(cfg) and load_manifest(old)["grading_rules"]["sanitize"] is True


def test_profiles_and_their_limits():
    lcb = B.get("livecodebench")
    assert lcb.grading == "lcb" and B.get("humaneval").grading == "strict"
    assert lcb.graded_by("strict").profile.timeout == 10.0 and lcb.graded_by(None) is lcb
    limits = lcb.profile.limits(memory_mb=4096)
    assert (limits.timeout, limits.memory_mb, limits.max_output_bytes) == (6.0, 4096, 64 << 20)
    with pytest.raises(B.BenchmarkError, match="unknown grading profile 'lbc'; profiles: strict, lcb"):
        lcb.graded_by("lbc")


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("```python\na = 1\n```\ntext\n```\nb = 2\n```", "b = 2"),
        ("x ```py\na = 1\n``` y", "a = 1"),
        ("<think>```python\nz = 0\n```</think>\n```python\na = 1\n```", "a = 1"),
        ("```python\nrow = 1\n\n```", "row = 1\n"),
    ],
)
def test_extraction_between_the_last_two_fence_lines(reply, code):
    assert B.extract_between_last_fences(reply) == code


@pytest.mark.parametrize(
    "reply", ["a = 1", "```python\na = 1", "```python\n\n```", "~~~python\na = 1\n~~~", "<think>```python\na = 1\n```"]
)
def test_extraction_without_two_fence_lines_or_code_fails(reply):
    with pytest.raises(B.ExtractionError):
        B.extract_between_last_fences(reply)


# -------------------------------------------------------------------------- replies: layout, manifest, samples, errors


def test_replies_with_temperatures_and_samples_give_a_model_evals_layout(tmp_path):
    fixture = write_fixture(tmp_path / "lcb.jsonl")
    good, bad = fenced(SUM), fenced("print(0)")
    add_good, add_bad = fenced(ADD), fenced(method("add", "return 0"))
    rows = []
    for T, (s, a) in {0.2: ((good, good), (add_good, add_bad)), 0.8: ((good, bad), (add_bad, add_bad))}.items():
        rows += [{"problem_id": "sum", "reply": r, "temperature": T} for r in s]
        rows += [
            {"problem_id": "add", "reply": r, "temperature": T, "model": "elsewhere"} for r in a
        ]  # extra fields are ignored
    replies = tmp_path / "replies.jsonl"
    replies.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = EvalConfig(
        benchmark="livecodebench",
        benchmark_path=str(fixture),
        replies=str(replies),
        ks=[1, 2],
        dev_fraction=0.5,
        model="no-such-model",
        output_dir=str(tmp_path / "eval"),
        workers=2,
    )
    out = E.evaluate(cfg)  # a model that does not exist: nothing loads it
    s = json.loads((out / "summary.json").read_text())
    assert s["problem_ids"] == ["add", "sum"] and sorted(s["dev_ids"] + s["test_ids"]) == [
        "add",
        "sum",
    ]  # benchmark order
    assert (
        s["model"] == "replies replies.jsonl"
        and s["replies"]["sha256"] == sha256_file(replies)
        and s["replies"]["count"] == 8
    )
    low, high = s["temperatures"]["0.20"], s["temperatures"]["0.80"]
    assert (low["n"], low["pass@1"]["all"]["mean"], low["pass@2"]["all"]["mean"]) == (2, 0.75, 1.0)
    assert (high["pass@1"]["all"]["mean"], high["pass@2"]["all"]["mean"]) == (0.25, 0.5)
    assert low["pass@1"]["all"]["ci_lo"] <= 0.75 <= low["pass@1"]["all"]["ci_hi"] and low["reply_tokens"] is None
    assert s["selection"]["pass@1"]["best_T"] == 0.2
    records = read_jsonl(out / "results" / "T0.20.jsonl")
    assert [(r["problem_id"], r["sample_index"], r["replies_line"]) for r in records] == [
        ("add", 0, 3),
        ("add", 1, 4),
        ("sum", 0, 1),
        ("sum", 1, 2),
    ]
    assert all(set(E.RECORD_FIELDS) <= set(r) for r in records)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["replies"] == sha256_file(replies) and manifest["finished_at"]
    before = (out / "results" / "T0.80.jsonl").stat().st_mtime_ns
    E.evaluate(cfg)  # finished: nothing is graded again
    assert (out / "results" / "T0.80.jsonl").stat().st_mtime_ns == before


BAD_REPLIES = [
    (
        '{"problem_id": "sum", "reply": "x"}\n{"problem_id": "sum", "reply": "x"\n',
        r"replies.jsonl:2: invalid JSON at column 35: Expecting ',' delimiter",
    ),
    ('{"problem_id": "sum", "reply": "x"}\n\n{"problem_id": "sum"}\n', r"replies.jsonl:3: missing field 'reply'"),
    ('{"reply": "x"}\n', r"replies.jsonl:1: missing field 'problem_id'"),
    ('{"problem_id": 7, "reply": "x"}\n', r"replies.jsonl:1: field 'problem_id' must be a string, got int"),
    (
        '{"problem_id": "sum", "reply": "x"}\n{"problem_id": "nope", "reply": "x"}\n',
        r"replies.jsonl:2: field 'problem_id': unknown problem 'nope' \(not in livecodebench\)",
    ),
    (
        '{"problem_id": "sum", "reply": "x", "temperature": "hot"}\n',
        r"replies.jsonl:1: field 'temperature' must be a number >= 0, got 'hot'",
    ),
    (
        '{"problem_id": "sum", "reply": "x", "temperature": 0.7}\n{"problem_id": "sum", "reply": "x"}\n',
        r"replies.jsonl:2: missing field 'temperature' \(line 1 has one",
    ),
    ('["sum", "x"]\n', r"replies.jsonl:1: expected a JSON object"),
    (
        '{"problem_id": "sum", "reply": "x", "temperature": 0.7}\n'
        '{"problem_id": "add", "reply": "x", "temperature": 0.701}\n',
        r"replies.jsonl:2: field 'temperature' 0.701 and 0.7 \(line 1\) are the same at two decimals",
    ),
    (
        '{"problem_id": "sum", "reply": "x", "temperature": 0.5}\n',
        r"replies.jsonl:1: problem_id 'sum' has 1 replies at temperature 0.50; pass@2 needs 2",
    ),
]


@pytest.mark.parametrize(("text", "error"), BAD_REPLIES)
def test_bad_replies_are_one_line_errors_naming_file_line_and_field(tmp_path, text, error):
    (tmp_path / "replies.jsonl").write_text(text)
    cfg = EvalConfig(
        benchmark="livecodebench",
        benchmark_path=str(write_fixture(tmp_path / "lcb.jsonl")),
        ks=[1, 2],
        replies=str(tmp_path / "replies.jsonl"),
        output_dir=str(tmp_path / "eval"),
        workers=1,
    )
    with pytest.raises(B.BenchmarkError, match=error) as e:
        E.evaluate(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "eval").exists()  # refused before anything was written


def test_a_bad_replies_file_through_the_cli_is_one_error_line(tmp_path):
    (tmp_path / "replies.jsonl").write_text('{"problem_id": "sum"}\n')
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--benchmark",
            "livecodebench",
            "--benchmark-path",
            str(write_fixture(tmp_path / "lcb.jsonl")),
            "--replies",
            str(tmp_path / "replies.jsonl"),
            "--output-dir",
            str(tmp_path / "eval"),
        ],
    )
    assert result.exit_code == 1
    assert (
        " ".join(result.output.split()) == f"error: {tmp_path / 'replies.jsonl'}:1: missing field 'reply'"
    )  # (rich wraps at 80 columns)


# ---------------------------------------------------------------------------- lcb_runner itself (opt-in)

LCB_RUNNER_CASE = """
import json, sys
sys.path.insert(0, sys.argv[1])
from lcb_runner.evaluation.compute_code_generation_metrics import check_correctness
from lcb_runner.lm_styles import LMStyle
from lcb_runner.utils.extraction_utils import extract_code
sample, reply = json.loads(sys.stdin.read())
try:
    results, _ = check_correctness(sample, extract_code(reply, LMStyle.OpenAIChat), timeout=6, debug=False)
except Exception:  # no result from the worker (it died): lcb_runner counts the generation as failed
    results = [-1]
print(json.dumps(all(r > 0 for r in results)))  # compute_metrics_from_results: np.all(np.array(results) > 0)
"""


@pytest.mark.skipif(
    not os.environ.get("LCB_RUNNER"),
    reason="set LCB_RUNNER to a LiveCodeBench checkout to grade the corpus with lcb_runner",
)
def test_lcb_runner_gives_the_same_verdicts():
    def lcb_runner_passes(case: Case) -> bool:
        func_name, tests = PROBLEMS[case.problem]
        in_outs = {
            "inputs": [i for i, _ in tests],
            "outputs": [o for _, o in tests],
            **({"fn_name": func_name} if func_name else {}),
        }
        run = subprocess.run(
            [sys.executable, "-c", LCB_RUNNER_CASE, os.environ["LCB_RUNNER"]],
            capture_output=True,
            text=True,
            timeout=120,
            input=json.dumps([{"input_output": json.dumps(in_outs)}, case.reply]),
        )
        return json.loads(run.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(8) as threads:
        got = list(threads.map(lcb_runner_passes, CORPUS))
    want = [c.passes if c.lcb_runner is None else c.lcb_runner for c in CORPUS]
    wrong = [
        f"{c.rule}: lcb_runner {'passes' if g else 'fails'} it"
        for c, g, w in zip(CORPUS, got, want, strict=True)
        if g != w
    ]
    assert not wrong, "\n".join(wrong)
