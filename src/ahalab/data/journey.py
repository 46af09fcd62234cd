"""Journey learning: traces that keep a wrong attempt and its correction, each paired with its shortcut.

(a) ``journeys_from_samples``: from a teacher's own samples for one problem, a wrong attempt, a
    reflection that says what is wrong without giving the answer away ("Wait, 50 - 98 + 54 gives
    6, not 23. Let me re-check."), then a correct attempt, in one ``<think>``.
(b) ``journeys_from_search``: the countdown program teacher's search with its dead ends and
    backtracking, against the same teacher's direct derivation (same winning line, no dead ends).

Every ``Pair`` keeps the shortcut counterpart (the correct attempt alone), so journey and
shortcut training sets have the same problems and size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ahalab.data.dataset import make_row, reasoning_of
from ahalab.data.filters import GradedTrace
from ahalab.data.programs import CountdownTeacher, number
from ahalab.tasks.base import Task
from ahalab.tasks.countdown import CountdownTask
from ahalab.tasks.safe_math import InvalidExpression, evaluate_expression
from ahalab.types import Problem

MAX_WRONG_CHARS = 2000


@dataclass
class Pair:
    """One problem's journey trace and its shortcut: reasoning texts and the (correct) final answer."""

    problem: Problem
    journey: str
    shortcut: str
    answer: str
    teacher: str

    def rows(self, task: Task, fmt: str = "r1") -> tuple[dict, dict]:
        """(journey row, shortcut row) for the datasets."""
        return (make_row(self.problem, task, self.journey, self.answer, self.teacher, "journey", fmt),
                make_row(self.problem, task, self.shortcut, self.answer, self.teacher, "shortcut", fmt))


def reflection(task: Task, problem: Problem, wrong: str | None) -> str:
    """A short "Wait, ..." that names what is wrong with the answer ``wrong`` without revealing the right one."""
    if wrong is None:
        return "Wait, I never reached a clear answer. Let me start again, more carefully."
    if isinstance(task, CountdownTask):
        try:
            result = evaluate_expression(wrong)
        except InvalidExpression:
            return f"Wait, {wrong} is not a valid expression. Let me re-check."
        used = sorted(int(v) if v.denominator == 1 else v for v in result.numbers)
        if used != sorted(problem.meta["numbers"]):
            return (f"Wait, {wrong} uses {', '.join(number(v) for v in result.numbers)}, not each of "
                    f"{', '.join(map(str, problem.meta['numbers']))} exactly once. Let me re-check.")
        return f"Wait, {wrong} gives {number(result.value)}, not {problem.meta['target']}. Let me re-check."
    return f"Wait, let me double-check that {wrong} is right. Going through it again carefully."


def _wrong_attempt(sample: GradedTrace) -> str:
    """The wrong sample's reasoning (its tail, if long), closed with the answer it reached."""
    reasoning = reasoning_of(sample.trace)
    if len(reasoning) > MAX_WRONG_CHARS:
        reasoning = "..." + reasoning[-MAX_WRONG_CHARS:]
    ending = f"\nSo the answer is {sample.answer}." if sample.answer else ""
    return reasoning + ending


def journey_from_samples(task: Task, samples: Sequence[GradedTrace]) -> Pair | None:
    """One problem's pair from its samples, or None without both a wrong and a correct one.

    The wrong attempt is the shortest well-formed wrong sample (an answer reached, the reasoning
    closed with ``</think>``), else the shortest wrong one; the correct attempt is the shortest correct
    sample.
    """
    right = [s for s in samples if s.correct]
    wrong = [s for s in samples if not s.correct]
    if not right or not wrong:
        return None
    correct = min(right, key=lambda s: (len(s.trace.full_text()), s.trace.sample))
    mistake = min(wrong, key=lambda s: (s.answer is None, "</think>" not in s.trace.full_text(),
                                        len(s.trace.full_text()), s.trace.sample))
    shortcut = reasoning_of(correct.trace)
    journey = "\n".join([_wrong_attempt(mistake), reflection(task, correct.problem, mistake.answer), shortcut])
    return Pair(correct.problem, journey, shortcut, correct.answer, correct.trace.teacher)


def journeys_from_samples(task: Task, graded: Sequence[GradedTrace]) -> list[Pair]:
    """Pairs for every problem whose samples include both a wrong and a correct answer, in problem order."""
    by_problem: dict[str, list[GradedTrace]] = {}
    for g in graded:
        by_problem.setdefault(g.problem.id, []).append(g)
    pairs = (journey_from_samples(task, samples) for samples in by_problem.values())
    return [p for p in pairs if p is not None]


def journeys_from_search(problems: Sequence[Problem], max_dead_ends: int = 3, min_dead_ends: int = 1,
                         inner_tries: int = 2) -> list[Pair]:
    """Countdown pairs: the search with dead ends (at least ``min_dead_ends``) and the direct derivation."""
    search = CountdownTeacher(max_dead_ends=max_dead_ends, min_dead_ends=min_dead_ends, inner_tries=inner_tries)
    direct = CountdownTeacher(max_dead_ends=0)
    task = CountdownTask()
    journeys = search.generate(list(problems))
    shortcuts = direct.generate(list(problems))
    pairs = []
    for problem, j, s in zip(problems, journeys, shortcuts):
        answer = task.extract(s.text)
        pairs.append(Pair(problem, reasoning_of(j), reasoning_of(s), answer, search.name))
    return pairs
