"""Countdown (as in TinyZero): combine the given numbers, each exactly once, with + - * / to hit a target.

The verifier checks the model's expression, not a number: it is evaluated exactly (Fractions, so
``8 / (3 - 8 / 3)`` counts), its number literals must be the given numbers as a multiset, and its
value must equal the target.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

from ahalab.tasks.answers import extract_answer
from ahalab.tasks.base import Task, TaskError, generate_distinct
from ahalab.tasks.jsonl_task import Row, field, load_rows
from ahalab.tasks.safe_math import Evaluated, InvalidExpression, evaluate_expression
from ahalab.types import Problem

_OPERATORS = "+-*/×÷−"


def _results(a: Fraction, b: Fraction) -> Iterator[tuple[Fraction, str, bool]]:
    """Every value one operation makes of ``a`` and ``b``: (value, operator, operands swapped)."""
    yield a + b, "+", False
    yield a * b, "*", False
    yield a - b, "-", False
    yield b - a, "-", True
    if b:
        yield a / b, "/", False
    if a:
        yield b / a, "/", True


Memo = dict[tuple[Fraction, ...], frozenset[Fraction]]


def _reachable(values: tuple[Fraction, ...], memo: Memo) -> frozenset[Fraction]:
    """All values an expression using each of ``values`` exactly once can take (``values`` sorted)."""
    if len(values) == 1:
        return frozenset(values)
    if values not in memo:
        found: set[Fraction] = set()
        for i in range(len(values)):
            for j in range(i + 1, len(values)):
                rest = values[:i] + values[i + 1:j] + values[j + 1:]
                for value, _, _ in _results(values[i], values[j]):
                    found |= _reachable(tuple(sorted(rest + (value,))), memo)
        memo[values] = frozenset(found)
    return memo[values]


def solve_countdown(numbers: list[int], target: int, memo: Memo | None = None) -> str | None:
    """An expression using each of ``numbers`` exactly once that equals ``target`` exactly, or None.

    Exhaustive over all ways to combine two numbers at a time, so None means unsolvable; practical
    for up to 5 numbers. ``memo`` (reachable values per multiset) may be shared between calls.
    """
    memo = {} if memo is None else memo
    goal = Fraction(target)

    def solvable(items: list[tuple[Fraction, str]]) -> bool:
        return goal in _reachable(tuple(sorted(v for v, _ in items)), memo)

    def search(items: list[tuple[Fraction, str]]) -> str:  # items is solvable: descend through solvable states
        if len(items) == 1:
            return items[0][1]
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                rest = items[:i] + items[i + 1:j] + items[j + 1:]
                (a, ea), (b, eb) = items[i], items[j]
                for value, op, swapped in _results(a, b):
                    left, right = (eb, ea) if swapped else (ea, eb)
                    merged = rest + [(value, f"({left} {op} {right})")]
                    if solvable(merged):
                        return search(merged)
        raise AssertionError("unreachable: a solvable state always has a solvable successor")

    items = [(Fraction(n), str(n)) for n in numbers]
    if not items or not solvable(items):
        return None
    expression = search(items)
    return expression[1:-1] if len(items) > 1 else expression  # drop the outermost parentheses


def _evaluate(expression: str) -> Evaluated | None:
    try:
        return evaluate_expression(expression)
    except InvalidExpression:
        return None


def countdown_correct(expression: str, numbers: list[int], target: int) -> bool:
    """Whether ``expression`` uses exactly ``numbers`` (as a multiset) and equals ``target`` exactly."""
    result = _evaluate(expression)
    return (result is not None and result.value == target
            and Counter(result.numbers) == Counter(Fraction(n) for n in numbers))


def expression_part(text: str) -> str | None:
    """The expression in an answer like "(1 + 2) * 3 = 9" or "9 = (1 + 2) * 3": the first side with an operator."""
    sides = [side.strip() for side in text.split("=") if side.strip()]
    return next((s for s in sides if any(op in s[1:] for op in _OPERATORS)), sides[0] if sides else None)


def countdown_question(numbers: list[int], target: int) -> str:
    return (f"Using the numbers {numbers}, create an equation that equals {target}. You can use basic arithmetic "
            f"operations (+, -, *, /) and each number must be used exactly once.")


def _problem(problem_id: str, numbers: list[int], target: int, **meta: Any) -> Problem:
    return Problem(id=problem_id, question=countdown_question(numbers, target), answer=str(target),
                   meta={"numbers": numbers, "target": target, **meta})


def _as_int(value: Any) -> int | None:
    """``value`` if it is an integer (a JSON integer, or a string of one such as "23"); None otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,30}", value.strip()):
        return int(value)
    return None


def _int_list(row: Row, name: str) -> list[int]:
    """Field ``name``: a non-empty list of integers, or a string of them separated by commas ("30,100,93")."""
    field(row, name)  # missing or empty: a clear error naming the field
    value = row[1][name]
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    numbers = [_as_int(x) for x in items]
    if not numbers or None in numbers:
        raise TaskError(f"{row[0]}: field '{name}' must be a list of integers (got {value!r:.100})")
    return numbers


def _int(row: Row, name: str) -> int:
    field(row, name)
    value = _as_int(row[1][name])
    if value is None:
        raise TaskError(f"{row[0]}: field '{name}' must be an integer (got {row[1][name]!r:.100})")
    return value


def _file_problem(index: int, row: Row) -> Problem:
    """A row {"input": "30,100,93", "output": "23"} (the d1 files) or {"numbers" (or "nums"): [...], "target": 23}."""
    obj = row[1]
    if "input" in obj or "output" in obj:
        numbers, target = _int_list(row, "input"), _int(row, "output")
    else:
        numbers, target = _int_list(row, "nums" if "nums" in obj else "numbers"), _int(row, "target")
    return _problem(f"countdown-{index:05d}", numbers, target)


class CountdownTask(Task):
    """Countdown; generated instances are always solvable (checked with ``solve_countdown``).

    Options: ``num_numbers`` (default 3; 2..5), ``min_number``/``max_number`` (1..100), ``max_target`` (100).
    ``equivalent(a, b)`` (used for voting) holds when both expressions are valid, use the same
    numbers and have the same value; grading checks the expression against the problem's numbers
    and target (``check``).
    """

    name = "countdown"
    extractors = ("answer_tag", "boxed", "answer_line", "last_line")
    answer_hint = "an expression such as (1 + 2) / 3"
    defaults = {"num_numbers": 3, "min_number": 1, "max_number": 100, "max_target": 100}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        try:
            o: dict[str, int] | None = {key: int(value) for key, value in self.options.items()}
        except (TypeError, ValueError):
            o = None
        if o is None or not (2 <= o["num_numbers"] <= 5 and 1 <= o["min_number"] <= o["max_number"]
                             and o["max_target"] >= 1):
            raise TaskError(f"countdown options need integers with 2 <= num_numbers <= 5, "
                            f"1 <= min_number <= max_number and max_target >= 1 (got {options})")
        self.options = o

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """``limit`` (default 200) distinct solvable instances generated from ``seed``, or the first ``limit`` rows of
        a JSONL file."""
        if data is not None:
            return [_file_problem(i, row) for i, row in enumerate(load_rows(data, limit))]
        rng = random.Random(seed)
        o = self.options

        def make(index: int) -> Problem:
            for _ in range(1000):
                numbers = [rng.randint(o["min_number"], o["max_number"]) for _ in range(o["num_numbers"])]
                memo: Memo = {}
                reachable = _reachable(tuple(sorted(Fraction(n) for n in numbers)), memo)
                targets = sorted(int(v) for v in reachable if v.denominator == 1 and 1 <= v <= o["max_target"])
                if targets:
                    target = rng.choice(targets)
                    solution = solve_countdown(numbers, target, memo)
                    if solution is not None:
                        return _problem(f"countdown-n{len(numbers)}-s{seed}-{index:05d}", numbers, target,
                                        solution=solution)
            raise TaskError(f"no solvable countdown instance found with options {o}")

        return generate_distinct(make, limit)

    def extract(self, text: str) -> str | None:
        """The expression the model gave (from the <answer> tag, a box, an "Answer:" line, or the last line)."""
        answer = extract_answer(text, self.extractors)
        return None if answer is None else expression_part(answer)

    def check(self, problem: Problem, answer: str) -> bool:
        return countdown_correct(answer, problem.meta["numbers"], problem.meta["target"])

    has_self_check = True

    def self_check(self, problem: Problem, text: str) -> bool:
        """Whether ``text``'s expression uses the problem's numbers and reaches its target: grading is already
        gold-free, as ``check`` reads only ``problem.meta`` (never ``problem.answer``) and ``grade`` never raises."""
        return self.is_correct(problem, text)

    def equivalent(self, a: str, b: str) -> bool:
        x, y = _evaluate(a), _evaluate(b)
        return x is not None and y is not None and x.value == y.value and Counter(x.numbers) == Counter(y.numbers)
