"""Run an untrusted Python program and its tests in a child process, never in ours.

Isolation: ``bwrap`` (bubblewrap) when it can create namespaces here (probed once): no network, no view of
our files beyond read-only system directories, a private tmpfs as the working directory, its own pid
namespace. Otherwise (``"rlimits"``): a fresh temporary directory as cwd, an empty environment and
``python -I -S``, started through a shim so that its parent process is not ours. Both add rlimits (CPU seconds, address space, processes, file size), a new session, a
wall-clock timeout that kills the whole process group, capped output, and, when we are root, the uid
``nobody`` (so the program can neither signal us nor escape the process limit).

The harness (``_HARNESS``) reads a per-run random nonce and the job from stdin before any candidate
code runs, keeps its own copies of the builtins it needs, points fds 1/2 at /dev/null for the candidate
and reports through a private duplicate of stdout, after all tests, as ``<nonce> {"passed": n, ...}``.
So ``sys.exit``/``os._exit``/a crash before the tests end is a failure, printed fake results lack the
nonce, and tests run as separate code in a namespace with pristine builtins, where ``==`` is rewritten
to a type-strict comparison (an object whose ``__eq__`` always says True passes nothing). A program that
digs the nonce out of the harness's own frames is outside this threat model, and so, in the rlimits
fallback when we are not root, is one that signals every process of our uid (``kill(-1)``): only bwrap
or root (which runs programs as ``nobody``) keeps those from us.
"""
from __future__ import annotations

import functools
import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO
from pathlib import Path

NOBODY = 65534

_HARNESS = r'''
import ast, builtins, os, sys
_nonce = sys.stdin.readline().strip()
_job = __import__("json").loads(sys.stdin.read())
_dumps, _write, _exit = __import__("json").dumps, os.write, os._exit
_out = os.dup(1)
_null = os.open(os.devnull, os.O_RDWR)
os.dup2(_null, 0); os.dup2(_null, 1); os.dup2(_null, 2)
_pristine = dict(vars(builtins))
_NUMBERS = (int, float, complex, bool)
_CONTAINERS = (list, tuple)

def _eq(a, b):
    ta, tb = type(a), type(b)
    if ta in _NUMBERS and tb in _NUMBERS:
        return a == b
    if ta is not tb:
        return False
    if ta in _CONTAINERS:
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    if ta is dict:
        return a.keys() == b.keys() and all(_eq(a[k], b[k]) for k in a)
    return a == b

class _Strict(ast.NodeTransformer):
    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
            call = ast.Call(ast.Name("__ahalab_eq__", ast.Load()), [node.left, node.comparators[0]], [])
            return call if isinstance(node.ops[0], ast.Eq) else ast.UnaryOp(ast.Not(), call)
        return node

def _compile(src):
    return compile(ast.fix_missing_locations(_Strict().visit(ast.parse(src))), "<test>", "exec")

def _report(**result):
    _write(_out, ("\n" + _nonce + " " + _dumps(result) + "\n").encode())
    _exit(0)

_tests = [_compile(t) for t in _job["tests"]]
_ns = {"__name__": "__main__", "__builtins__": builtins}
try:
    exec(compile(_job["program"], "<program>", "exec"), _ns)
except BaseException as e:
    _report(passed=0, total=len(_tests), error="program raised " + type(e).__name__)
_env = {k: v for k, v in _ns.items() if k not in _pristine and not k.startswith("__")}
_passed = 0
for _t in _tests:
    _g = dict(_env, __builtins__=dict(_pristine), __ahalab_eq__=_eq, __name__="__test__")
    try:
        exec(_t, _g)
        _passed += 1
    except BaseException:
        pass
_report(passed=_passed, total=len(_tests), error=None)
'''


# rlimits mode: the harness runs as a grandchild, so its parent (``os.getppid()``) is this shim, not us.
_SHIM = "import os, sys\nif os.fork() == 0:\n    os.execv(sys.executable, [sys.executable] + sys.argv[1:])\nos.wait()\n"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    processes: int = 64
    file_mb: int = 16
    output_bytes: int = 1 << 20


@dataclass(frozen=True)
class ExecResult:
    """One run's verdict: ``status`` is "passed" (all tests), "failed", "timeout" or "error"."""

    status: str
    passed: int
    total: int
    sandbox: str  # "bwrap" or "rlimits"
    detail: str = ""

    @property
    def fraction(self) -> float:
        """Share of tests passed (0.0 with no tests)."""
        return self.passed / self.total if self.total else 0.0


def interpreter() -> str:
    """The Python that runs programs: the system one (readable by ``nobody``), else ours."""
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else os.path.realpath(sys.executable)


def _bwrap_command(python: str) -> list[str]:
    cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
           "--ro-bind", "/usr", "/usr", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--chdir", "/tmp",
           "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
    for name in ("lib", "lib64", "bin", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    if not python.startswith("/usr/"):
        prefix = os.path.realpath(sys.base_prefix)
        cmd += ["--ro-bind", prefix, prefix]
    return cmd + [python]


def _user_processes(uid: int) -> int:
    """How many processes ``uid`` runs now (RLIMIT_NPROC counts them all)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                count += os.stat(f"/proc/{entry}").st_uid == uid
            except OSError:
                pass
    return count


def _preexec(limits: Limits, nproc: int) -> None:
    """In the child before exec: rlimits, and ``nobody`` when we are root (plain system calls only, no imports
    or locks, so forking from ``run_many``'s threads cannot deadlock)."""
    mb = 1 << 20
    if os.getuid() == 0:
        os.setgid(NOBODY)
        os.setgroups([])
        os.setuid(NOBODY)
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _spawn(cmd: list[str], stdin: bytes, cwd: str, limits: Limits) -> tuple[bytes, bool]:
    """Run ``cmd`` feeding ``stdin``; (at most ``output_bytes`` of stdout, timed out). Kills its process group.

    Retries (with backoff) when bubblewrap itself could not fork or make a namespace: sandboxes run side by
    side share ``nobody``'s process limit, and a torn-down sandbox's processes count against it briefly."""
    for attempt in range(_START_RETRIES):
        with tempfile.TemporaryFile() as err:  # bwrap's own messages (the harness sends the program's to /dev/null)
            out, timed_out = _spawn_once(cmd, stdin, cwd, limits, err)
            err.seek(0)
            head = err.read(4096)
        if out or timed_out or not (head.startswith(b"bwrap: ") and b"temporarily unavailable" in head):
            break
        time.sleep(0.05 * 2 ** attempt)
    return out, timed_out


_START_RETRIES = 6


def _spawn_once(cmd: list[str], stdin: bytes, cwd: str, limits: Limits, err: IO[bytes]) -> tuple[bytes, bool]:
    nproc = limits.processes + (0 if os.getuid() == 0 else _user_processes(os.getuid()))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                            cwd=cwd, env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
                            preexec_fn=functools.partial(_preexec, limits, nproc))
    chunks: list[bytes] = []

    def read() -> None:
        size = 0
        while size < limits.output_bytes:
            chunk = proc.stdout.read1(min(65536, limits.output_bytes - size))  # type: ignore[union-attr]
            if not chunk:
                return
            chunks.append(chunk)
            size += len(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.stdin.write(stdin)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except OSError:  # the child exited before reading its job
        pass
    timed_out = False
    try:
        proc.wait(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    reader.join(timeout=0 if timed_out else 1.0)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    reader.join(timeout=1.0)
    proc.stdout.close()  # type: ignore[union-attr]
    return b"".join(chunks), timed_out


@functools.lru_cache(maxsize=1)
def sandbox_kind() -> str:
    """"bwrap" if a probe run inside bubblewrap works here, else "rlimits" (probed once per process)."""
    if shutil.which("bwrap") is None:
        return "rlimits"
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o777)
        out, _ = _spawn(_bwrap_command(interpreter()) + ["-I", "-S", "-c", "print('ok')"], b"", tmp,
                        Limits(timeout_s=10))
    return "bwrap" if out.strip() == b"ok" else "rlimits"


def run_tests(program: str, tests: Sequence[str], limits: Limits = Limits()) -> ExecResult:
    """Run ``program`` then each test (Python source, e.g. ``assert f(2) == 4``) in the sandbox."""
    kind = sandbox_kind()
    nonce = secrets.token_hex(16)
    job = json.dumps({"program": program, "tests": list(tests)}).encode()
    with tempfile.TemporaryDirectory(prefix="ahalab-sbx-") as tmp:
        os.chmod(tmp, 0o777)  # writable by nobody (the rlimits cwd)
        base = _bwrap_command(interpreter()) if kind == "bwrap" else [interpreter(), "-I", "-S", "-c", _SHIM]
        cmd = base + ["-I", "-S", "-c", _HARNESS]
        out, timed_out = _spawn(cmd, nonce.encode() + b"\n" + job, tmp, limits)
    if timed_out:
        return ExecResult("timeout", 0, len(tests), kind, f"no result within {limits.timeout_s}s")
    marker = nonce.encode() + b" "
    for line in reversed(out.splitlines()):
        if line.startswith(marker):
            try:
                result = json.loads(line[len(marker):])
                passed, total = int(result["passed"]), int(result["total"])
            except (ValueError, KeyError, TypeError):
                break
            if total != len(tests) or not 0 <= passed <= total:
                break
            if result.get("error"):
                return ExecResult("error", 0, total, kind, str(result["error"]))
            return ExecResult("passed" if passed == total and total else "failed", passed, total, kind)
    return ExecResult("error", 0, len(tests), kind, "the harness reported no result (crash, exit or limit)")


def run_many(jobs: Sequence[tuple[str, Sequence[str]]], limits: Limits = Limits(),
             workers: int | None = None) -> list[ExecResult]:
    """``run_tests`` over (program, tests) pairs in parallel child processes, results in input order."""
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=workers or min(len(jobs), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(lambda job: run_tests(job[0], job[1], limits), jobs))
