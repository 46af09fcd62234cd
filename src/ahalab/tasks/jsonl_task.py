"""Reading problems from a local JSONL file or a dataset-hub split, and the generic ``jsonl`` task.

File tasks take the first ``limit`` rows in file order (no shuffling), so a run is reproducible
and ``--limit 50`` is always the same 50 problems.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ahalab.runs import iter_jsonl
from ahalab.tasks.answers import check_extractors
from ahalab.tasks.base import Task, TaskError, check_limit
from ahalab.types import Problem

# One input row and where it came from ("file.jsonl:12" or "openai/gsm8k[11]"), for error messages.
Row = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class HubSplit:
    """Where a task's data lives on the dataset hub, and the local file to suggest when offline."""

    dataset: str
    config: str | None
    split: str
    local_example: str


def read_rows(path: str | Path, limit: int | None) -> list[Row]:
    """The first ``limit`` rows of a JSONL file (malformed lines: DataError naming file:line)."""
    check_limit(limit)
    rows: list[Row] = []
    for line, obj in iter_jsonl(path):
        rows.append((f"{path}:{line}", obj))
        if len(rows) == limit:  # stop before parsing lines past the limit
            break
    if not rows:
        raise TaskError(f"{path}: empty file (no JSON lines)")
    return rows


def hub_rows(hub: HubSplit, limit: int | None) -> list[Row]:
    """The first ``limit`` rows of a dataset-hub split; TaskError suggesting a local file if it can't load."""
    check_limit(limit)
    try:
        import datasets

        ds = datasets.load_dataset(hub.dataset, hub.config, split=hub.split)
    except Exception as e:  # offline, unknown id, bad config: all fixed the same way
        raise TaskError(f"could not load '{hub.dataset}' ({hub.split}) from the dataset hub "
                        f"({type(e).__name__}: {str(e)[:200]}); pass --data with a local JSONL file instead, "
                        f"e.g. --data {hub.local_example}") from None
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise TaskError(f"'{hub.dataset}' ({hub.split}) has no rows")
    return [(f"{hub.dataset}[{i}]", dict(row)) for i, row in enumerate(ds.select(range(n)))]


def load_rows(data: str | None, limit: int | None, hub: HubSplit | None = None) -> list[Row]:
    """Rows from ``data``: an existing path or a name ending in .jsonl is a file, anything else a hub id.

    ``data=None`` means ``hub`` (the task's default dataset); tasks without one need a file.
    """
    if data is None and hub is None:
        raise TaskError("this task reads a JSONL file: pass --data PATH")
    if data is not None and (hub is None or Path(data).exists() or data.endswith((".jsonl", ".json"))):
        return read_rows(data, limit)
    return hub_rows(hub if data is None else HubSplit(data, hub.config, hub.split, hub.local_example), limit)


def field(row: Row, name: str) -> str:
    """Field ``name`` of a row as a stripped string; TaskError naming the field and those available."""
    where, obj = row
    if name not in obj:
        raise TaskError(f"{where}: missing field '{name}' (fields: {', '.join(obj) or 'none'})")
    value = "" if obj[name] is None else str(obj[name]).strip()
    if not value:
        raise TaskError(f"{where}: field '{name}' is empty")
    return value


def question_answer_problems(rows: list[Row], prefix: str, question_field: str = "question",
                             answer_field: str | None = "answer", id_field: str | None = None) -> list[Problem]:
    """One Problem per row from its question and answer fields; ids from ``id_field`` or ``prefix-00012``.

    ``answer_field=None``: open-ended prompts with no gold answer (answer ""), which only a reward model scores.
    """
    problems = [Problem(id=field(row, id_field) if id_field else f"{prefix}-{i:05d}",
                        question=field(row, question_field), answer=field(row, answer_field) if answer_field else "")
                for i, row in enumerate(rows)]
    if id_field and len({p.id for p in problems}) < len(problems):
        raise TaskError(f"field '{id_field}' has repeated values; problem ids must be unique")
    return problems


class JsonlTask(Task):
    """Any JSONL file of question/answer rows; field names and the extraction order are options
    (``answer_field: null`` for prompts without a gold answer, e.g. for a reward-model reward in RL)."""

    name = "jsonl"
    extractors = ("answer_tag", "boxed", "answer_line", "whole", "last_number")
    answer_hint = "a short exact answer"
    defaults = {"question_field": "question", "answer_field": "answer", "id_field": None, "extractors": None}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        order = self.options["extractors"]
        if order is not None:
            try:
                self.extractors = check_extractors(order.split(",") if isinstance(order, str) else order)
            except ValueError as e:
                raise TaskError(str(e)) from None

    def load(self, data: str | None = None, limit: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``limit`` rows of the file ``data`` (``seed`` is unused: files are read in order)."""
        o = self.options
        return question_answer_problems(load_rows(data, limit), self.name, o["question_field"], o["answer_field"],
                                        o["id_field"])
