"""Sampling strategies over an Engine: costs, samples, and the small selectors that pick an answer.

Every strategy returns, per problem, an ``Outcome``: the chosen answer and what it cost. Costs count
*generated* tokens, *forward* tokens (prompt plus generated tokens of every sequence the model ran,
no prefix-cache reuse assumed) and wall time (an engine call's wall time split evenly over its prompts).

Selectors are pure functions over a problem's ``Sample`` list, so the same code picks answers from
fresh generations and from the subsamples of a budget sweep.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ahalab.engines.base import Engine
from ahalab.eval.metrics import majority_vote
from ahalab.tasks.base import Task
from ahalab.types import Completion, Problem


@dataclass
class Cost:
    """Compute spent on one problem."""

    generated_tokens: int = 0
    forward_tokens: int = 0  # prompt + generated tokens of every sequence run through the model
    wall_s: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.generated_tokens + other.generated_tokens, self.forward_tokens + other.forward_tokens,
                    self.wall_s + other.wall_s)


@dataclass
class Sample:
    """One graded completion of a problem; ``scores`` holds scorer name -> score (computed once)."""

    text: str  # the response as the verifier saw it (a format's prefilled prefix included)
    answer: str | None
    correct: bool
    tokens: int
    prompt_tokens: int
    finish_reason: str
    logprobs: list[float] | None = None
    scores: dict[str, float] = field(default_factory=dict)


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


def prompt_tokens(engine: Engine, prompt: str, completion: Completion) -> int:
    """Tokens in ``prompt`` (from the engine's record when it gives one)."""
    if completion.prompt_token_ids is not None:
        return len(completion.prompt_token_ids)
    return len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def generate(engine: Engine, prompts: list[str], n: int = 1, *, chunk_size: int = 64, desc: str | None = None,
             seed: int = 0, **sampling: Any) -> tuple[list[list[Completion]], list[Cost]]:
    """``engine.generate`` in chunks of prompts (chunk i seeded ``seed + i``) with each prompt's cost."""
    from tqdm import tqdm

    outs: list[list[Completion]] = []
    costs: list[Cost] = []
    chunks = range(0, len(prompts), chunk_size)
    for ci, lo in enumerate(tqdm(chunks, desc=desc, unit="chunk", disable=desc is None or len(chunks) < 2)):
        part = prompts[lo:lo + chunk_size]
        start = time.perf_counter()
        got = engine.generate(part, n=n, seed=seed + ci, **sampling)
        wall = (time.perf_counter() - start) / len(part)
        for prompt, comps in zip(part, got):
            p = prompt_tokens(engine, prompt, comps[0]) if comps else 0
            gen = sum(c.num_tokens for c in comps)
            costs.append(Cost(gen, p * len(comps) + gen, wall))
        outs.extend(got)
    return outs, costs


def render_prompts(engine: Engine, task: Task, problems: list[Problem], fmt: str, chat: bool | None = None) -> list:
    """Each problem rendered in prompt format ``fmt`` (objects with ``.prompt`` and ``.prefix``)."""
    from ahalab.prompts import render

    return [render(engine.tokenizer, task, p.question, fmt, chat=chat) for p in problems]


def sample(engine: Engine, task: Task, problems: list[Problem], fmt: str, n: int, temperature: float,
           max_tokens: int, *, top_p: float = 1.0, seed: int = 0, chat: bool | None = None,
           desc: str | None = None) -> tuple[list[list[Sample]], list[Cost]]:
    """``n`` graded samples per problem (with token logprobs) and each problem's cost."""
    rendered = render_prompts(engine, task, problems, fmt, chat)
    outs, costs = generate(engine, [r.prompt for r in rendered], n, seed=seed, desc=desc, temperature=temperature,
                           top_p=top_p, max_tokens=max_tokens, logprobs=True)
    samples = [[to_sample(task, problem, r.prefix + c.text, c, prompt_tokens(engine, r.prompt, c)) for c in comps]
               for problem, r, comps in zip(problems, rendered, outs)]
    return samples, costs


def to_sample(task: Task, problem: Problem, text: str, completion: Completion, prompt_len: int) -> Sample:
    """Grade ``text`` (the full response) into a Sample carrying the completion's token statistics."""
    g = task.grade(problem, text)
    return Sample(text=text, answer=g.answer, correct=g.correct, tokens=completion.num_tokens,
                  prompt_tokens=prompt_len, finish_reason=completion.finish_reason, logprobs=completion.logprobs)


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
    samples, costs = sample(engine, task, problems, fmt, n, temperature, max_tokens, seed=seed, **kw)
    for name, scorer in (scorers or {}).items():
        score_samples(problems, samples, name, scorer)
    return [outcome(s, select(s), c, samples=len(s)) for s, c in zip(samples, costs)]


def score_samples(problems: list[Problem], samples: list[list[Sample]], name: str, scorer: Callable) -> None:
    """Fill ``scores[name]`` of every sample with ``scorer(problem, texts, logprobs)``."""
    for problem, group in zip(problems, samples):
        for s, v in zip(group, scorer(problem, [s.text for s in group], [s.logprobs for s in group])):
            s.scores[name] = float(v)
