"""OpenAI-compatible teacher client: retries through a fault-injecting proxy, resumable cache, kill -9 + restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_fakes import BackgroundLoop, FakeOpenAIServer, FaultProxy, make_problems, make_teacher

from ahalab.data.teachers import OpenAITeacher, TeacherError, TraceCache
from ahalab.engines.http import backoff_delay
from ahalab.runs import read_jsonl

HERE = Path(__file__).parent


@pytest.fixture
def loop():
    background = BackgroundLoop()
    yield background
    background.stop()


def serve(loop: BackgroundLoop, delay: float = 0.0, reasoning: bool = False, fault_rate: float | None = None,
          seed: int = 0) -> tuple[str, FakeOpenAIServer, FaultProxy | None]:
    server = FakeOpenAIServer(delay=delay, reasoning=reasoning)
    port = loop.run(server.start())
    if fault_rate is None:
        return f"http://127.0.0.1:{port}/v1", server, None
    proxy = FaultProxy(f"127.0.0.1:{port}", fault_rate=fault_rate, slow=0.05, seed=seed)
    return f"http://127.0.0.1:{loop.run(proxy.start())}/v1", server, proxy


def keys(rows: list[dict]) -> list[tuple[str, int]]:
    return [(r["problem_id"], r["sample"]) for r in rows]


def test_backoff_is_exponential_capped_and_jittered():
    import random

    rng = random.Random(0)
    delays = [backoff_delay(a, base=0.5, cap=4.0, rng=rng) for a in range(8) for _ in range(50)]
    assert all(0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 300  # jittered
    assert max(backoff_delay(1, 0.5, 4.0, rng=rng) for _ in range(100)) <= 1.0
    assert backoff_delay(0, 0.5, 4.0, retry_after=2.0) >= 2.0


def test_faults_are_retried_to_exactly_one_row_per_key(loop, tmp_path):
    url, server, proxy = serve(loop, fault_rate=0.6, seed=1)
    problems = make_problems(12)
    cache = tmp_path / "traces.jsonl"
    traces = make_teacher(url).generate(problems, samples=3, cache=cache)
    rows = read_jsonl(cache)
    assert len(traces) == len(rows) == 36 and len(set(keys(rows))) == 36
    assert [(t.problem_id, t.sample) for t in traces] == [(p.id, i) for p in problems for i in range(3)]
    assert all(f in proxy.counts for f in ("drop", "status500", "status429", "truncate", "bad_json", "delay"))
    # the content is what the server answers without faults
    clean_url, _, _ = serve(loop)
    clean = make_teacher(clean_url).generate(problems, samples=3)
    assert [t.text for t in traces] == [t.text for t in clean]
    # a second run reads everything from the cache and sends no request
    before = server.requests
    again = make_teacher(url).generate(problems, samples=3, cache=cache)
    assert server.requests == before and [t.text for t in again] == [t.text for t in traces]
    assert len(read_jsonl(cache)) == 36


def test_reasoning_content_is_captured(loop):
    url, _, _ = serve(loop, reasoning=True)
    [trace] = make_teacher(url).generate(make_problems(1))
    assert trace.reasoning.startswith("Thinking about it") and trace.text.startswith("<answer>")
    assert trace.full_text().startswith("<think>Thinking") and trace.tokens == 12


def test_permanent_errors_raise_after_caching_the_rest(loop, tmp_path):
    url, _, _ = serve(loop)
    teacher = OpenAITeacher(url.replace("/v1", "/nope"), "m", make_teacher(url).task, max_retries=1,
                            backoff_base=0.01)
    with pytest.raises(TeacherError, match="HTTP 404"):
        teacher.generate(make_problems(2), cache=tmp_path / "c.jsonl")
    dead = OpenAITeacher("http://127.0.0.1:9/v1", "m", teacher.task, max_retries=2, backoff_base=0.01, timeout=1.0)
    with pytest.raises(TeacherError, match="gave up after 3 attempts"):
        dead.generate(make_problems(1))


def test_torn_last_line_is_cut_and_regenerated(loop, tmp_path):
    url, _, _ = serve(loop)
    problems = make_problems(3)
    cache = tmp_path / "traces.jsonl"
    full = make_teacher(url).generate(problems, samples=2, cache=cache)
    text = cache.read_text()
    cache.write_text(text[: len(text) - 20])  # kill mid-append: the last row torn
    assert len(TraceCache(cache).load()) == 5
    again = make_teacher(url).generate(problems, samples=2, cache=cache)
    assert [t.text for t in again] == [t.text for t in full]
    assert len(read_jsonl(cache)) == 6 and len(set(keys(read_jsonl(cache)))) == 6


def _job(url: str, cache: Path, max_tokens: int = 64) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(HERE / "openai_fakes.py"), "job", "--url", url, "--cache", str(cache),
                             "--problems", "20", "--samples", "3", "--max-tokens", str(max_tokens)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_restart_check(url: str, tmp_path: Path, reference: list[dict], timeout: float) -> None:
    cache = tmp_path / "killed.jsonl"
    job = _job(url, cache)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not cache.exists() or cache.read_text().count("\n") < 12):
        assert job.poll() is None, job.communicate()
        time.sleep(0.005)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    partial = cache.read_text().count("\n")
    assert 12 <= partial < len(reference), "the job should have been killed mid-run"
    job = _job(url, cache)
    _, err = job.communicate(timeout=timeout)
    assert job.returncode == 0, err
    rows = read_jsonl(cache)
    assert len(rows) == len(reference) and len(set(keys(rows))) == len(rows)
    by_key = {(r["problem_id"], r["sample"]): r["text"] for r in rows}
    assert [by_key[k] for k in keys(reference)] == [r["text"] for r in reference]


def test_kill_minus_9_and_restart_give_the_same_dataset(loop, tmp_path):
    url, _, proxy = serve(loop, delay=0.03, fault_rate=0.3, seed=2)
    job = _job(url, tmp_path / "reference.jsonl")
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    reference = read_jsonl(tmp_path / "reference.jsonl")
    assert len(reference) == 60 and len(set(keys(reference))) == 60
    _kill_restart_check(url, tmp_path, sorted(reference, key=lambda r: keys([r])), timeout=120)
    assert sum(proxy.counts.values()) > 60


@pytest.mark.slow
@pytest.mark.vllm
def test_real_vllm_serve_behind_the_fault_proxy(loop, tiny_model, tmp_path):
    """The same checks against `vllm serve` of the tiny model on loopback (CPU; a few minutes)."""
    pytest.importorskip("vllm")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_LOGGING_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model,
                               "--served-model-name", "fake-model", "--host", "127.0.0.1", "--port", str(port),
                               "--dtype", "float32", "--max-model-len", "512", "--seed", "0"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        deadline = time.monotonic() + 400
        while True:
            assert server.poll() is None, server.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not start in time"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(2)
        proxy = FaultProxy(f"127.0.0.1:{port}", fault_rate=0.4, slow=0.1, seed=3)
        url = f"http://127.0.0.1:{loop.run(proxy.start())}/v1"
        reference_job = _job(url, tmp_path / "reference.jsonl")
        _, err = reference_job.communicate(timeout=300)
        assert reference_job.returncode == 0, err
        reference = read_jsonl(tmp_path / "reference.jsonl")
        assert len(reference) == 60 and len(set(keys(reference))) == 60
        _kill_restart_check(url, tmp_path, sorted(reference, key=lambda r: keys([r])), timeout=300)
        assert sum(v for k, v in proxy.counts.items() if k != "none") > 0
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_changed_sampling_settings_or_model_miss_the_cache(loop, tmp_path):
    url, server, _ = serve(loop)
    problems = make_problems(2)
    cache = tmp_path / "traces.jsonl"
    make_teacher(url).generate(problems, cache=cache)
    sent = server.requests
    make_teacher(url).generate(problems, cache=cache)
    assert server.requests == sent  # same settings: all from the cache
    for changed in ({"temperature": 0.1}, {"max_tokens": 17}, {"model": "other-model", "name": "same-name"},
                    {"extra_body": {"top_k": 5}}):
        make_teacher(url, **changed).generate(problems, cache=cache)
        assert server.requests == sent + len(problems), changed  # asked again, not served stale traces
        sent = server.requests
