#!/usr/bin/env python3
"""Where a GRPO update's time goes, and how close it runs to the machine's matmul peak.

One update's worth of policy work (``ahalab.rl.batch``) on real ``r1`` prompts (arithmetic level 1, ~143
tokens, ~120 of them the shared system prompt) with ``--generations`` random completions of ``--tokens``
tokens per prompt, full fine-tuning, fp32 (``--bf16``: bf16 autocast, as training uses on CPUs with native bf16);
fastest of ``--repeats``. To compare two versions of the update, run it with ``PYTHONPATH`` pointing at each
checkout's ``src`` (docs/benchmarks.md compares commits this way). Prints one JSON line; ``peak_rss_mib`` is the
process's peak resident memory (the model load included).

Achieved FLOP/s counts the model's arithmetic of the update (forward + backward = 3 forwards): 6 x decoder
parameters x tokens run through the decoder (each distinct prompt once, the shared system prompt once per chunk,
every completion token), 6 x LM-head parameters x completion tokens (the head runs only there), and attention's
12 x layers x attention width x context per token; recomputation (the head's backward, ``--gradient-checkpointing``)
is not counted as useful work. The peak is the best of square matmuls (``--peak-size``) in the same dtype on the
same threads.

    python benchmarks/grpo_update.py --prompts 8 --generations 8 --tokens 40 [--bf16] [--gradient-checkpointing]
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from ahalab.models import load_model, resolve_model
from ahalab.prompts import render
from ahalab.rl.batch import Prefix, PromptChunk, plan_batches
from ahalab.tasks import get_task


def matmul_rate(dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of [m, k] x [k, n] matmuls in ``dtype`` on this process's threads."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best


def update_flops(model: torch.nn.Module, chunks: list[PromptChunk]) -> float:
    """The update's useful FLOPs (forward + backward), as the module docstring counts them."""
    from ahalab.models.prefix import common_length

    cfg = model.config
    head = model.get_output_embeddings().weight
    embed = model.get_input_embeddings().weight
    decoder = sum(p.numel() for p in model.parameters()) - embed.numel() - head.numel() * (head is not embed)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim
    flops = 0.0
    for chunk in chunks:
        rows = [r[m.bool()].tolist() for r, m in zip(chunk.ids, chunk.mask)]
        shared = common_length(rows) if len(rows) > 1 else 0
        prompt_tokens = shared + sum(len(r) - shared for r in rows)
        contexts = sum(range(1, shared + 1)) + sum(sum(range(shared + 1, len(r) + 1)) for r in rows)
        flops += 6 * decoder * prompt_tokens + attention * contexts
        for mb in chunk.micro_batches:
            lengths = mb.mask.sum(1).long().tolist()
            prompt_len = [len(rows[p]) for p in mb.prompt.tolist()]
            flops += 6 * (decoder + head.numel()) * sum(lengths)
            flops += attention * sum(sum(range(p + 1, p + n + 1)) for p, n in zip(prompt_len, lengths))
    return flops


def one_update(model: torch.nn.Module, chunks: list[PromptChunk], bf16: bool, checkpoint: bool) -> dict[str, float]:
    """The policy work of one update (gradients left in place); seconds per part."""
    split = {"prompt_forward_s": 0.0, "completions_s": 0.0, "prompt_backward_s": 0.0}
    for chunk in chunks:
        t0 = time.perf_counter()
        prefix = Prefix(model, chunk, bf16, checkpoint)
        t1 = time.perf_counter()
        for mb in chunk.micro_batches:
            prefix.logprobs(mb).sum().backward()
        t2 = time.perf_counter()
        prefix.backward()
        t3 = time.perf_counter()
        split["prompt_forward_s"] += t1 - t0
        split["completions_s"] += t2 - t1
        split["prompt_backward_s"] += t3 - t2
    model.zero_grad(set_to_none=True)
    return split


def profile_update(model: torch.nn.Module, chunks: list[PromptChunk], bf16: bool, checkpoint: bool) -> None:
    """One more update under torch.profiler: operators by self CPU time, and the share of matmul and attention kernels
    (to stderr)."""
    import sys

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        one_update(model, chunks, bf16, checkpoint)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)
    print(f"matmul and attention kernels ({', '.join(sorted(MATMULS))}): {matmul / total:.1%} of self CPU time",
          file=sys.stderr)


MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
           "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model alias, local path or HF id")
    ap.add_argument("--prompts", type=int, default=8, help="distinct r1 prompts (a step's prompts)")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt")
    ap.add_argument("--tokens", type=int, default=40, help="completion length")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048, help="padded tokens per micro-batch")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (the peak is then bf16's)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint the decoder layers")
    ap.add_argument("--repeats", type=int, default=3, help="timed updates; the fastest counts")
    ap.add_argument("--peak-size", type=int, default=2048, help="side of the square matmuls timing the peak")
    ap.add_argument("--profile", action="store_true", help="also print the update's time by operator (torch.profiler)")
    a = ap.parse_args()

    torch.manual_seed(0)
    model, tokenizer = load_model(resolve_model(a.model))
    model.train()
    task = get_task("arithmetic", level=1)
    prompts = [tokenizer(render(tokenizer, task, p.question, "r1").prompt, add_special_tokens=False).input_ids
               for p in task.load(None, limit=a.prompts, seed=0)]
    prompts = [p for p in prompts for _ in range(a.generations)]
    completions = torch.randint(100, min(1000, len(tokenizer)), (len(prompts), a.tokens)).tolist()
    chunks = plan_batches(prompts, completions, list(range(len(prompts))), a.micro_batch_tokens,
                          tokenizer.pad_token_id)
    runs = [one_update(model, chunks, a.bf16, a.gradient_checkpointing) for _ in range(a.repeats)]
    if a.profile:
        profile_update(model, chunks, a.bf16, a.gradient_checkpointing)
    best = min(runs, key=lambda s: sum(s.values()))
    total = sum(best.values())
    flops = update_flops(model, chunks)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    peak = matmul_rate(dtype, a.peak_size, a.peak_size, a.peak_size)
    cfg = model.config  # the decoder's own matmul shape: a micro-batch's rows x hidden -> intermediate
    shaped = matmul_rate(dtype, a.micro_batch_tokens, cfg.hidden_size, cfg.intermediate_size)
    print(json.dumps({"sequences": len(prompts), "prompt_tokens": len(prompts[0]), "completion_tokens": a.tokens,
                      "dtype": "bf16 autocast" if a.bf16 else "float32", "threads": torch.get_num_threads(),
                      "total_s": round(total, 2), **{k: round(v, 2) for k, v in best.items()},
                      "update_gflop": round(flops / 1e9, 1), "achieved_gflops": round(flops / total / 1e9, 1),
                      "matmul_peak_gflops": round(peak / 1e9, 1), "fraction_of_peak": round(flops / total / peak, 3),
                      "model_shape_matmul_gflops": round(shaped / 1e9, 1),
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
