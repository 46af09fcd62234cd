"""The Task protocol every method shares: load problems, grade completions, compare answers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ahalab.errors import UserError
from ahalab.types import Graded, Problem


class TaskError(UserError, ValueError):
    """Bad task input (data file, field, option): the message names file, line and field."""


class Task(ABC):
    """A family of problems with a verifier.

    Subclasses set ``name``, implement ``load`` and may override ``extract``/``equivalent``.
    ``extractors`` is the answer-extraction order (see ``ahalab.tasks.answers.EXTRACTORS``).
    """

    name: str = ""
    extractors: tuple[str, ...] = ("answer_tag", "boxed", "answer_line", "last_number")
    # Instruction appended to the question for formats that ask for a final answer line.
    answer_hint: str = "a number"

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abstractmethod
    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems from ``data`` (a local file or hub id) or, for synthetic tasks, generated with ``seed``."""

    def extract(self, text: str) -> str | None:
        """The model's final answer in ``text``, or None."""
        from ahalab.tasks.answers import extract_answer

        return extract_answer(text, self.extractors)

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two extracted answers mean the same (used for grading and voting)."""
        from ahalab.tasks.answers import math_equal

        return math_equal(a, b)

    def grade(self, problem: Problem, text: str) -> Graded:
        """Extract the answer from ``text`` and verify it against ``problem.answer``. Never raises."""
        try:
            answer = self.extract(text)
            correct = answer is not None and self.equivalent(answer, problem.answer)
        except Exception:  # a verifier must never crash on model output
            answer, correct = None, False
        return Graded(answer=answer, correct=bool(correct), score=1.0 if correct else 0.0)
