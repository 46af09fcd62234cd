"""Adaptive-consistency (Aggarwal et al. 2023): sample until the leading answer is decisively ahead.

The Beta stopping rule: with v1 and v2 votes for the two leading answers, the leader's share among
them has posterior Beta(v1 + 1, v2 + 1); stop once P(share > 1/2) >= ``threshold``. Unanimous votes
stop after 4 samples at threshold 0.95; split votes keep sampling up to the cap.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

from ahalab.engines.base import Engine
from ahalab.eval.metrics import majority_vote
from ahalab.sampling import sample
from ahalab.scaling.strategies import Cost, Equivalent, Outcome, outcome, samples_cost, vote
from ahalab.tasks.base import Task
from ahalab.types import Problem, Sample


def leader_probability(v1: int, v2: int) -> float:
    """P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1), exactly: P(Binomial(v1 + v2 + 1, 1/2) <= v1)."""
    n = v1 + v2 + 1
    return sum(comb(n, j) for j in range(v1 + 1)) / 2**n


def top_two_counts(answers: Sequence[str | None], equivalent: Equivalent) -> tuple[int, int]:
    """Votes for the largest and second-largest groups of equivalent answers (None answers don't vote)."""
    counts = []
    rest = list(answers)
    for _ in range(2):
        leader = majority_vote(rest, equivalent)[0]
        if leader is None:
            break
        members = [a is not None and (a == leader or _equal(equivalent, a, leader)) for a in rest]
        counts.append(sum(members))
        rest = [None if m else a for a, m in zip(rest, members)]
    counts += [0, 0]
    return counts[0], counts[1]


def _equal(equivalent: Equivalent, a: str, b: str) -> bool:
    try:
        return bool(equivalent(a, b))
    except Exception:  # a verifier must never crash on model output
        return False


def decisive(answers: Sequence[str | None], equivalent: Equivalent, threshold: float = 0.95) -> bool:
    """Whether the Beta rule would stop sampling after ``answers``."""
    v1, v2 = top_two_counts(answers, equivalent)
    return v1 > 0 and leader_probability(v1, v2) >= threshold


def stopping_point(answers: Sequence[str | None], equivalent: Equivalent, threshold: float = 0.95) -> int:
    """How many of ``answers``, drawn in order one at a time, the rule uses before it stops."""
    for k in range(1, len(answers) + 1):
        if decisive(answers[:k], equivalent, threshold):
            return k
    return len(answers)


def adaptive_consistency(engine: Engine, task: Task, problems: list[Problem], *, fmt: str = "cot",
                         max_samples: int = 16, chunk: int = 1, threshold: float = 0.95, temperature: float = 0.8,
                         max_tokens: int = 512, seed: int = 0, **kw: Any) -> list[Outcome]:
    """Sample ``chunk`` more completions per undecided problem per round (all problems batched into one
    engine call) until the rule stops or ``max_samples`` are drawn; answer by majority vote."""
    samples: list[list[Sample]] = [[] for _ in problems]
    costs = [Cost() for _ in problems]
    open_ = list(range(len(problems)))
    rnd = 0
    while open_:
        n = min(chunk, max_samples - len(samples[open_[0]]))
        got = sample(engine, task, [problems[i] for i in open_], fmt, n=n, temperature=temperature,
                     max_tokens=max_tokens, seed=seed + 10007 * rnd, logprobs=True, **kw)
        for i, new in zip(open_, got):
            samples[i] += new
            costs[i] += samples_cost(new)
        open_ = [i for i in open_ if len(samples[i]) < max_samples
                 and not decisive([s.answer for s in samples[i]], task.equivalent, threshold)]
        rnd += 1
    return [outcome(s, vote(s, task.equivalent), c, samples=len(s)) for s, c in zip(samples, costs)]
