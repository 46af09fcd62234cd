"""Shared prompt prefixes: run tokens that many sequences start with through the decoder once.

GRPO's G completions of a group share their prompt; an SFT batch's examples share the system prompt
and the start of the chat template. ``SharedPrefix`` runs the distinct prefixes once and keeps their
KV cache; forwards of the continuations (``decode``) attend to it. The cache tensors enter those
forwards as detached leaves that collect gradients; ``backward`` then sends them through the prefix
forward in one go, so the gradient equals that of full-length forwards (tests check it against finite
differences and against plain forwards).

Distinct prompts often open alike too (every ``r1`` prompt starts with the same ~120-token system prompt):
the tokens all prefixes start with run once, with batch 1, and the rest of each prefix continues from
them, so a chunk of P prompts costs one system prompt instead of P.

With ``checkpoint`` the continuation forwards checkpoint their decoder layers (``ahalab.models.checkpointing``):
they read the prefix's cache and never write it, so each layer's replay in the backward sees the same keys, and
take the prefix rows they continue inside each layer. The prefix forward then runs without a graph, and
``backward`` runs it again, its layers checkpointed too: otherwise its saved activations and the bf16 copies of
every weight that autocast made for it (~0.8 GB for the default model and a step's 8 prompts) stay resident
through all the continuations' forwards and backwards (docs/benchmarks.md, "Memory").
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

CPU_MICRO_BATCH_COST = 64  # what one more micro-batch costs on CPU, in padded tokens (``micro_batch_cost``)


class SharedPrefix:
    """Prefixes ``ids`` [P, Lp] (left-padded: every prefix ends in the last column; ``mask`` marks real tokens)
    run once: per-layer keys/values and the last hidden state of each prefix, handed out as leaves."""

    def __init__(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, autocast: bool = False,
                 checkpoint: bool = False) -> None:
        self.model, self.autocast, self.checkpoint = model, autocast, checkpoint
        self.device = next(model.parameters()).device
        self.rows = [r[m.bool()].tolist() for r, m in zip(ids, mask)]
        self.shared = common_length(self.rows) if len(self.rows) > 1 else 0
        tail_ids, tail_mask = pad([r[self.shared:] for r in self.rows], 0, left=True)  # padding is masked: any id
        self.tail_ids, tail_mask = tail_ids.to(self.device), tail_mask.to(self.device)
        self.mask = torch.cat([tail_mask.new_ones(len(self.rows), self.shared), tail_mask], 1)
        self.tail_positions = self.shared + _positions(tail_mask)
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters())
        with torch.no_grad() if checkpoint else contextlib.nullcontext():
            self.outputs = self._forward()
        self.leaves = [t.detach().requires_grad_(trains) for t in self.outputs]

    def _forward(self) -> list[torch.Tensor]:
        """The prefix forward: per-layer keys and values [P, heads, Lp, head_dim], then the last hidden states [P, H].
        Its caches only record what each layer wrote (``ReadOnlyLayer``), so that with ``checkpoint`` and a graph
        (``backward``) the layers are checkpointed too: one layer's activations and bf16 weights at a time."""
        from transformers import DynamicCache

        from ahalab.models.checkpointing import layer_checkpointing, read_only

        decoder, config = self.model.get_decoder(), self.model.config
        cache = read_only(DynamicCache(config=config), record=True)
        with self._autocast(), layer_checkpointing(self.model, self.checkpoint and torch.is_grad_enabled()):
            if self.shared:  # the tokens every prefix starts with, once; the rest continues from their KV cache
                decoder(input_ids=torch.tensor([self.rows[0][:self.shared]], device=self.device),
                        past_key_values=cache, use_cache=True)
                cache = read_only(DynamicCache([(k.expand(len(self.rows), -1, -1, -1),
                                                 v.expand(len(self.rows), -1, -1, -1))
                                                for k, v in _written(cache)], config=config), record=True)
            out = decoder(input_ids=self.tail_ids, attention_mask=self.mask, position_ids=self.tail_positions,
                          past_key_values=cache, use_cache=True)
        return [t for kv in _written(cache) for t in kv] + [out.last_hidden_state[:, -1]]

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

    @property
    def last_hidden(self) -> torch.Tensor:
        """[P, H]: the final hidden state of each prefix (it predicts the first continuation token)."""
        return self.leaves[-1]

    def decode(self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [b, L, H] of ``ids`` [b, L] (right-padded, ``mask`` 1 on real tokens) continuing prefix
        ``rows`` [b]; runs under the prefix's autocast and checkpoint settings."""
        from transformers import DynamicCache

        from ahalab.models.checkpointing import layer_checkpointing, read_only

        kv = self.leaves[:-1]
        cache = read_only(DynamicCache(list(zip(kv[::2], kv[1::2])), config=self.model.config), rows.to(self.device))
        prefix_mask = self.mask[rows]
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = prefix_mask.sum(1, keepdim=True).long() + torch.arange(ids.size(1), device=self.device)
        with self._autocast(), layer_checkpointing(self.model, self.checkpoint):
            out = self.model.get_decoder()(input_ids=ids, attention_mask=torch.cat([prefix_mask, mask], 1),
                                           position_ids=positions, past_key_values=cache, use_cache=False)
        return out.last_hidden_state

    def backward(self) -> None:
        """Back-propagate the gradients the continuation forwards left on the leaves through the prefix forward (run
        again first, with ``checkpoint``)."""
        grads = [leaf.grad for leaf in self.leaves]
        if all(g is None for g in grads):
            return
        outputs = self._forward() if self.checkpoint else self.outputs
        torch.autograd.backward([o for o, g in zip(outputs, grads) if g is not None], [g for g in grads if g is not None])


def _written(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The keys and values each layer of a recording cache (``read_only(..., record=True)``) wrote last."""
    return [layer.written for layer in cache.layers]


def common_length(rows: list[list[int]], limit: int | None = None) -> int:
    """Length of the token prefix all ``rows`` start with, at most ``limit`` (default: the shortest row's length
    less one, so that every row keeps a token of its own, whose state predicts what follows)."""
    limit = min(len(r) for r in rows) - 1 if limit is None else limit
    return next((i for i in range(limit) if any(r[i] != rows[0][i] for r in rows)), limit)


def micro_batch_cost(device: torch.device, max_tokens: int) -> int:
    """What one more micro-batch costs, in padded tokens (``length_bins``). On CPU a padded token costs as much as a
    real one and a micro-batch about 60 tokens more: 64 (measured on 2 AVX2 cores, float32: a GRPO update of 32
    completions of 2-128 tokens 19.5 s against 22.1 s with the fewest micro-batches, SFT steps on the demo's traces
    12% faster; docs/benchmarks.md). On accelerators a padded token is nearly free beside a micro-batch's kernel
    launches: ``max_tokens``, the fewest micro-batches."""
    return CPU_MICRO_BATCH_COST if device.type == "cpu" else max_tokens


def length_bins(items: list[T], length: Callable[[T], int], max_tokens: int,
                cost: int = CPU_MICRO_BATCH_COST) -> list[list[T]]:
    """``items`` (sorted longest first) cut into consecutive runs (micro-batches, each padded to its first item's
    length) of at most ``max_tokens`` padded tokens (an item longer than that alone), with the fewest padded tokens
    plus ``cost`` per run (exact, by dynamic programming). Filling each run greedily up to ``max_tokens`` pads a long
    tail's short rows to its longest: on one GRPO batch of 32 completions of 2-128 tokens, 2,384 padded tokens for
    1,166 real ones (1,430 cut here); ``cost`` >= ``max_tokens`` gives the fewest runs."""
    lengths = [length(item) for item in items]
    n = len(lengths)
    best, start = [0.0] + [math.inf] * n, [0] * (n + 1)  # best[j]: cheapest cut of items[:j]; its last run's start
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):
            if i < j - 1 and (j - i) * lengths[i] > max_tokens:  # longer runs (smaller i) are wider still
                break
            total = best[i] + (j - i) * lengths[i] + cost
            if total < best[j]:
                best[j], start[j] = total, i
    runs: list[list[T]] = []
    while n:
        runs.append(items[start[n]:n])
        n = start[n]
    return runs[::-1]


def pad(rows: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [len(rows), longest]: rows left- or right-aligned, ``mask`` 1.0 on their tokens."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width))
    for i, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, cols] = torch.tensor(r, dtype=torch.long)
        mask[i, cols] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)
