"""The Task protocol every method shares: load problems, grade completions, compare answers."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

from ahalab.errors import UserError
from ahalab.types import Problem


class TaskError(UserError, ValueError):
    """Bad task input (data file, field, option): the message names file, line and field."""


class Task(ABC):
    """A family of problems with a verifier.

    Subclasses set ``name``, implement ``load`` and may override ``extract``/``equivalent``/``check``.
    ``extractors`` is the answer-extraction order (see ``ahalab.tasks.answers.EXTRACTORS``).
    ``defaults`` lists the options a task accepts, with their default values.
    """

    name: str = ""
    extractors: tuple[str, ...] = ("answer_tag", "boxed", "answer_line", "last_number")
    # What the final answer looks like, worded to fit "give the final answer (<hint>)" in prompts.
    answer_hint: str = "a number"
    defaults: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(self.defaults) or "none"
            raise TaskError(f"task '{self.name}' has no option {', '.join(unknown)} (options: {valid})")
        self.options = {**self.defaults, **options}

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

    def answer_text(self, answer: str) -> str:
        """An extracted answer written back as completion text that ``extract`` reads again (a dataset row's
        ``<answer>``); code tasks fence their programs."""
        return answer

    def check(self, problem: Problem, answer: str) -> bool:
        """Whether an extracted answer solves ``problem`` (default: equivalent to ``problem.answer``)."""
        return self.equivalent(answer, problem.answer)

    def grade(self, problem: Problem, text: str) -> tuple[str | None, float]:
        """(extracted answer or None, score): 1.0 when ``check`` accepts the answer, else 0.0. Never raises.

        Tasks with partial credit override this; a score of 1.0 means fully correct.
        """
        try:
            answer = self.extract(text)
            correct = answer is not None and self.check(problem, answer)
        except Exception:  # a verifier must never crash on model output
            answer, correct = None, False
        return answer, 1.0 if correct else 0.0

    def grade_many(self, items: Sequence[tuple[Problem, str]]) -> list[tuple[str | None, float]]:
        """``grade`` of each (problem, text), in order; tasks whose check is slow (running programs) grade in
        parallel."""
        return [self.grade(problem, text) for problem, text in items]

    def is_correct(self, problem: Problem, text: str) -> bool:
        """Whether ``text`` earns full marks on ``problem``."""
        return self.grade(problem, text)[1] >= 1.0

    # Whether the task overrides ``self_check`` with a gold-free check (the ``self_check`` scorer needs one).
    has_self_check: bool = False

    def self_check(self, problem: Problem, text: str) -> bool | None:
        """Whether the answer in ``text`` passes a check that uses only what the problem states, never
        ``problem.answer`` (usable at test time, like running a program's example tests); None when the task has
        no such check (``has_self_check`` False). Never raises on model output."""
        return None

    def self_check_many(self, items: Sequence[tuple[Problem, str]]) -> list[bool | None]:
        """``self_check`` of each (problem, text), in order (code tasks run the programs in parallel)."""
        return [self.self_check(problem, text) for problem, text in items]


DEFAULT_SYNTHETIC_LIMIT = 200


def check_limit(limit: int | None) -> None:
    """TaskError unless ``limit`` is None (all problems) or positive."""
    if limit is not None and limit < 1:
        raise TaskError(f"--limit {limit} selects no problems (use a positive number, or leave it out for all)")


def generate_distinct(make: Callable[[int], Problem], limit: int | None) -> list[Problem]:
    """``limit`` (default 200) problems from ``make(index)``, skipping repeated questions.

    ``make`` draws from one seeded generator, so the list depends only on the seed and options.
    """
    check_limit(limit)
    limit = DEFAULT_SYNTHETIC_LIMIT if limit is None else limit
    problems: list[Problem] = []
    seen: set[str] = set()
    for _ in range(50 * limit):
        problem = make(len(problems))
        if problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
            if len(problems) == limit:
                return problems
    raise TaskError(f"could only generate {len(problems)} distinct problems with these options; ask for fewer")
