"""GRPO: group-relative advantages and the clipped policy-gradient loss, with its variants.

Variants are small changes to the same two functions (``LOSS_PRESETS`` lists each one's defaults):

- ``grpo``     baseline = group mean, scaled by group std; loss = mean over tokens per sequence, then over sequences
- ``dr_grpo``  no std scaling; loss = token sum / (sequences x max completion length), a constant
- ``dapo``     loss = mean over all tokens of the batch; clip-higher (``epsilon_high``); dynamic sampling
               (the trainer's); DAPO's overlong shaping is the ``overlong`` reward (``ahalab.rewards``)
- ``rloo``     leave-one-out baseline, no std scaling; one importance ratio per sequence (as TRL's RLOOTrainer)

``grpo_loss`` matches TRL's ``GRPOTrainer._compute_loss`` (``RLOOTrainer`` for rloo) for the same settings.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

LossType = Literal["grpo", "dr_grpo", "dapo", "rloo"]
SamplingCorrection = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
RewardScale = Literal["std", "none"]
Baseline = Literal["mean", "rloo"]
LOSS_PRESETS: dict[str, dict] = {
    "grpo": {"scale_rewards": "std", "baseline": "mean", "epsilon_high": 0.2, "dynamic_sampling": False},
    "dr_grpo": {"scale_rewards": "none", "baseline": "mean", "epsilon_high": 0.2, "dynamic_sampling": False},
    "dapo": {"scale_rewards": "std", "baseline": "mean", "epsilon_high": 0.28, "dynamic_sampling": True},
    "rloo": {"scale_rewards": "none", "baseline": "rloo", "epsilon_high": 0.2, "dynamic_sampling": False},
}
STD_EPS = 1e-4  # as TRL


def group_advantages(rewards: torch.Tensor, group_size: int, scale: RewardScale = "std",
                     baseline: Baseline = "mean") -> torch.Tensor:
    """Advantages for rewards laid out group after group ([B*G] -> [B*G]).

    baseline "mean": r - mean(group); "rloo": r - mean(the other G-1 rewards of the group).
    scale "std": divide by the group's (unbiased) std + 1e-4; "none": leave as is.
    A group whose rewards are all equal carries no signal: its advantages are exactly 0.
    """
    grouped = rewards.view(-1, group_size)
    if baseline == "mean":
        adv = grouped - grouped.mean(1, keepdim=True)
    elif baseline == "rloo":
        adv = grouped - (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    else:
        raise ValueError(f"baseline must be 'mean' or 'rloo' (got {baseline!r})")
    if scale == "std":
        adv = adv / (grouped.std(1, keepdim=True) + STD_EPS)
    elif scale != "none":
        raise ValueError(f"scale must be 'std' or 'none' (got {scale!r})")
    flat = grouped.amax(1, keepdim=True) == grouped.amin(1, keepdim=True)
    return adv.masked_fill(flat, 0.0).reshape(-1)


def sampling_ratio(old_logprobs: torch.Tensor, sampled_logprobs: torch.Tensor, mask: torch.Tensor,
                   mode: SamplingCorrection = "token_truncate", clip_min: float | None = None,
                   clip_max: float | None = 2.0) -> torch.Tensor:
    """Importance weights pi_train / pi_engine for tokens an engine sampled (TRL's
    ``vllm_importance_sampling_correction``): [B, T] per token or [B, 1] per sequence (``sequence_*``: the product of
    the sequence's token ratios). ``*_truncate`` clamps the ratios to [clip_min, clip_max]; ``*_mask`` zeroes those
    outside it. Tokens without an engine log-probability (NaN) count as ratio 1."""
    diff = torch.nan_to_num((old_logprobs - sampled_logprobs) * mask, nan=0.0)  # [B, T]
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)  # [B, 1]
    ratio = torch.exp(diff)
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=low, max=high)
    if mode.endswith("mask"):
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
    raise ValueError(f"sampling correction mode must be one of {', '.join(SamplingCorrection.__args__)} "
                     f"(got {mode!r})")


def grpo_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, *, loss_type: LossType = "grpo", epsilon: float = 0.2,
              epsilon_high: float | None = None, beta: float = 0.0, num_sequences: int | None = None,
              num_tokens: int | None = None, max_completion_len: int | None = None,
              sampling_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate loss (+ beta x k3 KL to the reference) over completion tokens.

    Tensors are [B, T] completion positions (``mask`` 1 on real completion tokens), ``advantages`` [B].
    When the batch is a micro-batch of a bigger one, pass the whole batch's ``num_sequences`` and
    ``num_tokens`` (masked): the micro-batch losses then sum to the whole batch's loss. ``sampling_weights``
    ([B, T] or [B, 1], ``sampling_ratio``) weight the policy term of tokens sampled by another engine, as TRL does.
    Returns (loss, stats): stats hold summed ``kl`` and ``clipped`` over masked tokens, for logging.
    """
    mask = mask.to(logprobs.dtype)
    num_sequences = num_sequences or logprobs.size(0)
    eps_high = epsilon if epsilon_high is None else epsilon_high
    log_ratio = logprobs - old_logprobs
    if loss_type == "rloo":  # one ratio per sequence: the ratio of the sequences' probabilities
        log_ratio = (log_ratio * mask).sum(-1, keepdim=True)
    ratio = torch.exp(log_ratio)
    adv = advantages.unsqueeze(1)
    policy = -torch.min(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + eps_high) * adv)
    clipped = ((ratio < 1 - epsilon) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    if sampling_weights is not None:
        policy = policy * sampling_weights

    kl = torch.zeros_like(logprobs)
    if beta != 0.0:
        delta = ref_logprobs - logprobs
        kl = torch.exp(delta) - delta - 1  # k3 estimator of KL(policy || reference), per token

    if loss_type == "rloo":  # the KL term enters as each sequence's token mean
        loss = (policy[:, 0] + beta * (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / num_sequences
    elif loss_type == "grpo":
        loss = (((policy + beta * kl) * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / num_sequences
    elif loss_type == "dr_grpo":
        loss = ((policy + beta * kl) * mask).sum() / (num_sequences * (max_completion_len or mask.size(1)))
    elif loss_type == "dapo":
        loss = ((policy + beta * kl) * mask).sum() / max(num_tokens or int(mask.sum()), 1)
    else:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_PRESETS)} (got {loss_type!r})")
    stats = {"kl": float((kl.detach() * mask).sum()), "clipped": float((clipped.expand_as(mask) * mask).sum())}
    return loss, stats
