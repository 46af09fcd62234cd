#!/usr/bin/env python3
"""Where a GRPO update's time goes: prompt forward, completion forward+backward, prompt backward.

One update's worth of policy work (``ahalab.rl.batch``) on real ``r1`` prompts (arithmetic level 1, ~143
tokens, ~120 of them the shared system prompt) with ``--generations`` random completions of ``--tokens``
tokens per prompt, full fine-tuning, fp32; fastest of ``--repeats``. To compare two versions of the update, run it
with ``PYTHONPATH`` pointing at each checkout's ``src`` (docs/benchmarks.md compares commits this way). Prints one
JSON line; ``peak_rss_mib`` is the process's peak resident memory (the model load included).

    python benchmarks/grpo_update.py --prompts 8 --generations 8 --tokens 40
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import torch

from ahalab.models import load_model, resolve_model
from ahalab.prompts import render
from ahalab.rl.batch import Prefix, plan_batches
from ahalab.tasks import get_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="model alias, local path or HF id")
    ap.add_argument("--prompts", type=int, default=8, help="distinct r1 prompts (a step's prompts)")
    ap.add_argument("--generations", type=int, default=8, help="completions per prompt")
    ap.add_argument("--tokens", type=int, default=40, help="completion length")
    ap.add_argument("--micro-batch-tokens", type=int, default=2048, help="padded tokens per micro-batch")
    ap.add_argument("--repeats", type=int, default=3, help="timed updates; the fastest counts")
    a = ap.parse_args()

    torch.manual_seed(0)
    model, tokenizer = load_model(resolve_model(a.model))
    model.train()
    task = get_task("arithmetic", level=1)
    prompts = [tokenizer(render(tokenizer, task, p.question, "r1").prompt, add_special_tokens=False).input_ids
               for p in task.load(None, limit=a.prompts, seed=0)]
    prompts = [p for p in prompts for _ in range(a.generations)]
    completions = torch.randint(100, 1000, (len(prompts), a.tokens)).tolist()
    runs = []
    for _ in range(a.repeats):
        chunks = plan_batches(prompts, completions, list(range(len(prompts))), a.micro_batch_tokens,
                              tokenizer.pad_token_id)
        split = {"prompt_forward_s": 0.0, "completions_s": 0.0, "prompt_backward_s": 0.0}
        for chunk in chunks:
            t0 = time.perf_counter()
            prefix = Prefix(model, chunk)
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
        runs.append(split)
    best = min(runs, key=lambda s: sum(s.values()))
    print(json.dumps({"sequences": len(prompts), "prompt_tokens": len(prompts[0]), "completion_tokens": a.tokens,
                      "total_s": round(sum(best.values()), 2), **{k: round(v, 2) for k, v in best.items()},
                      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


if __name__ == "__main__":
    main()
