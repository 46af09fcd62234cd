"""Policy forward for GRPO that does as little as possible: each prompt once, no padding to speak of, logits only
at completion tokens.

A group's G completions share one prompt (and a long one: the r1 format's is ~140 tokens, often more than the
completion). ``Prefix`` runs every prompt of a chunk through the decoder once and keeps its KV cache;
completion micro-batches (rows sorted by length, so little padding) continue from that cache. The cache
tensors enter the completion forwards as detached leaves that collect gradients; ``Prefix.backward`` then
sends them through the prompt forward in one go. The LM head runs only on hidden states that predict
completion tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MicroBatch:
    """Completions continuing prompts of one ``PromptChunk``.

    ``index`` maps rows to positions in the rollout batch, ``prompt`` to rows of the chunk's prompts;
    ``mask`` is 1 on each row's completion tokens (left-aligned), the layout ``grpo_loss`` takes.
    """

    index: torch.Tensor  # [b]
    prompt: torch.Tensor  # [b]
    ids: torch.Tensor  # [b, Lc] right-padded completion tokens
    mask: torch.Tensor  # [b, Lc]

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())


@dataclass
class PromptChunk:
    """Distinct prompts, left-padded so that every prompt ends in the last column, and their completions."""

    ids: torch.Tensor  # [P, Lp]
    mask: torch.Tensor  # [P, Lp]
    micro_batches: list[MicroBatch]


def _pad(seqs: list[list[int]], pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width))
    for r, s in enumerate(seqs):
        cols = slice(width - len(s), width) if left else slice(0, len(s))
        ids[r, cols] = torch.tensor(s, dtype=torch.long)
        mask[r, cols] = 1
    return ids, mask


def plan_batches(prompts: list[list[int]], completions: list[list[int]], indices: list[int], max_tokens: int,
                 pad_id: int) -> list[PromptChunk]:
    """Chunks of distinct prompts (at most ``max_tokens`` padded prompt tokens each) and, within each, the
    completions ``indices`` longest first in micro-batches of at most ``max_tokens`` padded tokens."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        by_prompt.setdefault(tuple(prompts[i]), []).append(i)
    chunks = _bins(sorted(by_prompt, key=len, reverse=True), len, max_tokens)
    return [_chunk(keys, by_prompt, completions, max_tokens, pad_id) for keys in chunks]


def _bins(items: list, length, max_tokens: int) -> list[list]:
    """Consecutive runs of ``items`` (longest first) whose padded size, rows x first length, fits ``max_tokens``."""
    bins: list[list] = []
    for item in items:
        if bins and (len(bins[-1]) + 1) * length(bins[-1][0]) <= max_tokens:
            bins[-1].append(item)
        else:
            bins.append([item])
    return bins


def _chunk(keys: list[tuple[int, ...]], by_prompt: dict[tuple[int, ...], list[int]], completions: list[list[int]],
           max_tokens: int, pad_id: int) -> PromptChunk:
    owner = {i: k for k, key in enumerate(keys) for i in by_prompt[key]}
    rows = sorted(owner, key=lambda i: len(completions[i]), reverse=True)
    micro = [MicroBatch(torch.tensor(g), torch.tensor([owner[i] for i in g]),
                        *_pad([completions[i] for i in g], pad_id))
             for g in _bins(rows, lambda i: len(completions[i]), max_tokens)]
    return PromptChunk(*_pad([list(k) for k in keys], pad_id, left=True), micro)


class Prefix:
    """A chunk's prompts run once: per-layer keys/values and the last hidden state, handed out as leaves."""

    def __init__(self, model: torch.nn.Module, chunk: PromptChunk, autocast: bool = False) -> None:
        self.model, self.chunk, self.autocast = model, chunk, autocast
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model.get_decoder()(input_ids=chunk.ids, attention_mask=chunk.mask,
                                      position_ids=_positions(chunk.mask), use_cache=True)
        self.outputs = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        self.outputs.append(out.last_hidden_state[:, -1])
        self.leaves = [t.detach().requires_grad_(t.requires_grad) for t in self.outputs]

    def backward(self) -> None:
        """Back-propagate the gradients the completion forwards left on the leaves through the prompt forward."""
        pairs = [(out, leaf.grad) for out, leaf in zip(self.outputs, self.leaves) if leaf.grad is not None]
        if pairs:
            torch.autograd.backward([out for out, _ in pairs], [grad for _, grad in pairs])

    def logprobs(self, mb: MicroBatch, temperature: float = 1.0) -> torch.Tensor:
        """log p(token) of each completion token (logits / temperature), [b, Lc] like ``mb.mask``.

        With ``autocast`` the decoder and the LM head run in bf16 (about 2x faster on CPU; logits then carry
        bf16 rounding, harmless when ``mu`` = 1 since old and new log-probabilities are the same numbers);
        the log-softmax is float32 either way.
        """
        from transformers import DynamicCache

        *kv, last = self.leaves
        cache = DynamicCache([(k[mb.prompt], v[mb.prompt]) for k, v in zip(kv[::2], kv[1::2])],
                             config=self.model.config)
        prompt_mask = self.chunk.mask[mb.prompt]
        positions = prompt_mask.sum(1, keepdim=True).long() + torch.arange(mb.ids.size(1))
        selected = mb.mask.bool()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model.get_decoder()(input_ids=mb.ids, attention_mask=torch.cat([prompt_mask, mb.mask], 1),
                                           position_ids=positions, past_key_values=cache, use_cache=True)
            # position t predicts completion token t: the prompt's last state, then the completion's own states
            hidden = torch.cat([last[mb.prompt].unsqueeze(1).to(out.last_hidden_state.dtype),
                                out.last_hidden_state[:, :-1]], 1)
            logits = self.model.get_output_embeddings()(hidden[selected])  # [N, vocab]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature  # bf16 -> float32
        tokens = mb.ids[selected]
        flat = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        return flat.new_zeros(mb.mask.shape).masked_scatter(selected, flat)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token."""
    return (mask.long().cumsum(1) - 1).clamp(min=0)
