"""Reward functions with TRL's contract, called with keywords exactly as TRL's GRPOTrainer calls them:

    fn(prompts=..., completions=..., completion_ids=..., **columns) -> list[float | None]

``completions`` are the assistant texts (the prompt's assistant prefix, e.g. ``<think>`` for the r1
format, joined in front): plain strings, or TRL's conversational form ``[{"role": "assistant",
"content": text}]`` per completion when the prompts went through a chat template (``prompts`` are
then message lists, else strings). ``completion_ids`` are the generated token ids. Columns are
per-completion lists: ``problem`` (``Problem``), ``question``, ``answer`` (gold string), the
problem's ``meta`` fields, and ``trainer_state`` (``global_step``, ``max_steps``). ``None`` means
"does not apply here"; ``combine`` skips it. Options a reward needs beyond the columns (the task,
token budgets, weights of its own) are keyword-only parameters, bound once by ``get_reward(name, **context)``.

A reward is a registered name (``REWARDS``) or the import path of any function with this contract,
``"module:function"`` (e.g. ``"trl.rewards:think_format_reward"``).
"""
from __future__ import annotations

import functools
import importlib
import inspect
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from ahalab.errors import UserError

RewardFn = Callable[..., list[float | None]]
REWARDS: dict[str, RewardFn] = {}

# <think> reasoning </think> <answer> final answer </answer>, nothing else around it.
R1_FORMAT = re.compile(r"^\s*<think>(?:(?!</?think>).)*</think>\s*<answer>(?:(?!</?answer>).)*</answer>\s*$", re.S)
R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
THINK = re.compile(r"<think>(.*?)(?:</think>|$)", re.S)


def register(fn: RewardFn) -> RewardFn:
    """Add ``fn`` to the registry under its function name."""
    REWARDS[fn.__name__] = fn
    return fn


def _lookup(name: str) -> RewardFn:
    if name in REWARDS:
        return REWARDS[name]
    module, sep, attr = name.partition(":")
    if sep:
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise UserError(f"reward '{name}': cannot import it ({e})") from None
        if callable(fn):
            return fn
    raise UserError(f"unknown reward '{name}' (rewards: {', '.join(sorted(REWARDS))}, or 'module:function')")


def get_reward(name: str, **context: Any) -> RewardFn:
    """The reward ``name`` with those of ``context``'s keywords it accepts bound (e.g. task, max_tokens)."""
    fn = _lookup(name)
    accepted = {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
    bound = functools.partial(fn, **{k: v for k, v in context.items() if k in accepted})
    bound.__name__ = name  # type: ignore[attr-defined]
    return bound


def contents(completions: Sequence[Any]) -> list[str]:
    """The texts of completions in either of TRL's forms (strings, or one-message conversations)."""
    return [c if isinstance(c, str) else c[-1]["content"] for c in completions]


def combine(rewards: dict[str, Sequence[float | None]], weights: dict[str, float]) -> list[float]:
    """Per-completion weighted sum over the named rewards; a ``None`` is skipped (0.0 if all are None)."""
    n = len(next(iter(rewards.values()))) if rewards else 0
    return [sum(weights[k] * r[i] for k, r in rewards.items() if r[i] is not None) for i in range(n)]


@register
def accuracy(completions: list, problem: list, *, task, **_: Any) -> list[float | None]:
    """The task verifier's score (1.0 right, 0.0 wrong; partial credit where the task defines it);
    ``None`` for a prompt without a gold answer (nothing to verify)."""
    gold = [(p, c) for c, p in zip(contents(completions), problem) if p.answer]
    scores = iter(score for _, score in task.grade_many(gold))
    return [next(scores) if p.answer else None for p in problem]


@functools.lru_cache(maxsize=2)
def _load_reward_model(path: str) -> Any:
    from ahalab.models.reward import RewardModel

    return RewardModel(path)


@register
def reward_model(completions: list, problem: list, *, path: str | None = None, where: str = "unverifiable",
                 **_: Any) -> list[float | None]:
    """A learned reward for what no rule can check (R1's last RL stage): the probability an HF
    sequence-classification checkpoint at ``path`` gives each (question, completion). ``where="unverifiable"``
    scores only prompts without a gold answer (``None`` for the others, which the rule rewards grade);
    ``"all"`` scores every completion."""
    if not path:
        raise UserError("reward_model needs a checkpoint: reward_options.reward_model.path=DIR_OR_HUB_ID")
    if where not in ("unverifiable", "all"):
        raise UserError(f"reward_model: where must be 'unverifiable' or 'all' (got {where!r})")
    completions = contents(completions)
    out: list[float | None] = [None] * len(completions)
    todo = [i for i, p in enumerate(problem) if where == "all" or not p.answer]
    rm = _load_reward_model(path) if todo else None
    for i in todo:  # consecutive completions of one prompt (a GRPO group) are scored in one batch
        if out[i] is None:
            same = [j for j in todo if j >= i and problem[j] is problem[i] and out[j] is None]
            for j, score in zip(same, rm(problem[i], [completions[j] for j in same])):
                out[j] = score
    return out


@register
def format_exact(completions: list, **_: Any) -> list[float | None]:
    """1.0 when the text is exactly ``<think>...</think><answer>...</answer>``, else 0.0."""
    return [float(bool(R1_FORMAT.match(c))) for c in contents(completions)]


@register
def format_soft(completions: list, **_: Any) -> list[float | None]:
    """Partial credit: 0.25 per R1 tag present exactly once, so the first ``</think>`` already pays.

    With the r1 prompt's ``<think>`` prefix every completion starts at 0.25; closing the reasoning and
    opening/closing an answer each add a step, which gives GRPO a signal long before the exact layout.
    """
    return [sum(0.25 for tag in R1_TAGS if c.count(tag) == 1) for c in contents(completions)]


SCRIPTS = {
    "en": re.compile(r"[A-Za-z]"),
    "latin": re.compile(r"[A-Za-z\u00C0-\u024F]"),
    "zh": re.compile(r"[\u4E00-\u9FFF\u3400-\u4DBF]"),
}


@register
def language(completions: list, *, lang: str = "en", **_: Any) -> list[float | None]:
    """Share of letters in the reasoning (inside ``<think>``, else the whole text) in ``lang``'s script.

    R1's language-consistency reward; ``None`` for a reasoning without letters.
    """
    if lang not in SCRIPTS:
        raise UserError(f"language reward: unknown lang '{lang}' (one of {', '.join(SCRIPTS)})")
    out: list[float | None] = []
    for c in contents(completions):
        m = THINK.search(c)
        letters = [ch for ch in (m.group(1) if m else c) if ch.isalpha()]
        out.append(sum(bool(SCRIPTS[lang].match(ch)) for ch in letters) / len(letters) if letters else None)
    return out


@register
def cosine(completions: list, problem: list, completion_ids: list[list[int]], *, task, max_tokens: int,
           min_correct: float = 0.5, max_correct: float = 1.0, min_wrong: float = -1.0, max_wrong: float = -0.5,
           **_: Any) -> list[float | None]:
    """Length-aware accuracy (cosine-scaled, "Demystifying long CoT"): short right answers earn most,
    wrong answers are punished less the longer the model thought. Length is in tokens, up to ``max_tokens``.
    """
    out: list[float | None] = []
    for c, p, ids in zip(contents(completions), problem, completion_ids):
        # the short end (length 0) gets the first value, the long end (max_tokens) the second
        short, long = (max_correct, min_correct) if task.is_correct(p, c) else (min_wrong, max_wrong)
        progress = min(len(ids) / max_tokens, 1.0)
        out.append(long + 0.5 * (short - long) * (1.0 + math.cos(progress * math.pi)))
    return out


@register
def repetition(completions: list, *, ngram: int = 3, max_penalty: float = -1.0, **_: Any) -> list[float | None]:
    """``max_penalty`` x the share of repeated word n-grams (0.0 for text shorter than one n-gram)."""
    out: list[float | None] = []
    for c in contents(completions):
        words = c.lower().split()
        grams = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
        out.append((1.0 - len(set(grams)) / len(grams)) * max_penalty if grams else 0.0)
    return out


@register
def overlong(completions: list, completion_ids: list[list[int]], *, max_tokens: int, cache: int = 32,
             **_: Any) -> list[float | None]:
    """DAPO's soft overlong punishment: 0 up to ``max_tokens - cache`` tokens, then a linear ramp to -1."""
    start = max_tokens - cache
    return [0.0 if len(ids) <= start else max(-1.0, (start - len(ids)) / cache) for ids in completion_ids]


def _code_scores(completions: list, problem: list) -> list[float]:
    from ahalab.tasks.code import extract_code, run_problems

    results = run_problems([(p, extract_code(c)) for c, p in zip(contents(completions), problem)])
    return [r.fraction if r else 0.0 for r in results]


@register
def code_tests_fraction(completions: list, problem: list, **_: Any) -> list[float | None]:
    """Share of a code problem's hidden tests the completion's program passes (sandboxed, in parallel)."""
    return list(_code_scores(completions, problem))


@register
def code_all_pass(completions: list, problem: list, **_: Any) -> list[float | None]:
    """1.0 when the completion's program passes every hidden test of its code problem, else 0.0."""
    return [float(s >= 1.0) for s in _code_scores(completions, problem)]
