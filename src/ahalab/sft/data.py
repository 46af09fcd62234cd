"""SFT training data: JSONL files of chat rows ``{"messages": [..., {"role": "assistant", "content": ...}]}``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ahalab.runs import DataError, iter_jsonl


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a chat dataset file; DataError naming file:line for a malformed row or a missing field."""
    rows = []
    for line, row in iter_jsonl(path):
        messages = row.get("messages")
        if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)
                and messages[-1].get("role") == "assistant" and isinstance(messages[-1].get("content"), str)):
            raise DataError(f"{path}:{line}: field 'messages' must be a list of chat messages ending with the "
                            "assistant's (role 'assistant', string 'content')")
        rows.append(row)
    return rows
