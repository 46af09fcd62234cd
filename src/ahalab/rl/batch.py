"""Policy forward for GRPO that does as little as possible: each prompt once, no padding to speak of, logits only
at completion tokens.

A group's G completions share one prompt (and a long one: the r1 format's is ~140 tokens, often more than the
completion). ``Prefix`` runs every prompt of a chunk through the decoder once (and the system prompt they all
open with once per chunk) and keeps its KV cache (``ahalab.models.prefix.SharedPrefix``); completion
micro-batches (rows sorted by length, cut where padding would cost more than another micro-batch) continue from
that cache, and the prompt forward gets their gradients in one backward. The LM head runs only on hidden states
that predict completion tokens, a chunk of them at a time (``ahalab.models.logprobs``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ahalab.models.logprobs import token_logprobs
from ahalab.models.prefix import CPU_MICRO_BATCH_COST, SharedPrefix, length_bins, pad


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


def plan_batches(prompts: list[list[int]], completions: list[list[int]], indices: list[int], max_tokens: int,
                 pad_id: int, cost: int = CPU_MICRO_BATCH_COST) -> list[PromptChunk]:
    """Chunks of distinct prompts (at most ``max_tokens`` padded prompt tokens each) and, within each, the
    completions ``indices`` longest first in micro-batches of at most ``max_tokens`` padded tokens, cut where the
    padding would cost more than ``cost`` tokens (``ahalab.models.prefix.micro_batch_cost``)."""
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i in indices:
        by_prompt.setdefault(tuple(prompts[i]), []).append(i)
    # prompt chunks: as few as fit (each runs the prompts' shared opening once)
    chunks = length_bins(sorted(by_prompt, key=len, reverse=True), len, max_tokens, cost=max_tokens)
    return [_chunk(keys, by_prompt, completions, max_tokens, pad_id, cost) for keys in chunks]


def _chunk(keys: list[tuple[int, ...]], by_prompt: dict[tuple[int, ...], list[int]], completions: list[list[int]],
           max_tokens: int, pad_id: int, cost: int) -> PromptChunk:
    owner = {i: k for k, key in enumerate(keys) for i in by_prompt[key]}
    rows = sorted(owner, key=lambda i: len(completions[i]), reverse=True)
    micro = [MicroBatch(torch.tensor(g), torch.tensor([owner[i] for i in g]),
                        *pad([completions[i] for i in g], pad_id))
             for g in length_bins(rows, lambda i: len(completions[i]), max_tokens, cost)]
    return PromptChunk(*pad([list(k) for k in keys], pad_id, left=True), micro)


class Prefix(SharedPrefix):
    """A chunk's prompts run once (``ahalab.models.prefix``); ``logprobs`` continues them with completions."""

    def __init__(self, model: torch.nn.Module, chunk: PromptChunk, autocast: bool = False,
                 checkpoint: bool = False) -> None:
        super().__init__(model, chunk.ids, chunk.mask, autocast, checkpoint)

    def logprobs(self, mb: MicroBatch, temperature: float = 1.0) -> torch.Tensor:
        """log p(token) of each completion token (logits / temperature), [b, Lc] like ``mb.mask``.

        With ``autocast`` the decoder and the LM head's matmul run in bf16 (about 2x faster on CPU with native bf16;
        logits then carry bf16 rounding, harmless when ``mu`` = 1 since old and new log-probabilities are the
        same numbers); the log-softmax is float32 either way, over a chunk of rows at a time (``token_logprobs``).
        """
        states = self.decode(mb.prompt, mb.ids, mb.mask)
        selected = mb.mask.bool().to(self.device)
        # position t predicts completion token t: the prompt's last state, then the completion's own states
        hidden = torch.cat([self.last_hidden[mb.prompt].unsqueeze(1).to(states.dtype), states[:, :-1]], 1)
        flat = token_logprobs(hidden[selected], self.model.get_output_embeddings(), mb.ids.to(self.device)[selected],
                              temperature, autocast=self.autocast)  # [N]
        return flat.new_zeros(mb.mask.shape).masked_scatter(selected, flat)
