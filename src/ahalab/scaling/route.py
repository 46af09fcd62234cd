"""When to reason: a cheap first pass decides per problem whether to answer directly or to escalate.

The probe is either the greedy direct answer (``probe_samples=1``; signal: its confidence, the
geometric-mean token probability) or a few short direct samples (signal: the share of them agreeing
with their majority answer). Signal >= threshold: answer with the probe; else escalate to CoT with
``reason_samples`` samples and a majority vote. The baselines are always-direct (greedy direct) and
always-reason (CoT + vote for every problem). Escalations reuse the always-reason samples of the same
problem, so the three policies are compared on identical generations; each is charged only for the
passes it uses.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ahalab.engines.base import Engine
from ahalab.eval.metrics import majority_vote
from ahalab.sampling import sample
from ahalab.scaling.strategies import Outcome, mean_logprob, outcome, samples_cost, vote
from ahalab.tasks.base import Task
from ahalab.types import Problem, Sample


def agreement(samples: Sequence[Sample], equivalent) -> float:
    """Share of ``samples`` whose answer is equivalent to the majority answer (None answers disagree)."""
    _, _, share = majority_vote([s.answer for s in samples], equivalent)
    return share * sum(s.answer is not None for s in samples) / len(samples) if samples else 0.0


def route(engine: Engine, task: Task, problems: list[Problem], *, thresholds: Sequence[float] = (0.5, 0.75, 1.0),
          probe_samples: int = 4, probe_temperature: float = 0.7, direct_tokens: int = 32, reason_format: str = "cot",
          reason_samples: int = 8, temperature: float = 0.8, max_tokens: int = 512, seed: int = 0,
          **kw: Any) -> dict[str, list[Outcome]]:
    """Outcomes per policy: "always-direct", "always-reason", and "route@<threshold>" for each threshold."""
    direct = sample(engine, task, problems, "direct", max_tokens=direct_tokens, seed=seed, logprobs=True,
                    desc="direct", **kw)
    if probe_samples > 1:
        probe = sample(engine, task, problems, "direct", n=probe_samples, temperature=probe_temperature,
                       max_tokens=direct_tokens, seed=seed + 1, logprobs=True, desc="probe", **kw)
        signal = [agreement(p, task.equivalent) for p in probe]
    else:
        probe = direct
        signal = [math.exp(mean_logprob(p[0].logprobs)) for p in probe]
    reason = sample(engine, task, problems, reason_format, n=reason_samples, temperature=temperature,
                    max_tokens=max_tokens, seed=seed + 2, logprobs=True, desc="reason", **kw)
    direct_cost, probe_cost, reason_cost = ([samples_cost(g) for g in groups] for groups in (direct, probe, reason))
    policies = {"always-direct": [outcome(d, 0, c) for d, c in zip(direct, direct_cost)],
                "always-reason": [outcome(r, vote(r, task.equivalent), c) for r, c in zip(reason, reason_cost)]}
    for th in thresholds:
        policies[f"route@{th:g}"] = [
            outcome(p, vote(p, task.equivalent), pc, escalated=False, signal=s) if s >= th
            else outcome(r, vote(r, task.equivalent), pc + rc, escalated=True, signal=s)
            for p, pc, r, rc, s in zip(probe, probe_cost, reason, reason_cost, signal)]
    return policies


def verdict(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence: does some router threshold match always-reason accuracy with fewer tokens?"""
    reason = next(r for r in rows if r["strategy"] == "always-reason")
    routes = [r for r in rows if r["strategy"].startswith("route")]
    good = [r for r in routes if r["accuracy"] >= reason["accuracy"] and r["gen tokens"] < reason["gen tokens"]]
    if good:
        best = min(good, key=lambda r: r["gen tokens"])
        return (f"{best['strategy']} matches or beats always-reason accuracy ({best['accuracy']:.3f} vs "
                f"{reason['accuracy']:.3f}) with {1 - best['gen tokens'] / reason['gen tokens']:.0%} fewer generated "
                "tokens per problem.")
    best = max(routes, key=lambda r: r["accuracy"])
    return (f"No router threshold reached always-reason accuracy at fewer tokens: the best, {best['strategy']}, "
            f"scores {best['accuracy']:.3f} vs {reason['accuracy']:.3f} with {best['gen tokens']:.0f} vs "
            f"{reason['gen tokens']:.0f} generated tokens per problem.")
