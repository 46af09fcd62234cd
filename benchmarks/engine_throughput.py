"""Generation throughput of the vLLM and HF engines on the same chat-templated arithmetic CoT prompts.

Greedy, a fixed number of new tokens per prompt (EOS does not stop generation), timed after a warm-up;
the fastest of ``--repeats`` calls counts (robust to other load on the machine).
Prints one JSON line (tokens/s of each engine and the vLLM/HF ratio); ``--out`` also writes it to a file.
HF runs first: creating a vLLM CPU engine rebinds this process's OpenMP threads.

    python benchmarks/engine_throughput.py --model smollm2-135m --prompts 64 --max-tokens 128
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import time
from typing import Any

import torch

from ahalab.engines import make_engine
from ahalab.models import resolve_model
from ahalab.precision import auto_dtype


def arithmetic_prompts(tokenizer, count: int, seed: int = 0) -> list[str]:
    """``count`` chat-templated "think step by step" arithmetic questions."""
    rng = random.Random(seed)
    questions = [f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)} * {rng.randint(2, 9)}? Think step by step, "
                 "then give the final answer as \\boxed{N}." for _ in range(count)]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def measure(name: str, model_dir: str, count: int, max_tokens: int, repeats: int,
            options: dict[str, Any]) -> dict[str, Any]:
    """Load engine ``name``, warm it up, time ``repeats`` greedy ``generate`` calls over all prompts (best counts)."""
    start = time.perf_counter()
    engine = make_engine(name, model_dir, ignore_eos=True, **options)
    load_s = time.perf_counter() - start
    prompts = arithmetic_prompts(engine.tokenizer, count)
    engine.generate(prompts, max_tokens=4)  # warm-up at the timed batch shape
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        outs = engine.generate(prompts, max_tokens=max_tokens)
        walls.append(time.perf_counter() - start)
    tokens = sum(c.num_tokens for comps in outs for c in comps)
    engine.close()
    del engine
    gc.collect()
    return {"tokens_per_s": round(tokens / min(walls), 1), "tokens": tokens, "wall_s": [round(w, 3) for w in walls],
            "load_s": round(load_s, 1), **options}


def report(result: dict[str, Any], out: str | None) -> None:
    """Print ``result`` as one JSON line; also write it to ``out`` when given."""
    line = json.dumps(result)
    print(line)
    if out:
        with open(out, "w") as f:
            f.write(line + "\n")


def device_name() -> str:
    """The GPU's name, or the CPU's architecture, vector capability and usable cores."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.machine()} CPU ({torch.backends.cpu.get_cpu_capability()}), {len(os.sched_getaffinity(0))} cores"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="alias, local directory, .gguf file or hub id")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--dtype", help="both engines' dtype (default: each engine's default: vLLM bfloat16 where the "
                    "hardware has native bf16, else float32; HF float32)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per engine; the fastest counts")
    ap.add_argument("--hf-batch-size", type=int, default=64, help="sequences per HF generate call")
    ap.add_argument("--compile", action="store_true", help="vLLM with torch.compile (slower start, faster decode)")
    ap.add_argument("--engines", default="hf,vllm", help="comma-separated subset of hf,vllm")
    ap.add_argument("--out", help="also write the JSON result here")
    a = ap.parse_args(argv)

    model_dir = resolve_model(a.model)
    options = {"hf": {"dtype": a.dtype or "float32", "batch_size": a.hf_batch_size},
               "vllm": {"dtype": a.dtype or auto_dtype("cuda" if torch.cuda.is_available() else "cpu"),
                        "compile": a.compile}}
    result: dict[str, Any] = {
        "model": a.model, "prompts": a.prompts, "max_tokens": a.max_tokens,
        "device": device_name(),
    }
    for name in ("hf", "vllm"):
        if name in a.engines.split(","):
            result[name] = measure(name, model_dir, a.prompts, a.max_tokens, a.repeats, options[name])
    if "hf" in result and "vllm" in result:
        result["vllm_over_hf"] = round(result["vllm"]["tokens_per_s"] / result["hf"]["tokens_per_s"], 2)
    report(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
