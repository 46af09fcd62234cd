"""A safe exact evaluator for arithmetic expressions written by a model (numbers, + - * /, parentheses).

Nothing is ever executed: the text is checked against a character whitelist, parsed with
``ast.parse(mode="eval")`` and only number literals, unary +/- and binary + - * / nodes are
evaluated, with ``fractions.Fraction`` so that ``8 / (3 - 8 / 3)`` is exactly 24.
"""
from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from fractions import Fraction

MAX_CHARS = 500
MAX_DEPTH = 50
MAX_LITERAL = 10**12

# Spellings models use for the four operations, mapped to Python's.
_SPELLINGS = {"\\times": "*", "\\cdot": "*", "\\div": "/", "\\left": "", "\\right": "", "×": "*", "·": "*",
              "⋅": "*", "∗": "*", "÷": "/", "−": "-", "–": "-", "$": "", "\\(": "", "\\)": ""}
_ALLOWED_CHARS = frozenset("0123456789.+-*/() \t\n")
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class InvalidExpression(ValueError):
    """The text is not a valid arithmetic expression (or divides by zero)."""


@dataclass(frozen=True)
class Evaluated:
    """An expression's exact value and the number literals it uses, in order."""

    value: Fraction
    numbers: tuple[Fraction, ...]


def evaluate_expression(text: str) -> Evaluated:
    """Exactly evaluate ``text``; raise InvalidExpression for anything but numbers, + - * / and parentheses."""
    if len(text) > MAX_CHARS:
        raise InvalidExpression(f"longer than {MAX_CHARS} characters")
    for spelling, python in _SPELLINGS.items():
        text = text.replace(spelling, python)
    bad = set(text) - _ALLOWED_CHARS
    if bad:
        raise InvalidExpression(f"characters not allowed: {''.join(sorted(bad))[:20]!r}")
    _check_depth(text)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise InvalidExpression(f"not an expression ({type(e).__name__})") from None
    numbers: list[Fraction] = []
    try:
        value = _evaluate(tree.body, numbers)
    except RecursionError:  # e.g. hundreds of chained unary minuses
        raise InvalidExpression("expression nested too deeply") from None
    return Evaluated(value=value, numbers=tuple(numbers))


def _check_depth(text: str) -> None:
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise InvalidExpression(f"parentheses nested deeper than {MAX_DEPTH}")
        elif ch == ")":
            depth -= 1


def _evaluate(node: ast.AST, numbers: list[Fraction]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        if not abs(node.value) <= MAX_LITERAL:  # also rejects inf/nan
            raise InvalidExpression(f"number larger than {MAX_LITERAL}")
        # repr keeps what was written for decimals: Fraction("0.1") == 1/10, not the binary float.
        value = Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value))
        numbers.append(value)
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _evaluate(node.operand, numbers)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, numbers), _evaluate(node.right, numbers)
        if isinstance(node.op, ast.Div) and right == 0:
            raise InvalidExpression("division by zero")
        return _BINARY[type(node.op)](left, right)
    raise InvalidExpression(f"not allowed in an arithmetic expression: {type(node).__name__}")
