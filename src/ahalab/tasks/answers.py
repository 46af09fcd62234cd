"""Final-answer extraction (named extractors tried in a per-task order) and answer equivalence.

Extractors take a completion and return the answer string or None. ``extract_answer`` tries them
in order and returns the first hit. ``math_equal`` compares two answers: plain numbers exactly
(``Fraction``; a plain-number gold accepts only a plain number), everything else with math-verify,
run in child processes with a hard time limit (see ``_VerifierPool``) so that hostile answers and
non-main threads are both safe.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import subprocess
import sys
import threading
import unicodedata
from collections.abc import Callable, Sequence
from fractions import Fraction

from ahalab.tasks.safe_math import InvalidExpression, evaluate_expression

MAX_TEXT_CHARS = 100_000  # longer completions: only the tail is searched
MAX_ANSWER_CHARS = 200  # longer "answers" are not answers: not extracted, never equal
VERIFY_TIMEOUT_S = 2.0  # hard wall-clock limit for one math-verify comparison
WORKER_START_TIMEOUT_S = 60.0

# --- extraction -------------------------------------------------------------------------------

_LEADING_JUNK = " \t\r\n*_`\"'“”‘’"  # whitespace, markdown emphasis and quotes
_TRAILING_JUNK = _LEADING_JUNK + ".,;"  # ... and trailing punctuation
_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE = re.compile(r"[{}]")
_ANSWER_LABEL = re.compile(r"\banswer\b[\s*_]*(?:\bis\b|:|：)[ \t*_:]*", re.IGNORECASE)
_NUMBER = re.compile(r"(?:(?<![\w)\]])[-−])?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def clean_answer(text: str) -> str | None:
    """Strip whitespace, markdown emphasis, trailing punctuation and one pair of math delimiters."""
    s = text.lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
    for left, right in _MATH_DELIMITERS:
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left):len(s) - len(right)].lstrip(_LEADING_JUNK).rstrip(_TRAILING_JUNK)
            break
    return s if s and len(s) <= MAX_ANSWER_CHARS else None


def _balanced_group(text: str, start: int) -> str | None:
    """The text from ``start`` up to the brace closing an already opened ``{``, or None if unclosed."""
    depth = 1
    for m in _BRACE.finditer(text, start):
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return text[start:m.start()]
    return None


def boxed(text: str) -> str | None:
    r"""Content of the last complete ``\boxed{...}`` (or ``\fbox{...}``), braces balanced."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts[-5:]):  # a truncated last box falls back to the one before
        content = _balanced_group(text, start)
        if content is not None and content.strip():
            return clean_answer(content)
    return None


def answer_line(text: str) -> str | None:
    """The answer after the last "Answer: X" / "The (final) answer is X", up to the line or sentence end."""
    for m in reversed(list(_ANSWER_LABEL.finditer(text))):
        end = text.find("\n", m.end())
        content = re.split(r"\.\s", text[m.end():end if end >= 0 else len(text)], maxsplit=1)[0]
        answer = boxed(content) or clean_answer(content)
        if answer:
            return answer
    return None


def answer_tag(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>`` (an unclosed last tag runs to the end of the text).

    A box or an "Answer:" line inside the tag is unwrapped: ``<answer>\\boxed{5}</answer>`` gives "5".
    """
    start = text.lower().rfind("<answer>")
    if start < 0:
        return None
    body = text[start + len("<answer>"):]
    end = body.lower().find("</answer>")
    body = body if end < 0 else body[:end]
    return boxed(body) or answer_line(body) or clean_answer(body)


def last_number(text: str) -> str | None:
    """The last number in the text, thousands commas removed ("1,234.5" -> "1234.5", "−3" -> "-3")."""
    match = None
    for match in _NUMBER.finditer(text):
        pass
    return None if match is None else match.group().replace(",", "").replace("−", "-")


def last_line(text: str) -> str | None:
    """The last non-empty line."""
    lines = [line for line in text.splitlines() if line.strip()]
    return clean_answer(lines[-1]) if lines else None


def whole(text: str) -> str | None:
    """The whole text when it is one short line (a bare answer, as the ``direct`` format asks for)."""
    s = text.strip()
    return clean_answer(s) if s and len(s) <= 60 and "\n" not in s else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "answer_tag": answer_tag,
    "boxed": boxed,
    "answer_line": answer_line,
    "last_number": last_number,
    "last_line": last_line,
    "whole": whole,
}


def check_extractors(order: Sequence[str]) -> tuple[str, ...]:
    """``order`` as a tuple; ValueError naming the valid extractors if one is unknown."""
    unknown = [name for name in order if name not in EXTRACTORS]
    if unknown or not order:
        raise ValueError(f"unknown answer extractor(s) {unknown or '(none given)'}; valid: {', '.join(EXTRACTORS)}")
    return tuple(order)


def extract_answer(text: str, order: Sequence[str]) -> str | None:
    """The first answer found by the extractors named in ``order`` (only the text's tail is searched)."""
    text = text[-MAX_TEXT_CHARS:]
    for name in check_extractors(order):
        answer = EXTRACTORS[name](text)
        if answer:
            return answer
    return None


# --- equivalence ------------------------------------------------------------------------------

# One spelling per symbol, applied before any comparison, so that a dressed-up expression is still
# seen as one ("12\,+\,5", "22 − 5"). Spacing commands become spaces; "1{,}000" is 1,000.
_MINUS_SIGNS = str.maketrans({c: "-" for c in "\u2212\u2013\u2012\u2014\ufe63\uff0d"})
_INVISIBLE = str.maketrans({c: None for c in "\u200b\u200c\u200d\u2060\ufeff\u00ad"})
_LATEX_THIN_SPACE = re.compile(r"\\[,!]|\\(?:thin|neg)space\b")  # also a thousands separator: "1\\,000"
_LATEX_SPACING = re.compile(r"\\[;: ]|\\q?quad\b|\\(?:med|thick)space\b|\\hspace\*?\{[^{}]*\}|~")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textrm|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LATEX_SYNONYMS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
                   ("\\displaystyle", ""), ("{,}", ","), ("^\\circ", ""), ("^{\\circ}", ""), ("\\%", "%"),
                   ("\\$", "$"))


def _ascii_digit(c: str) -> str:
    digit = None if c.isascii() else unicodedata.decimal(c, None)
    return c if digit is None else str(digit)


def normalize_text(answer: str) -> str:
    """``answer`` with ASCII digits and minus signs, no LaTeX spacing, text wrappers or synonyms."""
    s = unicodedata.normalize("NFKC", answer).translate(_MINUS_SIGNS).translate(_INVISIBLE)
    s = "".join(map(_ascii_digit, s))  # Arabic-Indic, Devanagari, ... digits
    s = _LATEX_SPACING.sub(" ", _LATEX_THIN_SPACE.sub("", s))
    s = _LATEX_WRAPPERS.sub(lambda m: " " + m.group(1), s)
    for spelling, canonical in _LATEX_SYNONYMS:
        s = s.replace(spelling, canonical)
    return s.strip()


_PLAIN_NUMBER = re.compile(
    r"(?P<sign>[-+]?)\s*(?:"
    r"(?P<decimal>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?|\.\d+)"
    r"|(?P<num>\d+)\s*/\s*(?P<den>\d+)"
    r"|\\frac\s*(?:\{\s*(?P<fnum>\d+)\s*\}|(?P<fnum1>\d))\s*(?:\{\s*(?P<fden>\d+)\s*\}|(?P<fden1>\d)))"
    r"(?:\s+[A-Za-z]{2,}\.?){0,3}"  # up to three unit words: "18 dollars", "5 square feet"
)
# An operator between operands: "952 - 352", "6 \\times 100", "2^{10}" (not "-3" or "\\frac{1}{2}").
_OPERATION = re.compile(r"[\d.)}\]]\s*(?:[-+*/×÷^]|\\times|\\cdot|\\div)\s*[-\d.({\[\\]")


def parse_number(answer: str) -> Fraction | None:
    """``answer`` as an exact number if it is a plain one, else None.

    Plain: "1,234", "$5", "5.0", "50%" (-> 50, as GSM8K golds are written), "18 dollars", and a
    fraction in lowest terms ("3/4", "\\frac{1}{2}"; not "34/2", a computation left undone).
    """
    s = clean_answer(normalize_text(answer))
    if s is None:
        return None
    m = _PLAIN_NUMBER.fullmatch(s.replace("$", "").replace("%", "").strip())
    if m is None:
        return None
    if m["decimal"] is not None:
        value = Fraction(m["decimal"].replace(",", ""))
    else:
        numerator = int(m["num"] or m["fnum"] or m["fnum1"])
        denominator = int(m["den"] or m["fden"] or m["fden1"])
        if denominator == 0 or math.gcd(numerator, denominator) != 1:
            return None
        value = Fraction(numerator, denominator)
    return -value if m["sign"] == "-" else value


def chain_value(answer: str) -> Fraction | None:
    """The plain number after the last "=" of ``answer`` if every side of the chain has that value.

    "12 + 5 = 17" -> 17 and "x = 17" -> 17 (a side without digits is a name); "7 = \\frac{1}{2}" and
    "\\sqrt{289} = 17" (a side that cannot be evaluated exactly) -> None.
    """
    sides = normalize_text(answer).split("=")
    value = parse_number(sides[-1]) if len(sides) > 1 else None
    if value is None:
        return None
    for side in sides[:-1]:
        if _NAME.fullmatch(side.strip()):
            continue  # a name: "x", "the total"
        number = parse_number(side)
        if number is None:
            try:
                number = evaluate_expression(_LATEX_FRACTION.sub(r"(\1)/(\2)", side)).value
            except InvalidExpression:
                return None
        if number != value:
            return None
    return value


_LATEX_FRACTION = re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z][A-Za-z_ ]*")


def normalize_answer(answer: str) -> str:
    """A canonical key for display and grouping: numbers as "1234" or "1/2", LaTeX lightly normalised."""
    s = normalize_text(answer)
    s = clean_answer(s) or s
    s = boxed(s) or s
    number = parse_number(s)
    if number is not None:
        return str(number)
    return re.sub(r"(?<!\d)\s+|\s+(?!\d)", "", s)  # spaces go, except between digits ("1 2" != "12")


def math_equal(a: str | None, b: str | None) -> bool:
    """Whether answer ``a`` equals gold ``b``. Never raises.

    A plain-number gold (see ``parse_number``) is matched only by a plain number of that value, or by
    a chain ending in one whose sides all agree (``chain_value``): an expression is a computation left
    undone, and math-verify would evaluate it, so a policy rewarded that way learns to copy the question
    ("12 + 5", "\\sqrt{289}", "\\frac{34}{2}" do not answer 17). Other golds go to math-verify:
    "2\\sqrt{2}" == "\\sqrt{8}", "(1,2)" != "[1,2)". Answers longer than MAX_ANSWER_CHARS are never
    equal; one comparison takes at most about VERIFY_TIMEOUT_S seconds.
    """
    try:
        if not a or not b:
            return False
        a, b = a.strip(), b.strip()
        if not a or not b or len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
            return False
        gold = parse_number(b)
        if gold is not None:
            value = parse_number(a)
            return (value if value is not None else chain_value(a)) == gold
        if parse_number(a) is not None and _OPERATION.search(normalize_text(b)):
            return False  # two model answers being grouped: a number is not the unevaluated "952 - 352"
        return a == b or normalize_answer(a) == normalize_answer(b) or _verify(normalize_text(a), normalize_text(b))
    except Exception:  # an equivalence check must never crash on model output
        return False


def _as_latex(answer: str) -> str:
    return "$" + (clean_answer(answer) or answer) + "$"


def math_verify_equal(a: str, b: str) -> bool:
    """math-verify's verdict on answer ``a`` against gold ``b``, in this process and without a time limit
    (``math_equal`` bounds it by running this in a child process)."""
    from math_verify import parse, verify

    gold = parse(_as_latex(b), parsing_timeout=None)
    pred = parse(_as_latex(a), parsing_timeout=None)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=None))


def serve_math_verify() -> None:
    """Child-process loop: read JSON ``[a, b]`` lines on stdin, answer "true"/"false" lines on stdout."""
    import math_verify  # noqa: F401  (import before saying ready, so the first call is not slow)

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            a, b = json.loads(line)
            result = math_verify_equal(a, b)  # the parent kills us if we overrun
        except Exception:
            result = False
        print("true" if result else "false", flush=True)


class _Worker:
    """One math-verify child process; a reader thread turns its stdout into a queue of reply lines."""

    def __init__(self) -> None:
        code = "from ahalab.tasks.answers import serve_math_verify; serve_math_verify()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # find ahalab as we did
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        self.replies: queue.Queue[str | None] = queue.Queue()
        self.ready = False  # the process starts in the background; the first use waits for "ready"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(line.strip())
        self.replies.put(None)  # the process ended

    def reply(self, timeout: float) -> str | None:
        try:
            return self.replies.get(timeout=timeout)
        except queue.Empty:
            return None

    def ask(self, a: str, b: str, timeout: float) -> bool | None:
        """True/False, or None when the worker failed to start, died or overran ``timeout``."""
        if not self.ready:
            self.ready = self.reply(WORKER_START_TIMEOUT_S) == "ready"
            if not self.ready:
                return None
        try:
            self.process.stdin.write(json.dumps([a, b]) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            return None
        answer = self.reply(timeout)
        return None if answer not in ("true", "false") else answer == "true"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class _VerifierPool:
    """math-verify in child processes that are killed (and replaced) when a comparison overruns.

    math-verify bounds its time with SIGALRM, which works only in the main thread, and short inputs
    such as "1000000!" or "10^{10^{10}}" keep sympy busy for minutes; a child process gives a hard
    limit from any thread. Up to ``size`` workers serve concurrent callers, so one hostile answer
    does not hold up the others. A killed worker's replacement starts at once, in the background.
    Fresh interpreters are started with subprocess (not multiprocessing) so the parent's
    ``__main__`` is never re-imported. If no worker can start, comparisons fail closed (False).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[_Worker] = []
        self._count = 0
        self._available = threading.Condition()
        self._warned = False

    def equal(self, a: str, b: str, timeout: float) -> bool | None:
        """math-verify's verdict, or None when it did not answer within ``timeout`` (or could not run)."""
        worker = self._take()
        result = worker.ask(a, b, timeout) if worker is not None else None
        if result is None and worker is not None:
            started = worker.ready
            worker.stop()
            worker = _Worker() if started else None  # replace a worker that overran; not one that never started
            if not started:
                self._warn_once()
        self._give_back(worker)
        return result

    def _take(self) -> _Worker | None:
        with self._available:
            while not self._idle and self._count >= self.size:
                self._available.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker()
        except OSError:
            self._give_back(None)
            self._warn_once()
            return None

    def _give_back(self, worker: _Worker | None) -> None:
        with self._available:
            if worker is None:
                self._count -= 1
            else:
                self._idle.append(worker)
            self._available.notify()

    def _warn_once(self) -> None:
        if not self._warned:
            self._warned = True
            logging.getLogger(__name__).warning(
                "the math-verify worker process could not start: non-numeric answers are graded as wrong")


_POOL = _VerifierPool(size=4)  # mostly idle; several let concurrent graders wait out one overrun together
_CACHE: dict[tuple[str, str], bool] = {}  # definite verdicts only: a timeout is tried again next time
_CACHE_LIMIT = 16384
_COSTLY = re.compile(r"(?:\d{3,}|[)}\]])\s*!|\^\s*\{[^{}]*[\^!]|\^\s*\{?\s*\d{4,}|\d{60,}")


def _verify(a: str, b: str) -> bool:
    """math-verify with a hard time limit, cached; answers built to keep sympy busy are refused at once."""
    if _COSTLY.search(a) or _COSTLY.search(b):
        return False  # "1000000!", "10^{10^{10}}", "2^{99999}": no honest short answer looks like this
    key = (a, b)
    if key in _CACHE:
        return _CACHE[key]
    result = _POOL.equal(a, b, VERIFY_TIMEOUT_S)
    if result is None:
        return False
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[key] = result
    return result
