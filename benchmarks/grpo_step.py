#!/usr/bin/env python3
"""Seconds per GRPO step of ahalab's trainer, on the task and sizes of ../shared/bench/trl_grpo_baseline.py.

    python benchmarks/grpo_step.py --model smollm2-135m --prompts-per-step 4 --generations 8 \\
        --max-new-tokens 128 --steps 4

Same as the TRL baseline: "What is A + B?" (A, B in 1..50), the answer inside <answer></answer>, reward 1.0
for the right number in the tags else 0.0; the user message alone through the chat template; full
fine-tuning, fp32, lr 1e-5, beta 0, one optimisation step per batch, TRL's default loss (token mean,
group std scaling, epsilon 0.2 both sides), temperature 1. The first step is a warm-up and is not counted.
``--reward`` as the baseline's: ``strict`` (the number inside the tags), ``lenient`` (the task's verifier: the
right number anywhere), ``dense`` (``-|characters - 100| / 100``: every group has signal, every sequence is
trained on both sides: the full cost of an update). ``--bf16`` / ``--lora-r`` measure ahalab's faster settings.
Prints one JSON line: median step time and its split into rollout / train / sync, generated tokens per step
and per second, and the share of sequences that reached the update (zero-advantage groups are skipped).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import statistics
import tempfile
from pathlib import Path

from ahalab.rewards import contents, register
from ahalab.rl.config import ZeroConfig, ZeroEval
from ahalab.runs import RunDir
from ahalab.tasks import TASKS
from ahalab.tasks.base import Task
from ahalab.types import Problem

ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


class BenchAddition(Task):
    """The TRL baseline's problems: "What is A + B?" with A, B drawn uniformly from 1..50."""

    name = "bench_addition"

    def load(self, data=None, limit=None, seed=0) -> list[Problem]:
        rng = random.Random(seed)
        pairs = [(rng.randint(1, 50), rng.randint(1, 50)) for _ in range(limit or 1024)]
        return [Problem(id=f"bench-{i}", question=f"What is {x} + {y}?", answer=str(x + y))
                for i, (x, y) in enumerate(pairs)]


@register
def answer_tag_accuracy(completions: list, answer: list[str], **_) -> list[float | None]:
    """The baseline's reward: 1.0 when the <answer> tag holds exactly the right number."""
    out = []
    for c, gold in zip(contents(completions), answer):
        m = ANSWER.search(c)
        out.append(1.0 if m and m.group(1).strip() == gold else 0.0)
    return out


@register
def length_near_100(completions: list, **_) -> list[float | None]:
    """The baseline's dense reward: ``-|characters - 100| / 100``, distinct within almost every group."""
    return [-abs(len(c) - 100) / 100 for c in contents(completions)]


REWARDS = {"strict": "answer_tag_accuracy", "lenient": "accuracy", "dense": "length_near_100"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts-per-step", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=4, help="measured steps (after one warm-up step)")
    ap.add_argument("--engine", default=None, help="vllm (default when installed) | hf")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the update (default fp32, as TRL)")
    ap.add_argument("--lora-r", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reward", choices=list(REWARDS), default="strict",
                    help="strict: the number in the <answer> tags (the baseline's default); lenient: the right number "
                    "anywhere; dense: -|characters - 100| / 100, every sequence trained (as the baseline's flags)")
    a = ap.parse_args()

    from ahalab.rl.trainer import ZeroTrainer

    TASKS[BenchAddition.name] = BenchAddition
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        template = Path(tmp) / "prompt.txt"
        template.write_text("{question} Put the final answer in <answer></answer> tags.")
        cfg = ZeroConfig(model=a.model, task=BenchAddition.name, task_options={}, train_size=1024, format=str(template),
                         steps=a.steps + 1, prompts_per_step=a.prompts_per_step, generations=a.generations,
                         max_new_tokens=a.max_new_tokens, temperature=1.0, engine=a.engine,
                         rewards={REWARDS[a.reward]: 1.0},
                         loss="dapo", epsilon_high=0.2, dynamic_sampling=False,
                         lr=1e-5, bf16=a.bf16, lora_r=a.lora_r, threads=a.threads or None, seed=a.seed,
                         eval=ZeroEval(every=0), checkpoint_every=0, sample_every=0, out=str(Path(tmp) / "run"))
        trainer = ZeroTrainer(cfg, RunDir.create(cfg.out, "zero", dataclasses.asdict(cfg)))
        for step in range(1, cfg.steps + 1):  # train_step only: no eval, checkpoint or report in the timing
            trainer.run.log_metrics(step, **trainer.train_step(step))
        rows = trainer.run.metrics()[1:]
    med = {k: statistics.median(r[k] for r in rows) for k in ("time_step_s", "time_rollout_s", "time_train_s",
                                                             "time_sync_s")}
    tokens = [r["completion_tokens_mean"] * r["groups_sampled"] * a.generations for r in rows]
    print(json.dumps({
        "impl": "ahalab", "engine": trainer.engine.name, "bf16": a.bf16, "lora_r": a.lora_r, "reward": a.reward,
        "steps": len(rows),
        "median_step_s": med["time_step_s"], "median_rollout_s": med["time_rollout_s"],
        "median_train_s": med["time_train_s"], "median_sync_s": med["time_sync_s"],
        "gen_tokens_per_step": statistics.mean(tokens),
        "tokens_per_s": sum(tokens) / sum(r["time_step_s"] for r in rows),
        "trained_fraction": statistics.mean(r["sequences_trained"] / (a.prompts_per_step * a.generations)
                                            for r in rows),
        "reward_mean": statistics.mean(r["reward_mean"] for r in rows),
    }))


if __name__ == "__main__":
    main()
