"""GSM8K (grade-school word problems) and MATH-500 (competition math), from a local JSONL or the hub."""
from __future__ import annotations

from abc import abstractmethod

from ahalab.tasks.base import Task
from ahalab.tasks.jsonl_task import HubSplit, Row, field, load_rows
from ahalab.types import Problem


class HubTask(Task):
    """A benchmark read from a local JSONL file or, by default, from a dataset-hub split.

    Options ``dataset``, ``config`` and ``split`` say which hub split; ``--data`` a file or another hub id.
    """

    local_example = ""  # the offline file to suggest when the hub can't be reached

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``limit`` problems of ``data`` or the default hub split, in order (``seed`` is unused)."""
        o = self.options
        rows = load_rows(data, limit, HubSplit(o["dataset"], o["config"], o["split"], self.local_example))
        return [self.problem(i, row) for i, row in enumerate(rows)]

    @abstractmethod
    def problem(self, index: int, row: Row) -> Problem:
        """The Problem for one input row."""


class Gsm8kTask(HubTask):
    """GSM8K: rows {question, answer}; the gold is what follows "####" in answer, commas removed."""

    name = "gsm8k"
    answer_hint = "a number"
    defaults = {"dataset": "openai/gsm8k", "config": "main", "split": "test"}
    local_example = "../shared/data/gsm8k_test.jsonl"

    def problem(self, index: int, row: Row) -> Problem:
        solution = field(row, "answer")
        gold = solution.rsplit("####", 1)[-1].strip().replace(",", "")  # a bare gold (no "####") is kept
        return Problem(id=f"{self.name}-{index:05d}", question=field(row, "question"), answer=gold,
                       meta={"solution": solution})


class Math500Task(HubTask):
    """MATH-500: rows {problem, answer, subject, level, unique_id, solution}; answers compared with math-verify.

    No ``last_number`` fallback: MATH answers are often not numbers ("\\frac{\\pi}{2}", "(1,2)"),
    and the last number of an unfinished solution is not an answer.
    """

    name = "math500"
    extractors = ("answer_tag", "boxed", "answer_line", "whole")
    answer_hint = "an exact answer in LaTeX, e.g. \\frac{1}{2}"
    defaults = {"dataset": "HuggingFaceH4/MATH-500", "config": None, "split": "test"}
    local_example = "../shared/data/math500_test.jsonl"

    def problem(self, index: int, row: Row) -> Problem:
        _, obj = row
        meta = {key: obj[key] for key in ("subject", "level", "unique_id", "solution") if key in obj}
        return Problem(id=str(obj.get("unique_id") or f"{self.name}-{index:05d}"), question=field(row, "problem"),
                       answer=field(row, "answer"), meta=meta)
