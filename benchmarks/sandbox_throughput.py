"""Sandboxed program execution: programs per second, one at a time and through ``run_many``'s worker pool.

Runs HumanEval's 164 canonical solutions against their tests (every one should pass) in the sandbox this
machine has (bubblewrap, else the rlimits fallback), first serially and then with ``--workers`` parallel
children, and prints one JSON line: the sandbox, programs, pass count and programs/s of both.

    python benchmarks/sandbox_throughput.py --workers 2
"""
from __future__ import annotations

import argparse
import json
import time

from ahalab.tasks import get_task
from ahalab.tasks.code import program_of
from ahalab.tasks.sandbox import run_many, run_tests, sandbox_kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=164, help="HumanEval problems (default all 164)")
    parser.add_argument("--workers", type=int, default=2, help="parallel sandboxed children (default 2)")
    args = parser.parse_args()
    problems = get_task("humaneval").load(limit=args.limit)
    jobs = [(program_of(p, p.answer), p.meta["tests"]) for p in problems]
    kind = sandbox_kind()
    start = time.perf_counter()
    serial = [run_tests(program, tests) for program, tests in jobs]
    serial_s = time.perf_counter() - start
    start = time.perf_counter()
    pooled = run_many(jobs, workers=args.workers)
    pooled_s = time.perf_counter() - start
    print(json.dumps({"sandbox": kind, "programs": len(jobs), "workers": args.workers,
                      "passed_serial": sum(r.status == "passed" for r in serial),
                      "passed_pool": sum(r.status == "passed" for r in pooled),
                      "serial_programs_per_s": round(len(jobs) / serial_s, 2),
                      "pool_programs_per_s": round(len(jobs) / pooled_s, 2)}))


if __name__ == "__main__":
    main()
