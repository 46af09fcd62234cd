"""Tasks: registry, arithmetic and countdown generators, countdown verifier and gold-free check, file loading, bad
input, hostile output."""
from __future__ import annotations

import dataclasses
import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest

from ahalab.runs import DataError
from ahalab.tasks import TASKS, TaskError, get_task
from ahalab.tasks.answers import VERIFY_TIMEOUT_S
from ahalab.tasks.countdown import countdown_correct, expression_part, solve_countdown
from ahalab.types import Problem

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")


def _write(path: Path, lines: list[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _exact(expression: str) -> Fraction:
    """Independent check of a generated (trusted, digits-and-operators only) expression."""
    assert re.fullmatch(r"[\d+\-*() ]+", expression)
    return Fraction(eval(expression))  # noqa: S307 - our own generated text, validated above


# --- registry -------------------------------------------------------------------------------

def test_registry_lists_and_builds_tasks() -> None:
    assert list(TASKS) == ["arithmetic", "countdown", "gsm8k", "math500", "jsonl", "humaneval", "code_jsonl",
                           "codegen"]
    assert all(get_task(name).name == name for name in TASKS)
    with pytest.raises(TaskError, match="valid tasks: arithmetic, countdown"):
        get_task("nope")
    with pytest.raises(TaskError, match="no option levle.*options: level, levels"):
        get_task("arithmetic", levle=3)
    for bad in ({"level": 6}, {"levels": [1, 9]}, {"level": "x"}):
        with pytest.raises(TaskError, match="1..5"):
            get_task("arithmetic", **bad)
    with pytest.raises(TaskError, match="num_numbers"):
        get_task("countdown", num_numbers=9)
    assert get_task("countdown", num_numbers="4").options["num_numbers"] == 4  # CLI overrides may be strings
    with pytest.raises(TaskError, match="no solvable countdown instance"):
        get_task("countdown", min_number=5, max_number=5, max_target=1).load(limit=1)


# --- arithmetic -----------------------------------------------------------------------------

@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_arithmetic_is_deterministic_and_correct(level: int) -> None:
    task = get_task("arithmetic", level=level)
    problems = task.load(limit=50, seed=3)
    assert problems == task.load(limit=50, seed=3)
    assert len({p.question for p in problems}) == 50
    assert problems[12].id == f"arith-L{level}-s3-00012" and problems[0].meta == {"level": level}
    other = {p.question for p in task.load(limit=50, seed=4)}
    assert len(other & {p.question for p in problems}) < 10
    for p in problems:
        assert re.fullmatch(r"-?\d+", p.answer)
        if level < 5:
            assert _exact(p.question.removeprefix("What is ").removesuffix("?")) == int(p.answer)
        else:
            assert int(p.answer) >= 0
        assert task.is_correct(p, f"Let me think.\nAnswer: {p.answer}")


def test_arithmetic_levels_shapes_and_mixing() -> None:
    assert all(re.fullmatch(r"What is \d{1,2} \+ \d{1,2}\?", p.question) for p in get_task("arithmetic").load(seed=0))
    assert len(get_task("arithmetic").load()) == 200
    level4 = get_task("arithmetic", level=4).load(limit=20)
    assert all("(" in p.question and 4 <= len(re.findall(r"\d+", p.question)) <= 5 for p in level4)
    mixed = get_task("arithmetic", levels="1,3,5").load(limit=9)
    assert [p.meta["level"] for p in mixed] == [1, 3, 5] * 3


def test_arithmetic_grading() -> None:
    task = get_task("arithmetic")
    p = Problem(id="x", question="What is 47 + 25?", answer="72")
    assert task.grade(p, "<answer>72</answer>")[1] == 1.0
    assert task.is_correct(p, "47 + 25 = \\boxed{72}")
    assert task.is_correct(p, "The answer is 72.")
    assert task.is_correct(p, "so 47 + 25 = 72")
    assert task.is_correct(p, "<answer>47 + 25 = 72</answer>")
    assert not task.is_correct(p, "<think>add</think> <answer>47 + 25</answer>")  # copying is not answering
    assert task.grade(p, "Answer: 71") == ("71", 0.0)
    assert task.grade(p, "no idea")[0] is None


# --- countdown ------------------------------------------------------------------------------

@pytest.mark.parametrize("num_numbers", [3, 4])
def test_countdown_generator_emits_only_solvable_instances(num_numbers: int) -> None:
    task = get_task("countdown", num_numbers=num_numbers)
    problems = task.load(limit=200, seed=0)
    assert len(problems) == 200 and problems[5].id == f"countdown-n{num_numbers}-s0-00005"
    for p in problems:
        numbers, target = p.meta["numbers"], p.meta["target"]
        assert len(numbers) == num_numbers and all(1 <= n <= 100 for n in numbers) and 1 <= target <= 100
        assert p.answer == str(target) and f"Using the numbers {numbers}" in p.question
        solution = p.meta["solution"]  # what solve_countdown found when generating
        assert countdown_correct(solution, numbers, target)
        assert task.is_correct(p, f"<think>search</think> <answer>{solution}</answer>")
    assert task.load(limit=5, seed=0) == problems[:5]
    assert task.load(limit=5, seed=1) != problems[:5]


def test_countdown_solver() -> None:
    assert countdown_correct(solve_countdown([3, 3, 8, 8], 24), [3, 3, 8, 8], 24)  # needs 8 / (3 - 8 / 3)
    assert solve_countdown([1, 1], 5) is None
    assert solve_countdown([7], 7) == "7"


@pytest.mark.parametrize("answer, correct", [
    ("<answer>100 - 93 + 30 - 14</answer>", False),  # extra number
    ("<answer>(100 - 93) + 30</answer>", False),  # wrong value (37)
    ("<answer>100 - 93 + 16</answer>", False),  # 30 missing, 16 not given
    ("<answer>30 - (100 - 93)</answer>", True),
    ("<answer>30 - (100 - 93) = 23</answer>", True),
    ("<answer>23 = 30 - (100 - 93)</answer>", True),
    ("<answer>30 − (100 − 93)</answer>", True),
    ("reasoning...\n\nAnswer: 30 + 93 - 100", True),
    ("reasoning...\n30 + 93 - 100", True),
    ("\\boxed{30 + 93 - 100}", True),
    ("<answer>30 + 93 - 100 - 0</answer>", False),  # 0 not given
    ("<answer>30 + 30 - 37</answer>", False),  # reused number
    ("<answer>23</answer>", False),
    ("<answer>30 + 93 - 100", True),  # unclosed tag at the end
])
def test_countdown_verifier(answer: str, correct: bool) -> None:
    task = get_task("countdown")
    p = Problem(id="c", question="", answer="23", meta={"numbers": [30, 100, 93], "target": 23})
    assert task.is_correct(p, answer) is correct
    # the gold-free check gives the same verdict from the numbers and target alone, whatever the gold says
    assert task.self_check(dataclasses.replace(p, answer="999"), answer) is correct


def test_self_check_reads_what_the_problem_states() -> None:
    assert [name for name, cls in TASKS.items() if cls.has_self_check] == ["countdown", "humaneval", "code_jsonl",
                                                                       "codegen"]
    task, text = get_task("countdown"), "<answer>30 - (100 - 93)</answer>"
    p = Problem(id="c", question="", answer="23", meta={"numbers": [30, 100, 93], "target": 23})
    assert task.self_check(p, text) and task.self_check(dataclasses.replace(p, answer=""), text)
    assert not task.self_check(dataclasses.replace(p, meta={"numbers": [30, 100, 93], "target": 24}), text)
    assert not task.self_check(dataclasses.replace(p, meta={"numbers": [30, 100, 94], "target": 23}), text)
    assert get_task("arithmetic").self_check(Problem(id="a", question="1 + 1", answer="2"), "Answer: 2") is None


def test_countdown_exact_fractions_and_equivalence() -> None:
    task = get_task("countdown")
    p = Problem(id="c", question="", answer="24", meta={"numbers": [3, 3, 8, 8], "target": 24})
    assert task.is_correct(p, "<answer>8 / (3 - 8 / 3)</answer>")
    assert not task.is_correct(p, "<answer>8 * 3 + 8 - 8</answer>")
    assert task.equivalent("30 - (100 - 93)", "30 + 93 - 100")
    assert not task.equivalent("30 - (100 - 93)", "23")  # different numbers
    assert not task.equivalent("30 - (100 - 93)", "1/0")
    assert expression_part("1 + 2 = 3") == "1 + 2" and expression_part("3 = 1 + 2") == "1 + 2"


# --- files ----------------------------------------------------------------------------------

@needs_shared
def test_load_countdown_file() -> None:
    problems = get_task("countdown").load(str(SHARED / "countdown_cd3_test.jsonl"))
    assert len(problems) == 256
    assert problems[0].meta == {"numbers": [30, 100, 93], "target": 23} and problems[0].answer == "23"
    assert problems[0].question.startswith("Using the numbers [30, 100, 93], create an equation that equals 23.")
    assert len(get_task("countdown").load(str(SHARED / "countdown_cd3_test.jsonl"), limit=10)) == 10


def test_load_countdown_numbers_target_file(tmp_path) -> None:
    path = _write(tmp_path / "cd.jsonl", [json.dumps({"numbers": [1, 2, 3], "target": 6}),
                                          json.dumps({"nums": [4, 5], "target": 20})])
    problems = get_task("countdown").load(path)
    assert [p.meta for p in problems] == [{"numbers": [1, 2, 3], "target": 6}, {"numbers": [4, 5], "target": 20}]
    bad = _write(tmp_path / "bad.jsonl", [json.dumps({"input": "1,x", "output": "3"})])
    with pytest.raises(TaskError, match="bad.jsonl:1: field 'input' must be a list of integers"):
        get_task("countdown").load(bad)


@needs_shared
def test_load_gsm8k_file() -> None:
    path = SHARED / "gsm8k_test.jsonl"
    problems = get_task("gsm8k").load(str(path))
    assert len(problems) == 1319 and problems[0].answer == "18" and problems[0].id == "gsm8k-00000"
    assert problems[0].meta["solution"].endswith("#### 18")
    raw = [json.loads(line)["answer"].split("####")[-1] for line in path.read_text().splitlines()]
    with_commas = [i for i, gold in enumerate(raw) if "," in gold]
    assert with_commas and all("," not in problems[i].answer for i in with_commas)
    assert all(re.fullmatch(r"-?[\d.]+", p.answer) for p in problems)


@needs_shared
def test_load_math500_file() -> None:
    problems = get_task("math500").load(str(SHARED / "math500_test.jsonl"), limit=20)
    assert len(problems) == 20
    first = problems[0]
    assert first.id == "test/precalculus/807.json" and first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert {"subject", "level", "unique_id", "solution"} <= set(first.meta)
    assert get_task("math500").is_correct(first, "So the point is $\\boxed{(3, \\frac{\\pi}{2})}$.")


def test_hub_failure_says_to_pass_a_local_file(monkeypatch) -> None:
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(TaskError, match="openai/gsm8k.*--data.*gsm8k_test.jsonl"):
        get_task("gsm8k").load(limit=5)
    with pytest.raises(TaskError, match="HuggingFaceH4/MATH-500"):
        get_task("math500").load()


def test_jsonl_task_field_mapping_and_limits(tmp_path) -> None:
    path = _write(tmp_path / "qa.jsonl", [json.dumps({"q": f"Capital {i}?", "a": f"City{i}", "key": f"k{i}"})
                                          for i in range(5)])
    task = get_task("jsonl", question_field="q", answer_field="a", id_field="key")
    problems = task.load(path, limit=3)
    expected = [(f"k{i}", f"Capital {i}?", f"City{i}") for i in range(3)]
    assert [(p.id, p.question, p.answer) for p in problems] == expected
    assert task.is_correct(problems[1], "City1") and not task.is_correct(problems[1], "City2")
    assert [p.id for p in get_task("jsonl", question_field="q", answer_field="a").load(path)][:2] == ["jsonl-00000",
                                                                                                     "jsonl-00001"]
    assert get_task("jsonl", extractors="answer_tag,whole").extractors == ("answer_tag", "whole")
    open_ended = get_task("jsonl", question_field="q", answer_field=None).load(path, limit=2)  # no gold answers
    assert [(p.question, p.answer) for p in open_ended] == [("Capital 0?", ""), ("Capital 1?", "")]
    with pytest.raises(TaskError, match="valid: answer_tag"):
        get_task("jsonl", extractors="answer_tag,nope")
    with pytest.raises(TaskError, match="--data"):
        task.load(None)
    arithmetic_file = _write(tmp_path / "ar.jsonl", [json.dumps({"question": "What is 1 + 1?", "answer": 2})])
    assert get_task("arithmetic").load(arithmetic_file)[0].answer == "2"


@pytest.mark.parametrize("name", ["jsonl", "gsm8k", "math500", "countdown", "arithmetic"])
def test_bad_files_get_clear_errors(tmp_path, name: str) -> None:
    task = get_task(name)
    good = {"question": "q", "answer": "1 #### 1", "problem": "p", "input": "1,2", "output": "3"}
    malformed = _write(tmp_path / "malformed.jsonl", [json.dumps(good), json.dumps(good), "{not json"])
    with pytest.raises(DataError, match="malformed.jsonl:3"):
        task.load(malformed)
    assert len(task.load(malformed, limit=2)) == 2  # the first rows only: line 3 is never read
    field = "output" if name == "countdown" else "answer"
    without_field = {k: v for k, v in good.items() if k != field}
    missing = _write(tmp_path / "missing.jsonl", [json.dumps(good), json.dumps(without_field)])
    with pytest.raises(TaskError, match=f"missing.jsonl:2: missing field '{field}' \\(fields: .*question"):
        task.load(missing)
    empty = _write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(TaskError, match="empty.jsonl: empty file"):
        task.load(empty)
    with pytest.raises(DataError, match="file not found"):
        task.load(str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(TaskError, match="--limit 0 selects no problems"):
        task.load(malformed, limit=0)


def test_limit_zero_for_generated_tasks() -> None:
    for name in ("arithmetic", "countdown"):
        with pytest.raises(TaskError, match="--limit 0 selects no problems"):
            get_task(name).load(limit=0)


# --- hostile model output -------------------------------------------------------------------

def _graded_problems() -> list[tuple[str, Problem]]:
    return [
        ("arithmetic", get_task("arithmetic").load(limit=1)[0]),
        ("countdown", Problem(id="c", question="", answer="23", meta={"numbers": [30, 100, 93], "target": 23})),
        ("gsm8k", Problem(id="g", question="", answer="18")),
        ("math500", Problem(id="m", question="", answer="\\frac{1}{2}")),
        ("jsonl", Problem(id="j", question="", answer="Paris")),
    ]


@pytest.mark.parametrize("name, problem", _graded_problems(), ids=[n for n, _ in _graded_problems()])
def test_grade_survives_hostile_output(tmp_path, name: str, problem: Problem) -> None:
    task = get_task(name)
    marker = tmp_path / "pwned"
    attacks = [
        f"<answer>__import__('os').system('touch {marker}')</answer>",
        f"Answer: exec(\"open('{marker}', 'w')\")",
        "<answer>1/0</answer>", "Answer: 10**10**10", "<answer>10**10**10</answer>",
        "x" * 1_000_000, "Answer: " + "9" * 1_000_000, "<answer>" + "(" * 5000 + "1" + ")" * 5000 + "</answer>",
        "<answer>" + "(" * 40 + "1" + ")" * 40 + "</answer>", "\\boxed{" * 50_000,
    ]
    for attack in attacks:
        start = time.perf_counter()
        assert task.grade(problem, attack)[1] == 0.0, attack[:60]
        assert time.perf_counter() - start < VERIFY_TIMEOUT_S + 3.0, attack[:60]
        assert not task.self_check(problem, attack), attack[:60]  # False, or None for a task without one
    assert not marker.exists()
