"""The benchmark registry: loaders, extraction, LiveCodeBench test decoding and graders (real sandbox)."""

from __future__ import annotations

import base64
import gzip
import json
import pickle
import random
import re
import zlib
from pathlib import Path

import pytest

from selfdistill import benchmarks as B
from selfdistill.chat import final_channel
from selfdistill.sandbox import Limits, Pool


@pytest.fixture(scope="module")
def pool():
    with Pool(2, Limits(timeout=10)) as p:
        yield p


def sample(problems, n, seed=0):
    return random.Random(seed).sample(problems, min(n, len(problems)))


# ---------------------------------------------------------------------------- extraction


def test_extracts_the_last_python_block_after_thinking():
    reply = (
        "<think>maybe ```python\nprint('thought')\n```</think>First:\n```python\nx = 1\n```\n"
        "Output:\n```text\n1\n```\nFinal:\n```python\nx = 2\n```\nDone."
    )
    assert B.extract_code(reply, completion_fallback=False) == "x = 2"


def test_thinking_whose_opening_tag_is_in_the_prompt_and_unclosed_thinking():
    assert B.extract_code("plan...</think>\n```python\nok = 1\n```", False) == "ok = 1"
    with pytest.raises(B.ExtractionError):  # cut off while thinking: no answer yet
        B.extract_code("<think>```python\nx = 1\n```\nstill thinking", False)


def test_fences_with_tildes_longer_fences_and_py_tags():
    assert B.extract_code("~~~py\na = 1\n~~~", False) == "a = 1"
    assert B.extract_code("````python\ns = '```'\n```\nt = 2\n````", False) == "s = '```'\n```\nt = 2"


def test_gpt_oss_is_graded_on_its_final_channel_only():
    """Harmony replies: the analysis channel is reasoning (its code is never graded); the answer is the
    last final-channel message; a reply cut off while reasoning has none: extraction_failed."""
    analysis = "<|channel|>analysis<|message|>Try:\n```python\nprint('draft')\n```<|end|>"
    final = "<|start|>assistant<|channel|>final<|message|>Done.\n```python\nprint('answer')\n```"
    assert B.extract_code(analysis + final, completion_fallback=False) == "print('answer')"
    assert B.extract_code(analysis + final + "<|return|>", completion_fallback=True) == "print('answer')"
    constrained = "<|start|>assistant<|channel|>final <|constrain|>python<|message|>```python\nprint(2)\n```<|end|>"
    assert final_channel(analysis + constrained) == "```python\nprint(2)\n```"
    assert (
        B.extract_between_last_fences(analysis + final) == "print('answer')"
    )  # the lcb profile's rule reads the final channel too
    for cut in (
        analysis,
        analysis + "<|start|>assistant<|channel|>final",
    ):  # cut while reasoning, or in the final header
        for fallback in (False, True):
            with pytest.raises(B.ExtractionError, match="no final channel"):
                B.extract_code(cut, completion_fallback=fallback)
        with pytest.raises(B.ExtractionError, match="no final channel"):
            B.extract_between_last_fences(cut)
    verdict = B.get("humaneval").grade_many([B.get("humaneval").problems()[0]], [analysis], pool=None)[0]
    assert verdict.status == "extraction_failed" and "no final channel" in verdict.detail


def test_lcb_style_fails_without_a_fence_completion_style_falls_back():
    code = "def f(x):\n    return x + 1\n"
    with pytest.raises(B.ExtractionError):
        B.extract_code(code, completion_fallback=False)
    assert B.extract_code(code, completion_fallback=True) == code
    # an unclosed final block (the reply hit max_tokens) is taken only by the completion-style fallback
    assert B.extract_code("Sure:\n```python\ndef f():\n    return 1", True) == "def f():\n    return 1"
    with pytest.raises(B.ExtractionError):
        B.extract_code("Sure:\n```python\ndef f():\n    return 1", False)


@pytest.mark.parametrize(
    "reply", ["", "   \n", "I cannot solve this problem, sorry.", "```python\n\n```", "```bash\nls\n```"]
)
def test_replies_without_code_are_extraction_failures(reply):
    with pytest.raises(B.ExtractionError):
        B.extract_code(reply, completion_fallback=True)


def test_extraction_failure_is_a_verdict_not_a_crash(pool):
    bench = B.get("humaneval")
    p = bench.load()[0]
    (v,) = bench.grade_many([p], ["I don't know."], pool)
    assert (v.status, v.passed) == ("extraction_failed", False) and v.detail


def test_humaneval_completion_style_body_only(pool):
    bench = B.get("humaneval")
    problems = bench.load()[:5]
    with gzip.open(bench.source(), "rt") as f:
        rows = {row["task_id"]: row for row in map(json.loads, f)}
    bodies = [rows[p.id]["canonical_solution"] for p in problems]  # the body alone, as a base model writes it
    fenced = [f"```python\n{b}\n```" for b in bodies]
    assert all(v.passed for v in bench.grade_many(problems + problems, bodies + fenced, pool))


# ---------------------------------------------------------------------------- LiveCodeBench test decoding


CASES = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]


def test_decodes_plain_zlib_json_and_pickled_private_tests():
    as_json = json.dumps(CASES)
    assert B.decode_test_cases(as_json) == CASES
    assert B.decode_test_cases(base64.b64encode(zlib.compress(as_json.encode())).decode()) == CASES
    for protocol in (0, 2, 4, 5):  # upstream pickles the JSON string
        blob = base64.b64encode(zlib.compress(pickle.dumps(as_json, protocol=protocol))).decode()
        assert B.decode_test_cases(blob) == CASES
    assert B.decode_test_cases("") == [] and B.decode_test_cases(None) == []


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/selfdistill-pwned-by-pickle",))


def test_refuses_pickles_that_reference_any_global(tmp_path):
    marker = Path("/tmp/selfdistill-pwned-by-pickle")
    marker.unlink(missing_ok=True)
    blob = base64.b64encode(zlib.compress(pickle.dumps([_Exploit()]))).decode()
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system|plain values"):
        B.decode_test_cases(blob)
    assert not marker.exists()
    # through the loader: a clear error naming the file and line, and still nothing executed
    row = lcb_row("1", "stdin", private_test_cases=blob)
    path = tmp_path / "lcb.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(B.BenchmarkError, match=rf"{path}:1: UnpicklingError"):
        B.get("livecodebench").load(str(path))
    assert not marker.exists()


# ---------------------------------------------------------------------------- loaders


def test_shipped_benchmarks_load_with_metadata():
    counts = {
        name: len(B.get(name).problems())
        for name in ("humaneval", "humaneval_plus", "mbpp", "leetcode", "livecodebench")
    }
    assert counts == {"humaneval": 164, "humaneval_plus": 164, "mbpp": 500, "leetcode": 228, "livecodebench": 400}
    mbpp = B.get("mbpp").problems()
    assert mbpp[0].id == "Mbpp/11" and mbpp[-1].id == "Mbpp/510"
    leetcode = B.get("leetcode").problems()
    from collections import Counter

    assert Counter(p.metadata["difficulty"] for p in leetcode) == {"easy": 48, "medium": 101, "hard": 79}
    assert all(p.metadata["date"] and p.metadata["platform"] == "leetcode" for p in leetcode)
    lcb = B.get("livecodebench").problems()
    assert Counter(p.metadata["platform"] for p in lcb) == {"atcoder": 210, "leetcode": 181, "codeforces": 9}
    assert B.tests_label(lcb) == "public tests" and B.tests_label(leetcode) == "all tests"


def test_mbpp_prompt_names_the_function_the_tests_call():
    p = next(p for p in B.get("mbpp").problems() if p.id == "Mbpp/126")
    assert p.entry_point == "sum" and p.starter_code.startswith("def sum(") and "assert sum(10,15) == 6" in p.statement


def test_date_window_and_platform_filters():
    lcb = B.get("livecodebench")
    window = lcb.load(release_from="2023-09-01", release_to="2023-12-31", platforms=["LeetCode"])
    assert window and all(
        "2023-09-01" <= p.metadata["date"] <= "2023-12-31" and p.metadata["platform"] == "leetcode" for p in window
    )
    with pytest.raises(B.BenchmarkError, match="no date"):
        B.get("humaneval").load(release_from="2024-01-01")
    with pytest.raises(B.BenchmarkError, match="no problems left"):
        lcb.load(platforms=["topcoder"])


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(jsonl_row("a")) + "\n{not json\n")
    with pytest.raises(B.BenchmarkError, match=rf"{path}:2: invalid JSON"):
        B.get("jsonl").load(str(path))
    row = jsonl_row("a")
    del row["statement"]
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(B.BenchmarkError, match=rf"{path}:1: missing field 'statement'"):
        B.get("jsonl").load(str(path))
    path.write_text(json.dumps(jsonl_row("a")) + "\n" + json.dumps(jsonl_row("a")) + "\n")
    with pytest.raises(B.BenchmarkError, match=rf"{path}:2: duplicate id 'a'"):
        B.get("jsonl").load(str(path))
    with pytest.raises(B.BenchmarkError, match="unknown benchmark 'humaneva'; did you mean 'humaneval'"):
        B.get("humaneva")
    with pytest.raises(B.BenchmarkError, match="needs benchmark_path"):
        B.get("jsonl").load()


def test_hub_code_path_with_a_local_dataset_directory(tmp_path):
    """benchmark_path that is not a file goes through datasets.load_dataset, as a hub id does."""
    with open(B.data_dir() / "livecodebench-public.jsonl") as f:
        rows = [json.loads(line) for line, _ in zip(f, range(5), strict=False)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    problems = B.get("livecodebench").load(str(tmp_path))
    assert [p.id for p in problems] == [r["question_id"] for r in rows]
    assert problems[0].metadata["source"].startswith(f"{tmp_path}[test]:")
    # the other file formats a user may hand over: a JSON list and parquet
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "rows.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    for name in ("rows.json", "rows.parquet"):
        assert [p.id for p in B.get("livecodebench").load(str(tmp_path / name))] == [r["question_id"] for r in rows]


def test_benchmark_texts_for_decontamination():
    texts = dict(B.benchmark_texts("humaneval"))
    assert len(texts) == 164 and "def has_close_elements" in texts["HumanEval/0"]
    assert len(B.benchmark_texts("livecodebench")) == 400


def test_messages_in_both_formats():
    lc = B.get("leetcode")
    p = lc.problems()[0]
    system = lc.messages(p, "system")
    assert system[0]["role"] == "system" and p.starter_code in system[1]["content"]
    (user,) = lc.messages(p, "lcb")
    assert "starter code" in user["content"] and p.starter_code in user["content"]
    stdin = next(q for q in B.get("livecodebench").problems() if not q.starter_code)
    (user,) = B.get("livecodebench").messages(stdin, "lcb")
    assert "stdin" in user["content"]


# ------------------------------------------------------------------------ graders: references pass, wrong answers fail


PERTURB = """
def _perturb(out):
    if isinstance(out, bool):
        return not out
    if isinstance(out, (int, float)):
        return out + 1
    if isinstance(out, str):
        return out + "?"
    if isinstance(out, (list, tuple)):
        return type(out)(list(out) + [None])
    return 0 if out is None else None
"""


def perturbed(problem: B.Problem) -> str:
    """The reference with its return value changed: a known-wrong solution that still runs. The reference's
    definition is renamed, not redefined after (a subclass or wrapper calls it by its new name)."""
    if problem.entry_point.startswith("Solution()."):
        method = problem.entry_point.split(".", 1)[1]
        base = re.sub(r"^class Solution\b", "class _Base", problem.reference, count=1, flags=re.M)
        return (
            f"{base}\n{PERTURB}\nclass Solution(_Base):\n    def {method}(self, *args, **kwargs):\n"
            f"        return _perturb(super().{method}(*args, **kwargs))\n"
        )
    name = problem.entry_point
    original = re.sub(rf"^def {name}\b", "def _original", problem.reference, count=1, flags=re.M)
    return f"{original}\n{PERTURB}\ndef {name}(*args, **kwargs):\n    return _perturb(_original(*args, **kwargs))\n"


def wrong_reply(problem):
    return f"```python\n{perturbed(problem)}\n```"


@pytest.mark.parametrize("name,n", [("humaneval", 164), ("mbpp", 60), ("leetcode", 12)])
def test_references_pass_and_perturbed_references_fail(pool, name, n):
    bench = B.get(name)
    problems = sample(bench.load(pool=pool), n)
    good = bench.grade_many(problems, [bench.oracle_reply(p) for p in problems], pool)
    assert [(p.id, v.status, v.detail) for p, v in zip(problems, good, strict=True) if not v.passed] == []
    bad = bench.grade_many(problems, [wrong_reply(p) for p in problems], pool)
    assert [(p.id, v.status) for p, v in zip(problems, bad, strict=True) if v.passed] == []
    assert sum(v.status == "failed" for v in bad) > 0.8 * len(bad)  # wrong answers, mostly not crashes


@pytest.mark.integration  # computes ~20k reference outputs in the sandbox (a minute) unless cached
def test_humaneval_plus_references_pass_and_perturbed_fail(pool):
    """A seeded subset (the whole set takes ~10 minutes here; `ssd eval --benchmark humaneval_plus --oracle`)."""
    bench = B.get("humaneval_plus")
    problems = bench.load(limit=25, seed=1, pool=pool)
    assert sum(len(p.tests["inputs"]) for p in problems if p.tests["kind"] == "call") > 10_000
    good = bench.grade_many(problems, [bench.oracle_reply(p) for p in problems], pool)
    assert [(p.id, v.status, v.detail) for p, v in zip(problems, good, strict=True) if not v.passed] == []
    bad = bench.grade_many(problems, [wrong_reply(p) for p in problems], pool)
    assert [p.id for p, v in zip(problems, bad, strict=True) if v.passed] == []


def test_humaneval_plus_find_zero_accepts_any_root(pool):
    """evalplus's special oracle: any x with |poly(x)| <= atol is right, not only the reference's root."""
    from dataclasses import replace

    bench = B.get("humaneval_plus")
    p = next(p for p in bench.problems() if p.entry_point == "find_zero")
    assert p.tests["kind"] == "assert" and "_poly" in p.tests["test_code"]
    cubic = replace(
        p, tests={**p.tests, "test_code": B._FIND_ZERO_CHECK.format(inputs=[[[-6, 11, -6, 1]]], atol=1e-4)}
    )  # roots 1, 2, 3
    replies = [f"```python\ndef find_zero(xs):\n    return {x}\n```" for x in (1.0, 2.0, 3.0, 2.5)]
    assert [v.passed for v in bench.grade_many([cubic] * 4, replies, pool)] == [True, True, True, False]


# ------------------------------------------------------------------ LiveCodeBench rows and the generic JSONL benchmark


def lcb_row(qid, kind, **extra):
    if kind == "functional":
        cases = [{"input": "[1, 2, 3]\n2", "output": "[3, 4, 5]", "testtype": "functional"}]
        meta, starter = (
            {"func_name": "addAll"},
            "class Solution:\n    def addAll(self, nums: List[int], k: int) -> List[int]:\n        ",
        )
    else:
        cases, meta, starter = CASES, {}, ""
    return {
        "question_title": f"q{qid}",
        "question_content": "Add.",
        "platform": "atcoder" if kind == "stdin" else "leetcode",
        "question_id": qid,
        "contest_id": "c",
        "contest_date": "2024-01-02T00:00:00",
        "starter_code": starter,
        "difficulty": "easy",
        "public_test_cases": json.dumps(cases),
        "metadata": json.dumps(meta),
        **extra,
    }


def test_livecodebench_functional_and_stdin_rows(tmp_path, pool):
    private = base64.b64encode(
        zlib.compress(pickle.dumps(json.dumps([{"input": "5 5\n", "output": "10\n", "testtype": "stdin"}])))
    ).decode()
    path = tmp_path / "lcb.jsonl"
    path.write_text(
        json.dumps(lcb_row("f1", "functional"))
        + "\n"
        + json.dumps(lcb_row("s1", "stdin", private_test_cases=private))
        + "\n"
    )
    bench = B.get("livecodebench")
    functional, stdin = bench.load(str(path))
    assert stdin.metadata["private_tests"] == 1 and len(stdin.tests["inputs"]) == 2
    assert B.tests_label([functional, stdin]) == "all tests"
    # List and deque come from lcb_runner's import header, as in the official harness
    solution = (
        "```python\nclass Solution:\n    def addAll(self, nums: List[int], k: int) -> List[int]:\n"
        "        return list(deque(x + k for x in nums))\n```"
    )
    tuple_answer = solution.replace("return list(", "return tuple(")  # LiveCodeBench compares tuples as lists
    wrong = solution.replace("x + k", "x + k + 1")
    program = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    verdicts = bench.grade_many(
        [functional] * 3 + [stdin] * 2,
        [solution, tuple_answer, wrong, program, program.replace("a + b", "a * b")],
        pool,
    )
    assert [v.passed for v in verdicts] == [True, True, False, True, False], verdicts
    # LiveCodeBench extraction: no fenced block, no answer
    assert (
        bench.grade_many([stdin], ["a, b = map(int, input().split())\nprint(a + b)"], pool)[0].status
        == "extraction_failed"
    )


def jsonl_row(pid, **fields):
    return {
        "id": pid,
        "statement": "Return the sum of a and b.",
        "entry_point": "add",
        "reference": "def add(a, b):\n    return a + b\n",
        "call_tests": [{"input": [1, 2], "output": 3}, {"input": [-1, 1], "output": 0}],
        **fields,
    }


def test_generic_jsonl_benchmark_all_test_kinds(tmp_path, pool):
    rows = [
        jsonl_row("call", difficulty="Easy", date="2025-01-01", platform="mine"),
        jsonl_row("asserts", call_tests=None, test="assert add(2, 2) == 4\nassert add(0, 0) == 0\n"),
        jsonl_row("check", call_tests=None, test="def check(candidate):\n    assert candidate(1, 1) == 2\n"),
        {
            "id": "stdio",
            "statement": "Print a+b.",
            "reference": "print(sum(map(int, input().split())))",
            "stdio_tests": [{"input": "1 2\n", "output": "3\n"}],
        },
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench = B.get("jsonl")
    problems = bench.load(str(path))
    assert [p.tests["kind"] for p in problems] == ["call", "assert", "assert", "stdio"]
    assert problems[0].metadata | {"source": ""} == {
        "difficulty": "easy",
        "date": "2025-01-01",
        "platform": "mine",
        "source": "",
    }
    good = bench.grade_many(problems, [bench.oracle_reply(p) for p in problems], pool)
    assert all(v.passed for v in good), good
    wrong = ["```python\ndef add(a, b):\n    return a - b\n```"] * 3 + ["```python\nprint(0)\n```"]
    assert not any(v.passed for v in bench.grade_many(problems, wrong, pool))
    path.write_text(json.dumps(jsonl_row("x", test="assert True")) + "\n")
    with pytest.raises(B.BenchmarkError, match="exactly one of the fields test, call_tests, stdio_tests"):
        bench.load(str(path))


def test_livecodebench_public_tests_accept_independent_references(pool):
    """LiveCodeBench publishes no solutions, but 77 of its LeetCode problems are in LeetCodeDataset's train
    split with a reference: graded by LiveCodeBench's own (functional, public) tests, all must pass."""
    train = {}
    with gzip.open(B.data_dir() / "leetcode-v0.2.0-train.jsonl.gz", "rt") as f:
        for row in map(json.loads, f):
            train[row["task_id"]] = row["completion"]
    bench = B.get("livecodebench")
    problems = [p for p in bench.problems() if p.metadata["title"] in train]
    assert len(problems) == 77 and all(p.tests["kind"] == "call" for p in problems)
    verdicts = bench.grade_many(problems, [f"```python\n{train[p.metadata['title']]}\n```" for p in problems], pool)
    assert [(p.id, v.detail) for p, v in zip(problems, verdicts, strict=True) if not v.passed] == []


# --------------------------------------------------------------------------- LiveCodeBench v6 from the hub's raw files

LCB_REPO = "livecodebench/code_generation_lite"
SUM_STDIN = "a, b = map(int, input().split())\nprint(a + b)"


def upstream_private(cases: list[dict]) -> str:
    """Private tests as the upstream files store them: base64 of zlib of a pickle of the JSON text."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def upstream_row(qid: str, date: str, func_name: str | None = None) -> dict:
    """A row of code_generation_lite's test*.jsonl: tests as JSON text (public) and compressed (private)."""
    if func_name:
        public = [{"input": "1\n2", "output": "3", "testtype": "functional"}]
        private = [
            {"input": "40\n2", "output": "42", "testtype": "functional"},
            {"input": "-5\n5", "output": "0", "testtype": "functional"},
        ]
        starter = f"class Solution:\n    def {func_name}(self, a: int, b: int) -> int:\n        "
    else:
        public = [{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]
        private = [{"input": "40 2\n", "output": "42\n", "testtype": "stdin"}]
        starter = ""
    return {
        "question_title": f"Problem {qid}",
        "question_content": f"Add two integers ({qid}).",
        "platform": "atcoder",
        "question_id": qid,
        "contest_id": "abc400",
        "contest_date": f"{date}T00:00:00",
        "starter_code": starter,
        "difficulty": "easy",
        "public_test_cases": json.dumps(public),
        "private_test_cases": upstream_private(private),
        "metadata": json.dumps({"func_name": func_name} if func_name else {}),
    }


# one problem per release file, and the v6 window's problems (and one just before it) in test6.jsonl
LCB_FIXTURE = {name: [upstream_row(f"old{i}", f"2023-0{i}-15")] for i, name in enumerate(B.LCB_FILES[:-1], 1)}
LCB_FIXTURE["test6.jsonl"] = [
    upstream_row("jan", "2025-01-20"),
    upstream_row("feb", "2025-02-02"),
    upstream_row("apr", "2025-04-26", "addTwo"),
]


def hub_cache(root: Path, files: dict[str, list[dict]]) -> Path:
    """A huggingface_hub cache holding the dataset's raw files, in the layout hf_hub_download reads:
    content-addressed blobs, a snapshot of symlinks to them, and refs/main naming the snapshot."""
    import hashlib

    repo = root / ("datasets--" + LCB_REPO.replace("/", "--"))
    commit = hashlib.sha1(json.dumps(files).encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    for name, rows in files.items():
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / commit / name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "refs" / "main").write_text(commit)
    return root


@pytest.fixture
def lcb_hub(tmp_path, monkeypatch):
    """The fixture's hub cache as huggingface_hub's cache directory (HF_HUB_OFFLINE=1 holds: conftest)."""
    from huggingface_hub import constants

    cache = hub_cache(tmp_path / "hub", LCB_FIXTURE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_livecodebench_v6_loads_from_the_hub_cache_with_private_tests(lcb_hub):
    bench = B.get("livecodebench")
    sources = bench.sources()
    assert [Path(s).name for s in sources] == list(B.LCB_FILES) and all(
        s.startswith(str(lcb_hub)) for s in sources
    )  # ahead of the shared copy
    assert (
        bench.sources(LCB_REPO) == sources
    )  # the hub id as benchmark_path: the same raw files (datasets refuses the repo)
    problems = bench.load(release_from="2025-02-01", release_to="2025-05-31")
    assert [p.id for p in problems] == ["feb", "apr"]
    feb, apr = problems
    assert feb.tests == {"kind": "stdio", "inputs": ["1 2\n", "40 2\n"], "outputs": ["3\n", "42\n"]}
    assert (
        apr.entry_point == "Solution().addTwo"
        and apr.tests["inputs"] == [[1, 2], [40, 2], [-5, 5]]
        and apr.tests["expected"] == [3, 42, 0]
    )
    assert (apr.metadata["public_tests"], apr.metadata["private_tests"], apr.metadata["date"]) == (1, 2, "2025-04-26")
    assert apr.metadata["source"] == f"{sources[-1]}:3" and B.tests_label(problems) == "all tests"
    assert [p.id for p in bench.problems()] == [
        "old1",
        "old2",
        "old3",
        "old4",
        "old5",
        "jan",
        "feb",
        "apr",
    ]  # lcb_runner's release_v6


def test_livecodebench_v6_from_the_hub_cache_grades_through_the_lcb_profile(lcb_hub, tmp_path):
    """`ssd eval` as a user runs it: no benchmark_path, the hub cache in HF_HUB_CACHE, offline."""
    import os
    import subprocess
    import sys

    replies = [
        ("feb", f"```python\n{SUM_STDIN}\n```"),
        ("feb", "```python\nprint(3)\n```"),  # passes the public test only
        ("apr", "```python\nclass Solution:\n    def addTwo(self, a, b):\n        return a + b\n```"),
        ("apr", "```python\ndef addTwo(a, b):\n    return a + b\n```"),
    ]  # lcb_runner calls a top-level function too
    path = tmp_path / "replies.jsonl"
    path.write_text("".join(json.dumps({"problem_id": pid, "reply": r}) + "\n" for pid, r in replies))
    out = tmp_path / "eval"
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(lcb_hub),
        "HF_HUB_OFFLINE": "1",
        "SELFDISTILL_DATA": str(tmp_path / "no-data"),
        "PYTHONPATH": str(Path(B.__file__).parents[1]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "selfdistill",
            "eval",
            "--benchmark",
            "livecodebench",
            'release_from="2025-02-01"',
            'release_to="2025-05-31"',
            "--replies",
            str(path),
            "--output-dir",
            str(out),
            "--workers",
            "2",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = {
        r["replies_line"]: r
        for line in (out / "results" / "Tnone.jsonl").read_text().splitlines()
        if (r := json.loads(line))
    }
    assert [records[i]["passed"] for i in (1, 2, 3, 4)] == [True, False, True, True]
    assert records[2]["status"] == "failed"  # the private test: 40 2 -> 42
    summary = json.loads((out / "summary.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert summary["grading"] == "lcb" and summary["n_problems"] == 2
    assert manifest["benchmark_source"].endswith("test6.jsonl") and str(lcb_hub) in manifest["benchmark_source"]


def test_without_any_copy_of_the_data_offline(tmp_path, monkeypatch):
    """Offline, no hub cache and no local copy: DataUnavailable at once, naming what is missing."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("SELFDISTILL_DATA", str(tmp_path / "no-data"))
    with pytest.raises(B.DataUnavailable, match=f"{LCB_REPO}: cannot fetch test.jsonl, .*test6.jsonl from the hub"):
        B.get("livecodebench").sources()
    with pytest.raises(
        B.DataUnavailable,
        match=r"mbpp: no data here: no local copy \(mbpp.jsonl .*offline, so not google-research-datasets/mbpp",
    ):
        B.get("mbpp").load()
    assert len(B.get("humaneval").problems()) == 164  # shipped with its package: always here
