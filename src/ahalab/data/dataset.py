"""SFT datasets: JSONL rows in chat "messages" form, in the r1 prompt format, with a dataset card.

A row::

    {"messages": [{"role": "system", ...}, {"role": "user", ...},
                  {"role": "assistant", "content": "<think>\\n...\\n</think>\\n<answer>...</answer>"}],
     "problem_id": ..., "answer": gold, "teacher": ..., "kind": "shortcut" | "journey" | "trace"}

The system and user messages are exactly what ``ahalab.prompts`` renders for the format (r1 by
default), and the assistant message starts with the format's assistant prefix (``<think>``), so a
model trained on it continues eval prompts the way it was taught. ``datasets.load_dataset("json",
data_files=...)`` reads the file.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ahalab.data.teachers import Trace
from ahalab.errors import UserError
from ahalab.plots import markdown_table
from ahalab.runs import atomic_write_text
from ahalab.tasks.base import Task
from ahalab.types import Problem

_THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)
_ANSWER_TAG = re.compile(r"<answer>.*?(?:</answer>|$)", re.S)


def reasoning_of(trace: Trace) -> str:
    """The reasoning in a trace: its separate reasoning field, else what is inside ``<think>``, else the
    whole text without its ``<answer>`` part."""
    if trace.reasoning:
        return trace.reasoning.strip()
    match = _THINK.search(trace.text)
    if match:
        return match.group(1).strip()
    return _ANSWER_TAG.sub("", trace.text).strip()


def assistant_content(reasoning: str, answer: str, prefix: str = "<think>") -> str:
    """``<think>\\nreasoning\\n</think>\\n<answer>answer</answer>``: the r1 layout (graders and format rewards)."""
    if prefix not in ("", "<think>"):
        raise UserError(f"datasets are written in the r1 layout; the format's assistant prefix {prefix!r} does not fit")
    return f"<think>\n{reasoning.strip()}\n</think>\n<answer>{answer.strip()}</answer>"


def make_row(problem: Problem, task: Task, reasoning: str, answer: str, teacher: str, kind: str = "trace",
             fmt: str = "r1") -> dict[str, Any]:
    """One dataset row: the format's system/user messages for ``problem`` and the assistant answer."""
    from ahalab.prompts import build_messages

    messages, prefix = build_messages(problem.question, fmt, task.answer_hint)
    messages.append({"role": "assistant", "content": assistant_content(reasoning, task.answer_text(answer), prefix)})
    return {"messages": messages, "problem_id": problem.id, "answer": problem.answer, "teacher": teacher,
            "kind": kind}


def completion_of(row: dict[str, Any]) -> str:
    """The assistant message of a row."""
    return row["messages"][-1]["content"]


def count_tokens(rows: Sequence[dict[str, Any]], tokenize: Callable[[str], list[int]]) -> int:
    """Assistant tokens over all rows (what a completion-only loss trains on)."""
    return sum(len(tokenize(completion_of(r))) for r in rows)


def take_token_budget(rows: Sequence[dict[str, Any]], budget: int,
                      tokenize: Callable[[str], list[int]]) -> list[dict[str, Any]]:
    """The first rows whose assistant tokens add up to ``budget`` (the row that crosses it included)."""
    out, total = [], 0
    for row in rows:
        if total >= budget:
            break
        out.append(row)
        total += len(tokenize(completion_of(row)))
    if total < budget:
        raise UserError(f"only {total} assistant tokens in {len(rows)} rows; a budget of {budget} needs more problems")
    return out


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """All rows, atomically (readers never see half a dataset)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return Path(path)


def render_card(title: str, info: dict[str, Any], stats: Sequence[dict[str, Any]] = (),
                removed: Sequence[dict[str, Any]] = (), files: dict[str, int] | None = None) -> str:
    """A dataset card (README.md): YAML header for the hub loader, provenance, filter statistics, removals."""
    files = files or {}
    header = ["---", "configs:", "- config_name: default", "  data_files:"]
    for name in files:
        header += [f"  - split: {Path(name).stem.replace('-', '_')}", f"    path: {name}"]
    header += ["---", ""]
    lines = [f"# {title}", "", "Chat-format SFT data (`messages`: system, user, assistant). The assistant message is "
             "`<think>` reasoning `</think>` then `<answer>` answer `</answer>`, the r1 layout.", "",
             "## Provenance", ""]
    lines += [f"- **{k}**: {v}" for k, v in info.items()]
    if files:
        lines += ["", "## Files", "", markdown_table([{"file": k, "rows": v} for k, v in files.items()])]
    if stats:
        lines += ["## Filters", "", markdown_table(stats)]
    lines += ["## Decontamination", ""]
    if removed:
        lines += [f"{len(removed)} problem(s) removed for n-gram overlap with evaluation sets:", "",
                  markdown_table(removed[:50])]
    else:
        lines += ["No problem was removed (or no evaluation set was checked: see Provenance).", ""]
    return "\n".join(header + lines) + "\n"
