"""The inside of the sandbox: a warm zygote, its per-slot servers, and the harness that runs a program.

selfdistill.sandbox starts this file as `python -I _sandbox_child.py CONFIG`. It never imports
selfdistill, and it is written so that nothing in it can be changed by the program it runs.
The process tree, in "namespaces" mode:

    parent (sandbox.Pool, outside)
      zygote       unshares mount, network, IPC, UTS and PID namespaces (plus a user namespace when
                   not root), makes every mount read-only, then forks:
        init       pid 1 of the sandbox: hides /proc /tmp /var/tmp /run, replaces /dev by a minimal
                   one, then forks the servers and reaps. If it dies, the kernel kills everything.
          server   one per worker slot, in its own mount namespace; warm (modules imported, gc frozen).
                   Per execution: a fresh tmpfs on /tmp (the work directory) and /dev/shm, pipes,
                   stdin, the wall-clock timeout, output caps, the final SIGKILL, the unmount.
            job init     pid 1 of a new PID (and IPC) namespace for this one execution. Session and
                         process-group leader, reaps orphans, reports the job's exit status; when it
                         exits, the kernel kills whatever the job left behind.
              job        rlimits, a fresh unprivileged uid (or, as non-root, no capabilities),
                         no_new_privs, a clean environment; then runs the program - and for test
                         jobs the tests - in this very process (no exec: it is already warm).

In "basic" mode (no namespaces) the same tree runs without them: rlimits, a session and process
group killed as a whole, a temporary directory removed afterwards, a fresh uid if we are root.

Messages: parent -> server are marshal'ed dicts (the parent is trusted); server -> parent replies are
marshal'ed dicts built here from raw bytes. Values computed by the program travel as JSON text made by
`encode` below (exact builtin types only) - never pickle.
"""

# ruff: noqa: I001, S102, S110, UP031, SIM115, RUF100 - this file runs untrusted code on purpose
import builtins

# Every function defined below looks builtins up in this private copy, taken before any program runs,
# so a program that patches builtins.isinstance/len/... cannot change how the harness behaves.
__builtins__ = dict(builtins.__dict__)

# The imports below also warm the zygote: a job forked from it starts with them loaded.
import collections
import contextlib
import ctypes
import decimal
import fractions
import json.encoder
import marshal
import math
import operator
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback
import types

# commonly used by solutions and test code: imported once here, so every forked job has them for free
import bisect, cmath, copy, functools, heapq, itertools, random, re, statistics, string, typing  # noqa: E401, F401

# --- Linux system calls (ctypes, used only before any untrusted code runs) --------------------------

libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 24, 36, 38
SYS_MOUNT_SETATTR, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, 0x8000, 1  # same number on x86_64 and arm64


def _sys(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags):
    _sys(libc.unshare(flags), "unshare")


def mount(source, target, fstype, flags, data=None):
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _sys(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def setns(fd, nstype):
    _sys(libc.setns(fd, nstype), "setns")


def prctl(option, arg):
    _sys(libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def make_root_readonly():
    """Every mount, recursively, read-only. mount_setattr (Linux 5.12+) does it in one call."""

    class MountAttr(ctypes.Structure):
        _fields_ = [
            ("set", ctypes.c_uint64),
            ("clr", ctypes.c_uint64),
            ("prop", ctypes.c_uint64),
            ("userns", ctypes.c_uint64),
        ]

    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if libc.syscall(SYS_MOUNT_SETATTR, -100, b"/", AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)) == 0:
        return
    # older kernels: remount each mount read-only, keeping the flags a user namespace may not clear
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4].encode().decode("unicode_escape") for line in f]
    for point in points:
        try:
            keep = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | keep)
        except OSError:
            if point == "/":
                raise  # the rest is a second line of defence: the job also loses root


def _world_traversable(path: str) -> bool:
    """Whether every directory above `path` lets other users through (o+x)."""
    parts = os.path.realpath(path).split(os.sep)
    return all(os.stat(os.sep.join(parts[:n]) or os.sep).st_mode & 0o001 for n in range(1, len(parts)))


STDLIB_PUBLIC = _world_traversable(os.path.dirname(os.__file__))


def drop_capabilities():
    """For user-namespace mode, where the job stays uid 0 inside: empty every capability set."""
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails (harmlessly) past the last capability
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all zero
    _sys(libc.capset(header, data), "capset")


# --- zygote: namespaces, then one warm server per slot ----------------------------------------------


def _is_real_root():
    """uid 0 of the host (may switch to any uid), as opposed to root of some user namespace."""
    if os.getuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split()[:3] == ["0", "0", "4294967295"]
    except OSError:
        return True


REAL_ROOT = _is_real_root()  # decided in the zygote, before /proc is hidden
HIDDEN_DIRS = ("/proc", "/tmp", "/var/tmp", "/run")  # empty read-only tmpfs over each


def expose_interpreter():
    """Root mode: jobs run as an unprivileged uid, which cannot traverse a private directory such as
    /root - where pyenv and friends install Python. Shadow each such directory with a tmpfs that holds
    only bind mounts of the interpreter's own directories (which also hides everything else in it)."""
    needed = {
        os.path.realpath(p)
        for p in sys.path + [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)]
        if p and os.path.isdir(p)
    }
    shadows = {}  # private ancestor -> the needed paths below it
    for path in sorted(needed):
        parts = path.split("/")
        for i in range(2, len(parts) + 1):
            ancestor = "/".join(parts[:i])
            if not os.stat(ancestor).st_mode & 0o001:  # others may not traverse it
                shadows.setdefault(ancestor, []).append(path)
                break
    for ancestor, paths in shadows.items():
        paths = [p for p in paths if not any(p.startswith(q + "/") for q in paths)]  # parents cover children
        fds = [os.open(p, os.O_PATH) for p in paths]
        mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=755")
        for p, fd in zip(paths, fds, strict=True):
            os.makedirs(p, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", p, None, MS_BIND | MS_REC)
            os.close(fd)


def enter_namespaces():
    uid, gid = os.getuid(), os.getgid()
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
    unshare(flags | (CLONE_NEWUSER if uid != 0 else 0))
    if uid != 0:  # map ourselves to root inside, so we may mount; jobs give the capabilities up
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount leaks out, nothing outside leaks in
    if REAL_ROOT:
        expose_interpreter()
    make_root_readonly()


DEVICES = ("null", "zero", "full", "random", "urandom")


def minimal_dev():
    """Replace /dev by a tmpfs holding only harmless devices (like bubblewrap's --dev): no terminals
    (which, in user-namespace mode, would belong to the caller), no disks."""
    fds = {name: os.open(f"/dev/{name}", os.O_PATH) for name in DEVICES}
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name, fd in fds.items():
        open(f"/dev/{name}", "w").close()
        mount(f"/proc/self/fd/{fd}", f"/dev/{name}", None, MS_BIND)
        os.close(fd)
    os.mkdir("/dev/shm")  # each job mounts its own tmpfs here
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
    mount(None, "/dev", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def hide_dirs():
    minimal_dev()
    needed = [os.path.realpath(p) for p in sys.path + [sys.executable] if p]
    for d in HIDDEN_DIRS:
        if not os.path.isdir(d):
            continue
        if any(p == d or p.startswith(d + "/") for p in needed):
            if d == "/tmp":
                raise OSError("the Python installation lives under /tmp, which the sandbox must hide")
            continue  # the interpreter lives here: keep it visible (read-only)
        # /proc goes away entirely: no other process, no /proc/self/mem, no environ of anybody
        mount("tmpfs", d, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=755")


def zygote(config):
    slots = config["slots"]
    namespaces = config["isolation"] != "basic"

    def fatal(reason):
        for _, reply_fd in slots:
            send(reply_fd, {"fatal": reason})
        os._exit(1)

    if namespaces:
        try:
            enter_namespaces()
        except OSError as e:  # the parent decides: fall back to basic ("auto") or give up ("strict")
            fatal(f"namespaces unavailable ({e})")
    init = os.fork()  # after unshare(CLONE_NEWPID) our first child is pid 1 of the new namespace
    if init == 0:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        pidns = None
        if namespaces:
            try:
                pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)  # servers come back to it after each job
                hide_dirs()
            except OSError as e:
                fatal(f"namespaces unavailable ({e})")
        import gc

        gc.freeze()  # forked jobs' garbage collections then skip (and do not copy) the zygote's objects
        mode = "namespaces" if namespaces else "basic"
        for i, (request_fd, reply_fd) in enumerate(slots):
            if os.fork() == 0:
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                for j, fds in enumerate(slots):
                    if j != i:
                        for fd in fds:
                            os.close(fd)
                send(reply_fd, {"hello": mode})
                server(request_fd, reply_fd, mode, pidns)
                os._exit(0)
        for fds in slots:
            for fd in fds:
                os.close(fd)
        while True:  # pid 1 reaps whatever is orphaned; it leaves when the last server is gone
            try:
                os.wait()
            except ChildProcessError:
                os._exit(0)
    for fds in slots:
        for fd in fds:
            os.close(fd)
    # SIGTERM from the parent: kill the sandbox's pid 1 and wait, so that when we exit, everything has
    signal.signal(signal.SIGTERM, lambda *_: os.kill(init, signal.SIGKILL))
    os.waitpid(init, 0)
    os._exit(0)


def send(fd, obj):
    data = marshal.dumps(obj)
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def recv(fd):
    def read_exactly(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    head = read_exactly(4)
    if head is None:
        return None
    return marshal.loads(read_exactly(struct.unpack(">I", head)[0]))


def server(request_fd, reply_fd, mode, pidns):
    """One worker slot: supervise one execution at a time."""
    if mode == "namespaces":
        unshare(CLONE_NEWNS)  # this slot's own mount namespace: its jobs' /tmp is invisible to the others
    while True:
        job = recv(request_fd)
        if job is None:  # the parent closed the pipe (or died): leave
            return
        try:
            reply = supervise(job, mode, pidns, (request_fd, reply_fd))
        except Exception as e:  # noqa: BLE001 - a failure here is the sandbox's, not the program's
            reply = {"error": f"supervisor: {type(e).__name__}: {e}"}
            if pidns is not None:
                with contextlib.suppress(OSError):
                    setns(pidns, CLONE_NEWPID)  # in case we failed between unshare and fork
        send(reply_fd, reply)


# --- supervisor: one execution ----------------------------------------------------------------------

CHANNEL_FD = 3  # the job's private result channel (stdin/stdout/stderr are 0, 1, 2)
CHANNEL_CAP = 64 << 20


def supervise(job, mode, pidns, server_fds):
    """Run one execution and collect its report. Everything it creates is gone when it returns."""
    uid = job["uid"]  # a fresh unprivileged uid per execution (when we are root), so RLIMIT_NPROC is per job
    fs_mb = max(16, min(job["memory_mb"], 512))
    fds = []  # closed at the end, whatever happens
    workdir = None
    try:
        if mode == "namespaces":
            # a fresh tmpfs as /tmp (the work directory) and /dev/shm, in this slot's mount
            # namespace; unmounted (and so emptied) after the job
            owner = f",uid={uid},gid={uid}" if REAL_ROOT else ""
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={fs_mb}m,nr_inodes=4096,mode=700{owner}")
            mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={fs_mb}m,nr_inodes=1024,mode=1777")
            cwd = "/tmp"
        else:
            import tempfile

            workdir = cwd = tempfile.mkdtemp(prefix="selfdistill-sandbox-")
            if REAL_ROOT and STDLIB_PUBLIC:  # the job will run as this uid (see run_job)
                os.chown(workdir, uid, uid)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        chan_r, chan_w = os.pipe()
        status_r, status_w = os.pipe()
        stdin_fd = os.memfd_create("stdin")
        fds += [out_r, out_w, err_r, err_w, chan_r, chan_w, status_r, status_w, stdin_fd]
        os.write(stdin_fd, (job.get("stdin") or "").encode())
        os.lseek(stdin_fd, 0, os.SEEK_SET)

        start = time.monotonic()
        if mode == "namespaces":
            unshare(CLONE_NEWPID)  # our next child becomes pid 1 of a new PID namespace...
        init = os.fork()
        if init == 0:
            try:
                for fd in (out_r, err_r, chan_r, status_r, *server_fds):
                    os.close(fd)
                job_init(job, mode, uid, cwd, fs_mb, stdin_fd, out_w, err_w, chan_w, status_w)
            finally:
                os._exit(127)
        if mode == "namespaces":
            setns(pidns, CLONE_NEWPID)  # ...and only that one: the next job gets a new one again
        for fd in (out_w, err_w, chan_w, status_w, stdin_fd):
            os.close(fd)
            fds.remove(fd)
        pidfd = os.pidfd_open(init)
        fds.append(pidfd)

        # Collect output until the job init exits, the wall-clock deadline passes, or output overflows.
        caps = {out_r: job["max_output"], err_r: job["max_output"], chan_r: CHANNEL_CAP}
        bufs = {fd: bytearray() for fd in caps}
        poller = select.poll()
        for fd in (*caps, pidfd):
            poller.register(fd, select.POLLIN)
        deadline = start + job["timeout"]
        timed_out = overflow = exited = False
        while not (exited or overflow):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for fd, _ in poller.poll(remaining * 1000):
                if fd == pidfd:
                    exited = True
                    continue
                extra = _read_some(fd, bufs, caps)
                if extra is None:
                    poller.unregister(fd)  # EOF
                else:
                    overflow |= extra > 0
        wall = time.monotonic() - start

        # SIGKILL the whole process group while the job init's pid is still ours (not yet reaped, so
        # the group id cannot have been reused). In namespace mode the init's death also kills every
        # process of its PID namespace - including ones that changed session or process group.
        for kill in (os.kill, os.killpg):
            with contextlib.suppress(ProcessLookupError):
                kill(init, signal.SIGKILL)
        _, _, usage = os.wait4(init, 0)
        for fd in caps:
            # namespace mode: every writer is dead now, so read to the end. basic mode: an escaped
            # grandchild may still hold the pipe open - take what is there, don't wait for it
            os.set_blocking(fd, mode == "namespaces")
            while True:
                extra = _read_some(fd, bufs, caps)
                if extra is None or extra < 0:
                    break
                overflow |= extra > 0
        raw_status = os.read(status_r, 4)
        status = struct.unpack("i", raw_status)[0] if len(raw_status) == 4 else None
        return {
            "exit": os.waitstatus_to_exitcode(status) if status is not None else None,
            "timed_out": timed_out,
            "overflow": overflow,
            "stdout": bytes(bufs[out_r]),
            "stderr": bytes(bufs[err_r]),
            "channel": bytes(bufs[chan_r]),
            "wall": wall,
            "cpu": usage.ru_utime + usage.ru_stime,
        }
    finally:
        for fd in fds:
            os.close(fd)
        if workdir:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        elif mode == "namespaces":
            for point in (b"/tmp", b"/dev/shm"):
                libc.umount2(point, 2)  # MNT_DETACH (a failed job may not have mounted both)


def _read_some(fd, bufs, caps):
    """Read what is there into bufs[fd], keeping at most caps[fd] bytes. Returns None at EOF, -1 if
    nothing is there yet (non-blocking), else the number of bytes that did not fit."""
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return -1
    if not data:
        return None
    room = caps[fd] - len(bufs[fd])
    bufs[fd] += data[:room]
    return max(0, len(data) - room)


def job_init(job, mode, uid, cwd, fs_mb, stdin_fd, out_w, err_w, chan_w, status_w):
    """pid 1 of the execution's namespace: lead a new session, start the job, reap, report."""
    os.setsid()  # a new session and process group: the supervisor kills the group as a whole
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if mode == "namespaces":
        unshare(CLONE_NEWIPC)  # SysV IPC objects die with the job instead of reaching the next one
    prctl(PR_SET_CHILD_SUBREAPER, 1)  # basic mode: orphans come back to us, not to the system init
    pid = os.fork()
    if pid == 0:
        os.close(status_w)
        try:
            run_job(job, mode, uid, cwd, fs_mb, stdin_fd, out_w, err_w, chan_w)
        finally:
            os._exit(127)
    for fd in (stdin_fd, out_w, err_w, chan_w):
        os.close(fd)
    while True:
        child, status = os.waitpid(-1, 0)
        if child == pid:
            break
    os.write(status_w, struct.pack("i", status))
    os._exit(0)  # in namespace mode this kills whatever the job left behind


# --- the job: confinement, then the program ---------------------------------------------------------

CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
}
NPROC = 64  # processes + threads of one job
NOFILE = 256


def run_job(job, mode, uid, cwd, fs_mb, stdin_fd, out_w, err_w, chan_w):
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    for fd, target in ((stdin_fd, 0), (out_w, 1), (err_w, 2), (chan_w, CHANNEL_FD)):
        os.dup2(fd, target)
    os.closerange(CHANNEL_FD + 1, 1 << 16)  # the control pipes to the parent must not be reachable
    os.chdir(cwd)
    mb = 1 << 20
    cpu = math.ceil(job["timeout"]) + 1
    for limit, value in (
        (resource.RLIMIT_AS, job["memory_mb"] * mb),
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU, then SIGKILL: busy threads can't outrun the wall clock
        (resource.RLIMIT_NPROC, NPROC),  # fork bombs stop here (the uid is ours alone, see supervise)
        (resource.RLIMIT_FSIZE, fs_mb * mb),
        (resource.RLIMIT_NOFILE, NOFILE),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, value if isinstance(value, tuple) else (value, value))
    libc.mallopt(-8, 2)  # M_ARENA_MAX: per-thread malloc arenas would eat the address-space limit
    if REAL_ROOT and (mode == "namespaces" or STDLIB_PUBLIC):
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)  # from real root to a fresh uid: all capabilities are gone
    else:
        # user-namespace mode (uid 0 inside), or basic mode with the stdlib in a private directory
        # (pyenv under /root) that a fresh uid could not import from: keep the uid, drop every capability
        drop_capabilities()
    prctl(PR_SET_NO_NEW_PRIVS, 1)  # setuid binaries (su, mount, ...) cannot give anything back
    os.environ.clear()
    os.environ.update(CLEAN_ENV, HOME=cwd, TMPDIR=cwd)
    random.seed()  # a forked job would otherwise repeat the zygote's random sequence
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)
    sys.argv = ["main.py"]
    sys.set_int_max_str_digits(0)
    import atexit

    atexit._clear()  # only the program's own exit handlers should run
    harness = {"plain": run_plain, "call": run_call, "assert": run_assert}[job["mode"]]
    harness(job)


def _finish(code):
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 - after the program: it may have patched contextlib.suppress, not try
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


def _exit_code(e):
    """What the interpreter would exit with for SystemExit e."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    try:  # noqa: SIM105 - after the program: it may have patched contextlib.suppress, not try
        print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001
        pass
    return 1


def _new_main(name="__main__"):
    """A fresh module for the program, registered as __main__ whatever its name (the harness's own module
    must not be importable). A name other than "__main__" skips the program's `if __name__ == "__main__":`."""
    main = types.ModuleType(name)
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def run_plain(job):
    """Run the program as `python main.py` would. The exit code is the verdict; an uncaught exception
    is also reported on the channel (its type decides runtime_error vs memory)."""
    emit = make_emitter(job["secret"])
    code = 0
    try:
        exec(compile(job["program"], "main.py", "exec"), _new_main())
        import threading

        threading._shutdown()  # like the interpreter: wait for non-daemon threads
    except SystemExit as e:
        code = 0 if job.get("system_exit_ok") else _exit_code(e)
    except BaseException as e:  # noqa: BLE001
        # the traceback as python prints it, without this function's frame
        try:  # noqa: SIM105 - after the program: it may have patched contextlib.suppress, not try
            traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        except BaseException:  # noqa: BLE001
            pass
        emit({"error": error_kind(e), "type": safe_str(type(e).__name__, 100), "message": safe_str(e)})
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    _finish(code)


# --- the test harness: trusted helpers, bound before the program runs ------------------------------
# Everything below that runs after the program has started uses only objects bound here, at import
# time in the zygote: C functions, builtin types, and functions of this module (whose globals the
# program cannot reach: this module is no longer __main__, and frame/gc introspection is blocked).

_write, _getpid, _exit = os.write, os.getpid, os._exit
_monotonic, _setitimer, _set_handler = time.monotonic, signal.setitimer, signal.signal
_SIGALRM, _SIG_DFL, _ITIMER_REAL = signal.SIGALRM, signal.SIG_DFL, signal.ITIMER_REAL
_ESC = json.encoder.encode_basestring_ascii  # a C function
_OPS = {
    "Eq": operator.eq,
    "NotEq": operator.ne,
    "Lt": operator.lt,
    "LtE": operator.le,
    "Gt": operator.gt,
    "GtE": operator.ge,
    "In": lambda a, b: a in b,
    "NotIn": lambda a, b: a not in b,
    "Is": operator.is_,
    "IsNot": operator.is_not,
}
# Builtin C types cannot be patched, so their ==, <, bool() are the interpreter's own.
_SCALARS = {type(None), bool, int, float, complex, str, bytes, range, decimal.Decimal, type(...), type}
_CONTAINERS = {
    list,
    tuple,
    set,
    frozenset,
    dict,
    collections.deque,
    collections.OrderedDict,
    collections.defaultdict,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
}
# Pure-Python classes we accept, with their class dict as it is now: a patched method shows as a change.
# The test job's setup code adds its own classes (ListNode, TreeNode...) here.
_CHECKED_CLASSES = {cls: dict(cls.__dict__) for cls in (collections.Counter, fractions.Fraction)}
_RECORD_CLASSES = set()  # checked classes whose instances are compared through their attributes


class UntrustedValue(TypeError):
    pass


def _unchanged(cls):
    saved = _CHECKED_CLASSES[cls]
    now = cls.__dict__
    return len(now) == len(saved) and all(k in now and now[k] is v for k, v in saved.items())


def check_plain(value, seen=None):
    """Accept only values whose comparisons and truth are the interpreter's own: exact builtin types
    (no subclasses), containers of them, and a few classes checked to be unpatched. Raise otherwise."""
    t = type(value)
    if t in _SCALARS:  # (a class as a value, `type(x) == int`, compares by identity: fine)
        return
    if t in _CHECKED_CLASSES:
        if not _unchanged(t):
            raise UntrustedValue(f"class {t.__name__} was modified by the program")
        if t is fractions.Fraction:
            return
    elif t not in _CONTAINERS:
        raise UntrustedValue(f"untrusted value of type {t.__qualname__}")
    seen = set() if seen is None else seen
    if id(value) in seen:  # cycles (a linked list with a loop, a list containing itself)
        return
    seen.add(id(value))
    if t in _RECORD_CLASSES:
        items = list(vars(value).values())
    elif isinstance(value, dict):
        items = [x for pair in dict.items(value) for x in pair]
    else:
        items = value
    for item in items:
        check_plain(item, seen)


def safe_str(value, limit=2000):
    try:
        text = str(value)
    except BaseException:  # noqa: BLE001
        text = "<unprintable>"
    return text if len(text) <= limit else text[:limit] + "..."


def encode(value, depth=0):
    """JSON text for a plain value, built here (the json module is shared with the program, which
    could patch it). Tags keep exact types: {"tuple": [...]}, {"set": [...]}, {"dict": [[k, v], ...]},
    {"float": "nan"}; the parent rebuilds them with sandbox._decode."""
    t = type(value)
    if value is None:
        return "null"
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return int.__repr__(value) if value.bit_length() < 10000 else '{"int": "%s"}' % int.__format__(value, "x")
    if t is float:
        return float.__repr__(value) if value - value == 0 else '{"float": "%s"}' % float.__repr__(value)
    if t is str:
        return _ESC(value)
    if depth > 200:
        raise UntrustedValue("value nested too deeply")
    if t is complex:
        return '{"complex": [%s, %s]}' % (encode(value.real), encode(value.imag))
    if t is bytes:
        return '{"bytes": "%s"}' % bytes.hex(value)
    if t in (list, tuple, set, frozenset, collections.deque):
        name = "list" if t is collections.deque else t.__name__
        return '{"%s": [%s]}' % (name, ",".join([encode(v, depth + 1) for v in value]))
    if t in (dict, collections.OrderedDict, collections.defaultdict) or (t is collections.Counter and _unchanged(t)):
        pairs = ["[%s,%s]" % (encode(k, depth + 1), encode(v, depth + 1)) for k, v in dict.items(value)]
        return '{"dict": [%s]}' % ",".join(pairs)
    raise UntrustedValue(f"cannot return a value of type {t.__qualname__} (only plain data)")


def make_emitter(secret):
    """Records on the private channel (fd 3): '<secret> <json>' lines. The secret exists only in this
    closure; the parent ignores - and fails the run for - any line without it."""
    prefix = (secret + " ").encode()

    def emit(fields, value_json=None):
        body = ",".join([_ESC(k) + ":" + encode(v) for k, v in fields.items()])
        if value_json is not None:
            body += ',"value":' + value_json
        data = prefix + ("{" + body + "}\n").encode()
        while data:
            data = data[_write(CHANNEL_FD, data) :]

    return emit


def error_kind(e):
    """The verdict-relevant class of an exception, by exact builtin type (a program's own class that
    happens to be called MemoryError is just an exception)."""
    return {MemoryError: "memory", SystemExit: "exit", AssertionError: "assert", UntrustedValue: "untrusted"}.get(
        type(e), "exception"
    )


def report_and_exit(emit, e, where):
    emit({"error": error_kind(e), "type": safe_str(type(e).__name__, 100), "message": safe_str(e), **where})
    _finish(1)


# Audit events a program under test may not trigger: they reach the harness's frames (and so its
# state) or raw memory. sys._getframe raises ValueError, which its stdlib callers (warnings, logging,
# typing, namedtuple) already handle as "no frames on this interpreter".
_BLOCKED_ATTRS = {"tb_frame", "gi_frame", "cr_frame", "ag_frame"}
_BLOCKED_EVENTS = {
    "sys._current_frames",
    "sys.settrace",
    "sys.setprofile",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "code.__new__",
    "sys.addaudithook",
}


def install_audit_hook():
    def hook(event, args):
        if event == "sys._getframe":
            raise ValueError("call stack is not deep enough (sandbox)")
        if event == "object.__getattr__" and args[1] in _BLOCKED_ATTRS:
            raise AttributeError(f"{args[1]} is not available in the sandbox")
        if event in _BLOCKED_EVENTS or event.startswith("ctypes."):
            raise RuntimeError(f"{event} is not allowed in the sandbox")
        if event == "import" and args[0] in ("ctypes", "_ctypes"):
            raise ImportError("ctypes is not available in the sandbox")
        if event in ("open", "os.chdir") and type(args[0]) is str and args[0].startswith("/proc"):
            raise PermissionError(f"{args[0]} is not available in the sandbox")  # basic mode

    for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
        del sys.modules[name]  # so that `import ctypes` has to pass the hook
    sys.addaudithook(hook)  # cannot be removed, not even by the program


def arm_alarm(seconds):
    """A time limit the kernel enforces: SIGALRM's default action ends the job at once, even inside a long
    C call. A program may catch or block SIGALRM; then the time measured around each call decides."""
    _set_handler(_SIGALRM, _SIG_DFL)
    _setitimer(_ITIMER_REAL, seconds)


def run_call(job):
    """Functional tests: call the entry point on each input, send each return value out (encoded, exact
    builtin types only) with the call's wall time. The parent compares: the expected values never enter
    the sandbox. With `call_timeout` the top level and each call get that many seconds (lcb_runner's alarms)."""
    emit = make_emitter(job["secret"])
    harness_pid = _getpid()
    limit = job["call_timeout"]
    install_audit_hook()
    G = _new_main("__main__" if job["run_main"] else "solution")
    case = -1
    try:
        if limit:
            arm_alarm(limit)
        exec(compile(job["program"], "main.py", "exec"), G)
        entry = job["entry_point"]
        fn = G[entry] if entry.isidentifier() else eval(entry, G)  # e.g. "Solution().twoSum"
        for case, args in enumerate(job["inputs"]):
            if limit:
                arm_alarm(limit)
            start = _monotonic()
            value = fn(*args)
            seconds = _monotonic() - start
            if limit:
                _setitimer(_ITIMER_REAL, 0)
            if _getpid() != harness_pid:
                break
            emit({"case": case, "seconds": seconds}, encode(value))
    except BaseException as e:  # noqa: BLE001
        if _getpid() == harness_pid:
            report_and_exit(emit, e, {"case": case})
    if _getpid() != harness_pid:
        _exit(0)  # a fork made by the program returned into the harness: it never reports
    emit({"done": len(job["inputs"])})
    _finish(0)


def run_assert(job):
    """Assert-style tests (HumanEval, MBPP, LeetCode). The parent rewrote the test code so that every
    comparison, truth test and assert goes through compare/truth/mark below. Program functions reach
    the tests only through guard, which rejects anything but plain values; the tests get their own
    namespace, builtins and module copies, none of which the program can reach."""
    emit = make_emitter(job["secret"])
    harness_pid = _getpid()
    G = _new_main()
    try:
        exec(compile(job["setup_code"], "setup.py", "exec"), G)  # trusted: imports, ListNode...
    except BaseException as e:  # noqa: BLE001
        report_and_exit(emit, e, {"stage": "setup"})
    for v in list(G.values()):
        if type(v) is type and v.__module__ == "__main__":
            _CHECKED_CLASSES[v] = dict(v.__dict__)
            _RECORD_CLASSES.add(v)
    state = {"asserts": 0, "current": -1, "last": None}

    def guard(fn):
        def guarded(*args, **kwargs):
            result = fn(*args, **kwargs)
            if _getpid() != harness_pid:
                _exit(0)  # a fork of the program returning into the tests: it must not run them
            check_plain(result)
            return result

        return guarded

    def compare(ops, *operands):
        for i, op in enumerate(ops):
            left, right = operands[i], operands[i + 1]
            if op not in ("Is", "IsNot"):
                check_plain(left)
                check_plain(right)
            result = _OPS[op](left, right)
            check_plain(result)  # plain operands give plain results (numpy-like ones would not get here)
            if not result:
                if op == "Eq":
                    state["last"] = (left, right)
                return False
        return True

    def truth(value):
        check_plain(value)
        return value

    def mark(k):
        state["asserts"] += 1
        state["current"] = k
        state["last"] = None

    test_builtins = dict(__builtins__)
    test_builtins.update(__sd_compare__=compare, __sd_truth__=truth, __sd_mark__=mark, __import__=private_import)
    install_audit_hook()
    try:
        exec(compile(job["program"], "main.py", "exec"), G)
    except BaseException as e:  # noqa: BLE001
        if _getpid() == harness_pid:
            report_and_exit(emit, e, {"stage": "program"})
    if _getpid() != harness_pid:
        _exit(0)

    # The tests' namespace: a copy of the program's, minus names that shadow builtins, with modules
    # swapped for private copies and functions wrapped by guard. The program never sees this dict.
    entry = job["entry_point"] or ""
    T = {}
    for name, value in list(G.items()):
        if name == "__builtins__" or (name in test_builtins and value is not test_builtins[name] and name != entry):
            continue
        if type(value) is types.ModuleType:
            value = PRIVATE_MODULES.get(value.__name__, value)
        elif type(value) in (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial):
            value = guard(value)
        T[name] = value
    T["__name__"] = "__main__"
    T["__builtins__"] = test_builtins
    try:
        exec(compile(job["test_code"], "tests.py", "exec"), T)
        if entry:
            candidate = guard(G[entry] if entry.isidentifier() else eval(entry, G))
            check = T.get("check")
            if check is None:
                raise NameError("the test code defines no check(candidate)")
            check(candidate)
    except BaseException as e:  # noqa: BLE001
        if _getpid() != harness_pid:
            _exit(0)
        last = state["last"]
        if type(e) is AssertionError and last is not None:
            e = AssertionError(f"got {safe_str(repr(last[0]), 300)}, expected {safe_str(repr(last[1]), 300)}")
        report_and_exit(emit, e, {"assert": state["current"]})
    if _getpid() != harness_pid:
        _exit(0)
    emit({"done": state["asserts"]})
    _finish(0)


# Private copies of common modules for the test code: `import math` in the tests gets a module object
# the program never saw, so `math.isclose = lambda *a, **k: True` in the program changes nothing there.
PRIVATE_MODULES = {}
for _name in (
    "math",
    "cmath",
    "re",
    "string",
    "itertools",
    "collections",
    "functools",
    "operator",
    "heapq",
    "bisect",
    "random",
    "copy",
    "decimal",
    "fractions",
    "statistics",
    "typing",
):
    PRIVATE_MODULES[_name] = types.ModuleType(_name)
    PRIVATE_MODULES[_name].__dict__.update(sys.modules[_name].__dict__)
_real_import = builtins.__import__


def private_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name in PRIVATE_MODULES:
        return PRIVATE_MODULES[name]
    return _real_import(name, globals, locals, fromlist, level)


if __name__ == "__main__":
    zygote(json.loads(sys.argv[1]))
