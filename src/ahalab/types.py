"""Plain data types passed between ahalab's rooms (tasks, engines, sampling, methods)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One task instance: the question shown to the model and the gold answer."""

    id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    """One generated continuation of a prompt, as an engine returns it."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string) or "length" (hit max_tokens)
    logprobs: list[float] | None = None  # per generated token, when asked for
    prompt_token_ids: list[int] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Sample:
    """One graded completion of a problem: the record every method gets from ``ahalab.sampling.sample``.

    ``text`` is what the verifier saw: the prompt's assistant prefix (r1: ``<think>``) + the completion.
    ``score`` is the task's verdict (1.0 right, 0.0 wrong; partial credit where a task defines it);
    ``correct`` means full marks. ``scores`` holds extra scorers' values by name (reward models, confidence).
    """

    problem: Problem
    prompt: str
    prefix: str
    completion: Completion
    answer: str | None  # the extracted answer (None: nothing could be extracted)
    score: float
    index: int = 0  # which of the problem's samples this is
    prompt_tokens: int = 0
    wall_s: float = 0.0  # this sample's share of its engine call's wall time
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return self.prefix + self.completion.text

    @property
    def correct(self) -> bool:
        return self.score >= 1.0

    @property
    def tokens(self) -> int:
        return self.completion.num_tokens

    @property
    def finish_reason(self) -> str:
        return self.completion.finish_reason

    @property
    def logprobs(self) -> list[float] | None:
        return self.completion.logprobs

    def record(self, **extra: Any) -> dict[str, Any]:
        """The sample as a samples.jsonl row (``extra`` columns first)."""
        return {**extra, "problem_id": self.problem.id, "sample": self.index, "prompt": self.prompt,
                "completion": self.text, "answer": self.answer, "gold": self.problem.answer,
                "correct": self.correct, "score": self.score, "tokens": self.tokens,
                "finish_reason": self.finish_reason}
