"""Plain data types passed between ahalab's rooms (tasks, engines, strategies, trainers)."""
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
    """One generated continuation of a prompt."""

    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" (EOS or stop string) or "length" (hit max_tokens)
    logprobs: list[float] | None = None  # per generated token, when asked for
    prompt_token_ids: list[int] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Graded:
    """A task verifier's verdict on one completion."""

    answer: str | None  # extracted answer (None: nothing could be extracted)
    correct: bool
    score: float  # 1.0/0.0 for exact tasks; partial credit where a task defines it
