"""Activation checkpointing (``gradient_checkpointing``): the same numbers, far fewer saved activations."""
from __future__ import annotations

import pytest
import torch

from ahalab.models.checkpointing import layer_checkpointing
from ahalab.rl.batch import Prefix, plan_batches
from ahalab.sft.collate import Example, completion_nll, pack


def _model(tiny_model: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).train()


class SavedBytes:
    """Bytes autograd keeps for the backward (tensors saved outside a checkpointed region; a checkpoint keeps its
    own inputs and recomputes the rest)."""

    def __init__(self) -> None:
        self.total = 0

    def __enter__(self) -> SavedBytes:
        def pack_hook(t: torch.Tensor) -> torch.Tensor:
            self.total += t.numel() * t.element_size()
            return t
        self.hooks = torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)


def _assert_same_with_less_saved(checkpointed: tuple, plain: tuple) -> None:
    """(values, gradients, saved bytes) of a checkpointed pass against a plain one."""
    for a, b in zip(checkpointed[0], plain[0]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    for a, b in zip(checkpointed[1], plain[1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert checkpointed[2] < 0.2 * plain[2], (checkpointed[2], plain[2])


def _grpo_pass(model: torch.nn.Module, chunk, checkpoint: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """(log-probabilities per micro-batch, parameter gradients, saved bytes of the prefix and continuation forwards,
    the prefix's run again in its backward included)."""
    model.zero_grad(set_to_none=True)
    with SavedBytes() as counter:
        prefix = Prefix(model, chunk, checkpoint=checkpoint)
    assert (counter.total == 0) == checkpoint  # checkpointed, the prefix forward keeps no graph until its backward
    logps, saved = [], counter.total
    for k, mb in enumerate(chunk.micro_batches):
        with SavedBytes() as counter:
            logp = prefix.logprobs(mb)
        saved += counter.total
        (logp * (k + 1.5)).sum().backward()  # a different weight per micro-batch
        logps.append(logp.detach())
    with SavedBytes() as counter:
        prefix.backward()  # checkpointed: the prefix forward runs again, its layers checkpointed
    saved += counter.total
    return logps, [p.grad.clone() for p in model.parameters()], saved


@pytest.mark.parametrize("prompts", [[[5, 6, 7, 8], [9, 10], [5, 6, 7, 8]],  # distinct prompts
                                     [[5, 6, 7, 8], [5, 6, 10], [5, 6, 7, 8]]])  # a shared system-prompt start
def test_grpo_update_same_logprobs_and_gradients_with_far_less_saved(tiny_model, prompts):
    model = _model(tiny_model)
    completions = [[20 + i for i in range(n)] for n in (30, 50, 12)]
    (chunk,) = plan_batches(prompts, completions, [0, 1, 2], max_tokens=120, pad_id=0)
    assert len(chunk.micro_batches) == 2
    _assert_same_with_less_saved(_grpo_pass(model, chunk, checkpoint=True), _grpo_pass(model, chunk, checkpoint=False))


def test_sft_forward_same_loss_and_gradients_with_far_less_saved(tiny_model):
    model = _model(tiny_model)
    examples = [Example(list(range(5, 5 + n)), [False] * 4 + [True] * (n - 4)) for n in (40, 25, 60)]
    (mb,) = pack(examples, 200)

    def run(checkpoint: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        model.zero_grad(set_to_none=True)
        with SavedBytes() as counter:
            loss = completion_nll(model, mb, checkpoint=checkpoint)
        loss.backward()
        return [loss.detach()], [p.grad.clone() for p in model.parameters()], counter.total

    _assert_same_with_less_saved(run(True), run(False))


def test_checkpointing_is_undone_after_the_block(tiny_model):
    model = _model(tiny_model)
    layers = list(model.model.layers)
    with layer_checkpointing(model):
        assert all(layer.gradient_checkpointing and layer._can_checkpoint_with_cache for layer in layers)
    assert not any(layer.gradient_checkpointing for layer in layers)
    assert not any("_can_checkpoint_with_cache" in layer.__dict__ for layer in layers)
    with layer_checkpointing(model, enabled=False):
        assert not any(layer.gradient_checkpointing for layer in layers)
