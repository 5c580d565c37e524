"""selfdistill.sandbox: the execution API, the test harnesses, the pool."""

import glob
import json
import os
import textwrap
import time
import warnings

import pytest

from selfdistill import sandbox as sb

FAST = sb.Limits(timeout=3.0, memory_mb=512)


@pytest.fixture(scope="module")
def pool():
    p = sb.Pool(workers=2, limits=FAST)
    yield p
    p.close()


def run1(pool, job):
    return pool.map([job])[0]


# --- execute ---------------------------------------------------------------------------------------


def test_execute_passed_with_stdin():
    r = sb.execute("a, b = map(int, input().split())\nprint(a + b)", stdin="2 40\n", limits=FAST)
    assert r.status == "passed" and r.exit_code == 0
    assert r.stdout == "42\n" and r.stderr == ""
    assert r.wall_time > 0 and r.cpu_time >= 0
    assert r.isolation in ("namespaces", "basic")
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d  # what `ssd sandbox exec` prints
    assert set(d) == {
        "status",
        "exit_code",
        "stdout",
        "stderr",
        "wall_time",
        "cpu_time",
        "detail",
        "tests_passed",
        "tests_total",
        "outputs",
        "isolation",
    }


def test_plain_statuses(pool):
    cases = [
        ("import sys\nsys.exit(3)", "failed"),
        ("raise ValueError('boom')", "runtime_error"),
        ("def f(:\n  pass", "runtime_error"),
        ("x = [0] * (1 << 40)", "memory"),
        ("import time\ntime.sleep(60)", "timeout"),
        ("print('a' * (3 << 20))", "output_limit"),
        ("import sys\nsys.exit(0)", "passed"),
        ("print('ok')", "passed"),
    ]
    results = pool.map([(program, None) for program, _ in cases])
    for (program, status), r in zip(cases, results, strict=True):
        assert r.status == status, (program, r)
    assert results[0].exit_code == 3 and results[0].detail == "exit code 3"
    assert results[1].detail == "ValueError: boom" and "Traceback" in results[1].stderr
    assert 'File "main.py", line 1' in results[1].stderr
    assert "SyntaxError" in results[2].detail
    assert len(results[5].stdout) <= FAST.max_output_bytes


def test_environment_is_clean_and_workdir_private(pool):
    r = run1(pool, ("import os, sys\nprint(sorted(os.environ))\nprint(os.listdir('.'))\nprint(sys.argv)", None))
    assert r.status == "passed"
    lines = r.stdout.splitlines()
    assert eval(lines[0]) == ["HOME", "LANG", "PATH", "PYTHONIOENCODING", "TMPDIR"]
    assert eval(lines[1]) == []


def test_unicode_and_binary_output(pool):
    r = run1(pool, ("import sys\nprint('héllo ✓')\nsys.stdout.flush()\nsys.stdout.buffer.write(b'\\xff\\n')", None))
    assert r.status == "passed"
    assert r.stdout.startswith("héllo ✓\n")


def test_threads_and_processes_work(pool):
    program = textwrap.dedent("""
        import threading, multiprocessing, subprocess, sys
        out = []
        t = threading.Thread(target=lambda: out.append(1)); t.start(); t.join()
        with multiprocessing.Pool(2) as p:
            squares = p.map(abs, [-1, -2, -3])
        print(out, squares, subprocess.check_output([sys.executable, "-c", "print(7)"]).strip())
    """)
    r = run1(pool, (program, None))
    assert r.status == "passed", r
    assert r.stdout == "[1] [1, 2, 3] b'7'\n"


def test_basic_mode_and_no_leftover_tempdirs():
    before = set(glob.glob("/tmp/selfdistill-sandbox-*"))
    with sb.Pool(workers=1, limits=sb.Limits(timeout=2.0, isolation="basic")) as p:
        assert p.isolation == "basic"
        r, t = p.map(
            [("import os\nopen('f', 'w').write('x')\nprint(os.listdir('.'))", None), ("while True:\n    pass", None)]
        )
    assert r.status == "passed" and r.stdout == "['f']\n" and r.isolation == "basic"
    assert t.status == "timeout"
    assert set(glob.glob("/tmp/selfdistill-sandbox-*")) == before


def _child_without_namespaces(tmp_path):
    with open(sb.CHILD) as f:
        source = f.read()
    source = source.replace(
        "def enter_namespaces():\n", "def enter_namespaces():\n    raise OSError('disabled for this test')\n"
    )
    path = tmp_path / "_sandbox_child.py"
    path.write_text(source)
    return str(path)


def test_auto_falls_back_to_basic_and_warns_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sb, "CHILD", _child_without_namespaces(tmp_path))
    monkeypatch.setattr(sb, "_warned_basic", False)
    monkeypatch.setattr(sb, "_no_namespaces", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r1 = sb.execute("print(1)", limits=sb.Limits(timeout=2.0))
        r2 = sb.execute("print(2)", limits=sb.Limits(timeout=2.0))
    assert (r1.status, r1.isolation, r2.isolation) == ("passed", "basic", "basic")
    assert len([w for w in caught if "basic mode" in str(w.message)]) == 1


def test_strict_refuses_to_degrade(tmp_path, monkeypatch):
    monkeypatch.setattr(sb, "CHILD", _child_without_namespaces(tmp_path))
    with pytest.raises(sb.SandboxUnavailable):
        sb.execute("print(1)", limits=sb.Limits(isolation="strict"))


# --- AssertTests -----------------------------------------------------------------------------------

HUMANEVAL_TEST = """
METADATA = {"author": "jt", "dataset": "test"}


def check(candidate):
    assert candidate([1.0, 2.0, 3.0], 0.5) == False
    assert candidate([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True
    for n in range(3):
        assert candidate([float(n), float(n) + 0.1], 0.2)
"""
HUMANEVAL_PROMPT = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than threshold. """
'''
HUMANEVAL_SOLUTION = """    for i, a in enumerate(numbers):
        for j, b in enumerate(numbers):
            if i != j and abs(a - b) < threshold:
                return True
    return False
"""


def test_humaneval_style(pool):
    right = sb.AssertTests(HUMANEVAL_PROMPT + HUMANEVAL_SOLUTION, HUMANEVAL_TEST, "has_close_elements")
    wrong = sb.AssertTests(HUMANEVAL_PROMPT + "    return True\n", HUMANEVAL_TEST, "has_close_elements")
    r, w = pool.map([right, wrong])
    assert r.status == "passed", r
    assert (r.tests_passed, r.tests_total) == (5, 5)  # asserts executed, loop iterations included
    assert w.status == "failed"
    assert w.detail.startswith("assertion 0 failed (assert candidate([1.0, 2.0, 3.0], 0.5) == False)")
    assert "got True, expected False" in w.detail


def test_mbpp_style_with_setup(pool):
    job = sb.AssertTests(
        program="def remove_odd(l):\n    return [x for x in l if x % 2 == 0]\n",
        test_code="assert remove_odd([1,2,3]) == [2]\nassert remove_odd([2,4,6]) == [2,4,6]\nassert helper() == 1\n",
        setup_code="def helper():\n    return 1\n",
    )
    r = run1(pool, job)
    assert r.status == "passed" and r.tests_total == 3, r


def test_leetcode_style_solution_method_and_classes(pool):
    setup = textwrap.dedent("""
        class ListNode:
            def __init__(self, val=0, next=None):
                self.val, self.next = val, next
        def build(values):
            head = None
            for v in reversed(values):
                head = ListNode(v, head)
            return head
        def to_list(node):
            out = []
            while node:
                out.append(node.val)
                node = node.next
            return out
    """)
    program = textwrap.dedent("""
        from typing import Optional, List
        class Solution:
            def twoSum(self, nums: List[int], target: int) -> List[int]:
                seen = {}
                for i, x in enumerate(nums):
                    if target - x in seen:
                        return [seen[target - x], i]
                    seen[x] = i
            def reverseList(self, head: Optional[ListNode]) -> Optional[ListNode]:
                prev = None
                while head:
                    head.next, prev, head = prev, head, head.next
                return prev
    """)
    tests = "def check(candidate):\n    assert candidate(nums=[2, 7, 11, 15], target=9) == [0, 1]\n"
    tests2 = "def check(candidate):\n    assert to_list(candidate(build([1, 2, 3]))) == [3, 2, 1]\n"
    r1, r2 = pool.map(
        [
            sb.AssertTests(program, tests, "Solution().twoSum", setup),
            sb.AssertTests(program, tests2, "Solution().reverseList", setup),
        ]
    )
    assert r1.status == "passed", r1
    assert r2.status == "passed", r2


def test_assert_failures_and_errors(pool):
    jobs = [
        sb.AssertTests(
            "def f(x):\n    return 1 / x\n", "def check(c):\n    assert c(1) == 1\n    assert c(0) == 0\n", "f"
        ),
        sb.AssertTests("def f(x):\n    return x\n", "def check(c):\n    pass\n", "f"),
        sb.AssertTests("def f(x):\n    return x\n", "x = 1\n", "f"),
        sb.AssertTests("def f(x):\n    return (i for i in x)\n", "assert list(f([1])) == [1]\n"),
        sb.AssertTests("def f(x):\n    return x\n", "assert f(1) == 1\nassert f(2) == 3, 'custom message'\n"),
        sb.AssertTests("def f(:\n", "assert f(1) == 1\n"),
    ]
    r = pool.map(jobs)
    assert r[0].status == "runtime_error" and "ZeroDivisionError" in r[0].detail, r[0]
    assert "assertion 1" in r[0].detail
    assert r[1].status == "failed" and r[1].detail == "no assertion ran", r[1]
    assert r[2].status == "runtime_error" and "check" in r[2].detail, r[2]
    assert r[3].status == "failed" and "generator" in r[3].detail, r[3]
    assert r[4].status == "failed" and r[4].detail.endswith("got 2, expected 3"), r[4]
    assert r[5].status == "runtime_error" and "SyntaxError" in r[5].detail, r[5]


def test_stdlib_that_needs_frames_still_works(pool):
    program = textwrap.dedent("""
        import collections, typing, warnings, logging, enum, dataclasses
        Point = collections.namedtuple("Point", "x y")
        T = typing.TypeVar("T")
        Color = enum.Enum("Color", "RED GREEN")
        @dataclasses.dataclass
        class D:
            a: int
        def f(x):
            warnings.warn("careful")
            logging.getLogger("x").warning("logged")
            return Point(x, x).x + D(1).a + Color.RED.value + sum(collections.Counter([1, 1]).values())
    """)
    r = run1(pool, sb.AssertTests(program, "assert f(1) == 5\nimport math\nassert math.isclose(f(2), 6)\n"))
    assert r.status == "passed", r


def test_plain_data_types_compare(pool):
    program = textwrap.dedent("""
        import collections, fractions, decimal
        def f():
            return {"a": [1, 2.5, (3, None)], "s": {1, 2}, "c": collections.Counter("aab"),
                    "fr": fractions.Fraction(1, 3), "d": decimal.Decimal("1.5"), "b": b"x", "z": 1j}
    """)
    tests = textwrap.dedent("""
        import fractions, decimal
        def check(candidate):
            v = candidate()
            assert v["a"] == [1, 2.5, (3, None)] and v["s"] == {2, 1}
            assert v["c"] == {"a": 2, "b": 1}
            assert v["fr"] == fractions.Fraction(2, 6) and v["d"] == decimal.Decimal("1.50")
            assert v["b"] == b"x" and v["z"] == 1j and type(v["a"]) == list and v["a"][2][1] is None
            assert not (v["a"] != [1, 2.5, (3, None)])
    """)
    r = run1(pool, sb.AssertTests(program, tests, "f"))
    assert r.status == "passed", r


def test_harden_test_code_rewrites_comparisons():
    code, asserts = sb.harden_test_code("assert a == b, 'm'\nx = [i for i in y if i > 1 and not i]\n")
    assert asserts == ["assert a == b, 'm'"]
    assert "__sd_compare__(('Eq',), a, b)" in code and "__sd_mark__(0)" in code
    assert "__sd_truth__" in code and "__sd_compare__(('Gt',), i, 1)" in code


# --- CallTests -------------------------------------------------------------------------------------


def test_call_tests_collect_outputs(pool):
    program = textwrap.dedent("""
        def f(x):
            return [x, (x, "s"), {x, -x}, {"k": x, (1, 2): None}, float("nan") if x else float("-inf"),
                    10 ** 5000, b"\\x00", 2j, True, None]
    """)
    r = run1(pool, sb.CallTests(program, "f", [[0], [1]], None))
    assert r.status == "passed" and r.tests_total == 2, r
    out0 = r.outputs[0]
    assert out0[:4] == [0, (0, "s"), {0}, {"k": 0, (1, 2): None}]
    assert out0[4] == float("-inf") and out0[5] == 10**5000 and out0[6:] == [b"\x00", 2j, True, None]
    assert r.outputs[1][4] != r.outputs[1][4]  # nan


def test_a_mismatch_too_large_to_print_is_a_verdict_and_later_jobs_run(pool):
    """A wrong answer to an expected int past Python's 4300-digit str limit (HumanEval+ has such
    outputs) used to raise in the grading thread: that thread died and every job it had not reached
    was reported as timed out, unrun."""
    wrong = sb.CallTests("def f(n):\n    return 0\n", "f", [[1]], [10**5000])
    right = sb.CallTests("def f(n):\n    return n\n", "f", [[1]], [1])
    r = pool.map([wrong] * 3 + [right] * 3)
    assert [x.status for x in r] == ["failed"] * 3 + ["passed"] * 3, r
    assert r[0].detail == "test 0: expected <int too large to print>, got 0"


def test_call_tests_compare(pool):
    program = "def f(a, b):\n    return (a + b, a * 0.1)\n"
    jobs = [
        sb.CallTests(program, "f", [[1, 2], [3, 4]], [[3, 0.1], [7, 0.30000000000000004]]),
        sb.CallTests(program, "f", [[1, 2], [3, 4]], [[3, 0.1], [7, 0.3]]),
        sb.CallTests(program, "f", [[1, 2], [3, 4]], [[3, 0.1], [7, 0.3]], atol=1e-6),
        sb.CallTests(program, "f", [[1, 2], [3, 4]], [[3, 0.1], [8, 0.3]], atol=1e-6),
        sb.CallTests("class Solution:\n    def m(self, x):\n        return x * 2\n", "Solution().m", [[2]], [4]),
        sb.CallTests("def f(x):\n    return 10 // x\n", "f", [[1], [0], [2]], [10, 0, 5]),
        sb.CallTests("def f(x):\n    return iter([x])\n", "f", [[1]], [[1]]),
        sb.CallTests("def g(x):\n    return x\n", "f", [[1]], [1]),
    ]
    r = pool.map(jobs)
    assert r[0].status == "passed" and r[0].tests_passed == 2, r[0]
    assert r[1].status == "failed" and r[1].detail == "test 1: expected [7, 0.3], got (7, 0.30000000000000004)", r[1]
    assert r[1].tests_passed == 1
    assert r[2].status == "passed", r[2]
    assert r[3].status == "failed" and r[3].tests_passed == 1, r[3]
    assert r[4].status == "passed", r[4]
    assert r[5].status == "runtime_error" and r[5].detail.startswith("test 1: ZeroDivisionError"), r[5]
    assert r[5].tests_passed == 1
    assert r[6].status == "failed" and "list_iterator" in r[6].detail, r[6]
    assert r[7].status == "runtime_error" and "KeyError" in r[7].detail, r[7]


def test_call_tests_with_a_time_limit_per_call():
    """lcb_runner's alarms: the top level and each call get the whole limit, not the run as a whole."""
    sleepy = "import time\ntime.sleep({top})\ndef f(s):\n    time.sleep(s)\n    return s\n"
    ignores_alarm = (
        "import signal, time\ndef f(s):\n    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])\n"
        "    time.sleep(s)\n    return s\n"
    )
    jobs = [
        sb.CallTests(
            sleepy.format(top=0.6), "f", [[0.6], [0.6], [0.6]], [0.6] * 3, timeout_per_call=True
        ),  # 2.4 s in all
        sb.CallTests(sleepy.format(top=0), "f", [[0.1], [1.5]], [0.1, 1.5], timeout_per_call=True),
        sb.CallTests(sleepy.format(top=1.5), "f", [[0.1]], [0.1], timeout_per_call=True),
        sb.CallTests(ignores_alarm, "f", [[1.3]], [1.3], timeout_per_call=True),
        sb.CallTests(sleepy.format(top=0.6), "f", [[0.6]], [0.6]),  # one limit for the whole run
    ]
    with sb.Pool(workers=5, limits=sb.Limits(timeout=1.0, memory_mb=512)) as pool:
        r = pool.map(jobs)
    assert r[0].status == "passed", r[0]
    assert r[1].status == "timeout" and r[1].detail == "time limit of 1.0s per test reached after 1 tests", r[1]
    assert r[2].status == "timeout" and "after 0 tests" in r[2].detail, r[2]
    assert r[3].status == "timeout" and r[3].detail.startswith("test 0: took 1.3"), r[3]
    assert r[4].status == "timeout" and r[4].detail == "wall-clock limit of 1.0s", r[4]


def test_call_tests_as_a_module_and_with_top_level_tuples_only(pool):
    program = "def f():\n    return ((1, 2), [3])\nif __name__ == '__main__':\n    raise SystemExit(1)\n"
    jobs = [
        sb.CallTests(program, "f", [[]], [[[1, 2], [3]]]),
        sb.CallTests(program, "f", [[]], [[[1, 2], [3]]], run_main=False),
        sb.CallTests(program, "f", [[]], [[[1, 2], [3]]], run_main=False, nested_tuples_as_lists=False),
        sb.CallTests(program, "f", [[]], [[(1, 2), [3]]], run_main=False, nested_tuples_as_lists=False),
    ]
    r = pool.map(jobs)
    assert r[0].status == "failed" and "SystemExit" in r[0].detail, r[0]  # the __main__ block ran
    assert [x.status for x in r[1:]] == ["passed", "failed", "passed"], r[1:]


# --- StdioTests ------------------------------------------------------------------------------------


def test_stdio_tests(pool):
    program = "n = int(input())\nprint(n * 2)\nprint(' '.join(['1.50', str(n)]) + '   ')\n"
    jobs = [
        sb.StdioTests(program, ["1\n", "5\n"], ["2\n1.5 1", "10\n1.500 5\n\n"]),
        sb.StdioTests(program, ["1\n", "5\n"], ["2\n1.5 1", "11\n1.5 5"]),
        sb.StdioTests(program, ["1\n"], ["2"]),
        sb.StdioTests(program, ["x\n"], ["2\n1.5 1"]),
        sb.StdioTests("import time\ntime.sleep(60)", ["1\n", "2\n"], ["1", "2"]),
    ]
    r = pool.map(jobs)
    assert r[0].status == "passed" and (r[0].tests_passed, r[0].tests_total) == (2, 2), r[0]
    assert r[1].status == "failed" and r[1].detail == "test 1: line 1: expected '11', got '10'", r[1]
    assert r[1].tests_passed == 1
    assert r[2].status == "failed" and "expected 1 lines, got 2" in r[2].detail, r[2]
    assert r[3].status == "runtime_error" and "ValueError" in r[3].detail, r[3]
    assert r[4].status == "timeout" and r[4].tests_passed == 0, r[4]


def test_stdio_system_exit_ok_grades_the_output(pool):
    programs = ["print(2)\nimport sys\nsys.exit(1)", "print(2)\nexit('done')", "print(2)\nraise ValueError"]
    r = pool.map([sb.StdioTests(p, ["\n"], ["2"], system_exit_ok=ok) for ok in (False, True) for p in programs])
    assert [x.status for x in r] == ["failed", "failed", "runtime_error", "passed", "passed", "runtime_error"], r


def test_no_cases_is_not_a_pass(pool):
    r = pool.map([sb.CallTests("def f(): pass", "f", [], []), sb.StdioTests("print(1)", [], [])])
    assert [x.status for x in r] == ["failed", "failed"]


def test_stdio_match_rules():
    assert sb.stdio_match("1 2\n3\n", "1 2\n3")[0]
    assert sb.stdio_match("  1 2  \r\n3  ", "1 2\n3\n\n")[0]
    assert sb.stdio_match("1.0 2", "1.00 2.0")[0]
    assert not sb.stdio_match("1.0001", "1.0")[0]
    assert not sb.stdio_match("YES", "yes")[0]
    assert not sb.stdio_match("1\n2", "1 2")[0]


# --- Pool ------------------------------------------------------------------------------------------


def test_pool_map_keeps_order_and_mixes_jobs(pool):
    jobs = [(f"print({i})", None) for i in range(6)] + [
        sb.CallTests("def f(x):\n    return x + 1\n", "f", [[1]], [2]),
        sb.AssertTests("def f():\n    return 1\n", "assert f() == 1"),
        sb.StdioTests("print(input())", ["a"], ["a"]),
        "print('a plain string job')",
    ]
    r = pool.map(jobs)
    assert [x.stdout for x in r[:6]] == [f"{i}\n" for i in range(6)]
    assert all(x.status == "passed" for x in r), r


def test_pool_global_deadline_never_hangs():
    with sb.Pool(workers=2, limits=sb.Limits(timeout=30.0)) as p:
        start = time.monotonic()
        r = p.map([("import time\ntime.sleep(30)", None)] * 3 + [("print(1)", None)], deadline=1.0)
        assert time.monotonic() - start < 5.0
        # two workers: the two running jobs time out, the two never started are not_run (no verdict)
        assert [x.status for x in r] == ["timeout", "timeout", "not_run", "not_run"], r
        assert r[2].detail == sb.NOT_RUN_DETAIL, r[2]
        # the pool restarts and works again
        assert p.map([("print('again')", None)])[0].stdout == "again\n"


def test_pool_close_is_idempotent_and_restartable():
    p = sb.Pool(workers=1, limits=FAST)
    p.close()
    p.close()
    assert p.map([("print(1)", None)])[0].status == "passed"
    p.close()


def test_limits_validation():
    with pytest.raises(ValueError):
        sb.Pool(limits=sb.Limits(isolation="none"))
    assert os.path.exists(sb.CHILD)


def _tree_fds(root):
    """Open descriptors of all processes below root (host /proc)."""
    parents = {}
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                parents[int(pid)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            pass
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, ppid in parents.items() if ppid in tree}
        grew = not below <= tree
        tree |= below
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in tree if os.path.exists(f"/proc/{pid}/fd"))


def test_servers_do_not_leak_descriptors():
    with sb.Pool(workers=1, limits=sb.Limits(timeout=0.5, max_output_bytes=1000)) as p:
        p.map([("print(1)", None)])
        before = _tree_fds(p._proc.pid)
        r = p.map([("print(1)", None), ("while True: pass", None), ("print('x' * 5000)", None), ("1/0", None)] * 5)
        assert [x.status for x in r[:4]] == ["passed", "timeout", "output_limit", "runtime_error"]
        assert _tree_fds(p._proc.pid) == before
