"""GRPO math: advantages by hand, the loss by hand, against TRL, and its gradient against finite differences."""
from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from ahalab.models.prefix import common_length
from ahalab.rl.batch import Prefix, plan_batches
from ahalab.rl.loss import group_advantages, grpo_loss, sampling_ratio

LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "rloo"]


def test_advantages_mean_std():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])  # second group: all equal
    adv = group_advantages(r, 4, scale="std")
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    expected = [0.5 / (std + 1e-4), -0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 0, 0, 0, 0]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)


def test_advantages_no_scaling():
    adv = group_advantages(torch.tensor([3.0, 1.0, 2.0]), 3, scale="none")
    assert adv.tolist() == pytest.approx([1.0, -1.0, 0.0])


def test_advantages_rloo():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 0.5, 0.5]), 3, scale="none", baseline="rloo")
    # 1 - (0+0)/2, 0 - (1+0)/2, ...; the second group: 0 - (0.5+0.5)/2, 0.5 - (0+0.5)/2 twice
    assert adv.tolist() == pytest.approx([1.0, -0.5, -0.5, -0.5, 0.25, 0.25])


def test_advantages_all_equal_are_exactly_zero():
    adv = group_advantages(torch.full((8,), 0.1), 8, scale="std")
    assert torch.equal(adv, torch.zeros(8))


# Two sequences of 3 and 2 tokens. Sequence 0 (A=+1): ratios 1, 1.5 (clipped to 1.2), 1. Sequence 1 (A=-2):
# ratios 1, 0.5 (clipped to 0.8, and min(-2*0.5, -2*0.8) keeps the clipped -1.6).
LOGP = torch.log(torch.tensor([[0.5, 0.6, 0.2], [0.3, 0.1, 0.9]]))
OLD = torch.log(torch.tensor([[0.5, 0.4, 0.2], [0.3, 0.2, 0.1]]))
ADV = torch.tensor([1.0, -2.0])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
TOKEN_LOSS = torch.tensor([[-1.0, -1.2, -1.0], [2.0, 1.6, 0.0]])  # -min(r*A, clip(r)*A), padding 0


@pytest.mark.parametrize("loss_type,expected", [
    ("grpo", ((-3.2 / 3) + (3.6 / 2)) / 2),
    ("dr_grpo", (-3.2 + 3.6) / (2 * 4)),  # max_completion_len 4
    ("dapo", (-3.2 + 3.6) / 5),
])
def test_loss_by_hand(loss_type, expected):
    loss, stats = grpo_loss(LOGP, OLD, None, ADV, MASK, loss_type=loss_type, epsilon=0.2, max_completion_len=4)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert stats["clipped"] == 2 and stats["kl"] == 0


def test_rloo_loss_by_hand():
    # one ratio per sequence: exp(sum of log ratios) = 1.5 (clipped 1.2) and 0.5 (clipped 0.8)
    loss, _ = grpo_loss(LOGP, OLD, None, ADV, MASK, loss_type="rloo", epsilon=0.2)
    assert loss.item() == pytest.approx((-1.2 + 1.6) / 2, abs=1e-6)


def test_kl_k3_by_hand():
    ref = LOGP + torch.tensor([[0.1, -0.2, 0.0], [0.3, 0.0, 5.0]])  # the padded token must not count
    loss, stats = grpo_loss(LOGP, LOGP.detach(), ref, torch.zeros(2), MASK, loss_type="dapo", beta=0.5)
    k3 = lambda d: math.exp(d) - d - 1  # noqa: E731
    kl = k3(0.1) + k3(-0.2) + k3(0.0) + k3(0.3) + k3(0.0)
    assert stats["kl"] == pytest.approx(kl, abs=1e-6)
    assert loss.item() == pytest.approx(0.5 * kl / 5, abs=1e-6)


def test_epsilon_high_loosens_the_upper_clip():
    loss, stats = grpo_loss(LOGP, OLD, None, ADV, MASK, loss_type="dapo", epsilon=0.2, epsilon_high=0.6)
    assert loss.item() == pytest.approx((-1 - 1.5 - 1 + 2 + 1.6) / 5, abs=1e-6)
    assert stats["clipped"] == 1


def _random_batch(b=6, t=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    old = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5) * 0.8
    ref = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t) < lengths[:, None]).double()
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_sum_to_the_batch_loss(loss_type):
    logp, old, ref, adv, mask = _random_batch()
    kw = {"loss_type": loss_type, "beta": 0.04, "epsilon_high": 0.28, "max_completion_len": 7}
    whole, _ = grpo_loss(logp, old, ref, adv, mask, **kw)
    norm = {"num_sequences": 6, "num_tokens": int(mask.sum())}
    parts = sum(grpo_loss(logp[s], old[s], ref[s], adv[s], mask[s], **kw, **norm)[0]
                for s in (slice(0, 2), slice(2, 6)))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-12)


# --- against TRL ----------------------------------------------------------------------------------------


def _accelerator():
    return SimpleNamespace(num_processes=1, sync_gradients=True, gather=lambda x: x, gather_for_metrics=lambda x: x,
                           reduce=lambda x, reduction="sum": x)


def _trl_loss(loss_type, logp, old, ref, adv, mask, epsilon, epsilon_high, beta, max_completion_len, weights=None):
    """TRL's own ``_compute_loss`` with the model forward replaced by the given log-probabilities (``weights``: its
    vLLM importance-sampling ratio)."""
    trl = pytest.importorskip("trl")
    b, t = logp.shape
    entropies = torch.zeros_like(logp)
    common = dict(_get_per_token_logps_and_entropies=lambda *a, **k: (logp, entropies, None),
                  aux_loss_enabled=False, accelerator=_accelerator(), model=SimpleNamespace(training=True),
                  _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, epsilon_low=epsilon,
                  epsilon_high=epsilon_high, beta=beta)
    inputs = {"prompt_ids": torch.zeros(b, 1, dtype=torch.long), "prompt_mask": torch.ones(b, 1, dtype=torch.long),
              "completion_ids": torch.zeros(b, t, dtype=torch.long), "completion_mask": mask, "advantages": adv}
    if loss_type == "rloo":
        fake = SimpleNamespace(**common)
        return trl.RLOOTrainer._compute_loss(fake, None, {**inputs, "old_logps": (old * mask).sum(1)})
    fake = SimpleNamespace(**common, loss_type=loss_type, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
                           importance_sampling_level="token", use_vllm=weights is not None,
                           vllm_importance_sampling_correction=weights is not None,
                           current_gradient_accumulation_steps=1, max_completion_length=max_completion_len,
                           _entropy_bonus_enabled=False,
                           args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1))
    inputs.update(old_per_token_logps=old, ref_per_token_logps=ref, num_items_in_batch=mask.sum(),
                  **({} if weights is None else {"importance_sampling_ratio": weights}))
    return trl.GRPOTrainer._compute_loss(fake, None, inputs)


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_matches_trl(loss_type, beta):
    if loss_type == "rloo" and beta:
        pytest.skip("TRL's RLOO puts the KL into the reward, not the loss")
    for seed in range(3):
        logp, old, ref, adv, mask = _random_batch(seed=seed)
        mine_in = logp.clone().requires_grad_()
        trl_in = logp.clone().requires_grad_()
        args = (old, ref, adv, mask)
        mine, _ = grpo_loss(mine_in, *args, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28, beta=beta,
                            max_completion_len=9)
        theirs = _trl_loss(loss_type, trl_in, old, ref, adv, mask, 0.2, 0.28, beta, 9)
        assert mine.item() == pytest.approx(theirs.item(), abs=1e-6)
        mine.backward()
        theirs.backward()
        torch.testing.assert_close(mine_in.grad, trl_in.grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("mode", ["token_truncate", "sequence_mask"])
def test_sampling_correction_matches_trl(loss_type, mode):
    """The policy term weighted by TRL's vLLM importance-sampling ratio, per token or per sequence, as TRL's loss."""
    for seed in range(3):
        logp, old, ref, adv, mask = _random_batch(seed=seed)
        sampled = old + (torch.rand(old.shape, generator=torch.Generator().manual_seed(seed), dtype=old.dtype) - .5)
        weights = sampling_ratio(old, sampled, mask, mode, clip_max=1.2)
        mine_in, trl_in = logp.clone().requires_grad_(), logp.clone().requires_grad_()
        mine, _ = grpo_loss(mine_in, old, ref, adv, mask, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28,
                            beta=0.04, max_completion_len=9, sampling_weights=weights)
        theirs = _trl_loss(loss_type, trl_in, old, ref, adv, mask, 0.2, 0.28, 0.04, 9, weights=weights)
        assert mine.item() == pytest.approx(theirs.item(), abs=1e-6)
        unweighted, _ = grpo_loss(logp, old, ref, adv, mask, loss_type=loss_type, epsilon=0.2, epsilon_high=0.28,
                                  beta=0.04, max_completion_len=9)
        assert mine.item() != pytest.approx(unweighted.item(), abs=1e-6)  # the weights count
        mine.backward()
        theirs.backward()
        torch.testing.assert_close(mine_in.grad, trl_in.grad, atol=1e-6, rtol=0)


def test_sampling_ratio_by_hand():
    """pi_train / pi_engine per token or per sequence (the product over its tokens); truncate clamps, mask zeroes;
    padding and tokens without an engine log-probability (NaN) count as ratio 1."""
    old = torch.log(torch.tensor([[0.5, 0.4, 0.2], [0.3, 0.2, 0.1]]))
    sampled = torch.log(torch.tensor([[0.25, 0.4, float("nan")], [0.3, 0.8, 0.5]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    tokens = torch.tensor([[2.0, 1.0, 1.0], [1.0, 0.25, 1.0]])
    torch.testing.assert_close(sampling_ratio(old, sampled, mask, "token_truncate", clip_max=None), tokens)
    torch.testing.assert_close(sampling_ratio(old, sampled, mask, "token_truncate", clip_min=0.5, clip_max=1.5),
                               torch.tensor([[1.5, 1.0, 1.0], [1.0, 0.5, 1.0]]))
    torch.testing.assert_close(sampling_ratio(old, sampled, mask, "token_mask", clip_min=0.5, clip_max=1.5),
                               torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]))
    torch.testing.assert_close(sampling_ratio(old, sampled, mask, "sequence_truncate", clip_max=None),
                               torch.tensor([[2.0], [0.25]]))
    torch.testing.assert_close(sampling_ratio(old, sampled, mask, "sequence_mask", clip_max=1.5),
                               torch.tensor([[0.0], [0.25]]))
    with pytest.raises(ValueError, match="sequence_mask"):
        sampling_ratio(old, sampled, mask, "sequence")


# --- through a model -------------------------------------------------------------------------------------


def test_common_length_leaves_every_row_a_token():
    assert common_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert common_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert common_length([[1, 2], [1, 2, 3]]) == 1  # the shorter row keeps its last token
    assert common_length([[7], [7]]) == 0
    assert common_length([[1, 2], [3, 2]]) == 0


@pytest.mark.parametrize("prompts", [[[5, 6, 7, 8], [9, 10], [5, 6, 7, 8]],  # rows 0 and 2 share a prompt
                                     [[5, 6, 7, 8], [5, 6, 10], [5, 6, 7, 8]]])  # and all start with 5, 6
def test_gradient_matches_finite_differences(tiny_model, prompts):
    """d loss / d weight through the whole path (shared-prompt forward, loss, prompt backward) in float64."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
    completions = [[20, 21, 22], [23, 24, 25, 26, 27], [28]]
    (chunk,) = plan_batches(prompts, completions, [0, 1, 2], max_tokens=10, pad_id=0)
    assert len(chunk.micro_batches) == 2 and chunk.ids.shape[0] == 2
    noise = torch.Generator().manual_seed(0)
    with torch.no_grad():
        base = [Prefix(model, chunk).logprobs(mb) for mb in chunk.micro_batches]
    olds = [b + 0.05 * torch.randn(b.shape, generator=noise, dtype=torch.float64) for b in base]
    refs = [b - 0.1 for b in base]
    advantages = torch.tensor([1.0, -0.5, 0.7], dtype=torch.float64)

    def loss(backward: bool = False) -> float:
        prefix, total = Prefix(model, chunk), 0.0
        for mb, old, ref in zip(chunk.micro_batches, olds, refs):
            value = grpo_loss(prefix.logprobs(mb), old, ref, advantages[mb.index], mb.mask, loss_type="grpo",
                              beta=0.1, num_sequences=3)[0]
            if backward:
                value.backward()
            total += value.item()
        if backward:
            prefix.backward()
        return total

    loss(backward=True)
    for weight in (model.model.layers[0].mlp.down_proj.weight, model.model.embed_tokens.weight):
        direction = torch.randn(weight.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        analytic = (weight.grad * direction).sum().item()
        h = 1e-4  # not smaller: Llama's RMSNorm computes in float32 even in a float64 model
        with torch.no_grad():
            weight += h * direction
            plus = loss()
            weight -= 2 * h * direction
            minus = loss()
            weight += h * direction
        assert analytic == pytest.approx((plus - minus) / (2 * h), rel=1e-3)
