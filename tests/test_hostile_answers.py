"""The accuracy reward pays for an answer, not for the question dressed up (issue 14, finding 1).

Every hostile form below is what a reward-hacking policy finds when the gold is a plain number:
the question's expression copied in another spelling, or a computation math-verify would finish
for it. Each must score 0 for arithmetic, gsm8k and jsonl, while genuine spellings of the number
score 1.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ahalab.tasks import get_task
from ahalab.tasks.base import Task
from ahalab.types import Problem

HOSTILE_17 = [
    # the question "12 + 5" in other spellings
    "12 + 5", "12+5", "12\\,+\\,5", "12\\;+\\;5", "12\\:+\\:5", "12\\ +\\ 5", "12~+~5", "12 \\quad + \\quad 5",
    "12\\!+\\!5", "{12}+{5}", "(12 + 5)", "\\left(12 + 5\\right)", "12 ＋ 5", "１２ + ５", "\\text{12 + 5}",
    "\\mathrm{12+5}", "$12 + 5$", "\\boxed{12 + 5}", "\\(12+5\\)", "12 plus 5",
    # other expressions with value 17
    "22 − 5", "22 – 5", "22 - 5", "22 — 5", "34 / 2", "34/2", "\\frac{34}{2}", "\\dfrac{34}{2}", "\\tfrac{34}{2}",
    "\\frac{17}{1} + 0", "17 + 0", "17 \\cdot 1", "17 \\times 1", "17 * 1", "17^1", "17^{1}", "1 \\cdot 17",
    "\\sqrt{289}", "289^{1/2}", "\\sqrt[3]{4913}", "\\binom{17}{1}", "\\binom{17}{16}", "17 \\mod 20",
    "17 \\pmod{20}", "37 \\bmod 20", "\\lfloor 17.5\\rfloor", "\\lceil 16.2 \\rceil", "\\gcd(34,51)",
    "\\operatorname{lcm}(17, 1)", "\\max(17, 3)", "\\min(17, 99)", "|-17|", "\\left|-17\\right|", "17!/16!",
    "\\log_2(2^{17})", "e^{\\ln 17}", "1.7 \\times 10^1", "1.7e1", "0x11", "0b10001", "\\sum_{k=1}^{17} 1",
    # chains whose sides disagree, or cannot be checked exactly
    "7 = 17", "12 + 5 = 18 = 17", "\\sqrt{289} = 17", "18 = 17", "12 + 6 = 17", "= 17",
]
GENUINE_17 = ["17", "17.0", "17.00", "+17", "\\boxed{17}", "$17$", "**17**", "17.", "１７", "17 apples",
              "\\text{17}", "12 + 5 = 17", "x = 17", "The total = 12 + 5 = 17", "\\frac{17}{1}", "12\\,+\\,5 = 17"]


def _tasks(tmp_path: Path, question: str, gold: str) -> list[tuple[Task, Problem]]:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": question, "answer": gold}) + "\n")
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": question, "answer": f"Work it out.\n#### {gold}"}) + "\n")
    arithmetic = get_task("arithmetic")
    return [(arithmetic, Problem(id="a", question=question, answer=gold)),
            (get_task("gsm8k"), get_task("gsm8k").load(str(gsm))[0]),
            (get_task("jsonl"), get_task("jsonl").load(str(rows))[0])]


@pytest.mark.parametrize("answer", HOSTILE_17)
def test_dressed_up_questions_score_zero(tmp_path, answer: str) -> None:
    for task, problem in _tasks(tmp_path, "What is 12 + 5?", "17"):
        assert task.grade(problem, f"<think>easy</think><answer>{answer}</answer>") == (answer_of(task, answer), 0.0)


def answer_of(task: Task, answer: str) -> str | None:
    return task.extract(f"<think>easy</think><answer>{answer}</answer>")


@pytest.mark.parametrize("answer", GENUINE_17)
def test_genuine_answers_score_one(tmp_path, answer: str) -> None:
    for task, problem in _tasks(tmp_path, "What is 12 + 5?", "17"):
        assert task.grade(problem, f"<answer>{answer}</answer>")[1] == 1.0, task.name


@pytest.mark.parametrize("gold, genuine, hostile", [
    ("0.5", ["0.5", ".5", "0.50", "\\frac{1}{2}", "\\dfrac{1}{2}", "\\tfrac12", "1/2", "\\frac12"],
     ["\\frac{2}{4}", "2/4", "7 = \\frac{1}{2}", "1 - 0.5", "\\frac{1}{2} \\cdot 1", "\\sin(\\pi/6)", "2^{-1}"]),
    ("1000", ["1000", "1,000", "1{,}000", "1\\,000", "1000.0", "$1,000", "\\$1{,}000"],
     ["10^3", "10^{3}", "1e3", "999 + 1", "\\frac{2000}{2}", "1,0,0,0"]),
    ("-3", ["-3", "−3", "–3", "-3.0", "-\\frac{3}{1}"], ["0 - 3", "-6/2", "-\\frac{6}{2}", "−(3)", "2 - 5"]),
    ("18", ["18", "18 dollars", "\\$18.00", "18\\%", "18 \\text{ dollars}"], ["3 \\times 6", "36/2", "9 + 9"]),
])
def test_other_golds(tmp_path, gold: str, genuine: list[str], hostile: list[str]) -> None:
    for task, problem in _tasks(tmp_path, "Compute it.", gold):
        for answer in genuine:
            assert task.grade(problem, f"<answer>{answer}</answer>")[1] == 1.0, (task.name, answer)
        for answer in hostile:
            assert task.grade(problem, f"<answer>{answer}</answer>")[1] == 0.0, (task.name, answer)


def test_the_plain_hack_in_other_extractors(tmp_path) -> None:
    """Not only in answer tags: the boxed, "Answer:" and whole-text paths grade the same way."""
    for task, problem in _tasks(tmp_path, "What is 952 - 352?", "600"):
        for text in ("\\boxed{952 - 352}", "The answer is 952\\,-\\,352.", "Answer: 6 \\times 100"):
            assert not task.is_correct(problem, text), (task.name, text)
        assert task.is_correct(problem, "So the answer is 600.")
