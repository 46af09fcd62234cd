"""Sampling strategies over an Engine: costs, and the small selectors that pick an answer from samples.

Every strategy returns, per problem, an ``Outcome``: the chosen answer and what it cost. Costs count
*generated* tokens, *forward* tokens (prompt plus generated tokens of every sequence the model ran,
no prefix-cache reuse assumed) and wall time (an engine call's wall time split evenly over its prompts).

Samples come from the one sampling path (``ahalab.sampling.sample``); selectors are pure functions over
a problem's ``Sample`` list, so the same code picks answers from fresh generations and from the
subsamples of a budget sweep.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ahalab.engines.base import Engine
from ahalab.eval.metrics import majority_vote
from ahalab.sampling import prompt_tokens, sample
from ahalab.tasks.base import Task
from ahalab.types import Completion, Problem, Sample


@dataclass
class Cost:
    """Compute spent on one problem."""

    generated_tokens: int = 0
    forward_tokens: int = 0  # prompt + generated tokens of every sequence run through the model
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.generated_tokens + other.generated_tokens, self.forward_tokens + other.forward_tokens,
                    self.wall_s + other.wall_s)


def samples_cost(samples: Sequence[Sample]) -> Cost:
    """What drawing ``samples`` (of one problem) cost."""
    gen = sum(s.tokens for s in samples)
    return Cost(gen, sum(s.prompt_tokens for s in samples) + gen, sum(s.wall_s for s in samples))


def call_cost(engine: Engine, prompt: str, completions: Sequence[Completion], wall_s: float) -> Cost:
    """What one prompt's completions of an engine call cost (``wall_s``: the prompt's share of the call)."""
    p = prompt_tokens(engine, prompt, completions[0]) if completions else 0
    gen = sum(c.num_tokens for c in completions)
    return Cost(gen, p * len(completions) + gen, wall_s)


@dataclass
class Outcome:
    """A strategy's pick for one problem and its cost; ``info`` holds strategy-specific details."""

    answer: str | None
    correct: bool
    text: str
    cost: Cost
    info: dict[str, Any] = field(default_factory=dict)


def mean_logprob(logprobs: Sequence[float] | None) -> float:
    """Mean token logprob (the policy's confidence); -inf when there are no logprobs."""
    return sum(logprobs) / len(logprobs) if logprobs else -math.inf


def graded_outcome(task: Task, problem: Problem, text: str, cost: Cost, **info: Any) -> Outcome:
    """The Outcome of answering ``problem`` with ``text``, graded by ``task``."""
    answer, score = task.grade(problem, text)
    return Outcome(answer, score >= 1.0, text, cost, info)


# --- selectors: a problem's samples -> index of the chosen one (-1: nothing to choose) -----------------

Equivalent = Callable[[str, str], bool]


def vote(samples: Sequence[Sample], equivalent: Equivalent) -> int:
    """Self-consistency: the first member of the largest group of equivalent answers."""
    return majority_vote([s.answer for s in samples], equivalent)[1]


def best_of_n(samples: Sequence[Sample], scorer: str) -> int:
    """The sample with the highest ``scores[scorer]`` (first of ties)."""
    if not samples:
        return -1
    return max(range(len(samples)), key=lambda i: samples[i].scores[scorer])


def weighted_vote(samples: Sequence[Sample], scorer: str, equivalent: Equivalent) -> int:
    """The answer whose equivalent samples have the largest summed ``scores[scorer]``."""
    return majority_vote([s.answer for s in samples], equivalent, weights=[s.scores[scorer] for s in samples])[1]


def outcome(group: Sequence[Sample], index: int, cost: Cost, **info: Any) -> Outcome:
    """The Outcome of picking ``group[index]`` (index -1: no answer)."""
    if index < 0:
        return Outcome(None, False, group[0].text if group else "", cost, info)
    s = group[index]
    return Outcome(s.answer, s.correct, s.text, cost, info)


Selector = Callable[[Sequence[Sample]], int]


def sample_and_select(engine: Engine, task: Task, problems: list[Problem], select: Selector, *, fmt: str = "cot",
                      n: int = 8, temperature: float = 0.8, max_tokens: int = 512, seed: int = 0,
                      scorers: dict[str, Callable] | None = None, **kw: Any) -> list[Outcome]:
    """Generate ``n`` samples per problem, score them, and let ``select`` pick one.

    With ``n=1, temperature=0`` this is greedy decoding (``fmt="direct"``) or greedy CoT (``fmt="cot"``);
    ``select=partial(vote, equivalent=task.equivalent)`` is self-consistency; ``best_of_n`` and
    ``weighted_vote`` need the named scorer in ``scorers`` (see ``ahalab.scaling.scorers``).
    """
    samples = sample(engine, task, problems, fmt, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed,
                     logprobs=True, **kw)
    for name, scorer in (scorers or {}).items():
        score_samples(problems, samples, name, scorer)
    return [outcome(s, select(s), samples_cost(s), samples=len(s)) for s in samples]


def score_samples(problems: list[Problem], samples: list[list[Sample]], name: str, scorer: Callable) -> None:
    """Fill ``scores[name]`` of every sample with ``scorer(problem, texts, logprobs)``."""
    for problem, group in zip(problems, samples):
        for s, v in zip(group, scorer(problem, [s.text for s in group], [s.logprobs for s in group])):
            s.scores[name] = float(v)
