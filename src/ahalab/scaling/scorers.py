"""Scorers for best-of-n, weighted vote and beam search: (problem, texts, logprobs) -> scores in [0, 1].

``logprobs[i]`` are the token logprobs of the part of ``texts[i]`` being judged (the whole completion
for a sample, the newest step for a beam candidate). Scores are probabilities so that summing them
(weighted vote) is meaningful.

- ``confidence``: the policy's own geometric-mean token probability, exp(mean token logprob);
- ``RewardModel`` (``ahalab.models.reward``): any HF sequence-classification checkpoint, as an outcome reward
  model (ORM) on full solutions or as a process reward model (PRM) on partial ones (the score of the solution so far);
- ``SelfCheck``: the task's gold-free check (countdown: the expression uses the given numbers and makes
  the target), usable at test time; not an oracle.
- ``Oracle``: the task's verifier against the gold answer. Analysis only, always labelled "oracle".
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ahalab.errors import UserError
from ahalab.models.reward import RewardModel
from ahalab.scaling.strategies import mean_logprob
from ahalab.tasks import TASKS
from ahalab.tasks.base import Task
from ahalab.types import Problem

Scorer = Callable[[Problem, Sequence[str], Sequence[Sequence[float] | None]], list[float]]
SCORERS = ("confidence", "orm", "prm", "self_check", "oracle")


def confidence(problem: Problem, texts: Sequence[str], logprobs: Sequence[Sequence[float] | None]) -> list[float]:
    """exp(mean token logprob) per text (0 when the engine gave no logprobs)."""
    return [math.exp(mean_logprob(lp)) for lp in logprobs]


class Oracle:
    """1.0 when the task's verifier accepts the text's answer, else 0.0 (uses the gold answer)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, problem: Problem, texts: Sequence[str], logprobs: Sequence) -> list[float]:
        return [float(self.task.is_correct(problem, t)) for t in texts]


class SelfCheck:
    """1.0 when the text passes the task's gold-free check (``Task.self_check``), else 0.0."""

    def __init__(self, task: Task) -> None:
        if not task.has_self_check:
            having = [name for name, cls in TASKS.items() if cls.has_self_check]
            raise UserError(f"scorer 'self_check' needs a task that can check an answer without the gold one; "
                            f"'{task.name}' cannot (tasks that can: {', '.join(having)})")
        self.task = task

    def __call__(self, problem: Problem, texts: Sequence[str], logprobs: Sequence) -> list[float]:
        return [1.0 if ok else 0.0 for ok in self.task.self_check_many([(problem, t) for t in texts])]


def make_scorer(name: str, task: Task, orm: str | None = None, prm: str | None = None) -> Scorer:
    """A scorer by name: confidence | orm (needs ``orm``) | prm (needs ``prm``) | self_check | oracle."""
    if name == "confidence":
        return confidence
    if name == "self_check":
        return SelfCheck(task)
    if name == "oracle":
        return Oracle(task)
    if name in ("orm", "prm"):
        path = orm if name == "orm" else prm
        if not path:
            raise UserError(f"scorer '{name}' needs --{name} PATH (an HF sequence-classification checkpoint)")
        return RewardModel(path)
    raise UserError(f"unknown scorer '{name}'; valid: {', '.join(SCORERS)}")
