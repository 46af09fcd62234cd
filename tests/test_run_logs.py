"""Every run directory gets log.txt: the libraries' INFO lines the quiet terminal did not show."""
from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import pytest

from ahalab.logs import configure
from ahalab.runs import RunDir


def test_log_txt_holds_library_info_the_terminal_did_not_show(tmp_path, monkeypatch, capfd) -> None:
    for name in ("AHALAB_LOG_LEVEL", "TRANSFORMERS_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)
    configure()
    import transformers.utils.logging as hf_logging

    run = RunDir.create(str(tmp_path / "run"), "eval")
    hf_logging.get_logger("transformers.modeling_utils").info("loading weights file model.safetensors")
    logging.getLogger("ahalab.test").info("ahalab line")
    hf_logging.get_logger("transformers").error("an error the terminal shows")
    text = run.file("log.txt").read_text()
    assert "INFO transformers.modeling_utils: loading weights file model.safetensors" in text
    assert "ahalab line" in text and "an error the terminal shows" in text
    printed = capfd.readouterr()
    assert "loading weights" not in printed.out + printed.err and "ahalab line" not in printed.out + printed.err
    file_handler = logging.getLogger().handlers[-1]
    terminal = [h for name in ("", "transformers") for h in logging.getLogger(name).handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and type(h).__module__ == "logging"]  # (not pytest's capture handlers)
    assert terminal and all(h.level > logging.INFO for h in terminal)  # the terminal keeps its level
    assert isinstance(file_handler, logging.FileHandler) and file_handler.level == logging.INFO
    second = RunDir.create(str(tmp_path / "next"), "eval")  # the next run's file takes over
    logging.getLogger("ahalab.test").info("second run")
    assert "second run" not in run.file("log.txt").read_text()
    assert "second run" in second.file("log.txt").read_text()


def test_a_library_that_reconfigures_its_logger_is_routed_again(tmp_path, monkeypatch, capfd) -> None:
    """vLLM sets up its own non-propagating logger at import: ``route`` sends it to log.txt, terminal quiet."""
    from ahalab.logs import route

    monkeypatch.delenv("AHALAB_LOG_LEVEL", raising=False)
    configure()
    run = RunDir.create(str(tmp_path / "run"), "zero")
    lib = logging.getLogger("vllm")
    own = logging.StreamHandler()
    saved = lib.handlers[:], lib.propagate, lib.level
    try:
        lib.handlers[:] = [own]  # what vLLM's dictConfig leaves: its own handler, no propagation, level ERROR
        lib.propagate = False
        lib.setLevel(logging.ERROR)
        route("vllm")
        lib.info("Automatically detected platform cpu.")
        assert "INFO vllm: Automatically detected platform cpu." in run.file("log.txt").read_text()
        printed = capfd.readouterr()
        assert "Automatically detected" not in printed.out + printed.err
    finally:
        lib.handlers[:], lib.propagate = saved[0], saved[1]
        lib.setLevel(saved[2])


def test_library_warnings_before_their_own_handlers_exist_stay_off_the_terminal(tmp_path, monkeypatch, capfd) -> None:
    """vLLM warns at import ("Triton is installed, but ...") before it installs its handler: the record reaches
    the root's terminal handler, which shows ahalab's and user code's warnings but a library's only at its level."""
    import ahalab.logs as logs

    monkeypatch.delenv("AHALAB_LOG_LEVEL", raising=False)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(logs, "_file_handler", None)
    configure()
    run = RunDir.create(str(tmp_path / "run"), "eval")
    try:
        logging.getLogger("peft.tuners").warning("a library warning at import")
        logging.getLogger("ahalab.test").warning("an ahalab warning")
        logging.getLogger("user_code").warning("a user warning")
        err = capfd.readouterr().err
        assert "a library warning" not in err and "an ahalab warning" in err and "a user warning" in err
        assert "WARNING peft.tuners: a library warning at import" in run.file("log.txt").read_text()
    finally:
        for name in ("", *logs.LIBRARIES):
            logging.getLogger(name).removeHandler(logs._file_handler)
        logs._file_handler.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_a_summary_reports_the_peak_memory_of_its_own_run(tmp_path) -> None:
    """summary.json's peak_rss_mib is this run's: a later run (a recipe's next stage, same process) starts over, and
    the process's own high-water mark (what /usr/bin/time reports) keeps the first run's peak."""
    first = RunDir.create(str(tmp_path / "first"), "x")
    block = bytearray(256 << 20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page: resident
    time.sleep(0.1)  # the peak is sampled every 10 ms
    del block
    first.write_summary({"accuracy": 0.5})
    second = RunDir.create(str(tmp_path / "second"), "x")
    second.write_summary({})
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("first", "second"))
    assert a["accuracy"] == 0.5 and a["peak_rss_mib"] > b["peak_rss_mib"] + 200
    status = Path("/proc/self/status").read_text()
    assert int(status.split("VmHWM:")[1].split()[0]) / 1024 >= a["peak_rss_mib"] - 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim and /proc are Linux's")
def test_a_new_run_starts_without_the_heap_an_earlier_run_freed() -> None:
    """Blocks freed below a live one stay resident in glibc's heap; ``release_memory`` (each new RunDir calls it:
    a recipe's next stage) gives their pages back."""
    import torch

    from ahalab.runs import release_memory

    def rss_mib() -> int:
        return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024

    torch.ones(16 << 20, dtype=torch.uint8)  # freed at once: a freed 16 MB mapping raises glibc's mmap threshold
    blocks = [torch.ones(1 << 18) for _ in range(512)]  # 512 MB of 1 MB blocks, now on the heap
    kept = blocks[-1]  # the last one stays: the heap cannot shrink from its top
    del blocks
    before = rss_mib()
    release_memory()
    assert before - rss_mib() > 300 and kept.sum() == 1 << 18


_UNDER_TCMALLOC = """
import os, sys, torch
from pathlib import Path
from ahalab.runs import allocator, release_memory, use_tcmalloc
use_tcmalloc()
rss = lambda: int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) // 1024
blocks = [torch.ones(1 << 18) for _ in range(512)]  # 512 MB in 1 MB blocks
kept = blocks[-1]
del blocks
before = rss()
release_memory()
print(os.getpid(), allocator(), os.environ.get("LD_PRELOAD"), before - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD and /proc are Linux's")
@pytest.mark.parametrize("setting", ["tcmalloc", "system"])
def test_commands_run_under_tcmalloc_where_it_is_installed(setting: str) -> None:
    """``use_tcmalloc`` re-executes the interpreter (same pid) with tcmalloc preloaded, gives children the caller's
    LD_PRELOAD back, and ``release_memory`` returns tcmalloc's free pages; AHALAB_ALLOCATOR=system opts out."""
    import os
    import subprocess
    from ctypes.util import find_library

    if find_library("tcmalloc_minimal") is None:
        pytest.skip("libtcmalloc-minimal4 not installed (make test installs it)")
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"AHALAB_ALLOCATOR": setting}
    proc = subprocess.Popen([sys.executable, "-c", _UNDER_TCMALLOC], env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=120)
    pid, name, preload, released = out.split()
    assert (int(pid), name, preload) == (proc.pid, setting, "None")
    assert int(released) > 300 or setting == "system"  # glibc maps such blocks singly: freed, they are gone


def test_the_onednn_cache_is_bounded_unless_the_environment_says(monkeypatch) -> None:
    import os

    from ahalab.runs import bound_onednn_cache

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    bound_onednn_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "128"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "7")
    bound_onednn_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "7"
