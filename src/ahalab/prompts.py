"""Prompt formats (direct, cot, r1, or a user template file) rendered for chat or base models.

A format gives an optional system message, the user message (a template with ``{question}`` and
``{hint}``, the task's description of its answer) and an assistant prefix: text put at the start
of the answer, after the generation prompt (r1: "<think>", as TinyZero does). Completions continue
the prefix, so graders must see ``prefix + completion`` (``ahalab.types.Sample.text``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ahalab.errors import UserError

R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with the "
    "answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
DEFAULT_HINT = "a number"


@dataclass(frozen=True)
class PromptFormat:
    """How to ask: user template ({question}, {hint}), system message, assistant prefix, raw-text labels."""

    name: str
    user: str
    system: str | None = None
    prefix: str = ""
    raw_labels: tuple[str, str] = ("Question:", "Answer:")  # roles when there is no chat template


FORMATS: dict[str, PromptFormat] = {
    "direct": PromptFormat("direct", "{question}\n\nGive only the final answer ({hint}), with no explanation."),
    "cot": PromptFormat("cot", "{question}\n\nThink step by step, then give the final answer ({hint}) on the last "
                               "line as 'Answer: <answer>'."),
    "r1": PromptFormat("r1", "{question}\n\nShow your reasoning in <think> </think> tags and give the final answer "
                             "({hint}) in <answer> </answer> tags.",
                       system=R1_SYSTEM, prefix="<think>", raw_labels=("User:", "Assistant:")),
}


@dataclass(frozen=True)
class Rendered:
    """A prompt ready for an engine, and the assistant prefix it ends with (graders prepend it)."""

    prompt: str
    prefix: str


@functools.lru_cache(maxsize=64)
def get_format(fmt: str) -> PromptFormat:
    """A built-in format by name, or a template file (the user message, with a ``{question}`` placeholder)."""
    if fmt in FORMATS:
        return FORMATS[fmt]
    path = Path(fmt)
    if not path.is_file():
        raise UserError(f"unknown prompt format '{fmt}'; valid formats: {', '.join(FORMATS)}, or the path of a "
                        f"template file containing {{question}}")
    text = path.read_text(encoding="utf-8").strip()
    if "{question}" not in text:
        raise UserError(f"{path}: a prompt template must contain the placeholder {{question}}")
    return PromptFormat(name=str(path), user=text)


def build_messages(question: str, fmt: str, answer_hint: str = DEFAULT_HINT,
                   assistant_prefix: bool = True) -> tuple[list[dict[str, str]], str]:
    """Chat messages for ``question`` in format ``fmt``, and the assistant prefix ("" if turned off)."""
    f = get_format(fmt)
    # {hint} first, so a question that happens to contain "{hint}" is left alone.
    user = f.user.replace("{hint}", answer_hint).replace("{question}", question)
    messages = ([{"role": "system", "content": f.system}] if f.system else []) + [{"role": "user", "content": user}]
    return messages, f.prefix if assistant_prefix else ""


def _apply_chat_template(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:
        if messages[0]["role"] != "system":
            raise UserError(f"the tokenizer's chat template failed on this prompt: {e}") from None
    # Some templates (e.g. Gemma's) reject a system message: fold it into the user message.
    merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
    return _apply_chat_template(tokenizer, [merged])


def uses_chat(tokenizer: Any, chat: bool | None) -> bool:
    """Whether prompts go through the tokenizer's chat template (``chat`` None: when it has one)."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise UserError("this tokenizer has no chat template; render raw text instead (chat=False)")
    return has_template if chat is None else chat


def render(tokenizer: Any, task: Any, question: str, fmt: str, chat: bool | None = None,
           assistant_prefix: bool = True) -> Rendered:
    """The prompt for ``question`` in format ``fmt`` with ``task.answer_hint``: the chat template if ``chat``
    (None: if the tokenizer has one), else raw "Question: ...\nAnswer:" text; the assistant prefix comes last."""
    messages, prefix = build_messages(question, fmt, task.answer_hint, assistant_prefix)
    if uses_chat(tokenizer, chat):
        return Rendered(_apply_chat_template(tokenizer, messages) + prefix, prefix)
    user_label, assistant_label = get_format(fmt).raw_labels
    system = [m["content"] for m in messages if m["role"] == "system"]
    text = "\n\n".join(system + [f"{user_label} {messages[-1]['content']}\n{assistant_label}"])
    return Rendered(text + (" " + prefix if prefix else ""), prefix)
