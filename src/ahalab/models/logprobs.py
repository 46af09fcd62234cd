"""Per-token log-probabilities from the LM head without full-vocabulary logits for every position at once.

GRPO and SFT need log softmax(head(h))[token] only at the sampled (or trained) tokens, but the softmax spans the
vocabulary: [N, V] float32 logits are ~400 MB for N = 2048 rows of a 49152-token vocabulary, and autograd keeps
several such tensors between forward and backward. ``token_logprobs`` runs the head over ``chunk_rows`` rows at a
time, keeps only each row's chosen logit and log-sum-exp, and recomputes a chunk's logits in the backward (one more
head matmul): [chunk_rows, V] at a time instead (512 rows: 100 MB; smaller chunks ran slower, each streams the
whole head weight several times).
"""
from __future__ import annotations

import torch


def token_logprobs(hidden: torch.Tensor, head: torch.nn.Linear, tokens: torch.Tensor, temperature: float = 1.0,
                   chunk_rows: int = 512, autocast: bool = False) -> torch.Tensor:
    """log softmax(head(hidden) / temperature)[tokens] per row, [N] float32 (float64 for a float64 head), from
    ``hidden`` [N, H] and ``tokens`` [N], ``chunk_rows`` rows at a time in forward and backward.

    The head's matmul runs in bf16 when ``autocast`` (as under ``torch.autocast``), otherwise in the head weight's
    dtype; an ambient autocast changes neither. Logits are upcast before the temperature and the softmax.
    """
    if not isinstance(head, torch.nn.Linear):
        raise TypeError(f"token_logprobs needs an nn.Linear LM head, not {type(head).__name__}")
    dtype = torch.bfloat16 if autocast else head.weight.dtype
    return _TokenLogprobs.apply(hidden, head.weight, head.bias, tokens, float(temperature), chunk_rows, dtype)


class _TokenLogprobs(torch.autograd.Function):
    """Saves hidden, weight, tokens and the per-row log-sum-exp; the backward recomputes logits chunk by chunk."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tokens: torch.Tensor,
                temperature: float, chunk_rows: int, dtype: torch.dtype) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            out = hidden.new_empty(len(tokens), dtype=torch.promote_types(dtype, torch.float32))  # [N]
            lse = torch.empty_like(out)  # [N]
            for rows in _chunks(len(tokens), chunk_rows):
                logits = _logits(hidden[rows], w, b, temperature)  # [c, V]
                lse[rows] = logits.logsumexp(-1)
                out[rows] = logits.gather(-1, tokens[rows, None])[:, 0] - lse[rows]
        ctx.save_for_backward(hidden, weight, bias, tokens, lse)
        ctx.temperature, ctx.chunk_rows, ctx.dtype = temperature, chunk_rows, dtype
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, tokens, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        with torch.autocast(hidden.device.type, enabled=False):
            w, b = weight.to(ctx.dtype), None if bias is None else bias.to(ctx.dtype)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None  # [N, H]
            grad_weight = torch.zeros_like(weight, dtype=lse.dtype) if need_weight else None  # [V, H]
            grad_bias = torch.zeros_like(bias, dtype=lse.dtype) if need_bias else None  # [V]
            scale = grad_out.to(lse.dtype) / ctx.temperature  # [N]
            for rows in _chunks(len(tokens), ctx.chunk_rows):
                h = hidden[rows].to(ctx.dtype)  # [c, H]
                # d out / d logits = (onehot(token) - softmax) / temperature
                grad = _logits(h, w, b, ctx.temperature).sub_(lse[rows, None]).exp_()  # [c, V] softmax
                grad.mul_(-scale[rows, None]).scatter_add_(1, tokens[rows, None], scale[rows, None])
                if grad_bias is not None:
                    grad_bias += grad.sum(0)
                grad = grad.to(ctx.dtype)  # [c, V]
                if grad_hidden is not None:
                    grad_hidden[rows] = grad @ w
                if grad_weight is not None and grad.dtype == grad_weight.dtype:
                    grad_weight.addmm_(grad.T, h)
                elif grad_weight is not None:  # bf16 product, summed over chunks in float32
                    grad_weight += grad.T @ h
        return (grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype),
                None if grad_bias is None else grad_bias.to(bias.dtype), None, None, None, None)


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """[c, V] logits / temperature, computed in ``weight``'s dtype and upcast to at least float32 (a fresh tensor)."""
    logits = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias)  # [c, V]
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits if temperature == 1 else logits.div_(temperature)
