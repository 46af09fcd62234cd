"""SFT batches: chat rows -> token ids with completion-only loss masks -> packed (or padded) micro-batches.

Completion-only: a row's prompt is its messages before the last, rendered by the tokenizer's chat
template with the generation prompt (exactly the text an eval prompt starts with); every token of
the full rendering that starts at or after the end of that text is trained, the rest is masked.
The two renderings are compared as text, and the full text is tokenized once, so the tokens
trained on are the tokens the model reads.

Packing: short examples share a row, first-fit by decreasing length. Each example's
``position_ids`` restart at 0, and no attention mask and no KV cache are passed: transformers
(``masking_utils``, ``find_packed_sequence_indices``) then builds a block-diagonal causal mask for
eager and SDPA attention (flash-attention takes the same position_ids as varlen boundaries), so no
token attends across examples (tests/test_sft.py checks the logits against unpacked forwards). The
first token of each example is never a target, so no loss spans a boundary.

Shared prefix: the examples of a step usually start with the same tokens (the system prompt and the
chat template's opening, ~100 tokens of the r1 format: a third of a short countdown example).
``split_shared_prefix`` cuts that prefix off; it runs through the decoder once per step
(``ahalab.models.prefix.SharedPrefix``) and the remainders, in padded micro-batches, attend to its
cache. Same loss and gradient, fewer tokens through the model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ahalab.errors import UserError
from ahalab.models.logprobs import token_logprobs
from ahalab.models.prefix import CPU_MICRO_BATCH_COST, SharedPrefix, common_length, length_bins


@dataclass
class Example:
    """One tokenized row: ids and which of them are trained (assistant tokens)."""

    input_ids: list[int]
    trained: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)

    def suffix(self, start: int) -> Example:
        return Example(self.input_ids[start:], self.trained[start:])


def split_shared_prefix(examples: Sequence[Example], min_len: int = 16) -> tuple[list[int], list[Example]]:
    """The longest token prefix all ``examples`` share, cut so that its last position predicts no trained token
    (its hidden state is not kept), and the remainders; ``([], examples)`` when it is shorter than ``min_len``."""
    limit = min(ex.trained.index(True) for ex in examples) - 1  # token n, the first of the remainders, is untrained
    n = common_length([ex.input_ids for ex in examples], limit)
    if n < min_len:
        return [], list(examples)
    return examples[0].input_ids[:n], [ex.suffix(n) for ex in examples]


def tokenize_row(tokenizer: Any, messages: list[dict[str, str]]) -> Example:
    """Token ids of the whole conversation, with only the final assistant message's tokens trained."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("SFT data is in chat form: the model's tokenizer needs a chat template")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full.startswith(prompt):
        raise UserError("the chat template renders the conversation without its generation prompt as a prefix; "
                        "completion-only masks cannot be placed")
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    trained = [start >= len(prompt) for start, _ in encoded["offset_mapping"]]
    return Example(list(encoded["input_ids"]), trained)


@dataclass
class MicroBatch:
    """One forward pass: ``targets[b, t]`` says position t predicts a trained token (input t+1)."""

    input_ids: torch.Tensor  # [b, L]
    position_ids: torch.Tensor  # [b, L]
    attention_mask: torch.Tensor | None  # [b, L] for padded batches; None for packed rows
    targets: torch.Tensor  # [b, L-1] bool
    examples: int

    @property
    def num_targets(self) -> int:
        return int(self.targets.sum())


def pack(examples: Sequence[Example], max_tokens: int) -> list[MicroBatch]:
    """Examples packed into rows of at most ``max_tokens`` tokens (first-fit decreasing), one row per micro-batch."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for ex in sorted(examples, key=len, reverse=True):
        if len(ex) > max_tokens:
            raise UserError(f"an example of {len(ex)} tokens does not fit a row of {max_tokens}; raise "
                            f"micro_batch_tokens or lower max_seq_len")
        i = next((k for k, r in enumerate(room) if r >= len(ex)), None)
        if i is None:
            rows.append([ex])
            room.append(max_tokens - len(ex))
        else:
            rows[i].append(ex)
            room[i] -= len(ex)
    return [_packed_row(row) for row in rows]


def _packed_row(row: list[Example]) -> MicroBatch:
    ids = [t for ex in row for t in ex.input_ids]
    positions = [p for ex in row for p in range(len(ex))]
    trained = [t and p > 0 for ex in row for p, t in enumerate(ex.trained)]  # never a target across a boundary
    return MicroBatch(torch.tensor([ids]), torch.tensor([positions]), None, torch.tensor([trained[1:]]), len(row))


def pad_batches(examples: Sequence[Example], max_tokens: int, pad_id: int,
                cost: int = CPU_MICRO_BATCH_COST) -> list[MicroBatch]:
    """Right-padded micro-batches of similar lengths, each at most ``max_tokens`` padded tokens, cut where the padding
    would cost more than ``cost`` tokens (``ahalab.models.prefix.length_bins``)."""
    groups = length_bins(sorted(examples, key=len, reverse=True), len, max_tokens, cost)  # each first its longest
    batches = []
    for group in groups:
        width = len(group[0])
        ids = torch.full((len(group), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        trained = torch.zeros((len(group), width), dtype=torch.bool)
        for r, ex in enumerate(group):
            ids[r, :len(ex)] = torch.tensor(ex.input_ids)
            mask[r, :len(ex)] = 1
            trained[r, :len(ex)] = torch.tensor(ex.trained)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        batches.append(MicroBatch(ids, positions, mask, trained[:, 1:], len(group)))
    return batches


def completion_nll(model: torch.nn.Module, mb: MicroBatch, autocast: bool = False,
                   prefix: SharedPrefix | None = None, checkpoint: bool = False) -> torch.Tensor:
    """Summed negative log-likelihood of the trained tokens of ``mb``; with ``prefix``, ``mb`` holds padded
    remainders that continue it (its backward is the caller's, after all micro-batches).

    The decoder runs under bf16 autocast when ``autocast``, its layers checkpointed when ``checkpoint`` (a
    ``prefix`` has its own setting: ``ahalab.models.checkpointing``); the LM head runs (in the model's dtype, a chunk
    of rows at a time: ``token_logprobs``) only on the positions that predict trained tokens, never on prompt or
    padding.
    """
    from ahalab.models.checkpointing import layer_checkpointing

    device = next(model.parameters()).device
    if prefix is not None:
        rows = torch.zeros(mb.input_ids.size(0), dtype=torch.long, device=device)
        hidden = prefix.decode(rows, mb.input_ids, mb.attention_mask)
    else:
        with (torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast),
              layer_checkpointing(model, checkpoint)):
            hidden = model.get_decoder()(
                input_ids=mb.input_ids.to(device), position_ids=mb.position_ids.to(device),
                attention_mask=None if mb.attention_mask is None else mb.attention_mask.to(device),
                use_cache=False).last_hidden_state  # a KV cache would turn transformers' packed-sequence masking off
    targets = mb.targets.to(device)
    tokens = mb.input_ids[:, 1:].to(device)[targets]
    return -token_logprobs(hidden[:, :-1][targets], model.get_output_embeddings(), tokens).sum()
