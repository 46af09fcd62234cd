"""Distillation data: program teachers, journeys, rejection sampling, decontamination, dataset files, cache."""
from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

from ahalab.data.build import DataConfig, build_dataset
from ahalab.data.dataset import completion_of, reasoning_of
from ahalab.tasks.decontaminate import EvalSet, decontaminate, eval_set_from_task
from ahalab.data.filters import grade_traces, rejection_sample
from ahalab.data.journey import journey_from_samples, journeys_from_search
from ahalab.data.programs import ArithmeticTeacher, CountdownTeacher, Expr, ProgramTeacher, column
from ahalab.data.teachers import EngineTeacher, TeacherError, Trace
from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.runs import read_jsonl
from ahalab.sft.data import load_rows
from ahalab.tasks import get_task
from ahalab.types import Completion, Problem

# --- program teachers ---------------------------------------------------------------------------


@pytest.mark.parametrize("style", ArithmeticTeacher.STYLES)
@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_arithmetic_program_traces_always_verify(level, style):
    task = get_task("arithmetic", level=level)
    problems = task.load(limit=60, seed=level)
    traces = ArithmeticTeacher(style=style).generate(problems)
    for p, t in zip(problems, traces):
        assert task.is_correct(p, t.text), (p.question, t.text)
        assert t.text.startswith("<think>\n") and t.text.endswith("</answer>")
        assert style == "decompose" or _scratchpad_errors(t.text) == [], (p.question, t.text)


_STEP = re.compile(r"(?:^|: )(-?\d+) ([-+*]) (\d+)(?: \+ carry (\d+))? = (-?\d+)")
_BORROW = re.compile(r"(\d+) - (\d+) = (\d+)\. So far")


def _scratchpad_errors(text: str) -> list[str]:
    """Lines whose arithmetic is wrong: every "a op b (+ carry c) = t" must hold."""
    wrong = []
    for line in text.splitlines():
        for a, op, b, carry, total in _STEP.findall(line):
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op] + int(carry or 0)
            if value != int(total):
                wrong.append(line)
    return wrong


@pytest.mark.parametrize("a, op, b", [(a, op, b) for a in (0, 7, 10, 45, 99, 100, 908, 1000, 9999)
                                      for b in (0, 3, 10, 56, 99, 101, 999) for op in "+-*"]
                         + [(-86, "*", 18), (26, "-", 112), (-5, "+", 30), (-40, "-", 13), (12, "*", -7)])
def test_column_scratchpad_is_right_line_by_line(a, op, b):
    lines = column(a, op, b)
    assert lines[-1] == f"{Expr(Fraction(a)).text()} {op} {Expr(Fraction(b)).text(op, True)} = {eval(f'{a} {op} {b}')}"
    assert _scratchpad_errors("\n".join(lines)) == []
    so_far = [line.rsplit("So far ", 1)[1].rstrip(".") for line in lines if "So far" in line]
    if op in "+-" and min(a, b) >= 0 and (op == "+" or a >= b):
        assert int(so_far[-1]) == (a + b if op == "+" else a - b)  # the digits written are the answer
    assert all(len(line) <= 90 for line in lines)  # one short line per step


def test_arithmetic_program_explains_order_and_parts():
    text = ArithmeticTeacher(style="decompose").solve(Problem("p", "What is 3 + 4 * (25 - 7)?", "75"))
    assert "First the parentheses: 25 - 7 = 25 - 7 = 18" not in text  # single-digit parts are not split
    assert "First the parentheses: 25 - 7 = 18. Now we have 3 + 4 * 18." in text
    assert "Multiplication and division come before addition and subtraction: 4 * 18 = 72." in text
    assert "Finally, 3 + 72 = 75." in text
    decomposed = ArithmeticTeacher(style="decompose").solve(Problem("q", "What is 47 + 38?", "85"))
    assert "47 + 38 = 47 + 30 + 8 = 77 + 8 = 85" in decomposed


def test_arithmetic_column_style_writes_each_column():
    text = ArithmeticTeacher().solve(Problem("q", "What is 47 + 38?", "85"))
    assert "ones: 7 + 8 = 15, write 5, carry 1. So far 5.\ntens: 4 + 3 + carry 1 = 8, write 8. So far 85." in text
    text = ArithmeticTeacher().solve(Problem("r", "What is 603 - 48?", "555"))
    assert "ones: 3 - 8: too small, borrow 1: 13 - 8 = 5. So far 5." in text
    assert "tens: 0 - borrow 1 - 4: too small, borrow 1: 9 - 4 = 5. So far 55." in text
    assert ArithmeticTeacher().name != ArithmeticTeacher(style="decompose").name  # caches keep them apart
    with pytest.raises(UserError, match="style"):
        ArithmeticTeacher(style="fancy")


def test_arithmetic_compact_style_is_the_scratchpad_without_narration():
    one = Problem("q", "What is 57 + 68?", "125")
    column_text, compact = ArithmeticTeacher().solve(one), ArithmeticTeacher(style="compact").solve(one)
    assert compact == ("<think>\n57 + 68, column by column:\nones: 7 + 8 = 15, write 5, carry 1. So far 5.\n"
                       "tens: 5 + 6 + carry 1 = 12, write 2, carry 1. So far 25.\nhundreds: carry 1. So far 125.\n"
                       "</think>\n<answer>125</answer>")
    assert all(line in column_text for line in compact.splitlines()[1:-2])  # the same scratchpad lines
    assert ArithmeticTeacher(style="compact").solve(Problem("s", "What is 7 + 5?", "12")) == \
        "<think>\n7 + 5 = 12\n</think>\n<answer>12</answer>"
    for many in (Problem("p", "What is 3 + 4 * (25 - 7)?", "75"), Problem("n", "What is 5?", "5")):
        assert ArithmeticTeacher(style="compact").solve(many) == ArithmeticTeacher().solve(many)  # as "column"


def test_arithmetic_program_refuses_word_problems():
    task = get_task("arithmetic", level=5)
    with pytest.raises(TeacherError, match="no expression"):
        ArithmeticTeacher().generate(task.load(limit=2))


@pytest.mark.parametrize("num_numbers,count", [(3, 80), (4, 15)])
def test_countdown_program_traces_always_verify(num_numbers, count):
    task = get_task("countdown", num_numbers=num_numbers)
    problems = task.load(limit=count, seed=11)
    for teacher in (CountdownTeacher(max_dead_ends=0), CountdownTeacher(), CountdownTeacher(min_dead_ends=2)):
        for p, t in zip(problems, teacher.generate(problems)):
            assert task.is_correct(p, t.text), (p.question, t.text)


def test_countdown_search_is_bounded_and_person_like():
    task = get_task("countdown")
    problems = task.load(limit=100, seed=5)
    direct = CountdownTeacher(max_dead_ends=0).generate(problems)
    search = CountdownTeacher(max_dead_ends=3).generate(problems)
    assert all("Back up" not in t.text for t in direct)
    assert sum("Back up" in t.text for t in search) >= 10
    for d, s in zip(direct, search):
        assert s.text.count("Back up") <= 3 and len(s.text) < 4 * len(d.text)
        assert d.text.split("<answer>")[1] == s.text.split("<answer>")[1]  # same winning line
    # promising first: the first move tried from [30, 100, 93] toward 23 is the closest result, 100 - 93 = 7
    text = CountdownTeacher().solve(Problem("c", "", "23", {"numbers": [30, 100, 93], "target": 23}))
    assert text.splitlines()[2] == "Try 100 - 93 = 7. Left: 30, 7."


def test_countdown_needing_fractions():
    task = get_task("countdown", num_numbers=4)
    problem = Problem("f", "", "24", {"numbers": [8, 3, 8, 3], "target": 24})
    text = CountdownTeacher().solve(problem)
    assert task.check(problem, task.extract(text))


# --- journeys -----------------------------------------------------------------------------------


def test_search_journeys_contain_dead_ends_and_end_correct():
    task = get_task("countdown")
    problems = task.load(limit=40, seed=2)
    for pair in journeys_from_search(problems, min_dead_ends=1):
        journey, shortcut = pair.rows(task)
        j, s = completion_of(journey), completion_of(shortcut)
        assert "Back up" in j and "Back up" not in s
        assert task.is_correct(pair.problem, j) and task.is_correct(pair.problem, s)
        assert j.rstrip().endswith(f"<answer>{pair.answer}</answer>")
        assert shortcut["problem_id"] == journey["problem_id"]
        # the dead end comes first; the trace ends on the shortcut's winning line
        assert reasoning_of(Trace("t", "p", 0, j)).endswith(reasoning_of(Trace("t", "p", 0, s)).splitlines()[-1])


def _graded(task, problem, texts):
    return grade_traces(task, [problem], [Trace("teacher", problem.id, i, t) for i, t in enumerate(texts)])


def test_sample_journey_has_wrong_attempt_reflection_and_correct_end():
    task = get_task("countdown")
    problem = Problem("c1", "Using the numbers [30, 100, 93] ...", "23", {"numbers": [30, 100, 93], "target": 23})
    wrong = "<think>100 - 93 = 7, then 30 + 7 = 37.</think>\n<answer>30 + (100 - 93)</answer>"
    right = "<think>100 - 93 = 7, then 30 - 7 = 23.</think>\n<answer>30 - (100 - 93)</answer>"
    pair = journey_from_samples(task, _graded(task, problem, [wrong, right, "no idea"]))
    journey = completion_of(pair.rows(task)[0])
    assert journey.index("30 + 7 = 37") < journey.index("Wait, 30 + (100 - 93) gives 37, not 23.") \
        < journey.index("30 - 7 = 23")
    assert task.is_correct(problem, journey) and pair.answer == "30 - (100 - 93)"
    assert pair.shortcut == "100 - 93 = 7, then 30 - 7 = 23."
    assert journey_from_samples(task, _graded(task, problem, [right, right])) is None


def test_sample_journey_reflection_for_numbers_keeps_the_gold_hidden():
    task = get_task("arithmetic")
    problem = Problem("a1", "What is 12 + 19?", "31")
    pair = journey_from_samples(task, _graded(task, problem, ["<think>12 + 19 = 21</think><answer>21</answer>",
                                                              "<think>12 + 19 = 31</think><answer>31</answer>"]))
    head = pair.journey.split("Wait")[1].split("\n")[0]
    assert "21" in head and "31" not in head


# --- rejection sampling -------------------------------------------------------------------------


def test_rejection_sampling_statistics_per_filter():
    task = get_task("arithmetic")
    p1, p2 = Problem("p1", "What is 1 + 1?", "2"), Problem("p2", "What is 2 + 2?", "4")
    good1 = "<think>one plus one is two</think>\n<answer>2</answer>"
    texts = {
        ("p1", 0): good1,
        ("p1", 1): "<think>1 + 1</think>\n<answer>3</answer>",  # wrong
        ("p1", 2): "The answer is 2",  # right, bad format
        ("p1", 3): "<think>" + "so so so so " * 30 + "</think>\n<answer>2</answer>",  # repetitive
        ("p1", 4): "<think>Two, clearly: one and one</think>\n<answer>2</answer>",  # right, second good one
        ("p2", 0): "<think>" + "两个二相加等于四" + "</think>\n<answer>4</answer>",  # other language
        ("p2", 1): "<think>" + " ".join(f"note{i}" for i in range(60)) + "</think>\n<answer>4</answer>",  # long
    }
    traces = [Trace("t", pid, i, text) for (pid, i), text in texts.items()]
    graded = grade_traces(task, [p1, p2], traces)
    sel = rejection_sample(graded, {"format": 1.0, "language": 0.9, "repetition": 0.5, "max_chars": 300},
                           per_problem=1)
    steps = {row["step"].split(" ")[0]: (row["in"], row["removed"], row["kept"]) for row in sel.stats}
    assert steps == {"verified": (7, 1, 6), "format": (6, 1, 5), "language": (5, 1, 4), "repetition": (4, 1, 3),
                     "max_chars": (3, 1, 2), "per": (2, 1, 1)}
    assert [g.trace.text for g in sel.kept] == [good1]
    assert sel.summary == {"problems": 2, "samples": 7, "problems_solved": 2, "problems_kept": 1, "kept": 1}
    with pytest.raises(UserError, match="unknown filter"):
        rejection_sample(graded, {"fromat": 1.0})
    with pytest.raises(UserError, match="needs token counts"):
        rejection_sample(graded, {"max_tokens": 10})
    counted = rejection_sample(graded, {"max_tokens": 12}, tokenize=lambda s: s.split())
    assert counted.summary["kept"] == 4


# --- decontamination ----------------------------------------------------------------------------


def test_decontamination_finds_planted_overlaps():
    eval_text = ("Let $f(x) = 3x^2 - 5$ and let $g$ be the inverse of $f$ on the positive reals. Compute the "
                 "value of $g(43)$ and express your answer in simplest radical form.")
    evals = [EvalSet("bench", [("e1", eval_text), ("e2", "What is 12 + 7?")])]
    problems = [
        Problem("copy", eval_text, "x"),
        Problem("embedded", "Background first. Let $f(x) = 3x^2 - 5$ and let $g$ be the inverse of $f$ on the "
                "positive reals. Compute something else entirely, please, with care and patience.", "x"),
        Problem("short", "what is 12   + 7?", "19"),
        Problem("clean", "A train leaves the station at noon travelling at 60 miles per hour toward the coast.", "1"),
        Problem("clean2", "What is 12 + 8?", "20"),
    ]
    out = decontaminate(problems, evals, n=8, overlap=0.0)
    assert [p.id for p in out.kept] == ["clean", "clean2"]
    removed = {r["problem_id"]: r for r in out.removed}
    assert set(removed) == {"copy", "embedded", "short"}
    assert removed["copy"]["eval_id"] == "e1" and removed["copy"]["share"] == 1.0
    assert removed["short"]["eval_id"] == "e2" and removed["embedded"]["eval_set"] == "bench"
    assert out.summary["removed"] == 3 and out.summary["eval_sets"]["bench"]["removed_for"] == 3
    # the default overlap (0.5) still removes an evaluation problem pasted whole into a longer text
    long = Problem("pasted", "Some words before it, quite a few of them, to make this text much longer. " + eval_text
                   + " And some words after it, also quite a few, about unrelated things entirely.", "x")
    phrase = Problem("phrase", "Find the side of the square and express your answer in simplest radical form.", "x")
    partial = decontaminate(problems + [long, phrase], evals)
    assert {r["problem_id"] for r in partial.removed} == {"copy", "embedded", "short", "pasted"}
    assert "phrase" in {r["problem_id"] for r in decontaminate([phrase], evals, overlap=0.0).removed}


def test_decontamination_ignores_template_text_of_generated_tasks():
    task = get_task("countdown")
    evals = [eval_set_from_task("countdown", limit=60, seed=99)]
    train = task.load(limit=60, seed=100)
    planted = evals[0].texts[7]
    problems = train + [Problem("planted", planted[1], "0")]
    out = decontaminate(problems, evals)
    assert out.summary["eval_sets"][evals[0].name]["template_ngrams_ignored"] > 5
    assert "planted" in {r["problem_id"] for r in out.removed}
    assert len(out.removed) <= 6  # same template, different numbers: kept


# --- cache and teachers -------------------------------------------------------------------------


class FlakyTeacher(ProgramTeacher):
    """An arithmetic program teacher that fails on chosen calls, to test resuming."""

    name = "flaky"

    def __init__(self, fail_on: set[int]) -> None:
        self.calls, self.fail_on, self.inner = 0, fail_on, ArithmeticTeacher()

    def solve(self, problem: Problem) -> str:
        self.calls += 1
        if self.calls in self.fail_on:
            from ahalab.data.programs import UnsolvableError

            raise UnsolvableError("injected")
        return self.inner.solve(problem)


def test_cache_resume_without_duplicates(tmp_path):
    problems = get_task("arithmetic", level=3).load(limit=5, seed=1)
    cache = tmp_path / "traces.jsonl"
    with pytest.raises(TeacherError, match="2 of 10 traces failed"):
        FlakyTeacher({2, 7}).generate(problems, samples=2, cache=cache)
    assert len(read_jsonl(cache)) == 8
    resumed = FlakyTeacher(set())
    traces = resumed.generate(problems, samples=2, cache=cache)
    assert resumed.calls == 2 and len(traces) == 10
    rows = read_jsonl(cache)
    assert len(rows) == 10 and len({(r["problem_id"], r["sample"]) for r in rows}) == 10
    with open(cache, "a") as f:  # a torn last line, as kill -9 mid-append leaves
        f.write('{"teacher": "flaky", "problem_id": "x')
    assert [t.text for t in FlakyTeacher(set()).generate(problems, samples=2, cache=cache)] == [t.text for t in traces]
    assert cache.read_text().endswith("}\n") and len(read_jsonl(cache)) == 10
    # another teacher's rows in the same file are its own
    assert len(ArithmeticTeacher().generate(problems, cache=cache)) == 5 and len(read_jsonl(cache)) == 15


class EchoEngine(Engine):
    """A fake engine: sample i of a prompt answers with i (answers are right for sample 2 of '1 + 1')."""

    name = "echo"

    def __init__(self, tokenizer) -> None:
        super().__init__("/models/echo")
        self._tokenizer, self.calls = tokenizer, 0

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=256, stop=None, seed=None,
                 logprobs=False, progress=None):
        self.calls += 1
        return [[Completion(f" thinking {i}</think>\n<answer>{i}</answer>", [1] * 5, "stop") for i in range(n)]
                for _ in prompts]

    def load_weights(self, named_tensors):
        raise NotImplementedError


def test_engine_teacher_prefixes_and_resumes(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    engine = EchoEngine(AutoTokenizer.from_pretrained(tiny_model))
    task = get_task("arithmetic")
    problems = [Problem("a", "What is 1 + 1?", "2"), Problem("b", "What is 0 + 1?", "1")]
    teacher = EngineTeacher(engine, task, chunk_size=1)
    traces = teacher.generate(problems, samples=3, cache=tmp_path / "c.jsonl")
    assert teacher.name == "engine:echo" and engine.calls == 2
    assert traces[2].text == "<think> thinking 2</think>\n<answer>2</answer>" and traces[2].tokens == 5
    assert [g.correct for g in grade_traces(task, problems, traces)] == [False, False, True, False, True, False]
    teacher.generate(problems, samples=3, cache=tmp_path / "c.jsonl")
    assert engine.calls == 2


# --- dataset files ------------------------------------------------------------------------------


def test_build_search_journey_dataset(tmp_path, tiny_model):
    import datasets
    from transformers import AutoTokenizer

    from ahalab.prompts import render

    cfg = DataConfig(task="countdown", limit=60, journey="search", examples=10, match_tokens=True, model=tiny_model,
                     decontaminate=[{"task": "countdown", "seed": 0, "limit": 20}], out=str(tmp_path / "d"))
    out = build_dataset(cfg)
    summary = out["summary"]
    removed = json.loads((tmp_path / "d" / "decontamination.json").read_text())["removed"]
    # the same seed: the first 20 problems are the eval set
    assert {f"countdown-n3-s0-{i:05d}" for i in range(20)} <= {r["problem_id"] for r in removed}
    assert 20 <= summary["decontaminated_away"] == len(removed) <= 24
    assert summary["files"]["journey.jsonl"] == summary["files"]["shortcut.jsonl"] == 10
    tokens = summary["assistant_tokens"]
    assert tokens["shortcut_tokens.jsonl"] >= tokens["journey.jsonl"] > tokens["shortcut.jsonl"]
    journey, shortcut = load_rows(out["journey"]), load_rows(out["shortcut"])
    assert [r["problem_id"] for r in journey] == [r["problem_id"] for r in shortcut]
    ds = datasets.load_dataset("json", data_files=out["journey"], split="train")
    assert len(ds) == 10 and [m["role"] for m in ds[0]["messages"]] == ["system", "user", "assistant"]
    # training text starts exactly like the eval prompt the model will see
    tok = AutoTokenizer.from_pretrained(tiny_model)
    task = get_task("countdown")
    row = journey[0]
    problem = next(p for p in task.load(limit=40) if p.id == row["problem_id"])
    full = tok.apply_chat_template(row["messages"], tokenize=False)
    assert full.startswith(render(tok, task, problem.question, "r1").prompt)
    card = (tmp_path / "d" / "README.md").read_text()
    assert f"{len(removed)} problem(s) removed" in card and "program:countdown-search3-1" in card


def test_build_rejection_sampled_dataset(tmp_path):
    cfg = DataConfig(task="arithmetic", task_options={"level": 3}, limit=12, filters={"format": 1.0, "max_chars": 400},
                     per_problem=1, teacher_options={"style": "decompose"}, out=str(tmp_path / "d"))
    out = build_dataset(cfg)
    rows = load_rows(out["train"])
    assert len(rows) == 12 and rows[0]["teacher"] == "program:arithmetic-decompose" and rows[0]["kind"] == "trace"
    assert (tmp_path / "d" / "traces.jsonl").exists()
    assert "max_chars (<= 400)" in (tmp_path / "d" / "README.md").read_text()
    with pytest.raises(UserError, match="samples >= 2"):
        build_dataset(DataConfig(task="arithmetic", journey="samples", out=str(tmp_path / "e")))


def test_build_sample_journeys_from_an_engine_teacher(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "What is 0 + 0?", "answer": "0"}\n'
                        '{"question": "What is 5 + 5?", "answer": "10"}\n')
    cfg = DataConfig(task="arithmetic", data=str(problems), teacher="engine", samples=3, journey="samples",
                     out=str(tmp_path / "d"))
    out = build_dataset(cfg, engine=EchoEngine(AutoTokenizer.from_pretrained(tiny_model)))
    journey, shortcut = load_rows(out["journey"]), load_rows(out["shortcut"])
    assert [r["problem_id"] for r in journey] == [r["problem_id"] for r in shortcut] == ["arith-00000", "arith-00001"]
    first = completion_of(journey[0])
    assert "So the answer is 0." in first and "Wait" in first and first.endswith("<answer>2</answer>")
    assert completion_of(shortcut[0]) == "<think>\nthinking 2\n</think>\n<answer>2</answer>"


def test_non_reasoning_rows_keep_only_the_verified_answer(tmp_path, tiny_model):
    """R1's non-reasoning data: the teacher answers in `direct`, rows are written in r1 with an empty think."""
    from transformers import AutoTokenizer

    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n'
                        '{"question": "What is 0 + 1?", "answer": "1"}\n')
    cfg = DataConfig(task="arithmetic", data=str(problems), teacher="engine", samples=3, format="direct",
                     row_format="r1", reasoning=False, out=str(tmp_path / "d"))
    rows = load_rows(build_dataset(cfg, engine=EchoEngine(AutoTokenizer.from_pretrained(tiny_model)))["train"])
    assert [r["problem_id"] for r in rows] == ["arith-00000", "arith-00001"]
    assert [completion_of(r) for r in rows] == ["<think>\n\n</think>\n<answer>2</answer>",
                                                "<think>\n\n</think>\n<answer>1</answer>"]
    assert rows[0]["kind"] == "direct" and "<think>" in rows[0]["messages"][0]["content"]  # the r1 system prompt
    with pytest.raises(UserError, match="not journey data"):
        build_dataset(DataConfig(task="countdown", journey="search", reasoning=False, out=str(tmp_path / "e")))


def test_cache_is_keyed_by_content_not_row_numbers(tmp_path):
    """An output folder reused with another file (same row-number ids, other questions) or other settings
    never hands back traces written for other questions."""
    from ahalab.data.programs import CountdownTeacher

    cache = tmp_path / "traces.jsonl"
    first = [Problem("arith-0", "What is 2 + 3?", "5"), Problem("arith-1", "What is 7 + 1?", "8")]
    other = [Problem("arith-0", "What is 40 + 2?", "42"), Problem("arith-1", "What is 7 + 1?", "8")]
    ArithmeticTeacher().generate(first, cache=cache)
    traces = ArithmeticTeacher().generate(other, cache=cache)
    assert [t.question for t in traces] == [p.question for p in other]
    assert "42" in traces[0].text and len(read_jsonl(cache)) == 3  # only the new question was asked
    task = get_task("arithmetic")
    assert all(g.correct for g in grade_traces(task, other, traces))
    stale = traces[0].__class__(**{**traces[0].__dict__, "question": "What is 2 + 3?"})
    with pytest.raises(UserError, match="other questions"):
        grade_traces(task, other, [stale])
    cd = [Problem("cd-0", "Using [3, 5, 7] make 22", "22", {"numbers": [3, 5, 7], "target": 22})]
    direct, search = CountdownTeacher(0, 0, name="cd"), CountdownTeacher(3, 1, name="cd")  # same name
    assert direct.content_key(cd[0]) != search.content_key(cd[0])  # settings are part of the key


# --- Ray workers (tests/test_ray_data.py runs them) -----------------------------------------------


def test_without_workers_no_ray_is_imported_and_without_ray_workers_are_refused(tmp_path, monkeypatch):
    """The default path is one process and never imports Ray; workers without Ray installed is a UserError
    before anything starts; workers never make a recipe stage stale (they do not change the rows)."""
    import importlib.util
    import subprocess
    import sys

    from ahalab.pipeline import Stage, stage_hash
    from ahalab.stages import load_stage_kinds

    code = ("import sys; from ahalab.data.build import DataConfig, build_dataset; "
            f"build_dataset(DataConfig(task='arithmetic', limit=5, out={str(tmp_path / 'd')!r})); "
            "assert not {'ray', 'ahalab.data.ray_workers'} & set(sys.modules), 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    with pytest.raises(UserError, match="not installed"):
        build_dataset(DataConfig(task="arithmetic", limit=5, workers=2, out=str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()
    load_stage_kinds()
    config = {"task": "arithmetic", "limit": 5}
    assert stage_hash(Stage(0, "d", "distill_data", config), {}) == \
        stage_hash(Stage(0, "d", "distill_data", {**config, "workers": 2, "worker_options": {"num_gpus": 1}}), {})
