"""Answer extraction, answer equivalence (numbers and math-verify) and the safe arithmetic evaluator."""
from __future__ import annotations

import threading
import time
from fractions import Fraction

import pytest

from ahalab.tasks import answers
from ahalab.tasks.answers import (EXTRACTORS, VERIFY_TIMEOUT_S, extract_answer, math_equal,
                                  normalize_answer, parse_number)
from ahalab.tasks.safe_math import InvalidExpression, evaluate_expression

# A hostile answer can cost one math-verify timeout plus starting a worker process.
WORKER_START_TIMEOUT_BOUND_S = 3.0
HOSTILE_BOUND_S = VERIFY_TIMEOUT_S + WORKER_START_TIMEOUT_BOUND_S


@pytest.mark.parametrize("name, text, expected", [
    ("answer_tag", "<think>7 * 6</think> <answer> 42 </answer>", "42"),
    ("answer_tag", "<answer>1</answer> then <answer>2</answer>", "2"),
    ("answer_tag", "<think>ok</think><answer>The answer is 18", "18"),  # no closing tag at the end
    ("answer_tag", "<answer>\\boxed{\\frac{1}{2}}</answer>", "\\frac{1}{2}"),
    ("answer_tag", "<answer>$x + 1$</answer>", "x + 1"),
    ("answer_tag", "<answer>   </answer>", None),
    ("answer_tag", "no tags here", None),
    ("boxed", "so \\boxed{\\frac{1}{2}} or rather \\boxed{\\dfrac{3}{4}}", "\\dfrac{3}{4}"),
    ("boxed", "\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}", "\\left(3, \\frac{\\pi}{2}\\right)"),
    ("boxed", "\\boxed{5} and then a cut-off \\boxed{6", "5"),
    ("boxed", "\\fbox{12}", "12"),
    ("boxed", "\\boxed{}", None),
    ("answer_line", "Answer: 42", "42"),
    ("answer_line", "**Answer:** 42.", "42"),
    ("answer_line", "The answer is 5. Then later: The final answer is $\\boxed{7}$.", "7"),
    ("answer_line", "So the answer is 3.5 meters. Done.", "3.5 meters"),
    ("answer_line", "The answers are 5", None),
    ("answer_line", "Answer:", None),
    ("last_number", "Total 1,234 then -5 and finally 2.50.", "2.50"),
    ("last_number", "It costs $1,234,567 in total", "1234567"),
    ("last_number", "pages 3-4", "4"),
    ("last_number", "it is −3", "-3"),
    ("last_number", "no digits", None),
    ("last_line", "reasoning\n\n  (1 + 2) * 3  \n", "(1 + 2) * 3"),
    ("whole", " 42 ", "42"),
    ("whole", "line one\nline two", None),
])
def test_extractors(name: str, text: str, expected: str | None) -> None:
    assert EXTRACTORS[name](text) == expected


def test_extract_answer_follows_the_order() -> None:
    text = "Answer: 3\n\\boxed{4}\n<answer>5</answer> 6"
    assert extract_answer(text, ["answer_tag", "boxed"]) == "5"
    assert extract_answer(text, ["boxed", "answer_tag"]) == "4"
    assert extract_answer(text, ["answer_line"]) == "3"
    assert extract_answer(text, ["last_number"]) == "6"
    assert extract_answer("nothing", ["answer_tag", "boxed"]) is None
    with pytest.raises(ValueError, match="valid: answer_tag"):
        extract_answer(text, ["nope"])


def test_extraction_searches_only_the_tail_of_long_texts() -> None:
    assert extract_answer("Answer: 1\n" + "x" * 200_000 + "\nAnswer: 2", ["answer_line"]) == "2"
    assert extract_answer("Answer: 1\n" + "x" * 200_000, ["answer_line"]) is None


@pytest.mark.parametrize("text", [
    " " * 1_000_000 + "x", "\\boxed{" * 200_000, "{" * 1_000_000, "answer " * 150_000, "1," * 500_000,
    "<answer>" * 100_000, "9" * 1_000_000, "$" * 1_000_000,
])
def test_extractors_are_fast_on_hostile_text(text: str) -> None:
    start = time.perf_counter()
    for name in EXTRACTORS:
        extract_answer(text, [name])
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("a, b", [
    ("0.5", "\\frac{1}{2}"), ("\\frac12", "0.5"), ("1,000", "1000"), ("-3", "−3"), ("\\dfrac{3}{4}", "0.75"),
    ("2\\sqrt{2}", "\\sqrt{8}"), ("(1,2)", "(1, 2)"), ("[1,2)", "[1, 2)"), ("5.0", "5"), ("$5", "5"),
    ("\\$18.00", "18"),
    ("50%", "50"), ("18 dollars", "18"), ("3/4", "0.75"), ("x^2+1", "1+x^2"), ("\\frac{\\pi}{2}", "\\pi/2"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"), ("\\text{Evelyn}", "\\text{Evelyn}"),
    ("x \\in [2, 5)", "[2,5)"), ("\\{1,2\\}", "\\{2,1\\}"),
])
def test_math_equal_true(a: str, b: str) -> None:
    assert math_equal(a, b)


@pytest.mark.parametrize("a, b", [
    ("3", "4"), ("(1,2)", "[1,2)"), ("x", "y"), ("0.5", "\\frac{1}{3}"), ("1,2", "12"), ("1 2", "12"), ("", "1"),
    (None, "1"),
    ("1" * 201, "1" * 201), ("\\sqrt{2}", "1.41"), ("18", "eighteen"),
    # an unevaluated expression does not answer "what number" (a reward hack GRPO found: copy the question)
    ("952 - 352", "600"), ("600", "952 - 352"), ("6 \\times 100", "600"), ("2^{10}", "1024"), ("(50 + 98)", "148"),
    ("12\\,+\\,5", "17"), ("22 − 5", "17"), ("\\sqrt{289}", "17"), ("\\frac{34}{2}", "17"), ("7 = \\frac{1}{2}", "0.5"),
])
def test_math_equal_false(a: str | None, b: str) -> None:
    assert not math_equal(a, b)


def test_parse_number_and_normalize_answer() -> None:
    assert parse_number("1,234.50") == Fraction("1234.5")
    assert parse_number("$5") == 5 and parse_number("-3/4") == Fraction(-3, 4) and parse_number("50\\%") == 50
    assert parse_number("1,2") is None and parse_number("3/0") is None and parse_number("\\sqrt{4}") is None
    assert parse_number("\\frac{1}{2}") == Fraction(1, 2) and parse_number("−\\dfrac{3}{4}") == Fraction(-3, 4)
    assert parse_number("34/2") is None and parse_number("\\frac{2}{4}") is None  # not in lowest terms
    assert normalize_answer(" 1,000. ") == "1000" and normalize_answer("0.5") == "1/2"
    assert normalize_answer("\\boxed{\\dfrac{1}{ 2}}") == normalize_answer("\\frac{1}{2}")


@pytest.mark.parametrize("hostile", ["1000000!", "10^{10^{10}}", "(10^{6})!", "2^{99999}", "9" * 80])
def test_math_verify_never_sees_answers_built_to_keep_it_busy(hostile: str) -> None:
    start = time.perf_counter()
    assert not math_equal(hostile, "x + 1")
    assert time.perf_counter() - start < 0.1


def test_an_overrunning_comparison_is_killed_and_its_worker_replaced() -> None:
    start = time.perf_counter()
    assert answers._POOL.equal("1000000!", "1", timeout=1.0) is None  # straight to the worker: no filter
    assert time.perf_counter() - start < 1.0 + 1.0
    assert math_equal("0.5 x", "\\frac{x}{2}")  # the replacement answers


def test_concurrent_overruns_do_not_queue_behind_one_lock() -> None:
    math_equal("x", "x + 0")  # a worker is up
    start = time.perf_counter()
    threads = [threading.Thread(target=answers._POOL.equal, args=("1000000!", "1", 1.0)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - start < 2 * 1.0 + WORKER_START_TIMEOUT_BOUND_S  # 4 at once, not 4 in a row


def test_a_timeout_is_not_remembered(monkeypatch) -> None:
    monkeypatch.setattr(answers, "VERIFY_TIMEOUT_S", 1e-6)
    assert not math_equal("2\\sqrt{5}", "\\sqrt{20}")  # no verdict in time: wrong for now...
    monkeypatch.setattr(answers, "VERIFY_TIMEOUT_S", VERIFY_TIMEOUT_S)
    assert math_equal("2\\sqrt{5}", "\\sqrt{20}")  # ...but asked again, not read from a cache


def test_no_worker_fails_closed(monkeypatch) -> None:
    monkeypatch.setattr(answers, "_POOL", answers._VerifierPool(size=1))
    monkeypatch.setattr(answers, "WORKER_START_TIMEOUT_S", 5.0)
    monkeypatch.setattr(answers.sys, "executable", "/bin/false")  # the child exits at once, never "ready"
    monkeypatch.setattr(answers, "_CACHE", {})
    assert not math_equal("2\\sqrt{3}", "\\sqrt{12}")  # not graded in-process without a limit
    assert math_equal("0.5", "\\frac{1}{2}")  # plain numbers need no worker


def test_math_equal_works_and_is_bounded_in_other_threads() -> None:
    results: dict[str, object] = {}

    def work() -> None:
        start = time.perf_counter()
        results["hostile"] = math_equal("(10^{6})!", "x")
        results["hostile_s"] = time.perf_counter() - start
        results["root"] = math_equal("2\\sqrt{2}", "\\sqrt{8}")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert results == {"hostile": False, "hostile_s": results["hostile_s"], "root": True}
    assert results["hostile_s"] < HOSTILE_BOUND_S


@pytest.mark.parametrize("expression, value, numbers", [
    ("1 + 2 * 3", 7, [1, 2, 3]),
    ("(1 + 2) * 3", 9, [1, 2, 3]),
    ("8 / (3 - 8 / 3)", 24, [8, 3, 8, 3]),
    ("-(4 - 10) / 4", Fraction(3, 2), [4, 10, 4]),
    ("0.1 + 0.2", Fraction(3, 10), [Fraction(1, 10), Fraction(2, 10)]),
    ("3 × 4 ÷ 2 − 1", 5, [3, 4, 2, 1]),
    ("$\\left(2 \\times 3\\right)$", 6, [2, 3]),
    ("-" * 499 + "1", -1, [1]),  # long but legal
])
def test_evaluate_expression(expression: str, value: Fraction, numbers: list) -> None:
    result = evaluate_expression(expression)
    assert result.value == value and list(result.numbers) == numbers


@pytest.mark.parametrize("expression", [
    "__import__('os').system('touch /tmp/ahalab_pwned_safe_math')", "1/0", "10**10**10", "2 ** 3", "7 // 2",
    "1" * 13, "(" * 51 + "1" + ")" * 51, "1 + " * 200 + "1", "x + 1", "abs(-1)", "(1).real", "[1, 2]", "1 if 1 else 2",
    "", "()", "1 2", "9" * 1_000_000, "1e5", "1_000", "True + 1", "lambda: 1",
])
def test_evaluate_expression_rejects_everything_else(expression: str) -> None:
    start = time.perf_counter()
    with pytest.raises(InvalidExpression):
        evaluate_expression(expression)
    assert time.perf_counter() - start < 1.0


def test_evaluator_never_executes(tmp_path) -> None:
    marker = tmp_path / "pwned"
    for attack in (f"__import__('os').system('touch {marker}')", f"open('{marker}', 'w')"):
        with pytest.raises(InvalidExpression):
            evaluate_expression(attack)
    assert not marker.exists()


@pytest.mark.parametrize("text", ['The answer is "296".', 'Answer: 296"', "Answer: '296'", "Answer: “296”"])
def test_quotes_around_answers_are_stripped(text: str) -> None:
    assert extract_answer(text, ("answer_tag", "boxed", "answer_line", "last_number")) == "296"
