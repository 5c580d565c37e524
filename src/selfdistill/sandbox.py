"""Run untrusted, model-written Python in a real sandbox, and grade it.

Public API:
    execute(program, stdin=None, limits=Limits()) -> Result          one plain run
    Pool(workers=None, limits=Limits())                             warm workers; .map(jobs, deadline=None),
        jobs: AssertTests | CallTests | StdioTests | (program, stdin)

How (details in _sandbox_child.py, which is the code that runs inside):
  * Isolation ("namespaces" mode): a zygote interpreter enters new mount, network, IPC, UTS and PID
    namespaces (plus a user namespace when we are not root), makes the whole filesystem read-only and
    hides /proc, /tmp, /run. Each execution then gets its own PID + mount namespace, a fresh tmpfs as
    its work directory, a fresh unprivileged uid (or, as non-root, no capabilities), no_new_privs,
    rlimits (address space, CPU, processes, file size, open files, no core), a clean environment and
    capped output. The network namespace has no interface up: not even loopback answers. On timeout
    the execution's PID namespace is killed with SIGKILL, so nothing it started survives.
  * "basic" mode, when namespaces are not available: rlimits, a new session and process group killed
    as a whole, a temporary directory removed afterwards. "auto" warns once when it falls back to it;
    "strict" raises SandboxUnavailable instead.
  * Verdicts need positive evidence. The harness inside reports on a private channel (fd 3), every
    record prefixed with a per-run secret; stdout is never read for a test verdict. Functional tests
    send the return values out as tagged JSON and the parent compares them - the expected values never
    enter the sandbox. Assert-style tests run inside, rewritten so that comparisons, truth tests and
    asserts go through trusted helpers that accept only exact builtin types, and pass only with an
    end-of-tests record that counts the asserts that ran.
  * Speed: Pool keeps one warm zygote with `workers` slots; an execution is a few fork()s of an
    interpreter that already imported everything, not a new Python process.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import marshal
import math
import os
import random
import secrets
import select
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation

from . import SelfdistillError

# not_run: the global deadline passed before the job ran, so no verdict: a rerun grades it (evaluate). Results
# before this status were a timeout with this detail (results.without_verdict still reads them so).
NOT_RUN_DETAIL = "the global deadline passed before this job ran"
STATUSES = ("passed", "failed", "timeout", "memory", "runtime_error", "output_limit", "sandbox_error", "not_run")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_child.py")
GRACE = 10.0  # seconds we wait for the sandbox beyond an execution's own timeout before giving up on it
START_TIMEOUT = 60.0


@dataclass
class Limits:
    timeout: float = 10.0  # wall-clock seconds per execution (per test case for StdioTests)
    memory_mb: int = 1024  # address-space limit
    max_output_bytes: int = 1 << 20  # per stream (stdout, stderr)
    isolation: str = "auto"  # "auto" | "strict" (never degrade: raise SandboxUnavailable) | "basic"


@dataclass
class Result:
    status: str  # passed|failed|timeout|memory|runtime_error|output_limit|sandbox_error|not_run
    exit_code: int | None  # negative: killed by that signal; None: no exit status (killed by us)
    stdout: str  # truncated to max_output_bytes
    stderr: str
    wall_time: float
    cpu_time: float
    detail: str = ""  # why, e.g. "test 3: expected 5, got 4" or the exception line
    tests_passed: int | None = None
    tests_total: int | None = None
    outputs: list | None = None  # CallTests with expected=None: the returned values
    isolation: str = ""  # the mode actually used: "namespaces" | "basic"

    def to_dict(self) -> dict:
        return asdict(self)


class SandboxUnavailable(SelfdistillError, RuntimeError):
    pass


@dataclass
class AssertTests:  # HumanEval / MBPP / LeetCode style
    program: str  # the model's solution
    test_code: str  # defines check(candidate) and/or top-level asserts
    entry_point: str | None = None  # if set, the harness calls check(<entry_point>); may be "Solution().twoSum"
    setup_code: str = ""  # run before program (imports, MBPP test_setup_code, ListNode...)


@dataclass
class CallTests:  # HumanEval+ / LiveCodeBench functional
    program: str
    entry_point: str  # function name or "Solution().method"
    inputs: list  # one list of positional args per case
    expected: list | None  # expected return value per case; None = collect outputs into Result.outputs
    atol: float = 0.0  # float tolerance (evalplus style); 0 = exact
    timeout_per_call: bool = (
        False  # Limits.timeout holds for each call and for the program's top level, not for the whole run
    )
    run_main: bool = (
        True  # the program runs as __main__ (its `if __name__ == "__main__":` block runs); else as module "solution"
    )
    nested_tuples_as_lists: bool = (
        True  # tuples anywhere in a return value compare equal to lists; else only a returned tuple
    )


@dataclass
class StdioTests:  # LiveCodeBench stdin/stdout
    program: str
    inputs: list  # list[str], one stdin per case
    outputs: list  # list[str], compared line by line (LiveCodeBench rules)
    system_exit_ok: bool = False  # a SystemExit, whatever its code, ends the program normally: its output is graded


def job_seconds(job, limits: Limits) -> float:
    """The longest a job may run: the wall-clock limits of all its executions."""
    if isinstance(job, StdioTests):
        return limits.timeout * len(job.inputs)
    return _wall_limit(job, limits)


def _wall_limit(job, limits: Limits) -> float:
    """One execution's wall-clock limit. With a limit per call: the top level and every call may each
    use all of it (plus a second each for sending values out), as lcb_runner's alarms allow."""
    if isinstance(job, CallTests) and job.timeout_per_call:
        return (limits.timeout + 1) * (len(job.inputs) + 1)
    return limits.timeout


def execute(program: str, stdin: str | None = None, limits: Limits = Limits()) -> Result:  # noqa: B008
    """Run a program once. passed iff it exits 0."""
    with Pool(workers=1, limits=limits) as pool:
        return pool.map([(program, stdin)])[0]


_warned_basic = False  # "auto" warns once per process when it has to fall back to basic mode
_no_namespaces = False


class _Broken(Exception):
    """The sandbox did not answer in time (or at all): the pool is torn down and restarted."""


class Pool:
    """A warm sandbox with `workers` slots. Jobs: AssertTests, CallTests, StdioTests, or
    (program, stdin) tuples for plain runs. map() keeps order and returns by `deadline` seconds."""

    def __init__(self, workers: int | None = None, limits: Limits = Limits()):  # noqa: B008
        if limits.isolation not in ("auto", "strict", "basic"):
            raise ValueError(f"unknown isolation {limits.isolation!r}")
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.limits = limits
        self.isolation = ""
        self._proc = None
        self._slots = []
        self._lock = threading.Lock()
        # each execution runs as its own uid (when we are root): RLIMIT_NPROC then counts only its
        # processes. A random block per pool keeps concurrent pools apart.
        self._uid_base = random.randrange(1, 1 << 10) << 20
        self._uids = itertools.count()
        self._start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # best effort at interpreter shutdown, when even a module global such as contextlib may be gone
        try:  # noqa: SIM105
            self.close()
        except Exception:  # noqa: BLE001, S110
            pass

    # --- life cycle ---

    def _start(self, isolation=None):
        global _warned_basic, _no_namespaces
        isolation = isolation or self.limits.isolation
        if isolation == "auto" and _no_namespaces:
            isolation = "basic"  # known not to work here: don't pay for a failed start every time
        child_fds, self._slots = [], []
        for _ in range(self.workers):
            req_r, req_w = os.pipe()
            rep_r, rep_w = os.pipe()
            child_fds.append([req_r, rep_w])
            self._slots.append((req_w, rep_r))
        config = json.dumps({"isolation": isolation, "slots": child_fds})
        self._errlog = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the zygote
        # -I: ignore PYTHON* variables and the user site; env: nothing of ours goes in, so nothing
        # of ours (tokens, keys) is even in the sandbox's memory
        self._proc = subprocess.Popen(
            [sys.executable, "-I", CHILD, config],
            pass_fds=[fd for pair in child_fds for fd in pair],
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._errlog,
            cwd="/",
        )
        for pair in child_fds:
            for fd in pair:
                os.close(fd)
        try:
            hellos = [_recv(rep_r, time.monotonic() + START_TIMEOUT) for _, rep_r in self._slots]
        except _Broken:
            self._errlog.seek(0)
            err = self._errlog.read().decode(errors="replace")[-2000:]
            self._stop()
            raise SandboxUnavailable(f"the sandbox did not start: {err}") from None
        fatal = [h["fatal"] for h in hellos if "fatal" in h]
        if fatal:
            self._stop()
            if isolation == "strict":
                raise SandboxUnavailable(f"strict isolation requested, but {fatal[0]}")
            _no_namespaces = True
            if not _warned_basic:
                _warned_basic = True
                warnings.warn(
                    f"selfdistill.sandbox falls back to basic mode (rlimits and process-group kill "
                    f"only, no filesystem or network isolation): {fatal[0]}",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return self._start("basic")
        self.isolation = hellos[0]["hello"]

    def _stop(self):
        """Close the pipes (servers exit), SIGTERM the zygote (it kills the sandbox's pid 1 and waits
        for it: in namespace mode the kernel has then killed every process inside), reap it."""
        for req_w, rep_r in self._slots:
            for fd in (req_w, rep_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._slots = []
        if self._proc is not None:
            try:
                self._proc.send_signal(signal.SIGTERM)
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            except ProcessLookupError:
                pass
            self._proc = None
            self._errlog.close()

    def close(self):
        with self._lock:
            self._stop()

    # --- running jobs ---

    def map(self, jobs, deadline: float | None = None) -> list[Result]:
        """Run jobs in parallel; results in order. `deadline`: seconds from now after which every
        running job is reported as timeout and every job not started as not_run (and the sandbox is restarted)."""
        jobs = list(jobs)
        end = time.monotonic() + deadline if deadline is not None else math.inf
        results = [None] * len(jobs)
        with self._lock:
            if self._proc is None:
                self._start()
            todo = iter(range(len(jobs)))
            take = threading.Lock()
            broken = []

            def worker(slot):
                while not broken:
                    with take:
                        i = next(todo, None)
                    if i is None:
                        return
                    try:
                        results[i] = self._run(slot, jobs[i], end)
                    except _Broken as e:
                        broken.append(e)
                        results[i] = _killed(self, "timeout" if time.monotonic() >= end else "sandbox_error", str(e))
                    except Exception as e:  # a bug of ours must not kill the thread: its other jobs would never run
                        results[i] = _killed(self, "sandbox_error", f"grading failed: {type(e).__name__}: {e}")

            threads = [threading.Thread(target=worker, args=(slot,), daemon=True) for slot in self._slots]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if broken:  # a slot is stuck mid-execution: tear everything down; the next map restarts
                self._stop()
        for i, r in enumerate(results):
            if r is None:
                results[i] = (
                    _killed(self, "not_run", NOT_RUN_DETAIL)
                    if time.monotonic() >= end
                    else _killed(self, "sandbox_error", "not run: the sandbox was restarted")
                )
        return results

    def _run(self, slot, job, end) -> Result:
        if isinstance(job, str):
            job = (job, None)
        if isinstance(job, tuple):
            program, stdin = job
            raw = self._execute(slot, {"mode": "plain", "program": program, "stdin": stdin}, end, self.limits.timeout)
            return _plain_result(raw, self)
        if isinstance(job, (CallTests, StdioTests)) and not job.inputs:
            return _killed(self, "failed", "no test cases")  # a pass needs evidence: nothing ran
        if isinstance(job, CallTests):
            payload = {
                "mode": "call",
                "program": job.program,
                "entry_point": job.entry_point,
                "inputs": [list(args) for args in job.inputs],
                "run_main": job.run_main,
                "call_timeout": float(self.limits.timeout) if job.timeout_per_call else None,
            }
            return _call_result(job, self._execute(slot, payload, end, _wall_limit(job, self.limits)), self)
        if isinstance(job, AssertTests):
            try:
                test_code, asserts = harden_test_code(job.test_code)
            except SyntaxError as e:
                return _killed(self, "sandbox_error", f"test code does not parse: {e}")
            payload = {
                "mode": "assert",
                "program": job.program,
                "setup_code": job.setup_code,
                "test_code": test_code,
                "entry_point": job.entry_point,
            }
            return _assert_result(self._execute(slot, payload, end, self.limits.timeout), asserts, self)
        if isinstance(job, StdioTests):
            return _stdio_result(job, slot, end, self)
        raise TypeError(f"not a job: {type(job).__name__}")

    def _execute(self, slot, payload, end, timeout: float) -> dict:
        """One execution in one slot with a wall-clock limit of `timeout` seconds; returns the raw report
        (plus the secret and the timeout used)."""
        limits = self.limits
        payload = dict(
            payload,
            secret=secrets.token_hex(16),
            uid=self._uid_base + next(self._uids) % (1 << 20),
            timeout=float(timeout),
            memory_mb=int(limits.memory_mb),
            max_output=int(limits.max_output_bytes),
        )
        req_w, rep_r = slot
        try:
            _send(req_w, payload)
        except ValueError as e:  # marshal: inputs must be plain data
            return {"error": f"job cannot be sent to the sandbox: {e}", "secret": payload["secret"]}
        except OSError as e:
            raise _Broken(f"sandbox gone: {e}") from None
        reply = _recv(rep_r, min(end, time.monotonic() + timeout + GRACE))
        reply.update(secret=payload["secret"], timeout=payload["timeout"])
        return reply


# --- wire: 4-byte length + marshal ------------------------------------------------------------------


def _send(fd, obj):
    data = marshal.dumps(obj)
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def _recv(fd, until):
    buf = b""
    need = 4
    header = True
    poller = select.poll()  # (not select.select: it fails for descriptors >= 1024)
    poller.register(fd, select.POLLIN)
    while True:
        while len(buf) < need:
            left = until - time.monotonic()
            if left <= 0 or not poller.poll(min(left, 3600) * 1000):
                raise _Broken("no answer from the sandbox before the deadline")
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                raise _Broken("the sandbox exited")
            buf += chunk
        if header:
            need = 4 + struct.unpack(">I", buf[:4])[0]
            header = False
        else:
            return marshal.loads(buf[4:need])


# --- verdicts -------------------------------------------------------------------------------------


def _killed(pool, status, detail):
    return Result(status, None, "", "", 0.0, 0.0, detail=detail, isolation=pool.isolation)


def _records(raw):
    """Parse the private channel. Lines without the run's secret mean someone else wrote there."""
    prefix = raw["secret"].encode() + b" "
    records, forged = [], False
    for line in raw["channel"].split(b"\n"):
        if not line:
            continue
        if not line.startswith(prefix):
            forged = True
            continue
        try:
            records.append(json.loads(line[len(prefix) :]))
        except ValueError:
            forged = True
    return records, forged


def _base(raw, pool) -> Result:
    """Fields every verdict shares; status set only for what ends a run from outside (sandbox error,
    output cap, wall-clock or CPU timeout), else ''."""
    if "error" in raw:
        return Result("sandbox_error", None, "", "", 0.0, 0.0, detail=raw["error"], isolation=pool.isolation)
    r = Result(
        "",
        raw["exit"],
        raw["stdout"].decode("utf-8", "replace"),
        raw["stderr"].decode("utf-8", "replace"),
        raw["wall"],
        raw["cpu"],
        isolation=pool.isolation,
    )
    cpu_limit = math.ceil(raw["timeout"]) + 1
    if raw["overflow"]:
        r.status, r.detail = "output_limit", f"output exceeded {pool.limits.max_output_bytes} bytes"
    elif raw["timed_out"]:
        r.status, r.detail = "timeout", f"wall-clock limit of {raw['timeout']}s"
    elif r.exit_code == -signal.SIGXCPU or (r.exit_code == -signal.SIGKILL and r.cpu_time >= cpu_limit - 0.05):
        r.status, r.detail = "timeout", f"CPU time limit of {cpu_limit}s"
    return r


def _error_status(err):
    """Status for an error record from the harness."""
    return {"memory": "memory", "exception": "runtime_error"}.get(err["error"], "failed")


def _error_detail(err):
    if err["error"] == "exit":
        return f"the program exited (SystemExit {err['message']}) before the tests finished"
    return f"{err['type']}: {err['message']}" if err["message"] else err["type"]


def _exit_detail(r):
    if r.exit_code is not None and r.exit_code < 0:
        try:
            name = signal.Signals(-r.exit_code).name
        except ValueError:
            name = f"signal {-r.exit_code}"
        return "runtime_error", f"killed by {name}"
    return "failed", f"exit code {r.exit_code}"


def _plain_result(raw, pool) -> Result:
    r = _base(raw, pool)
    if r.status:
        return r
    records, _ = _records(raw)
    errors = [rec for rec in records if "error" in rec]
    if errors:
        r.status = "memory" if errors[0]["error"] == "memory" else "runtime_error"
        r.detail = _error_detail(errors[0])
    elif r.exit_code == 0:
        r.status = "passed"
    else:
        r.status, r.detail = _exit_detail(r)
        if r.stderr.rstrip().endswith("MemoryError"):
            r.status = "memory"
    return r


def _call_result(job: CallTests, raw, pool) -> Result:
    r = _base(raw, pool)
    r.tests_total = len(job.inputs)
    if r.status == "sandbox_error":
        return r
    records, forged = _records(raw)
    values, seconds, done, errors = {}, {}, [], []
    for rec in records:
        if "error" in rec:
            errors.append(rec)
        elif "done" in rec:
            done.append(rec["done"])
        elif "case" in rec and rec["case"] not in values:
            values[rec["case"]], seconds[rec["case"]] = rec.get("value"), rec.get("seconds", 0.0)
        else:
            forged = True  # a case reported twice: not the harness speaking
    outputs = [_decode(values[i]) for i in range(len(values)) if i in values]
    passed = 0
    mismatch = ""
    if job.expected is not None:
        for i, got in enumerate(outputs):
            if _same(got, job.expected[i], job.atol, job.nested_tuples_as_lists):
                passed += 1
            elif not mismatch:
                mismatch = f"test {i}: expected {_short(job.expected[i])}, got {_short(got)}"
    r.tests_passed = passed if job.expected is not None else None
    if r.status:
        return r
    if errors:
        err = errors[0]
        r.status = _error_status(err)
        where = f"test {err['case']}: " if err.get("case", -1) >= 0 else ""
        r.detail = where + _error_detail(err)
    elif forged:
        r.status, r.detail = "failed", "unexpected data on the result channel"
    elif job.timeout_per_call and (slow := _per_call_timeout(r, seconds, pool.limits.timeout)):
        r.status, r.detail = "timeout", slow
    elif done != [len(job.inputs)] or len(outputs) != len(job.inputs) or r.exit_code != 0:
        r.status, r.detail = _exit_detail(r)
        r.detail = f"the program exited ({r.detail}) before all tests ran"
    elif job.expected is None:
        r.status, r.outputs = "passed", outputs
    elif mismatch:
        r.status, r.detail = "failed", mismatch
    else:
        r.status = "passed"
    return r


def _per_call_timeout(r: Result, seconds: dict, limit: float) -> str:
    """Why a run with a limit per call timed out ('' if it did not). The kernel's SIGALRM ends a call (or
    the top level) that runs over; a call of a program that blocked SIGALRM is judged by its measured time."""
    if r.exit_code == -signal.SIGALRM:
        return f"time limit of {limit}s per test reached after {len(seconds)} tests"
    slow = next((i for i in sorted(seconds) if seconds[i] > limit), None)
    return "" if slow is None else f"test {slow}: took {seconds[slow]:.2f}s, over the {limit}s limit per test"


def _assert_result(raw, asserts, pool) -> Result:
    r = _base(raw, pool)
    if r.status:
        return r
    records, forged = _records(raw)
    errors = [rec for rec in records if "error" in rec]
    done = [rec["done"] for rec in records if "done" in rec]
    if errors:
        err = errors[0]
        r.status = _error_status(err)
        k = err.get("assert", -1)
        source = f" ({asserts[k]})" if 0 <= k < len(asserts) else ""
        if err["error"] == "assert":
            r.detail = f"assertion {k} failed{source}" + (f": {err['message']}" if err["message"] else "")
        else:
            r.detail = (f"during assertion {k}{source}: " if k >= 0 else "") + _error_detail(err)
    elif forged or len(done) > 1:
        r.status, r.detail = "failed", "unexpected data on the result channel"
    elif not done or r.exit_code != 0:
        r.status, r.detail = _exit_detail(r)
        r.detail = f"the program exited ({r.detail}) before the tests finished"
    elif done[0] < 1:
        r.status, r.detail = "failed", "no assertion ran"
    else:
        r.status, r.tests_passed, r.tests_total = "passed", done[0], done[0]
    return r


def _stdio_result(job: StdioTests, slot, end, pool) -> Result:
    total = Result(
        "passed", 0, "", "", 0.0, 0.0, tests_passed=0, tests_total=len(job.inputs), isolation=pool.isolation
    )
    for i, (stdin, expected) in enumerate(zip(job.inputs, job.outputs, strict=True)):
        payload = {"mode": "plain", "program": job.program, "stdin": stdin, "system_exit_ok": job.system_exit_ok}
        raw = pool._execute(slot, payload, end, pool.limits.timeout)
        r = _plain_result(raw, pool)
        total.wall_time += r.wall_time
        total.cpu_time += r.cpu_time
        total.exit_code, total.stdout, total.stderr = r.exit_code, r.stdout, r.stderr
        if r.status == "passed":
            ok, why = stdio_match(r.stdout, expected)
            if not ok:
                r.status, r.detail = "failed", why
        if r.status != "passed":
            total.status, total.detail = r.status, f"test {i}: {r.detail}"
            return total
        total.tests_passed += 1
    return total


def stdio_match(got: str, expected: str) -> tuple[bool, str]:
    """LiveCodeBench's stdio rule (lcb_runner grade_stdio): strip the whole output, split into lines,
    strip each line; lines must match exactly, or else as lists of Decimal numbers."""
    got_lines = [line.strip() for line in got.strip().split("\n")]
    exp_lines = [line.strip() for line in expected.strip().split("\n")]
    if len(got_lines) != len(exp_lines):
        return False, f"expected {len(exp_lines)} lines, got {len(got_lines)}"
    for n, (g, e) in enumerate(zip(got_lines, exp_lines, strict=True)):
        if g == e:
            continue
        try:
            if [Decimal(x) for x in g.split()] == [Decimal(x) for x in e.split()]:
                continue
        except InvalidOperation:
            pass
        return False, f"line {n + 1}: expected {_short(e)}, got {_short(g)}"
    return True, ""


_TAGS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


def _decode(x):
    """Rebuild a value from the harness's tagged JSON (see _sandbox_child.encode)."""
    if not isinstance(x, dict):
        return x
    ((tag, v),) = x.items()
    if tag in _TAGS:
        return _TAGS[tag](_decode(i) for i in v)
    if tag == "dict":
        return {_decode(k): _decode(val) for k, val in v}
    if tag == "float":
        return float(v)
    if tag == "int":
        return int(v, 16)
    if tag == "complex":
        return complex(_decode(v[0]), _decode(v[1]))
    if tag == "bytes":
        return bytes.fromhex(v)
    raise ValueError(f"unknown tag {tag!r}")


def _lists(x):
    """Every tuple, however deep, as a list (evalplus-style expected values hold tuples where JSON has lists)."""
    if isinstance(x, (list, tuple)):
        return [_lists(i) for i in x]
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    return x


def _same(got, expected, atol=0.0, nested_tuples_as_lists=True) -> bool:
    if nested_tuples_as_lists:
        got, expected = _lists(got), _lists(expected)
    elif isinstance(got, tuple):  # lcb_runner: only a returned tuple becomes a list
        got = list(got)
    return _close(got, expected, atol)


def _close(got, expected, atol) -> bool:
    if got == expected:
        return True
    if atol:
        number = (int, float)
        if isinstance(got, number) and isinstance(expected, number) and not isinstance(got, bool):
            return math.isclose(got, expected, rel_tol=1e-7, abs_tol=atol) or (
                math.isnan(got) and math.isnan(expected)
            )
        if isinstance(got, list) and isinstance(expected, list) and len(got) == len(expected):
            return all(_close(g, e, atol) for g, e in zip(got, expected, strict=True))
    return False


def _short(value, limit=200):
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4300-digit limit for str (HumanEval+ expects some)
        text = f"<{type(value).__name__} too large to print>"
    return text if len(text) <= limit else text[:limit] + "..."


# --- assert-style test code, hardened -------------------------------------------------------------


def _call(name, *args):
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


class _Harden(ast.NodeTransformer):
    """Route the test code's comparisons, truth tests and asserts through the harness's helpers
    (__sd_compare__, __sd_truth__, __sd_mark__), which refuse values that are not exact builtin types:
    an object whose __eq__ always returns True never gets compared."""

    def __init__(self, source):
        self.source = source
        self.asserts = []

    def visit_Assert(self, node):
        self.asserts.append(ast.get_source_segment(self.source, node) or ast.unparse(node))
        k = len(self.asserts) - 1
        self.generic_visit(node)
        node.test = _call("__sd_truth__", node.test)
        return [ast.Expr(_call("__sd_mark__", ast.Constant(k))), node]

    def visit_Compare(self, node):
        self.generic_visit(node)
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        return _call("__sd_compare__", ops, node.left, *node.comparators)

    def _test(self, node):
        self.generic_visit(node)
        node.test = _call("__sd_truth__", node.test)
        return node

    visit_If = visit_While = visit_IfExp = _test

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        node.values = [_call("__sd_truth__", v) for v in node.values]
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, ast.Not):
            node.operand = _call("__sd_truth__", node.operand)
        return node

    def visit_comprehension(self, node):
        self.generic_visit(node)
        node.ifs = [_call("__sd_truth__", c) for c in node.ifs]
        return node


def harden_test_code(source: str) -> tuple[str, list[str]]:
    """The rewritten test code, and the source of each assert (by index) for failure messages."""
    harden = _Harden(source)
    tree = ast.fix_missing_locations(harden.visit(ast.parse(source)))
    return ast.unparse(tree), harden.asserts
