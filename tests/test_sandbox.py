"""Hostile programs are contained (score 0, host unharmed) in both sandboxes; genuine solutions pass."""
from __future__ import annotations

import os

import pytest

from ahalab.tasks import sandbox
from ahalab.tasks.sandbox import Limits, run_many, run_tests

TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
GOOD = "def add(a, b):\n    return a + b\n"
FAST = Limits(timeout_s=5, cpu_s=4, memory_mb=512, processes=32, file_mb=4)


@pytest.fixture(params=["native", "rlimits"])
def kind(request, monkeypatch) -> str:
    """Every test runs in the sandbox found here and in the rlimits fallback."""
    if request.param == "rlimits":
        monkeypatch.setattr(sandbox, "sandbox_kind", lambda: "rlimits")
    return sandbox.sandbox_kind()


def contained(program: str, kind: str, tests: list[str] = TESTS, limits: Limits = FAST) -> sandbox.ExecResult:
    result = run_tests(program, tests, limits)
    assert result.sandbox == kind
    assert result.status != "passed" and result.passed == 0 and result.fraction == 0.0, result
    return result


def test_genuine_solution_passes(kind) -> None:
    result = run_tests(GOOD, TESTS, FAST)
    assert (result.status, result.passed, result.total, result.fraction) == ("passed", 2, 2, 1.0)


def test_partial_solution_counts_tests(kind) -> None:
    result = run_tests("def add(a, b):\n    return a + b if a > 0 else 7\n", TESTS, FAST)
    assert (result.status, result.passed, result.fraction) == ("failed", 1, 0.5)


def test_infinite_loop_times_out(kind) -> None:
    assert contained("while True:\n    pass\n", kind, limits=Limits(timeout_s=2, cpu_s=2)).status in ("timeout", "error")


def test_fork_bomb(kind) -> None:
    contained("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", kind,
              limits=Limits(timeout_s=3, cpu_s=2, processes=16))


def test_memory_bomb(kind) -> None:
    contained("x = bytearray(4 << 30)\n" + GOOD, kind)


def test_huge_print(kind) -> None:
    contained("for _ in range(10 ** 6):\n    print('x' * 1000)\n", kind, limits=Limits(timeout_s=3, cpu_s=3))


def test_flooding_every_fd_is_capped(kind) -> None:
    program = ("import os\nfor _ in range(2000):\n    for fd in range(3, 12):\n        try:\n"
               "            os.write(fd, b'y' * 100000)\n        except OSError:\n            pass\n")
    contained(program, kind, limits=Limits(timeout_s=4, output_bytes=1 << 16))


def test_writing_outside_is_refused(kind, tmp_path) -> None:
    os.chmod(tmp_path, 0o777)
    target = tmp_path / "pwned.txt"
    contained(f"open({str(target)!r}, 'w').write('x')\n" + GOOD + "add = None\n", kind)
    assert not target.exists()


def test_secrets_are_invisible(kind, monkeypatch) -> None:
    monkeypatch.setenv("AHALAB_SECRET", "hunter2")
    leak = ("import os\nseen = os.environ.get('AHALAB_SECRET')\n"
            "try:\n    seen = seen or open(os.path.expanduser('~/.ssh/id_rsa')).read()\nexcept OSError:\n    pass\n"
            + GOOD)
    result = run_tests(leak, ["assert seen is None"], FAST)
    assert result.status == "passed", result


def test_network_is_unreachable_or_contained(kind) -> None:
    program = ("import socket\nok = True\ntry:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
               "except OSError:\n    ok = False\n")
    result = run_tests(program, ["assert ok"], FAST)
    if kind == "bwrap":
        assert result.status == "failed"  # no network namespace route: the connection fails


def test_killing_the_parent_leaves_us_alive(kind) -> None:
    contained("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(os.getppid(), signal.SIGTERM)\n",
              kind)
    assert run_tests(GOOD, TESTS, FAST).status == "passed"


@pytest.mark.parametrize("program", [
    "import sys\nsys.exit(0)\n",
    "import os\nos._exit(0)\n",
    "import sys\nprint('passed 2 of 2')\nsys.stdout.flush()\nraise SystemExit(0)\n",
    "import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\ndef add(a, b):\n    return -7\n",
    ("class Yes:\n    def __eq__(self, other):\n        return True\n    __ne__ = lambda s, o: False\n"
     "def add(a, b):\n    return Yes()\n"),
    "class Int(int):\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return Int(-7)\n",
    "import builtins\nbuiltins.abs = lambda x: 0\nabs = builtins.abs\ndef add(a, b):\n    return -7\n",
])
def test_harness_tricks_do_not_pass(kind, program) -> None:
    contained(program, kind, tests=TESTS + ["assert abs(add(1, 2) - 3) < 1e-9"])


def test_run_many_keeps_order(kind) -> None:
    jobs = [(GOOD, TESTS), ("def add(a, b):\n    return -7\n", TESTS), ("raise ValueError", TESTS)] * 2
    assert [r.status for r in run_many(jobs, FAST, workers=3)] == ["passed", "failed", "error"] * 2


def test_many_short_sandboxes_side_by_side_all_start() -> None:
    """Sandboxes started back to back share nobody's process limit: none may fail to start (bwrap EAGAIN)."""
    results = run_many([("def f(x):\n    return x + 1\n", ["assert f(1) == 2"])] * 80, workers=2)
    assert [r.status for r in results] == ["passed"] * 80
