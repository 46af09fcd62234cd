"""Teacher sampling as a Ray job (ahalab.data.ray_workers) on 2 local workers: the same rows as one process, one
per (problem, sample), through killed workers and an interrupted run."""
from __future__ import annotations

import functools
import os
import signal

import pytest

from ahalab.data.build import DataConfig, build_dataset, teacher_from_config
from ahalab.data.teachers import TraceCache
from ahalab.runs import read_jsonl
from ahalab.tasks import get_task

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the module (starting it takes seconds)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


def _rows(path) -> list[dict]:
    """The cache's rows, checked to hold one row per (content key, sample), in key order."""
    rows = read_jsonl(path)
    keys = [(r["content_key"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows in the cache"
    return sorted(rows, key=lambda r: (r["content_key"], r["sample"]))


def _engine_config(tiny_model: str, out, temperature: float, **kw) -> DataConfig:
    """12 problems in 6 chunks for the tiny model; 2 samples each when sampling (HF greedy makes one)."""
    return DataConfig(task="arithmetic", limit=12, samples=1 if temperature == 0 else 2, teacher="engine",
                      teacher_model=tiny_model, model=tiny_model, engine="hf", temperature=temperature, max_tokens=12,
                      teacher_options={"chunk_size": 2}, filters={}, out=str(out), **kw)


def test_program_teacher_on_two_workers_gives_the_single_process_rows(tmp_path):
    common = {"task": "countdown", "limit": 200, "samples": 2, "seed": 3}  # 400 traces: 2 chunks of 256 or fewer
    one = build_dataset(DataConfig(**common, out=str(tmp_path / "one")))
    two = build_dataset(DataConfig(**common, workers=2, out=str(tmp_path / "two")))
    rows = _rows(tmp_path / "two" / "traces.jsonl")
    assert len(rows) == 400 and rows == _rows(tmp_path / "one" / "traces.jsonl")
    assert read_jsonl(two["train"]) == read_jsonl(one["train"]) and two["summary"] == one["summary"]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_engine_teacher_on_two_workers_gives_the_single_process_rows(tmp_path, tiny_model, temperature):
    """Greedy, and sampled too: a chunk's seed is seed + its index, whichever worker makes it."""
    one = _engine_config(tiny_model, tmp_path / "one", temperature)
    build_dataset(one)
    build_dataset(_engine_config(tiny_model, tmp_path / "two", temperature, workers=2))
    rows = _rows(tmp_path / "two" / "traces.jsonl")
    assert len(rows) == 12 * one.samples and rows == _rows(tmp_path / "one" / "traces.jsonl")
    assert len({r["text"] for r in rows}) > 1  # the model says different things (a real comparison)


@pytest.mark.parametrize("kill", ["sigkill-all", "ray-kill-one"])
def test_a_killed_worker_loses_only_its_chunk(tmp_path, tiny_model, monkeypatch, kill):
    """At the first cached trace, kill workers mid-run: SIGKILL to every worker process (they restart and
    build their engine again), or ray.kill one for good (the other finishes); the run still ends with every row
    once, the single-process rows."""
    from ahalab.data.ray_workers import RayTeacher

    cfg = _engine_config(tiny_model, tmp_path, 0.0)
    problems = get_task("arithmetic").load(limit=cfg.limit)
    expected = teacher_from_config(cfg).generate(problems, cfg.samples)
    teacher = RayTeacher(functools.partial(teacher_from_config, cfg), workers=2)
    pids = ray.get([w.pid.remote() for w in teacher.workers])  # asked now: a busy worker answers after its chunk
    append = TraceCache.append

    def append_then_kill(cache, trace):
        append(cache, trace)
        if not killed:
            killed.append(trace)
            if kill == "sigkill-all":
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
            else:
                ray.kill(teacher.workers[0], no_restart=True)

    killed: list = []
    monkeypatch.setattr(TraceCache, "append", append_then_kill)
    try:
        traces = teacher.generate(problems, cfg.samples, cache=tmp_path / "traces.jsonl")
    finally:
        teacher.close()
    assert killed and teacher.retried >= 1  # a chunk in flight was lost and made again
    rows = _rows(tmp_path / "traces.jsonl")
    assert len(rows) == 12 and [t.text for t in traces] == [t.text for t in expected]
    assert {(r["problem_id"], r["sample"], r["text"]) for r in rows} == \
        {(t.problem_id, t.sample, t.text) for t in expected}


def test_an_interrupted_ray_run_resumes_from_the_cache(tmp_path, monkeypatch):
    """The driver stopped after 100 cached traces (and a torn last line, as kill -9 mid-append leaves): the next
    run makes only the missing ones, and the cache ends with every row once, the single-process rows."""
    cfg = DataConfig(task="arithmetic", task_options={"level": 2}, limit=300, samples=2, workers=2,
                     out=str(tmp_path / "two"))
    append, calls = TraceCache.append, []

    def append_until(cache, trace):
        if len(calls) == 100:
            raise KeyboardInterrupt
        calls.append(trace.key)
        append(cache, trace)

    monkeypatch.setattr(TraceCache, "append", append_until)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg)
    cache = tmp_path / "two" / "traces.jsonl"
    assert len(read_jsonl(cache)) == 100
    with open(cache, "a") as f:
        f.write('{"teacher": "program:arithmetic-column", "problem_id": "ari')
    calls.clear()
    monkeypatch.setattr(TraceCache, "append", lambda cache, trace: (calls.append(trace.key), append(cache, trace)))
    build_dataset(cfg)
    assert len(calls) == 500  # only what the first run had not cached
    build_dataset(DataConfig(**{**cfg.__dict__, "workers": None, "out": str(tmp_path / "one")}))
    assert _rows(cache) == _rows(tmp_path / "one" / "traces.jsonl") and len(_rows(cache)) == 600


def test_bad_worker_settings_are_user_errors(tmp_path):
    """Checked before anything starts, or refused by the teacher in the workers: the single-process message."""
    from ahalab.errors import UserError

    with pytest.raises(UserError, match="workers must be >= 1"):
        DataConfig(workers=0, out=str(tmp_path)).validate()
    with pytest.raises(UserError, match="openai teacher is concurrent"):
        DataConfig(teacher="openai", base_url="http://127.0.0.1:1/v1", teacher_model="m", workers=2).validate()
    problems = tmp_path / "q.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n')
    with pytest.raises(UserError, match="^no program teacher for task 'gsm8k'"):
        build_dataset(DataConfig(task="gsm8k", data=str(problems), workers=2, out=str(tmp_path / "d")))
