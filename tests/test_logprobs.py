"""token_logprobs (ahalab.models.logprobs): the chunked log-softmax equals the full one in value and gradient (float32,
bf16 autocast, float64 gradcheck, tied and frozen heads) and never keeps [N, V] logits for the backward."""
from __future__ import annotations

import pytest
import torch

from ahalab.models.logprobs import token_logprobs


def _reference(hidden: torch.Tensor, head: torch.nn.Linear, tokens: torch.Tensor, temperature: float = 1.0,
               autocast: bool = False) -> torch.Tensor:
    """The full-vocabulary computation the old code did (bf16 matmul as under ``torch.autocast``)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = head(hidden)  # [N, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return logits.log_softmax(-1).gather(-1, tokens[:, None])[:, 0]


def _case(n: int, bias: bool = True, vocab: int = 50, width: int = 8, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(width, vocab, bias=bias, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, width, generator=gen, dtype=dtype))
        if bias:
            head.bias.copy_(torch.randn(vocab, generator=gen, dtype=dtype))
    hidden = torch.randn(n, width, generator=gen, dtype=dtype, requires_grad=True)
    tokens = torch.randint(vocab, (n,), generator=gen)
    grad_out = torch.randn(n, generator=gen, dtype=dtype)  # a different upstream gradient per row
    return hidden, head, tokens, grad_out


def _grads(fn, hidden, head, tokens, grad_out, **kw) -> tuple[torch.Tensor, list[torch.Tensor]]:
    params = [hidden, *head.parameters()]
    out = fn(hidden, head, tokens, **kw)
    return out.detach(), torch.autograd.grad((out * grad_out).sum(), params)


@pytest.mark.parametrize("n,chunk_rows", [(1, 1), (1, 4), (10, 1), (10, 3), (10, 5), (10, 16), (33, 8)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_match_the_full_log_softmax(n, chunk_rows, temperature, bias):
    hidden, head, tokens, grad_out = _case(n, bias)
    want, want_grads = _grads(_reference, hidden, head, tokens, grad_out, temperature=temperature)
    got, got_grads = _grads(token_logprobs, hidden, head, tokens, grad_out, temperature=temperature,
                            chunk_rows=chunk_rows)
    assert got.dtype == torch.float32 and got.shape == (n,)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for g, w in zip(got_grads, want_grads):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bias", [False, True])
def test_autocast_runs_the_matmul_in_bf16_like_torch_autocast(bias):
    hidden, head, tokens, grad_out = _case(12, bias)
    want, want_grads = _grads(_reference, hidden, head, tokens, grad_out, temperature=0.7, autocast=True)
    got, got_grads = _grads(token_logprobs, hidden, head, tokens, grad_out, temperature=0.7, chunk_rows=5,
                            autocast=True)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)  # the same bf16 logits, then the same float32 math
    for g, w in zip(got_grads, want_grads):  # bf16 gradient matmuls, summed differently
        assert g.dtype == w.dtype == torch.float32
        torch.testing.assert_close(g, w, atol=0.05, rtol=0.02)
    full, _ = _grads(_reference, hidden, head, tokens, grad_out, temperature=0.7)
    assert (got - full).abs().max() > 1e-4  # bf16 rounding shows: the matmul did run in bf16


@pytest.mark.parametrize("autocast", [False, True])
def test_an_ambient_autocast_changes_nothing(autocast):
    hidden, head, tokens, grad_out = _case(9)
    want, want_grads = _grads(token_logprobs, hidden, head, tokens, grad_out, chunk_rows=4, autocast=autocast)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, got_grads = _grads(token_logprobs, hidden, head, tokens, grad_out, chunk_rows=4, autocast=autocast)
    assert torch.equal(got, want)
    assert all(torch.equal(g, w) for g, w in zip(got_grads, want_grads))


def test_gradcheck_in_float64():
    hidden, head, tokens, _ = _case(5, vocab=7, width=4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda h, w, b: token_logprobs(h, head, tokens, 0.8, chunk_rows=2),
                                    (hidden, head.weight, head.bias))


def test_a_tied_head_gets_the_embedding_and_head_gradients():
    """The weight both embeds the inputs and predicts the tokens (tied embeddings): autograd adds both parts."""
    gen = torch.Generator().manual_seed(0)
    embed = torch.nn.Embedding(30, 6)
    head = torch.nn.Linear(6, 30, bias=False)
    head.weight = embed.weight
    mix = torch.nn.Linear(6, 6)
    ids, tokens = torch.randint(30, (2, 11), generator=gen)

    def grads(fn, **kw) -> list[torch.Tensor]:
        embed.zero_grad(), mix.zero_grad()
        fn(torch.tanh(mix(embed(ids))), head, tokens, **kw).sum().backward()
        return [embed.weight.grad.clone(), mix.weight.grad.clone()]

    for g, w in zip(grads(token_logprobs, chunk_rows=4), grads(_reference)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


def test_a_frozen_head_or_no_grad_computes_only_what_is_needed():
    hidden, head, tokens, grad_out = _case(10)
    head.requires_grad_(False)  # a LoRA policy's base head, a reference model
    want = torch.autograd.grad((_reference(hidden, head, tokens) * grad_out).sum(), hidden)[0]
    got = torch.autograd.grad((token_logprobs(hidden, head, tokens, chunk_rows=3) * grad_out).sum(), hidden)[0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    with torch.no_grad():
        out = token_logprobs(hidden, head.requires_grad_(True), tokens, chunk_rows=3)
    assert not out.requires_grad and out.grad_fn is None
    torch.testing.assert_close(out, _reference(hidden, head, tokens).detach(), atol=1e-5, rtol=0)
    hidden.requires_grad_(False)  # only the head learns
    (token_logprobs(hidden, head, tokens, chunk_rows=3) * grad_out).sum().backward()
    want = torch.autograd.grad((_reference(hidden, head, tokens) * grad_out).sum(), head.weight)[0]
    torch.testing.assert_close(head.weight.grad, want, atol=1e-5, rtol=0)


def test_a_head_that_is_not_a_plain_linear_is_refused():
    """A wrapped head (a LoRA adapter on ``lm_head``) would have its ``weight`` read without the wrapper's work."""
    hidden, head, tokens, _ = _case(3)
    with pytest.raises(TypeError, match="nn.Linear"):
        token_logprobs(hidden, torch.nn.Sequential(head), tokens)


def _saved_numels(fn) -> list[int]:
    """Element counts of the tensors autograd keeps for the backward of ``fn()``."""
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sizes


@pytest.mark.parametrize("autocast", [False, True])
def test_no_full_vocabulary_logits_are_kept_for_the_backward(autocast):
    n, vocab, chunk_rows = 64, 100, 16
    hidden, head, tokens, _ = _case(n, vocab=vocab)
    full = _saved_numels(lambda: _reference(hidden, head, tokens, 0.7, autocast))
    assert max(full) >= n * vocab  # the check catches the old way: it keeps [N, V] logits
    chunked = _saved_numels(lambda: token_logprobs(hidden, head, tokens, 0.7, chunk_rows, autocast))
    assert chunked and max(chunked) < chunk_rows * vocab * 2


def test_a_tiny_llama_gets_the_full_log_softmax_gradient(tiny_model):
    """Every parameter's gradient (the tied embedding included) through a real decoder, as with the model's logits."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    ids = torch.randint(len(model.get_input_embeddings().weight), (2, 9), generator=torch.Generator().manual_seed(0))
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        model.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    hidden = model.model(input_ids=ids).last_hidden_state[:, :-1].reshape(-1, model.config.hidden_size)
    got = grads(token_logprobs(hidden, model.lm_head, ids[:, 1:].reshape(-1), 0.9, chunk_rows=5).sum())
    logits = model(input_ids=ids).logits[:, :-1].float() / 0.9
    want = grads(logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).sum())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
