"""Prefix sharing in vLLM's CPU engine: a greedy evaluation at KV block size 128 (vLLM's CPU default) vs 32.

vLLM caches prompt prefixes in whole KV blocks. The r1 prompt format opens every prompt with the same
~100-token system prompt; with 128-token blocks no block of it is ever full, so each prompt is prefilled
whole, while 32-token blocks let all prompts share it. Times ``--repeats`` greedy passes over ``--problems``
arithmetic prompts in chunks of 64 (as ``ahalab eval`` does), resetting the prefix cache before each pass;
the fastest pass counts. Prints one JSON line.

    python benchmarks/engine_prefix.py --problems 128 --max-tokens 32
"""
from __future__ import annotations

import argparse
import gc
import json
import time
from typing import Any

from ahalab.engines import make_engine
from ahalab.models import resolve_model
from ahalab.prompts import render
from ahalab.tasks import get_task


def measure(model_dir: str, block_size: int, questions: list[str], fmt: str, max_tokens: int,
            repeats: int) -> dict[str, Any]:
    """Best wall time of ``repeats`` greedy passes over ``questions`` with KV blocks of ``block_size`` tokens."""
    engine = make_engine("vllm", model_dir, block_size=block_size)
    prompts = [render(engine.tokenizer, get_task("arithmetic"), q, fmt).prompt for q in questions]
    walls = []
    for _ in range(repeats):
        engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        outs = [c for lo in range(0, len(prompts), 64) for c in engine.generate(prompts[lo:lo + 64], max_tokens=max_tokens)]
        walls.append(time.perf_counter() - start)
    texts = [comps[0].text for comps in outs]
    prompt_tokens = len(outs[0][0].prompt_token_ids)
    del engine
    gc.collect()
    return {"wall_s": round(min(walls), 2), "walls": [round(w, 2) for w in walls], "prompt_tokens": prompt_tokens,
            "texts": texts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--format", default="r1")
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args(argv)

    model_dir = resolve_model(a.model)
    questions = [p.question for p in get_task("arithmetic", level=1).load(limit=a.problems, seed=1234)]
    runs = {bs: measure(model_dir, bs, questions, a.format, a.max_tokens, a.repeats) for bs in (128, 32)}
    result = {"model": a.model, "problems": a.problems, "max_tokens": a.max_tokens, "format": a.format,
              "prompt_tokens": runs[32]["prompt_tokens"],
              **{f"block{bs}_s": r["wall_s"] for bs, r in runs.items()},
              "speedup": round(runs[128]["wall_s"] / runs[32]["wall_s"], 2),
              "same_outputs": sum(x == y for x, y in zip(runs[128]["texts"], runs[32]["texts"])) / a.problems}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
