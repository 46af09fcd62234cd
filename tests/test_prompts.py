"""Prompt formats: messages, chat-template vs raw rendering, the r1 <think> prefix, user template files."""
from __future__ import annotations

import copy

import pytest

from ahalab.errors import UserError
from ahalab.prompts import FORMATS, R1_SYSTEM, build_messages, render
from ahalab.tasks import get_task

Q = "What is {x} + 2? (x = 3)"  # braces in questions (LaTeX) must survive


def _prompt(tokenizer, fmt: str, **kw) -> str:
    """The rendered prompt text for Q with the arithmetic task's answer hint."""
    return render(tokenizer, get_task("arithmetic"), Q, fmt, **kw).prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    """The same tokenizer without a chat template (a base model's)."""
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    return plain


def test_build_messages_for_each_format() -> None:
    assert list(FORMATS) == ["direct", "cot", "r1"]
    messages, prefix = build_messages(Q, "direct", "a number")
    direct = Q + "\n\nGive only the final answer (a number), with no explanation."
    assert messages == [{"role": "user", "content": direct}]
    assert prefix == ""
    messages, prefix = build_messages(Q, "cot", "a number")
    assert "Think step by step" in messages[0]["content"] and "'Answer: <answer>'" in messages[0]["content"]
    messages, prefix = build_messages(Q, "r1", "an expression")
    assert messages[0] == {"role": "system", "content": R1_SYSTEM} and messages[1]["content"].startswith(Q)
    assert "<answer> </answer>" in messages[1]["content"] and "(an expression)" in messages[1]["content"]
    assert prefix == "<think>"
    assert build_messages(Q, "r1", assistant_prefix=False)[1] == ""


def test_chat_rendering_appends_the_prefix_after_the_generation_prompt(tokenizer) -> None:
    prompt = _prompt(tokenizer, "r1")
    assert prompt.startswith("<|im_start|>system\n" + R1_SYSTEM + "<|im_end|>\n<|im_start|>user\n" + Q)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n<think>")
    assert _prompt(tokenizer, "r1", assistant_prefix=False).endswith("<|im_start|>assistant\n")
    direct = _prompt(tokenizer, "direct")
    assert direct.startswith("<|im_start|>user\n") and direct.endswith("<|im_start|>assistant\n")


def test_raw_rendering_for_base_models(tokenizer, plain_tokenizer) -> None:
    cot = _prompt(plain_tokenizer, "cot")  # chat=None and no template: raw text
    assert cot.startswith("Question: " + Q + "\n\nThink step by step") and cot.endswith("\nAnswer:")
    assert _prompt(tokenizer, "cot", chat=False) == cot  # forced raw despite a template
    r1 = _prompt(plain_tokenizer, "r1")
    assert r1.startswith(R1_SYSTEM + "\n\nUser: " + Q) and r1.endswith("\nAssistant: <think>")
    with pytest.raises(UserError, match="no chat template"):
        _prompt(plain_tokenizer, "cot", chat=True)


def test_render_uses_the_task_hint_and_returns_the_prefix(tokenizer) -> None:
    rendered = render(tokenizer, get_task("countdown"), Q, "r1")
    assert get_task("countdown").answer_hint in rendered.prompt and rendered.prefix == "<think>"
    graded_text = rendered.prefix + " 3 + 2 </think> <answer>5</answer>"
    assert graded_text == "<think> 3 + 2 </think> <answer>5</answer>"
    assert get_task("arithmetic").grade(get_task("arithmetic").load(limit=1)[0], graded_text)[0] == "5"


def test_user_template_files(tmp_path, tokenizer) -> None:
    template = tmp_path / "mine.txt"
    template.write_text("Solve carefully: {question}\nEnd with 'Answer: <number>'.\n")
    messages, prefix = build_messages(Q, str(template))
    assert messages == [{"role": "user", "content": "Solve carefully: " + Q + "\nEnd with 'Answer: <number>'."}]
    assert prefix == ""
    assert "Solve carefully: " + Q in _prompt(tokenizer, str(template))
    bad = tmp_path / "bad.txt"
    bad.write_text("no placeholder here")
    with pytest.raises(UserError, match="must contain the placeholder \\{question\\}"):
        build_messages(Q, str(bad))


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="valid formats: direct, cot, r1, or the path of a template file"):
        build_messages(Q, "fancy")


def test_system_message_is_folded_in_when_the_template_rejects_it(tokenizer) -> None:
    strict = copy.deepcopy(tokenizer)
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}"
                            "{% endif %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    prompt = _prompt(strict, "r1")
    assert prompt.startswith("[user] " + R1_SYSTEM + "\n\n" + Q) and prompt.endswith("[assistant] <think>")
