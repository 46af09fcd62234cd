"""Final-answer extraction (named extractors tried in a per-task order) and answer equivalence.

Extractors take a completion and return the answer string or None. ``extract_answer`` tries them
in order and returns the first hit. ``math_equal`` compares two answers: plain numbers exactly
(``Fraction``), everything else with math-verify, run in a child process with a hard time limit
(see ``_IsolatedVerifier``) so that hostile answers and non-main threads are both safe.
"""
from __future__ import annotations

import functools
import json
import os
import re
import select
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from fractions import Fraction

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

_PLAIN_NUMBER = re.compile(
    r"([-+]?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?|\.\d+)(?:\s*/\s*\d+)?)"
    r"(?:\s+[A-Za-z]{2,}\.?){0,3}"  # up to three unit words: "18 dollars", "5 square feet"
)
# An operator between operands: "952 - 352", "6 \\times 100", "2^{10}" (not "-3" or "\\frac{1}{2}").
_OPERATION = re.compile(r"[\d.)}\]]\s*(?:[-+*/×÷^]|\\times|\\cdot|\\div)\s*[-\d.({\[\\]")
_NUMBER_NOISE = ("\\$", "$", "\\%", "%", "\\!")
_LATEX_SYNONYMS = (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""), ("\\!", ""),
                   ("\\,", ""), ("\\;", ""), ("^\\circ", ""), ("^{\\circ}", ""))


def parse_number(answer: str) -> Fraction | None:
    """``answer`` as an exact number if it is a plain one ("1,234", "$5", "5.0", "50%", "3/4", "18 dollars").

    A percent sign is dropped ("50%" -> 50), matching how GSM8K-style golds are written.
    """
    s = clean_answer(answer)
    if s is None:
        return None
    s = s.replace("−", "-")
    for noise in _NUMBER_NOISE:
        s = s.replace(noise, "")
    m = _PLAIN_NUMBER.fullmatch(s.strip())
    if m is None:
        return None
    try:
        return Fraction(m.group(1).replace(",", "").replace(" ", ""))
    except (ValueError, ZeroDivisionError):
        return None


def normalize_answer(answer: str) -> str:
    """A canonical key for display and grouping: numbers as "1234" or "1/2", LaTeX lightly normalised."""
    number = parse_number(answer)
    if number is not None:
        return str(number)
    s = clean_answer(answer) or answer.strip()
    s = boxed(s) or s
    for spelling, canonical in _LATEX_SYNONYMS:
        s = s.replace(spelling, canonical)
    return re.sub(r"(?<!\d)\s+|\s+(?!\d)", "", s)  # spaces go, except between digits ("1 2" != "12")


def math_equal(a: str | None, b: str | None) -> bool:
    """Whether answer ``a`` equals gold ``b``: plain numbers exactly, else math-verify. Never raises.

    "0.5" == "\\frac{1}{2}", "1,000" == "1000", "2\\sqrt{2}" == "\\sqrt{8}", "(1,2)" != "[1,2)".
    A number is not equal to an unevaluated expression ("952 - 352" != "600"): math-verify would evaluate
    it, and a policy rewarded that way learns to copy the question's expression instead of answering.
    Answers longer than MAX_ANSWER_CHARS are never equal; one comparison takes at most about
    VERIFY_TIMEOUT_S seconds.
    """
    try:
        if not a or not b:
            return False
        a, b = a.strip(), b.strip()
        if not a or not b or len(a) > MAX_ANSWER_CHARS or len(b) > MAX_ANSWER_CHARS:
            return False
        if a == b:
            return True
        x, y = parse_number(a), parse_number(b)
        if x is not None and y is not None:
            return x == y
        expression = clean_answer(a if x is None else b) or ""
        if (x is None) != (y is None) and _OPERATION.search(expression.rsplit("=", 1)[-1]):
            return False  # "47 + 25 = 72" still answers 72: only the value after the last "=" counts
        return normalize_answer(a) == normalize_answer(b) or _verify(a, b)
    except Exception:  # an equivalence check must never crash on model output
        return False


def _as_latex(answer: str) -> str:
    return "$" + (clean_answer(answer) or answer) + "$"


def math_verify_equal(a: str, b: str, timeout: int | None) -> bool:
    """math-verify's verdict on answer ``a`` against gold ``b``, in this process.

    ``timeout`` is math-verify's own SIGALRM limit in seconds, which only works in the main thread;
    pass None elsewhere (then nothing bounds the time: prefer ``math_equal``).
    """
    from math_verify import parse, verify

    gold = parse(_as_latex(b), parsing_timeout=timeout)
    pred = parse(_as_latex(a), parsing_timeout=timeout)
    return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))


def serve_math_verify() -> None:
    """Child-process loop: read JSON ``[a, b]`` lines on stdin, answer "true"/"false" lines on stdout."""
    import math_verify  # noqa: F401  (import before saying ready, so the first call is not slow)

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            a, b = json.loads(line)
            result = math_verify_equal(a, b, timeout=None)  # the parent kills us if we overrun
        except Exception:
            result = False
        print("true" if result else "false", flush=True)


class _IsolatedVerifier:
    """math-verify in a child process that is killed (and later restarted) when a comparison overruns.

    math-verify bounds its time with SIGALRM, which works only in the main thread, and short inputs
    such as "1000000!" or "10^{10^{10}}" keep sympy busy for minutes; a child process gives a hard
    limit from any thread. Calls are serialised by a lock. A fresh interpreter is started with
    subprocess (not multiprocessing) so the parent's ``__main__`` is never re-imported.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None

    def equal(self, a: str, b: str, timeout: float) -> bool:
        with self._lock:
            process = self._running()
            try:
                process.stdin.write(json.dumps([a, b]) + "\n")
                process.stdin.flush()
                reply = self._read_line(process, timeout)
            except OSError:
                reply = None
            if reply in ("true", "false"):
                return reply == "true"
            self._stop()
            return False

    def _running(self) -> subprocess.Popen:
        if self._process is not None and self._process.poll() is None:
            return self._process
        code = "from ahalab.tasks.answers import serve_math_verify; serve_math_verify()"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # find ahalab as we did
        self._process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        if self._read_line(self._process, WORKER_START_TIMEOUT_S) != "ready":
            self._stop()
            raise RuntimeError("the math-verify worker process did not start")
        return self._process

    @staticmethod
    def _read_line(process: subprocess.Popen, timeout: float) -> str | None:
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        return process.stdout.readline().strip() if ready else None

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


_VERIFIER = _IsolatedVerifier()


@functools.lru_cache(maxsize=16384)
def _verify(a: str, b: str) -> bool:
    """math-verify with a hard time limit; in-process (its own limits) where no child process can run."""
    if os.name == "posix":
        try:
            return _VERIFIER.equal(a, b, VERIFY_TIMEOUT_S)
        except (OSError, RuntimeError):
            pass
    in_main_thread = threading.current_thread() is threading.main_thread()
    return math_verify_equal(a, b, timeout=1 if in_main_thread else None)
