"""Teacher sampling in one process vs as a Ray job on N workers (``ahalab data --workers N``).

Times ``Teacher.generate`` into a fresh trace cache: once with the single-process teacher, once with a
``RayTeacher`` on ``--workers`` local workers (Ray started here with that many CPUs; worker start-up, each
building its own teacher and engine, is timed apart from generation). Checks that both caches hold the same
rows, and prints one JSON line: rows, seconds and rows/s of each, and the speed-up.

    python benchmarks/ray_data.py --teacher program --task countdown --limit 4000
    python benchmarks/ray_data.py --teacher engine --model smollm2-135m --engine hf --limit 64 --max-tokens 64
"""
from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ahalab.data.build import DataConfig, teacher_from_config
from ahalab.data.teachers import Teacher, TraceCache
from ahalab.tasks import get_task


def timed(teacher: Teacher, problems: list, samples: int, cache: Path) -> dict[str, Any]:
    start = time.perf_counter()
    teacher.generate(problems, samples, cache=cache)
    wall = time.perf_counter() - start
    rows = len(TraceCache(cache).load())
    return {"rows": rows, "wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", choices=["program", "engine"], default="program")
    ap.add_argument("--task", default="countdown")
    ap.add_argument("--limit", type=int, default=4000)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m", help="engine teacher: the model")
    ap.add_argument("--engine", default="hf")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--chunk-size", type=int, default=8, help="engine teacher: problems per chunk")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import ray

    from ahalab.data.ray_workers import RayTeacher

    options = {"chunk_size": args.chunk_size} if args.teacher == "engine" else None
    cfg = DataConfig(task=args.task, limit=args.limit, samples=args.samples, teacher=args.teacher,
                     teacher_model=args.model, engine=args.engine, max_tokens=args.max_tokens,
                     temperature=args.temperature, teacher_options=options)
    problems = get_task(cfg.task).load(limit=cfg.limit, seed=cfg.seed)
    with tempfile.TemporaryDirectory() as tmp:
        one_teacher = teacher_from_config(cfg)
        one = timed(one_teacher, problems, cfg.samples, Path(tmp) / "one.jsonl")
        one_teacher.close()
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
        start = time.perf_counter()
        ray_teacher = RayTeacher(functools.partial(teacher_from_config, cfg), args.workers)
        startup = time.perf_counter() - start
        try:
            many = timed(ray_teacher, problems, cfg.samples, Path(tmp) / "ray.jsonl")
        finally:
            ray_teacher.close()
            ray.shutdown()
        same = TraceCache(Path(tmp) / "one.jsonl").load() == TraceCache(Path(tmp) / "ray.jsonl").load()
    print(json.dumps({"teacher": one_teacher.name, "task": cfg.task, "samples": cfg.samples, "one_process": one,
                      f"ray_{args.workers}_workers": {**many, "startup_s": round(startup, 2)},
                      "speedup": round(one["wall_s"] / many["wall_s"], 2), "same_rows": same}))


if __name__ == "__main__":
    main()
