"""Program teachers: solve a task exactly and write the steps in natural language, in the r1 layout.

* ``ArithmeticTeacher`` evaluates the expression one operation at a time (parentheses, then
  multiplication, then left to right), saying why each step comes next. ``style="column"`` (the
  default) works each whole-number operation digit by digit on a scratchpad, one short line per
  column with its carry or borrow, the way small models are known to learn arithmetic;
  ``style="decompose"`` splits operands into tens and ones in one line ("47 + 38 = 47 + 30 + 8 = ...").
  ``style="compact"`` is the column scratchpad without the narration a single operation does not need
  (no "Let me work out ...", no restated result, no "So the answer is"): a third fewer tokens to learn,
  generate and train on for two-digit additions.
* ``CountdownTeacher`` searches the way a person does: moves ranked by how close their result comes
  to the target, a short note on each dead end, then the move that works (Stream-of-Search, but
  bounded). ``max_dead_ends=0`` writes only the winning line (the shortcut); ``min_dead_ends`` adds
  dead ends, taken from the ranked moves, where the best-ranked move happens to work at once.
* ``CodegenTeacher`` states the plan of a ``codegen`` problem and gives its reference function.

Every trace is ``<think>\\n...\\n</think>\\n<answer>...</answer>`` and checks with the task verifier.
Traces are deterministic: the sample index does not change them.
"""
from __future__ import annotations

import ast
import functools
import re
from abc import abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

from ahalab.data.teachers import Emit, Key, Teacher, Trace
from ahalab.errors import UserError
from ahalab.tasks.countdown import solve_countdown
from ahalab.tasks.safe_math import InvalidExpression, evaluate_expression
from ahalab.types import Problem

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}
_AST_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_WHAT_IS = re.compile(r"^\s*what is (.+?)\s*\?\s*$", re.IGNORECASE)


class UnsolvableError(ValueError):
    """The program teacher cannot solve this problem."""


def number(value: Fraction) -> str:
    """A value as a person writes it: "7", "-3", "8/3"."""
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def think_answer(reasoning: str, answer: str) -> str:
    """The r1 assistant layout."""
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>{answer}</answer>"


# --- expressions --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expr:
    """An arithmetic expression tree: a number (``op`` None) or ``left op right``."""

    value: Fraction
    op: str | None = None
    left: Expr | None = None
    right: Expr | None = None

    @staticmethod
    def combine(left: Expr, op: str, right: Expr) -> Expr:
        a, b = left.value, right.value
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        if value is None:
            raise UnsolvableError("division by zero")
        return Expr(value, op, left, right)

    def text(self, parent: str | None = None, right_side: bool = False) -> str:
        """Written with the fewest parentheses; a negative or fractional right operand is parenthesised."""
        if self.op is None:
            s = number(self.value)
            return f"({s})" if right_side and (self.value < 0 or self.value.denominator != 1) else s
        s = f"{self.left.text(self.op)} {self.op} {self.right.text(self.op, True)}"
        if parent is None:
            return s
        p, q = _PRECEDENCE[parent], _PRECEDENCE[self.op]
        wrap = q < p or (right_side and q == p and parent in "-/")
        return f"({s})" if wrap else s


def parse_expression(text: str) -> Expr:
    """An Expr from ``text`` (numbers, + - * /, parentheses), validated by the task's safe evaluator first."""
    try:
        evaluate_expression(text)
    except InvalidExpression as e:
        raise UnsolvableError(f"not an arithmetic expression: {e}") from None

    def build(node: ast.AST) -> Expr:
        if isinstance(node, ast.Constant):
            return Expr(Fraction(node.value) if isinstance(node.value, int) else Fraction(repr(node.value)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return Expr(-build(node.operand).value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
            return build(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_OPS:
            return Expr.combine(build(node.left), _AST_OPS[type(node.op)], build(node.right))
        raise UnsolvableError(f"unsupported expression part {type(node).__name__}")

    return build(ast.parse(text.strip(), mode="eval").body)


def _next_step(e: Expr) -> Expr:
    """The operation evaluated next: the leftmost one whose operands are both numbers (in evaluation order)."""
    if e.left.op is not None:
        return _next_step(e.left)
    if e.right.op is not None:
        return _next_step(e.right)
    return e


def _replace(e: Expr, target: Expr) -> Expr:
    if e is target:
        return Expr(e.value)
    if e.op is None:
        return e
    return Expr(e.value, e.op, _replace(e.left, target), _replace(e.right, target))


def _has_parent_wrapping(e: Expr, target: Expr, parent: str | None = None, right_side: bool = False) -> bool:
    """Whether ``target`` is written inside parentheses in ``e``."""
    if e is target:
        return parent is not None and e.text(parent, right_side).startswith("(")
    if e.op is None:
        return False
    return _has_parent_wrapping(e.left, target, e.op) or _has_parent_wrapping(e.right, target, e.op, True)


def _ops(e: Expr) -> set[str]:
    return set() if e.op is None else {e.op} | _ops(e.left) | _ops(e.right)


def _one_operation(e: Expr) -> bool:
    return e.op is not None and e.left.op is None and e.right.op is None


_PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")


def _digits(n: int) -> list[int]:
    """Digits of ``n`` >= 0, ones first."""
    return [int(d) for d in reversed(str(n))]


def _place(i: int) -> str:
    return _PLACES[i] if i < len(_PLACES) else f"digit {i + 1}"


def _column_step(work: str, value: int, carry: int, written: str) -> tuple[str, int, str]:
    """One column: "<work> (+ carry c) = t, write d(, carry c'). So far <digits>." and the new carry and digits."""
    total = value + carry
    new_carry, digit = divmod(total, 10)
    written = f"{digit}{written}"
    line = (f"{work}" + (f" + carry {carry}" if carry else "") + f" = {total}, write {digit}"
            + (f", carry {new_carry}" if new_carry else "") + f". So far {written}.")
    return line, new_carry, written


def column_add(a: int, b: int) -> list[str]:
    """``a + b`` (both >= 0) column by column from the ones, each line with its carry and the digits so far."""
    x, y = _digits(a), _digits(b)
    width = max(len(x), len(y))
    x, y = x + [0] * (width - len(x)), y + [0] * (width - len(y))
    lines, carry, written = [f"{a} + {b}, column by column:"], 0, ""
    for i in range(width):
        line, carry, written = _column_step(f"{_place(i)}: {x[i]} + {y[i]}", x[i] + y[i], carry, written)
        lines.append(line)
    if carry:
        lines.append(f"{_place(width)}: carry {carry}. So far {carry}{written}.")
    return lines + [f"{a} + {b} = {a + b}"]


def column_subtract(a: int, b: int) -> list[str]:
    """``a - b`` (a >= b >= 0) column by column from the ones, borrowing where a column is short."""
    x, y = _digits(a), _digits(b)
    y += [0] * (len(x) - len(y))
    lines, borrow, written = [f"{a} - {b}, column by column:"], 0, ""
    for i in range(len(x)):
        top = x[i] - borrow
        top_text = f"{x[i]} - borrow 1" if borrow else f"{x[i]}"
        borrow = 1 if top < y[i] else 0
        digit = top + 10 * borrow - y[i]
        written = f"{digit}{written}"
        step = f"{top_text} - {y[i]}" + (f": too small, borrow 1: {top + 10} - {y[i]}" if borrow else "")
        lines.append(f"{_place(i)}: {step} = {digit}. So far {written}.")
    return lines + [f"{a} - {b} = {a - b}"]


def column_multiply(a: int, b: int) -> list[str]:
    """``a * b`` (both >= 0): trailing zeros set aside, the longer number times each digit of the shorter
    (with carries), then the partial products added column by column."""
    zeros = sum(len(str(n)) - len(str(n).rstrip("0")) for n in (a, b)) if a and b else 0
    top, by = (int(str(n).rstrip("0")) if a and b else n for n in (a, b))
    if len(str(by)) > len(str(top)):
        top, by = by, top
    added = f"with {zeros} zero{'s' * (zeros > 1)} added"
    if top < 10:  # one digit each: nothing to carry
        return [f"{a} * {b} is {top} * {by} = {top * by} {added}", f"{a} * {b} = {a * b}"]
    lines = [f"{a} * {b}" + (f" is {top} * {by} {added}" if zeros else "") + ", digit by digit:"]
    partials: list[int] = []
    for i, d in enumerate(_digits(by)):
        carry, written = 0, ""
        for e in _digits(top):
            line, carry, written = _column_step(f"{e} * {d}", e * d, carry, written)
            lines.append(line)
        if carry:
            lines.append(f"carry {carry}. So far {carry}{written}.")
        shifted = top * d * 10 ** i
        lines.append(f"{top} * {d} = {top * d}" + (f", shifted {i} place{'s' * (i > 1)}: {shifted}" if i else ""))
        partials.append(shifted)
    total = partials[0]
    for partial in partials[1:]:
        lines += column_add(total, partial)
        total += partial
    if zeros:
        lines.append(f"{top} * {by} = {top * by}, {added}: {a * b}")
    return lines + [f"{a} * {b} = {a * b}"]


def column(a: int, op: str, b: int) -> list[str]:
    """Any whole-number ``a op b`` (+ - *, signs allowed) as one of the column methods on magnitudes."""
    negative = False
    if op == "*":
        work = column_multiply(abs(a), abs(b))
        negative = (a < 0) != (b < 0) and a * b != 0
    elif op == "+" and min(a, b) >= 0:
        work = column_add(a, b)
    elif op == "-" and a >= b >= 0:
        work = column_subtract(a, b)
    else:
        c = b if op == "+" else -b
        big, small = (a, c) if abs(a) >= abs(c) else (c, a)
        work = (column_add if (big >= 0) == (small >= 0) else column_subtract)(abs(big), abs(small))
        negative = big < 0
    inner = work[-1].split(" = ")[0]
    if not ((a, b) == (abs(a), abs(b)) and (op != "-" or a >= b)):
        result = {"+": a + b, "-": a - b, "*": a * b}[op]
        head = Expr.combine(Expr(Fraction(a)), op, Expr(Fraction(b))).text()
        work = [f"{head} = {'-' if negative else ''}({inner})"] + work + [f"{head} = {result}"]
    return [line if line.endswith((".", ":")) else line + "." for line in work[:-1]] + work[-1:]


def explain(a: Fraction, op: str, b: Fraction, style: str = "column") -> list[str]:
    """Lines working out one operation: on a scratchpad (``style`` "column" or "compact": whole numbers, see
    ``column``) or in one line split into easy parts (``style="decompose"``: "47 + 38 = 47 + 30 + 8 = 77 + 8 = 85")."""
    step = Expr.combine(Expr(a), op, Expr(b))
    result, head = step.value, step.text()
    if style != "decompose" and op in "+-*" and a.denominator == b.denominator == 1 and max(abs(a), abs(b)) >= 10:
        return column(int(a), op, int(b))
    whole = all(v.denominator == 1 and v >= 0 for v in (a, b, result))
    if whole and op in "+-" and a >= 10 and b >= 10 and b % 10:
        tens, ones = b - b % 10, b % 10
        partial = a + tens if op == "+" else a - tens
        return [f"{head} = {number(a)} {op} {number(tens)} {op} {number(ones)} = {number(partial)} {op} "
                f"{number(ones)} = {number(result)}"]
    if whole and op == "*" and a >= 10 and b >= 10 and b % 10:
        tens, ones = b - b % 10, b % 10
        return [f"{head} = {number(a)} * {number(tens)} + {number(a)} * {number(ones)} = {number(a * tens)} + "
                f"{number(a * ones)} = {number(result)}"]
    return [f"{head} = {number(result)}"]


def narrate(e: Expr, style: str = "column") -> list[str]:
    """Lines evaluating ``e`` one operation at a time, ending with its value (``style``: see ``explain``;
    "compact": a single operation's scratchpad alone, without the line restating its result)."""
    if e.op is None:
        return [f"The expression is just {number(e.value)}."]
    if style == "compact" and _one_operation(e):
        work = explain(e.left.value, e.op, e.right.value)
        return work[:-1] if len(work) > 1 else work
    lines = [f"Let me work out {e.text()} step by step."]
    while e.op is not None:
        step = _next_step(e)
        if e is step:
            lead = "Finally, " if len(lines) > 1 else ""
        elif _has_parent_wrapping(e, step):
            lead = "First the parentheses: "
        elif step.op in "*/" and _ops(e) & {"+", "-"}:
            lead = "Multiplication and division come before addition and subtraction: "
        else:
            lead = "From left to right: "
        e = _replace(e, step)
        work = explain(step.left.value, step.op, step.right.value, style)
        work[0] = lead + work[0]
        lines += work
        lines[-1] += "." if e.op is None else f". Now we have {e.text()}."
    return lines


# --- teachers -----------------------------------------------------------------------------------

class ProgramTeacher(Teacher):
    """A teacher that solves each problem with a program (``solve``); deterministic, no model involved."""

    @abstractmethod
    def solve(self, problem: Problem) -> str:
        """The whole assistant text for ``problem``; UnsolvableError if the program cannot solve it."""

    def _produce(self, todo: list[tuple[Problem, int]], emit: Emit) -> list[tuple[Key, str]]:
        failures: list[tuple[Key, str]] = []
        for problem, sample in todo:
            try:
                text = self.solve(problem)
            except UnsolvableError as e:
                failures.append(((problem.id, sample), str(e)))
                continue
            emit(Trace(teacher=self.name, problem_id=problem.id, sample=sample, text=text))
        return failures


class ArithmeticTeacher(ProgramTeacher):
    """Step-by-step evaluation of "What is <expression>?" questions (or ``meta["expression"]``)."""

    SETTINGS = ("style",)
    STYLES = ("column", "decompose", "compact")

    def __init__(self, style: str = "column", name: str | None = None) -> None:
        if style not in self.STYLES:
            raise UserError(f"ArithmeticTeacher style must be one of {', '.join(self.STYLES)} (got {style!r})")
        self.style = style
        self.name = name or f"program:arithmetic-{style}"

    def solve(self, problem: Problem) -> str:
        expression = problem.meta.get("expression")
        if expression is None:
            match = _WHAT_IS.match(problem.question)
            if match is None:
                raise UnsolvableError("no expression to evaluate: the question is not 'What is ...?' and "
                                      "meta has no 'expression'")
            expression = match.group(1)
        e = parse_expression(expression)
        lines = narrate(e, self.style)
        if not (self.style == "compact" and _one_operation(e)):
            lines.append(f"So the answer is {number(e.value)}.")
        return think_answer("\n".join(lines), number(e.value))


@dataclass(frozen=True)
class Move:
    """Combining two of the numbers: the state it leaves and how it reads."""

    text: str  # "100 - 93 = 7"
    result: Expr
    rest: tuple[Expr, ...]  # the other numbers, in their original order

    @property
    def state(self) -> tuple[Expr, ...]:
        return self.rest + (self.result,)


def _values(items: tuple[Expr, ...]) -> str:
    return ", ".join(number(e.value) for e in items)


class CountdownTeacher(ProgramTeacher):
    """Countdown by a person-like search (see the module docstring).

    Moves at each level are ranked: whole positive results first, then by distance to the target.
    Shown dead ends are the unreachable moves ranked above the one that works, at most
    ``max_dead_ends`` per level (at least ``min_dead_ends`` at the first level, borrowed from lower
    ranks); a dead end is looked into with at most ``inner_tries`` moves per level before backing up.
    Which moves can still reach the target is decided with the task's exact solver.
    """

    SETTINGS = ("max_dead_ends", "min_dead_ends", "inner_tries")

    def __init__(self, max_dead_ends: int = 3, min_dead_ends: int = 0, inner_tries: int = 2,
                 name: str | None = None) -> None:
        if min(max_dead_ends, min_dead_ends) < 0 or inner_tries < 1:
            raise UserError("CountdownTeacher needs max_dead_ends >= 0, min_dead_ends >= 0 and inner_tries >= 1")
        self.max_dead_ends, self.min_dead_ends, self.inner_tries = max_dead_ends, min_dead_ends, inner_tries
        style = "direct" if max_dead_ends == min_dead_ends == 0 else f"search{max_dead_ends}-{min_dead_ends}"
        self.name = name or f"program:countdown-{style}"

    def solve(self, problem: Problem) -> str:
        numbers, target = problem.meta.get("numbers"), problem.meta.get("target")
        if numbers is None or target is None:
            raise UnsolvableError("countdown problems need meta 'numbers' and 'target'")
        if solve_countdown(list(numbers), int(target)) is None:
            raise UnsolvableError(f"no expression of {numbers} makes {target}")
        goal = Fraction(target)
        start = tuple(Expr(Fraction(n)) for n in numbers)
        lines = [f"I need to make {target} from {_values(start)}, using each number once."]
        answer = self._solve(start, goal, lines, self.min_dead_ends)
        lines.append(f"So the answer is {answer.text()} = {target}.")
        return think_answer("\n".join(lines), answer.text())

    def _solve(self, items: tuple[Expr, ...], goal: Fraction, lines: list[str], min_dead_ends: int) -> Expr:
        """Write the search from a state that can reach ``goal``; return the winning expression."""
        moves = _ranked_moves(items, goal)
        if len(items) == 2:
            win = next(m for m in moves if m.result.value == goal)
            lines.append(f"{win.text}. Found it.")
            return win.result
        reachable = [_reachable(m.state, goal) for m in moves]
        first = reachable.index(True)
        before = [m for m, ok in zip(moves[:first], reachable) if not ok][:self.max_dead_ends]
        after = [m for m, ok in zip(moves[first + 1:], reachable[first + 1:]) if not ok]
        shown = before + after[:max(0, min_dead_ends - len(before))]
        for move in shown:
            lines.append(f"Try {move.text}. Left: {_values(move.state)}.")
            self._dead_end(move.state, goal, lines)
        win = moves[first]
        lines.append(f"Try {win.text}. Left: {_values(win.state)}.")
        return self._solve(win.state, goal, lines, 0)

    def _dead_end(self, items: tuple[Expr, ...], goal: Fraction, lines: list[str]) -> None:
        """A short look into a state that cannot reach ``goal``, ending in a note to back up."""
        moves = _ranked_moves(items, goal)
        if len(items) == 2:
            closest = " and ".join(f"{m.text}" for m in moves[:2])
            lines.append(f"Closest: {closest}; not {number(goal)}. Back up.")
            return
        for move in moves[:self.inner_tries]:
            lines.append(f"  Try {move.text}. Left: {_values(move.state)}.")
            best = _ranked_moves(move.state, goal)[0]
            if len(move.state) == 2:
                lines.append(f"  Closest: {best.text}; not {number(goal)}.")
            else:
                lines.append(f"  Nothing close from there (best {best.text}).")
        lines.append(f"No way to {number(goal)} from {_values(items)}. Back up.")


def _moves(items: tuple[Expr, ...]) -> Iterator[Move]:
    """Every way to combine two of the numbers (both operand orders for - and /), duplicates removed."""
    seen: set[tuple[Fraction, tuple[Fraction, ...]]] = set()
    for i in range(len(items)):
        for j in range(len(items)):
            if i == j:
                continue
            a, b = items[i], items[j]
            rest = tuple(e for k, e in enumerate(items) if k not in (i, j))
            for op in "+-*/":
                if (op in "+*" and i > j) or (op == "/" and b.value == 0):
                    continue
                result = Expr.combine(a, op, b)
                key = (result.value, tuple(sorted(e.value for e in rest)))
                if key not in seen:
                    seen.add(key)
                    yield Move(f"{number(a.value)} {op} {number(b.value)} = {number(result.value)}", result, rest)


def _ranked_moves(items: tuple[Expr, ...], goal: Fraction) -> list[Move]:
    """Promising moves first: whole positive results before the rest, then the closest to ``goal``."""
    def rank(m: Move) -> tuple[bool, Fraction]:
        v = m.result.value
        return not (v.denominator == 1 and v > 0), abs(v - goal)

    return sorted(_moves(items), key=rank)


def _reachable(state: tuple[Expr, ...], goal: Fraction) -> bool:
    return _reachable_values(tuple(sorted(e.value for e in state)), goal)


@functools.lru_cache(maxsize=65536)
def _reachable_values(values: tuple[Fraction, ...], goal: Fraction) -> bool:
    """Whether some expression of ``values`` (each once) equals ``goal``: the task's exact solver decides."""
    if len(values) == 1:
        return values[0] == goal
    return solve_countdown(list(values), goal) is not None  # exact over Fractions too


class CodegenTeacher(ProgramTeacher):
    """Codegen problems: a short plan from the problem's spec, then its reference function in a ```python block."""

    SETTINGS = ()

    def __init__(self, name: str | None = None) -> None:
        self.name = name or "program:codegen"

    def solve(self, problem: Problem) -> str:
        solution, plan, entry = (problem.meta.get(k) for k in ("solution", "plan", "entry_point"))
        if not (solution and plan and entry):
            raise UnsolvableError("codegen problems need meta 'solution', 'plan' and 'entry_point'")
        examples = problem.meta.get("visible_tests") or []
        lines = [f"The function {entry} {plan}.",
                 "Plan: handle the simplest case first, then build the result step by step."]
        lines += [f"Check against the example: {t.removeprefix('assert ')}." for t in examples[:1]]
        return think_answer("\n".join(lines), f"\n```python\n{solution}```\n")


PROGRAM_TEACHERS = {"arithmetic": ArithmeticTeacher, "countdown": CountdownTeacher, "codegen": CodegenTeacher}
