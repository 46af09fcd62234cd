"""Run directories, crash-safe file IO (atomic writes, durable JSONL appends, clear read errors) and this
process's memory (peaks per run, freed memory given back to the OS)."""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from ahalab.errors import UserError


TCMALLOC = "tcmalloc_minimal"  # gperftools' tcmalloc (Debian: libtcmalloc-minimal4)
ALLOCATOR_ENV = "AHALAB_ALLOCATOR"  # "system" keeps the C library's malloc
_PRELOADED = "_AHALAB_LD_PRELOAD"  # the caller's LD_PRELOAD, across the re-execution


def use_tcmalloc() -> None:
    """Run this command under tcmalloc: once, before anything heavy is imported, re-execute the interpreter with the
    same arguments and tcmalloc in ``LD_PRELOAD`` (the process keeps its pid). What vLLM's CPU guide and Intel's
    PyTorch guide recommend: glibc's malloc keeps ~1 GB of a GRPO update's freed tensors resident and runs the
    update slower (docs/benchmarks.md, "Memory"). No-op where the library is missing (not Linux, not installed),
    where ``LD_PRELOAD`` already names an allocator (the user's choice), or with ``AHALAB_ALLOCATOR=system``.
    Child processes (sandboxes, servers) get the caller's ``LD_PRELOAD`` back."""
    import sys

    if _PRELOADED in os.environ:  # the re-executed process
        previous = os.environ.pop(_PRELOADED)
        if previous:
            os.environ["LD_PRELOAD"] = previous
        else:
            os.environ.pop("LD_PRELOAD", None)
        return
    preload = os.environ.get("LD_PRELOAD", "")
    if os.environ.get(ALLOCATOR_ENV, "tcmalloc") != "tcmalloc" or "malloc" in preload or sys.platform != "linux":
        return
    from ctypes.util import find_library

    library = find_library(TCMALLOC)
    if library is None:
        return
    env = {**os.environ, "LD_PRELOAD": " ".join(filter(None, [library, preload])), _PRELOADED: preload}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def bound_onednn_cache(capacity: int = 128) -> None:
    """Cap oneDNN's primitive cache (1,024 entries by default; read when torch first uses it) unless the environment
    sets it: GRPO updates meet new sequence shapes every step, and each cached primitive keeps memory, so a run's
    resident size grew ~20 MB a step; capped, it levels off at the same speed (docs/benchmarks.md, "Memory")."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))


def prepare_process() -> None:
    """What a command's process sets up first, before torch is imported: oneDNN's cache bounded
    (``bound_onednn_cache``), then the re-execution under tcmalloc (``use_tcmalloc``), which carries the setting."""
    bound_onednn_cache()
    use_tcmalloc()


def allocator() -> str:
    """The malloc this process runs on: "tcmalloc" (``use_tcmalloc``), "jemalloc" or "system"."""
    libc = _libc()
    return "tcmalloc" if hasattr(libc, "MallocExtension_ReleaseFreeMemory") else \
        "jemalloc" if hasattr(libc, "mallctl") else "system"


def release_memory() -> None:
    """Collect garbage, then give the C heap's free pages back to the OS (tcmalloc's ``ReleaseFreeMemory``, glibc's
    ``malloc_trim``; no-op elsewhere): the allocator keeps what a finished run freed (a GRPO stage's activations:
    GBs) resident for the next one otherwise."""
    import gc

    gc.collect()
    libc = _libc()
    if allocator() == "tcmalloc":
        libc.MallocExtension_ReleaseFreeMemory()
    elif hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def release_pages(address: int, size: int) -> int:
    """``madvise(MADV_DONTNEED)`` on the whole pages inside [address, address + size) of this process's anonymous
    memory: their contents are dropped and they stop counting as resident until written again (then zero-filled).
    Returns the bytes released (0 where the C library has no ``madvise``, e.g. not Linux)."""
    start, end = whole_pages(address, size)
    madvise = getattr(_libc(), "madvise", None)
    if end <= start or madvise is None:
        return 0
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    if madvise(start, end - start, _MADV_DONTNEED) != 0:
        raise OSError(ctypes.get_errno(), f"madvise failed on {end - start} bytes at {start:#x}")
    return end - start


_MADV_DONTNEED = 4  # Linux


def whole_pages(address: int, size: int) -> tuple[int, int]:
    """[start, end) of the whole memory pages inside [address, address + size)."""
    page = os.sysconf("SC_PAGE_SIZE")
    return -(-address // page) * page, (address + size) // page * page


def _libc() -> ctypes.CDLL:
    """The C library of this process."""
    return ctypes.CDLL(None, use_errno=True)


def reset_peak_rss() -> None:
    """Start this run's peak resident memory over from the current size: from now on a daemon thread samples the
    process's RSS every 10 ms (Linux; no-op elsewhere). The kernel's own high-water mark (VmHWM) is left alone:
    clearing it would also erase the whole process's peak that ``/usr/bin/time -v`` and ``getrusage`` report."""
    current = _rss_mib()
    if current is None:
        return
    with _PEAK.lock:
        _PEAK.mib = current
        if _PEAK.thread is None:
            _PEAK.thread = threading.Thread(target=_sample_rss, name="ahalab-peak-rss", daemon=True)
            _PEAK.thread.start()


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB since ``reset_peak_rss`` (sampled every 10 ms), or since it
    started (Linux's VmHWM) when nothing reset it."""
    current = _rss_mib()
    if current is None:
        return None
    with _PEAK.lock:
        if _PEAK.thread is not None:
            _PEAK.mib = max(_PEAK.mib, current)
            return round(_PEAK.mib, 1)
    status = Path("/proc/self/status").read_text()
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else round(kib / 1024, 1)


class _PeakState:
    """The sampled peak (MiB) and its sampling thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mib = 0.0
        self.thread: threading.Thread | None = None


_PEAK = _PeakState()


def _sample_rss() -> None:
    """The sampling thread: raise the peak to the current RSS every 10 ms."""
    while True:
        current = _rss_mib() or 0.0
        with _PEAK.lock:
            _PEAK.mib = max(_PEAK.mib, current)
        time.sleep(0.01)


def _rss_mib() -> float | None:
    """This process's resident memory now, in MiB (``/proc/self/statm``; None where there is none)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class DataError(UserError, ValueError):
    """Bad input data; the message names the file, the line and the field."""


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would make run files private
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows as JSON lines and fsync, so a kill loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, default=str) + "\n" for r in rows)
    if not data:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def iter_jsonl(path: str | Path, tolerate_torn_tail: bool = False,
               max_line_bytes: int = 64 << 20) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-empty line, reading one line at a time (a caller that stops
    early never reads the rest). A UTF-8 byte-order mark is allowed; a line that is not UTF-8, not JSON (or
    nested too deeply), not an object, or longer than ``max_line_bytes`` (newline included) raises
    DataError with file:line.

    ``tolerate_torn_tail`` skips an unterminated malformed last line (what a kill mid-append leaves behind).
    """
    path = Path(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        for number, raw in enumerate(iter(lambda: f.readline(max_line_bytes + 1), b""), 1):
            if len(raw) > max_line_bytes:
                raise DataError(f"{path}:{number}: line longer than {max_line_bytes} bytes")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (utf-8-sig)
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except (ValueError, RecursionError) as e:
                if tolerate_torn_tail and not raw.endswith(b"\n"):
                    return
                raise DataError(f"{path}:{number}: {_json_error(e)}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj


def _json_error(e: ValueError | RecursionError) -> str:
    """What is wrong with a line, from the error that decoding and parsing it raised."""
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8 text (byte {e.start + 1} of the line is {e.object[e.start]:#04x}); save it as UTF-8"
    if isinstance(e, json.JSONDecodeError):
        return f"malformed JSON ({e.msg} at column {e.colno})"
    if isinstance(e, RecursionError):
        return "malformed JSON (nested too deeply)"
    return f"malformed JSON ({e})"  # e.g. an integer past Python's digit limit


def read_jsonl(path: str | Path, tolerate_torn_tail: bool = False) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path, tolerate_torn_tail)]


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (relative names and bytes), in name order."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path) if f != path else "").encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class RunDir:
    """One run's directory: config.yaml, metrics.jsonl, samples.jsonl, summary.json, report.md, plots, log.txt."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, out: str | None, kind: str, config: dict[str, Any] | None = None) -> RunDir:
        """Make ``out`` (or ``runs/<kind>-<timestamp>``), send the full logs to its log.txt from now on, and write
        the resolved config into it (if given)."""
        from ahalab.logs import log_to_file

        if out is None:
            out = os.path.join("runs", f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}")
        run = cls(out)
        release_memory()  # what an earlier run in this process (a recipe's stage) freed
        reset_peak_rss()  # the summary's memory figure is this run's (a recipe's stages run one after another)
        log_to_file(run.file("log.txt"))
        if config is not None:
            run.write_config(config)
        return run

    def write_config(self, config: dict[str, Any]) -> None:
        self.write_text("config.yaml", yaml.safe_dump(config, sort_keys=False))

    def file(self, name: str) -> Path:
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        atomic_write_text(self.file(name), text)
        return self.file(name)

    def write_json(self, name: str, obj: Any) -> Path:
        atomic_write_json(self.file(name), obj)
        return self.file(name)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """summary.json: ``summary``, ``peak_rss_mib``, this process's peak resident memory since the run began
        (Linux; None elsewhere), and the ``allocator`` it ran on. Launched ranks and workers are processes of their
        own: rank 0 reports its own."""
        return self.write_json("summary.json", {**summary, "peak_rss_mib": peak_rss_mib(), "allocator": allocator()})

    def append(self, name: str, rows: Iterable[dict]) -> None:
        append_jsonl(self.file(name), rows)

    def log_metrics(self, step: int, **metrics: Any) -> None:
        self.append("metrics.jsonl", [{"step": step, **metrics}])

    def metrics(self) -> list[dict]:
        f = self.file("metrics.jsonl")
        return read_jsonl(f, tolerate_torn_tail=True) if f.exists() else []
