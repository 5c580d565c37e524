"""Adversarial suite: hostile programs must be contained, each with an exact status; afterwards no
process survives and nothing was written outside the sandbox."""

import os
import socket
import textwrap
import time
import uuid

import pytest

from selfdistill import sandbox as sb

LIMITS = sb.Limits(timeout=2.0, memory_mb=512, max_output_bytes=1 << 16, isolation="strict")


def _needs_namespaces():
    try:
        sb.Pool(workers=1, limits=LIMITS).close()
    except sb.SandboxUnavailable as e:
        pytest.skip(f"namespaces unavailable here: {e}")


@pytest.fixture(scope="module")
def pool():
    _needs_namespaces()
    p = sb.Pool(workers=2, limits=LIMITS)
    yield p
    p.close()
    # after close, not one process of the sandbox may remain
    assert _descendants(os.getpid()) == [], "sandbox processes survived Pool.close()"


def _proc_table():
    table = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        state = stat.rsplit(")", 1)[1].split()[0]
        table[int(pid)] = (ppid, uid, state)
    return table


def _descendants(root):
    table = _proc_table()
    out, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, state) in table.items():
            if ppid == parent and state != "Z":
                out.append(pid)
                frontier.append(pid)
    return out


def _job_processes(pool):
    """Processes running as one of this pool's job uids: every one of them must be gone after a run."""
    if os.getuid() != 0:
        return []
    lo, hi = pool._uid_base, pool._uid_base + (1 << 20)
    deadline = time.monotonic() + 1.0
    while True:
        alive = [pid for pid, (_, uid, state) in _proc_table().items() if lo <= uid < hi and state != "Z"]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def run(pool, program, stdin=None):
    result = pool.map([(textwrap.dedent(program), stdin)])[0]
    assert _job_processes(pool) == [], f"job processes survived: {result}"
    return result


# --- resource exhaustion ---------------------------------------------------------------------------


def test_fork_bomb(pool):
    r = run(
        pool,
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """,
    )
    assert r.status == "timeout", r


def test_memory_bomb_single_allocation(pool):
    r = run(pool, "x = bytearray(1 << 40)")
    assert r.status == "memory", r


def test_memory_bomb_gradual(pool):
    r = run(
        pool,
        """
        chunks = []
        while True:
            chunks.append(bytearray(10 << 20))
    """,
    )
    assert r.status == "memory", r


def test_infinite_loop(pool):
    r = run(pool, "while True:\n    pass")
    assert r.status == "timeout", r
    assert r.wall_time < LIMITS.timeout + 1


def test_busy_threads(pool):
    r = run(
        pool,
        """
        import threading
        def spin():
            while True:
                pass
        for _ in range(4):
            threading.Thread(target=spin, daemon=True).start()
        spin()
    """,
    )
    assert r.status == "timeout", r


def test_sleep_forever(pool):
    r = run(pool, "import time\ntime.sleep(1000)")
    assert r.status == "timeout", r


def test_disk_fill(pool):
    r = run(
        pool,
        """
        with open("big", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20))
    """,
    )
    assert r.status == "runtime_error", r
    assert "OSError" in r.detail or "File too large" in r.detail or "No space" in r.detail, r.detail


# --- signals and process control -------------------------------------------------------------------


def test_sigterm_ignored(pool):
    r = run(
        pool,
        """
        import signal
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
            signal.signal(s, signal.SIG_IGN)
        while True:
            pass
    """,
    )
    assert r.status == "timeout", r


def test_kill_parent(pool):
    r = run(
        pool,
        """
        import os, signal
        try:
            os.kill(os.getppid(), signal.SIGKILL)
        except OSError:
            pass
        print("still here")
    """,
    )
    assert r.status == "passed", r
    assert r.stdout == "still here\n"


def test_kill_own_process_group(pool):
    r = run(pool, "import os, signal\nos.killpg(0, signal.SIGKILL)\nprint('unreachable')")
    assert r.status == "runtime_error", r
    assert "SIGKILL" in r.detail


def test_kill_everything(pool):
    # kill(-1) reaches every process the job may signal: inside its PID namespace, only its own
    r = run(pool, "import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('unreachable')")
    assert r.status == "runtime_error", r


def test_detached_grandchild_is_killed(pool):
    r = run(
        pool,
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in range(3):
                    os.close(fd)
                time.sleep(1000)
            os._exit(0)
        print("parent done")
    """,
    )
    assert r.status == "passed", r


def test_subprocess_spawn(pool):
    r = run(
        pool,
        """
        import subprocess
        subprocess.Popen(["sleep", "1000"], start_new_session=True)
        out = subprocess.run(["sh", "-c", "echo from-shell"], capture_output=True, text=True).stdout
        print(out.strip())
    """,
    )
    assert r.status == "passed", r
    assert r.stdout == "from-shell\n"


def test_privilege_escalation(pool):
    r = run(pool, "import os\nos.setuid(0)")
    assert r.status == "runtime_error", r
    assert "PermissionError" in r.detail


# --- network ---------------------------------------------------------------------------------------


def test_loopback_listener_unreachable(pool):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = run(
            pool,
            f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=1)
            s.sendall(b"escaped")
        """,
        )
        assert r.status == "runtime_error", r
        assert "unreachable" in r.detail.lower(), r.detail
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_outside_network_unreachable(pool):
    r = run(
        pool,
        """
        import socket
        socket.create_connection(("1.1.1.1", 53), timeout=1)
    """,
    )
    assert r.status == "runtime_error", r


# --- filesystem and environment --------------------------------------------------------------------


def test_writes_outside_workdir(pool, tmp_path):
    name = f"sandbox-escape-{uuid.uuid4().hex}"
    targets = [
        str(tmp_path / name),
        f"/tmp/{name}",
        f"/var/tmp/{name}",
        f"/dev/shm/{name}",
        f"{os.getcwd()}/{name}",
        f"/root/{name}",
        f"/etc/{name}",
        f"/{name}",
    ]
    r = run(
        pool,
        f"""
        import os, subprocess
        written = []
        for path in {targets!r} + ["../{name}", "../../{name}"]:
            try:
                with open(path, "w") as f:
                    f.write("escaped")
                written.append(path)
            except OSError:
                pass
        subprocess.run(["sh", "-c", "echo escaped > {targets[4]}"], stderr=subprocess.DEVNULL)
        os.makedirs("inside/ok", exist_ok=True)          # the work directory itself is writable
        open("inside/ok/file", "w").write("fine")
        print(os.getcwd(), written)
    """,
    )
    assert r.status == "passed", r
    assert r.stdout.startswith("/tmp ")  # the sandbox's own /tmp: a fresh tmpfs, not the host's
    for target in targets:
        assert not os.path.exists(target), f"{target} was written"
    assert not os.path.exists(f"/{name}")


def test_cannot_read_parent_environment(pool, monkeypatch):
    secret = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv("SELFDISTILL_TEST_SECRET", secret)
    p = sb.Pool(workers=1, limits=LIMITS)  # started after the secret is in our environment
    try:
        r = p.map(
            [
                (
                    textwrap.dedent(f"""
            import os
            print(dict(os.environ))
            for pid in ("1", "self", str(os.getppid()), "{os.getpid()}"):
                try:
                    print(open(f"/proc/{{pid}}/environ", "rb").read())
                except OSError as e:
                    print("blocked", pid, type(e).__name__)
        """),
                    None,
                )
            ]
        )[0]
    finally:
        p.close()
    assert r.status == "passed", r
    assert secret not in r.stdout
    assert "SELFDISTILL_TEST_SECRET" not in r.stdout
    assert r.stdout.count("blocked") == 4


def test_no_host_devices(pool):
    r = run(
        pool,
        """
        import os
        opened = []
        for dev in ("/dev/tty", "/dev/console", "/dev/pts/0", "/dev/sda", "/dev/vda", "/dev/mem", "/dev/kmsg"):
            try:
                os.close(os.open(dev, os.O_RDWR))
                opened.append(dev)
            except OSError:
                pass
        print(opened, sorted(os.listdir("/dev")))
    """,
    )
    assert r.status == "passed", r
    assert r.stdout.startswith("[] ")


def test_no_state_between_jobs():
    _needs_namespaces()
    with sb.Pool(workers=1, limits=LIMITS) as p:  # one slot: both jobs run in the same server
        writer = "open('/tmp/left', 'w').write('x'); open('/dev/shm/left', 'w').write('x')"
        reader = "import os\nprint(os.path.exists('/tmp/left'), os.path.exists('/dev/shm/left'), os.listdir('.'))"
        w, r = p.map([(writer, None), (reader, None)])
    assert w.status == "passed" and r.status == "passed", (w, r)
    assert r.stdout == "False False []\n"


def test_huge_stdout(pool):
    r = run(pool, "while True:\n    print('x' * 10000)")
    assert r.status == "output_limit", r
    assert len(r.stdout) <= LIMITS.max_output_bytes


def test_huge_stderr_single_write(pool):
    r = run(pool, "import sys\nsys.stderr.write('y' * (50 << 20))")
    assert r.status == "output_limit", r


def test_deep_recursion(pool):
    r = run(pool, "def f(n):\n    return f(n + 1) + 1\nf(0)")
    assert r.status == "runtime_error", r
    assert "RecursionError" in r.detail


def test_read_own_memory(pool):
    r = run(pool, "open('/proc/self/mem', 'rb')")
    assert r.status == "runtime_error", r


# --- false passes ----------------------------------------------------------------------------------

CHECK = """
def check(candidate):
    assert candidate(2) == 4
    assert candidate(3) == 9
    assert abs(candidate(0.5) - 0.25) < 1e-9
"""
WRONG = "def square(x):\n    return x + 1\n"


def grade(pool, program, test_code=CHECK, entry_point="square"):
    r = pool.map([sb.AssertTests(textwrap.dedent(program), test_code, entry_point)])[0]
    assert _job_processes(pool) == []
    return r


def test_control_right_answer_passes(pool):
    r = grade(pool, "def square(x):\n    return x * x\n")
    assert r.status == "passed", r
    assert r.tests_passed == r.tests_total == 3


def test_exit_zero_early(pool):
    assert grade(pool, WRONG + "import sys\nsys.exit(0)\n").status == "failed"


def test_os_exit_zero_early(pool):
    assert grade(pool, WRONG + "import os\nos._exit(0)\n").status == "failed"


def test_os_exit_zero_inside_candidate(pool):
    r = grade(pool, "import os\ndef square(x):\n    os._exit(0)\n")
    assert r.status == "failed", r


def test_fake_success_marker(pool):
    r = grade(
        pool,
        WRONG
        + textwrap.dedent("""
        import os, sys
        print("passed"); print("All tests passed!"); sys.stdout.flush()
        for fd in range(3, 64):
            try:
                os.write(fd, b'0123456789abcdef0123456789abcdef {"done": 3}\\n')
            except OSError:
                pass
        os._exit(0)
    """),
    )
    assert r.status == "failed", r


def test_eq_always_true(pool):
    r = grade(
        pool,
        """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __lt__(self, other): return True
            def __sub__(self, other): return self
            def __abs__(self): return 0.0
            def __bool__(self): return True
        def square(x):
            return Anything()
    """,
    )
    assert r.status == "failed", r
    assert "Anything" in r.detail


def test_int_subclass_eq(pool):
    r = grade(
        pool,
        """
        class Sneaky(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def square(x):
            return Sneaky(0)
    """,
    )
    assert r.status == "failed", r


def test_eq_always_true_in_call_tests(pool):
    program = "class A:\n    def __eq__(self, o): return True\ndef f(x):\n    return A()\n"
    r = pool.map([sb.CallTests(program, "f", [[1], [2]], [1, 4])])[0]
    assert r.status == "failed", r


def test_monkeypatch_builtins(pool):
    r = grade(
        pool,
        WRONG
        + textwrap.dedent("""
        import builtins
        builtins.abs = lambda x: 0
        builtins.isinstance = lambda *a: True
        builtins.AssertionError = type("Nope", (Exception,), {})
    """),
    )
    assert r.status == "failed", r


def test_shadow_builtins_in_globals(pool):
    r = grade(pool, WRONG + "def abs(x):\n    return 0\nlen = lambda x: 3\n")
    assert r.status == "failed", r


def test_monkeypatch_assert_helpers(pool):
    tests = "import math\ndef check(candidate):\n    assert math.isclose(candidate(3), 9)\n"
    program = (
        WRONG + "import math, unittest\nmath.isclose = lambda *a, **k: True\n"
        "unittest.TestCase.assertEqual = lambda *a, **k: None\n"
    )
    r = grade(pool, program, tests)
    assert r.status == "failed", r


def test_patch_counter_eq(pool):
    program = (
        "import collections\ncollections.Counter.__eq__ = lambda a, b: True\n"
        "def square(x):\n    return collections.Counter('wrong')\n"
    )
    r = grade(pool, program)
    assert r.status == "failed", r


def test_tamper_with_harness_module(pool):
    r = grade(
        pool,
        WRONG
        + textwrap.dedent("""
        import sys
        for module in list(sys.modules.values()):
            for name in ("check_plain", "encode", "_OPS", "run_assert"):
                if hasattr(module, name):
                    setattr(module, name, lambda *a, **k: None)
        import __main__
        __main__.check = lambda candidate: None
    """),
    )
    assert r.status == "failed", r


def test_frame_walking_is_blocked(pool):
    r = grade(
        pool,
        """
        import sys
        def square(x):
            f = sys._getframe(1)
            f.f_globals["check"] = lambda c: None
            return x * x + 1
    """,
    )
    assert r.status == "runtime_error", r
    assert "ValueError" in r.detail


def test_traceback_frame_is_blocked(pool):
    r = grade(
        pool,
        """
        def square(x):
            try:
                1 / 0
            except ZeroDivisionError as e:
                frame = e.__traceback__.tb_frame.f_back
            return 0
    """,
    )
    assert r.status == "runtime_error", r


def test_gc_scan_is_blocked(pool):
    r = grade(pool, "import gc\nobjs = gc.get_objects()\n" + WRONG)
    assert r.status == "runtime_error", r


def test_ctypes_is_blocked(pool):
    r = grade(pool, "import ctypes\n" + WRONG)
    assert r.status == "runtime_error", r
    assert "ctypes" in r.detail


def test_fork_oracle(pool):
    # A fork of the program would run the tests as a copy of the harness and reveal (by its exit
    # status) whether a guess passes. Forks must never run tests nor report.
    r = grade(
        pool,
        """
        import os
        pid = os.fork()
        if pid:
            os.waitpid(pid, 0)
        def square(x):
            if os.fork() == 0:
                return x * x   # the right answer, but only in a forked copy
            os.wait()
            return x + 1
    """,
    )
    assert r.status == "failed", r


def test_call_tests_exit_early(pool):
    program = "import os\ndef f(x):\n    os._exit(0)\n"
    r = pool.map([sb.CallTests(program, "f", [[1]], [1])])[0]
    assert r.status == "failed", r
    program = "import sys\ndef f(x):\n    sys.exit(0)\n"
    r = pool.map([sb.CallTests(program, "f", [[1]], [1])])[0]
    assert r.status == "failed", r
