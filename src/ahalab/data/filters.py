"""Rejection sampling: grade N traces per problem, keep the verified ones that pass optional filters,
keep at most m per problem, and count what each step removed.

A filter is a predicate over a graded trace: a measure (a reward function from ``ahalab.rewards``
where one exists, so GRPO and distillation score the same way) compared with a threshold. A measure
of ``None`` ("does not apply", e.g. no letters for the language check) passes.

    format      R1 layout reward (``format_exact``) >= threshold (1.0: exact layout)
    language    share of the reasoning's letters in the script of ``lang`` (``language``) >= threshold
    repetition  share of repeated word 3-grams (``repetition``, as a share) <= threshold
    max_tokens  completion tokens <= threshold (the teacher's count, else the given tokenizer's)
    max_chars   completion characters <= threshold
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ahalab.data.teachers import Trace
from ahalab.errors import UserError
from ahalab.tasks.base import Task
from ahalab.types import Problem

Tokenize = Callable[[str], list[int]]


@dataclass
class GradedTrace:
    """A trace with its problem and the task verifier's verdict (as in ``ahalab.types.Sample``)."""

    problem: Problem
    trace: Trace
    answer: str | None
    score: float

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


def grade_traces(task: Task, problems: Sequence[Problem], traces: Sequence[Trace]) -> list[GradedTrace]:
    """Grade each trace (on ``Trace.full_text``) against its problem."""
    by_id = {p.id: p for p in problems}
    missing = sorted({t.problem_id for t in traces} - set(by_id))
    if missing:
        raise UserError(f"traces for unknown problem ids: {', '.join(missing[:5])}")
    wrong = [t.problem_id for t in traces if t.question and t.question != by_id[t.problem_id].question]
    if wrong:
        raise UserError(f"traces answer other questions than problems {', '.join(wrong[:5])} (a stale cache?)")
    grades = task.grade_many([(by_id[t.problem_id], t.full_text()) for t in traces])
    return [GradedTrace(by_id[t.problem_id], t, *grade) for t, grade in zip(traces, grades)]


@dataclass(frozen=True)
class Filter:
    """``measure(texts, traces) -> values``; a sample passes when ``value <= threshold`` (``at_most``) or ``>=``."""

    name: str
    measure: Callable[[list[str], list[Trace]], list[float | None]]
    at_most: bool

    def passes(self, value: float | None, threshold: float) -> bool:
        return value is None or (value <= threshold if self.at_most else value >= threshold)


def _reward(name: str, **options: Any) -> Callable[[list[str], list[Trace]], list[float | None]]:
    def measure(texts: list[str], traces: list[Trace]) -> list[float | None]:
        from ahalab.rewards import get_reward

        return get_reward(name, **options)(completions=texts)

    return measure


def make_filters(lang: str = "en", tokenize: Tokenize | None = None) -> dict[str, Filter]:
    """The filters by name, bound to a language and (for max_tokens without teacher counts) a tokenizer."""
    def tokens(texts: list[str], traces: list[Trace]) -> list[float | None]:
        if tokenize is None and any(t.tokens is None for t in traces):
            raise UserError("the max_tokens filter needs token counts: this teacher gives none, so pass a tokenizer "
                            "(the student model's) or use max_chars")
        return [float(t.tokens if t.tokens is not None else len(tokenize(text))) for text, t in zip(texts, traces)]

    return {f.name: f for f in (
        Filter("format", _reward("format_exact"), at_most=False),
        Filter("language", _reward("language", lang=lang), at_most=False),
        Filter("repetition", _reward("repetition", max_penalty=1.0), at_most=True),
        Filter("max_tokens", tokens, at_most=True),
        Filter("max_chars", lambda texts, traces: [float(len(t)) for t in texts], at_most=True),
    )}


@dataclass
class Selection:
    """What rejection sampling kept, and one statistics row per step."""

    kept: list[GradedTrace]
    stats: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _step(name: str, before: list[GradedTrace], after: list[GradedTrace]) -> dict[str, Any]:
    n = len(before)
    return {"step": name, "in": n, "removed": n - len(after), "kept": len(after),
            "pass_rate": round(len(after) / n, 4) if n else None}


def rejection_sample(graded: Sequence[GradedTrace], filters: dict[str, float] | None = None,
                     per_problem: int | None = None, lang: str = "en",
                     tokenize: Tokenize | None = None) -> Selection:
    """Keep verified traces that pass ``filters`` (name -> threshold, applied in the order given), then
    the first ``per_problem`` of each problem by sample index. Stats: one row per step."""
    filters = filters or {}
    available = make_filters(lang, tokenize)
    unknown = [name for name in filters if name not in available]
    if unknown:
        raise UserError(f"unknown filter(s) {', '.join(unknown)}; filters: {', '.join(available)}")
    if per_problem is not None and per_problem < 1:
        raise UserError(f"per_problem must be >= 1 (got {per_problem})")
    samples = list(graded)
    current = [g for g in samples if g.correct]
    stats = [_step("verified", samples, current)]
    for name, threshold in filters.items():
        f = available[name]
        values = f.measure([g.trace.full_text() for g in current], [g.trace for g in current]) if current else []
        after = [g for g, v in zip(current, values) if f.passes(v, float(threshold))]
        stats.append(_step(f"{name} ({'<=' if f.at_most else '>='} {threshold})", current, after))
        current = after
    if per_problem is not None:
        counts: dict[str, int] = {}
        after = []
        for g in sorted(current, key=lambda g: g.trace.sample):
            if counts.get(g.problem.id, 0) < per_problem:
                counts[g.problem.id] = counts.get(g.problem.id, 0) + 1
                after.append(g)
        order = {id(g): i for i, g in enumerate(current)}
        after.sort(key=lambda g: order[id(g)])
        stats.append(_step(f"per problem (<= {per_problem})", current, after))
        current = after
    problems = {g.problem.id for g in samples}
    solved = {g.problem.id for g in samples if g.correct}
    summary = {"problems": len(problems), "samples": len(samples), "problems_solved": len(solved),
               "problems_kept": len({g.problem.id for g in current}), "kept": len(current)}
    return Selection(kept=current, stats=stats, summary=summary)
