"""Synthetic arithmetic in five difficulty levels, generated from a seed (or read from a JSONL file).

1: a + b (1..99)          2: a + b or a - b (1..999, never negative)
3: three operands, + - *  4: four or five operands, + - *, with parentheses
5: two- or three-step word problems (apples, coins, cakes, pages, money, groups)
"""
from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from ahalab.tasks.base import Task, TaskError, generate_distinct
from ahalab.tasks.jsonl_task import load_rows, question_answer_problems
from ahalab.tasks.safe_math import evaluate_expression
from ahalab.types import Problem


def _level1(rng: random.Random) -> str:
    return f"{rng.randint(1, 99)} + {rng.randint(1, 99)}"


def _level2(rng: random.Random) -> str:
    a, b = rng.randint(1, 999), rng.randint(1, 999)
    op = rng.choice("+-")
    return f"{max(a, b)} - {min(a, b)}" if op == "-" else f"{a} + {b}"


def _level3(rng: random.Random) -> str:
    a, b, c = (rng.randint(1, 30) for _ in range(3))
    return f"{a} {rng.choice('+-*')} {b} {rng.choice('+-*')} {c}"


def _level4(rng: random.Random) -> str:
    def build(numbers: list[int]) -> str:
        if len(numbers) == 1:
            return str(numbers[0])
        k = rng.randint(1, len(numbers) - 1)
        left, right = build(numbers[:k]), build(numbers[k:])
        left, right = (f"({s})" if " " in s else s for s in (left, right))
        return f"{left} {rng.choice('+-*')} {right}"

    while True:
        expression = build([rng.randint(1, 20) for _ in range(rng.randint(4, 5))])
        if abs(evaluate_expression(expression).value) <= 10_000:
            return expression


def _apples(rng: random.Random) -> tuple[str, int]:
    have, bags, per_bag = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 12)
    given = rng.randint(1, have + bags * per_bag - 1)
    return (f"Tom has {have} apples. He buys {bags} bags with {per_bag} apples in each bag, then gives {given} "
            f"apples to a friend. How many apples does Tom have now?", have + bags * per_bag - given)


def _coins(rng: random.Random) -> tuple[str, int]:
    boxes, per_box, found = rng.randint(2, 9), rng.randint(3, 25), rng.randint(1, 30)
    return (f"Mia has {boxes} boxes with {per_box} coins in each box. She finds {found} more coins. "
            f"How many coins does Mia have?", boxes * per_box + found)


def _cakes(rng: random.Random) -> tuple[str, int]:
    per_day, days = rng.randint(3, 15), rng.randint(2, 7)
    sold = rng.randint(1, per_day * days - 1)
    return (f"A baker makes {per_day} cakes every day for {days} days and sells {sold} of them. "
            f"How many cakes are left?", per_day * days - sold)


def _pages(rng: random.Random) -> tuple[str, int]:
    monday, tuesday = rng.randint(5, 60), rng.randint(5, 60)
    total = monday + tuesday + rng.randint(1, 200)
    return (f"A book has {total} pages. Sam reads {monday} pages on Monday and {tuesday} pages on Tuesday. "
            f"How many pages does Sam still have to read?", total - monday - tuesday)


def _money(rng: random.Random) -> tuple[str, int]:
    count, price = rng.randint(2, 6), rng.randint(2, 15)
    have = count * price + rng.randint(1, 50)
    return (f"Lena has {have} dollars. She buys {count} books that cost {price} dollars each. "
            f"How many dollars does Lena have left?", have - count * price)


def _groups(rng: random.Random) -> tuple[str, int]:
    groups, size, joining = rng.randint(2, 8), rng.randint(2, 12), rng.randint(1, 5)
    return (f"{groups * size} students are split equally into {groups} groups. Then {joining} more students "
            f"join each group. How many students are in each group now?", size + joining)


_WORD_PROBLEMS = (_apples, _coins, _cakes, _pages, _money, _groups)
_EXPRESSION_LEVELS: dict[int, Callable[[random.Random], str]] = {1: _level1, 2: _level2, 3: _level3, 4: _level4}
LEVELS = (1, 2, 3, 4, 5)


def make_question(level: int, rng: random.Random) -> tuple[str, int]:
    """One (question, integer answer) of ``level``, drawn from ``rng``."""
    if level == 5:
        return rng.choice(_WORD_PROBLEMS)(rng)
    expression = _EXPRESSION_LEVELS[level](rng)
    return f"What is {expression}?", int(evaluate_expression(expression).value)


def _parse_levels(value: Any) -> list[int]:
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        levels = [int(x) for x in items]
    except (TypeError, ValueError):
        levels = []
    if not levels or any(level not in LEVELS for level in levels):
        raise TaskError(f"arithmetic level must be 1..5 (got {value!r})")
    return levels


class ArithmeticTask(Task):
    """Synthetic arithmetic; options ``level`` (1..5, default 1) or ``levels`` (e.g. [1, 3, 5]) to mix.

    With several levels, problem i has level ``levels[i % len(levels)]`` (recorded in meta["level"]).
    """

    name = "arithmetic"
    answer_hint = "a number"
    defaults = {"level": 1, "levels": None}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.levels = _parse_levels(o["levels"] if o["levels"] is not None else o["level"])

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """``limit`` (default 200) distinct problems generated from ``seed``, or the first ``limit`` of a JSONL file
        with question/answer fields."""
        if data is not None:
            return question_answer_problems(load_rows(data, limit), "arith")
        rng = random.Random(seed)

        def make(index: int) -> Problem:
            level = self.levels[index % len(self.levels)]
            question, answer = make_question(level, rng)
            return Problem(id=f"arith-L{level}-s{seed}-{index:05d}", question=question, answer=str(answer),
                           meta={"level": level})

        return generate_distinct(make, limit)
