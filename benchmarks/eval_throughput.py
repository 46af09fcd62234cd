"""Greedy evaluation's generation speed against the engine's own throughput, in one run.

Three figures, one process, one after the other: the vLLM engine on ``engine_throughput.py``'s fixed
workload (prompts x max tokens, EOS ignored), then a greedy evaluation of ``--limit`` problems through
``ahalab.eval.evaluate`` (the whole workload in one engine call, as every command now samples), then
the same evaluation in the old way (chunks of ``--chunk`` prompts, each waiting for its longest answer).
Tokens/s of an evaluation: generated tokens over the sampling call's wall time (grading included).
Prints one JSON line; ``--out`` also writes it.

    python benchmarks/eval_throughput.py --data ../shared/data/gsm8k_test.jsonl --limit 300 --max-tokens 256
"""
from __future__ import annotations

import argparse
import time
from typing import Any

from engine_throughput import device_name, measure, report

from ahalab.engines import make_engine
from ahalab.models import resolve_model
from ahalab.precision import auto_dtype
from ahalab.sampling import sample
from ahalab.tasks import get_task


def evaluation(engine, task, problems, fmt: str, max_tokens: int, chunk_size: int | None) -> dict[str, Any]:
    """Greedy sampling of ``problems`` (in one call, or chunks of ``chunk_size``): tokens/s and answer stats."""
    start = time.perf_counter()
    groups = sample(engine, task, problems, fmt, max_tokens=max_tokens, chunk_size=chunk_size)
    wall = time.perf_counter() - start
    flat = [s for group in groups for s in group]
    tokens = sum(s.tokens for s in flat)
    return {"tokens_per_s": round(tokens / wall, 1), "tokens": tokens, "wall_s": round(wall, 1),
            "accuracy": round(sum(s.correct for s in flat) / len(flat), 4),
            "truncated": round(sum(s.finish_reason == "length" for s in flat) / len(flat), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="alias, local directory, .gguf file or hub id")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--data", default="../shared/data/gsm8k_test.jsonl")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--format", default="cot")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--dtype", help="engine dtype (default: bfloat16 where the CPU has native bf16, else float32)")
    ap.add_argument("--prompts", type=int, default=64, help="engine_throughput.py's workload: prompts ...")
    ap.add_argument("--engine-tokens", type=int, default=128, help="... x tokens")
    ap.add_argument("--kv-cache-gib", type=float, help="engine KV cache (default: the engine's, 2 GiB on CPU)")
    ap.add_argument("--chunk", type=int, default=64, help="chunk size of the old, chunked evaluation (0: skip it)")
    ap.add_argument("--out", help="also write the JSON result here")
    a = ap.parse_args(argv)

    model_dir = resolve_model(a.model)
    dtype = a.dtype or auto_dtype("cpu")
    result: dict[str, Any] = {"model": a.model, "dtype": dtype, "device": device_name(), "task": a.task,
                              "problems": a.limit, "max_tokens": a.max_tokens}
    options = {"dtype": dtype, **({"kv_cache_gib": a.kv_cache_gib} if a.kv_cache_gib else {})}
    result["kv_cache_gib"] = a.kv_cache_gib
    result["engine"] = measure("vllm", model_dir, a.prompts, a.engine_tokens, 3, options)
    task = get_task(a.task)
    problems = task.load(a.data, limit=a.limit)
    with make_engine("vllm", model_dir, **options) as engine:
        evaluation(engine, task, problems[:8], a.format, 8, None)  # warm-up
        result["eval"] = evaluation(engine, task, problems, a.format, a.max_tokens, None)
        if a.chunk:
            result[f"eval_chunks_of_{a.chunk}"] = evaluation(engine, task, problems, a.format, a.max_tokens, a.chunk)
    result["eval_over_engine"] = round(result["eval"]["tokens_per_s"] / result["engine"]["tokens_per_s"], 3)
    report(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
