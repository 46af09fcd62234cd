"""Reward functions on crafted completions, the registry and the weighted sum."""
from __future__ import annotations

import math

import pytest

from ahalab.errors import UserError
from ahalab.rewards import REWARDS, combine, get_reward
from ahalab.tasks import get_task
from ahalab.types import Problem

PROBLEM = Problem(id="p", question="What is 2 + 3?", answer="5")
GOOD = "<think>2 plus 3 is 5</think> <answer>5</answer>"
WRONG = "<think>2 plus 3 is 6</think> <answer>6</answer>"


@pytest.fixture(scope="module")
def task():
    return get_task("arithmetic")


def test_accuracy_uses_the_task_verifier(task):
    fn = get_reward("accuracy", task=task, max_tokens=100)
    texts = [GOOD, WRONG, "The answer is 5.", "no idea"]
    assert fn(texts, problem=[PROBLEM] * 4, answer=["5"] * 4) == [1.0, 0.0, 1.0, 0.0]


def test_format_exact():
    fn = REWARDS["format_exact"]
    texts = [GOOD, "<think>a</think>\n<answer>b</answer>\n", "<think>a</think> <answer>b</answer> extra",
             "<think>a <answer>b</answer>", "<think>a</think><think>b</think><answer>c</answer>"]
    assert fn(texts) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_format_soft_gives_partial_credit_per_tag():
    fn = REWARDS["format_soft"]
    texts = ["<think>just thinking", "<think>done</think> 5", "<think>a</think> <answer>5", GOOD,
             "<think>a</think></think>", "plain"]
    assert fn(texts) == [0.25, 0.5, 0.75, 1.0, 0.25, 0.0]


def test_language_share_of_target_script():
    fn = get_reward("language")
    texts = ["<think>abc def</think><answer>1</answer>", "<think>ab 你好</think>", "<think>123 + 4</think>",
             "no tags at all"]
    assert fn(texts) == [1.0, 0.5, None, 1.0]
    assert get_reward("language", lang="zh")(["<think>ab 你好</think>"]) == [0.5]
    with pytest.raises(UserError):
        get_reward("language", lang="xx")(["a"])


def test_cosine_prefers_short_right_and_long_wrong(task):
    fn = get_reward("cosine", task=task, max_tokens=100)
    out = fn([GOOD, GOOD, WRONG, WRONG, GOOD], problem=[PROBLEM] * 5, completion_ids=[[0] * n for n in (0, 100, 0, 100, 50)])
    assert out[:4] == pytest.approx([1.0, 0.5, -1.0, -0.5])
    assert out[4] == pytest.approx(0.75)  # halfway: the middle of [0.5, 1.0]


def test_repetition_penalty():
    fn = REWARDS["repetition"]
    assert fn(["a b c d e", "a b a b a b", "a b"]) == pytest.approx([0.0, -(1 - 2 / 4), 0.0])


def test_overlong_soft_punishment():
    fn = get_reward("overlong", max_tokens=100, cache=20)
    assert fn(["x"] * 4, completion_ids=[[0] * n for n in (50, 80, 90, 100)]) == pytest.approx([0.0, 0.0, -0.5, -1.0])


def test_get_reward_binds_only_accepted_context():
    fn = get_reward("format_exact", task="unused", max_tokens=5)
    assert fn([GOOD]) == [1.0]
    with pytest.raises(UserError, match="unknown reward"):
        get_reward("nope")


def test_combine_skips_missing():
    out = combine({"a": [1.0, None, None], "b": [0.5, 0.5, None]}, {"a": 2.0, "b": 1.0})
    assert out == [2.5, 0.5, 0.0]
    assert not any(math.isnan(x) for x in out)


def test_reward_model_scores_only_unverifiable_prompts(tiny_model, tmp_path):
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model)
    config.num_labels = 1
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "rm")
    open_ended, checked = Problem("o", "Write a haiku.", ""), Problem("c", "What is 1 + 1?", "2")
    problems = [open_ended, open_ended, checked, checked]
    texts = ["<answer>2</answer>", "hm", "<answer>2</answer>", "<answer>3</answer>"]
    rm = get_reward("reward_model", path=str(tmp_path / "rm"))
    scores = rm(texts, problem=problems)
    assert scores[2:] == [None, None] and all(0 < s < 1 for s in scores[:2])
    assert get_reward("accuracy", task=get_task("arithmetic"))(texts, problem=problems) == [None, None, 1.0, 0.0]
    assert all(s is not None for s in get_reward("reward_model", path=str(tmp_path / "rm"), where="all")(
        texts, problem=problems))
    assert combine({"accuracy": [None, 1.0], "reward_model": [0.5, None]}, {"accuracy": 1.0, "reward_model": 2.0}) \
        == [1.0, 1.0]
    with pytest.raises(UserError, match="needs a checkpoint"):
        get_reward("reward_model")(texts, problem=problems)


# --- TRL's reward contract ----------------------------------------------------------------------------


def test_rewards_take_trl_keywords_and_conversational_completions(task):
    """Called as TRL calls them: keywords only, completions as strings or as one-message conversations."""
    from ahalab.rewards import contents

    conversational = [[{"role": "assistant", "content": t}] for t in (GOOD, WRONG)]
    assert contents(conversational) == [GOOD, WRONG]
    fn = get_reward("accuracy", task=task)
    kwargs = {"prompts": ["p", "p"], "completion_ids": [[1], [2]], "problem": [PROBLEM] * 2, "answer": ["5"] * 2,
              "trainer_state": None}
    assert fn(completions=conversational, **kwargs) == fn(completions=[GOOD, WRONG], **kwargs) == [1.0, 0.0]
    assert get_reward("format_exact")(completions=conversational, **kwargs) == [1.0, 1.0]
    assert get_reward("format_soft")(completions=conversational, **kwargs) == [1.0, 1.0]


def test_a_trl_reward_function_by_import_path():
    from trl.rewards import think_format_reward

    fn = get_reward("trl.rewards:think_format_reward", task=None, max_tokens=10)
    completions = [[{"role": "assistant", "content": "<think>\nx\n</think>\nanswer"}],
                   [{"role": "assistant", "content": "no think"}]]
    assert fn(prompts=[[], []], completions=completions, completion_ids=[[1], [2]]) == \
        think_format_reward(completions) == [1.0, 0.0]
    with pytest.raises(UserError, match="cannot import"):
        get_reward("no_such_module:f")
    with pytest.raises(UserError, match="unknown reward"):
        get_reward("nope")
