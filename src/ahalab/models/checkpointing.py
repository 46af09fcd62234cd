"""Activation checkpointing of a decoder's layers, with or without a KV cache of a shared prefix.

A training forward keeps every layer's intermediate tensors (attention projections, MLP activations: about 2 MB
per token for the default 135M model in float32) until its backward. With checkpointing each layer keeps only its
input and runs its forward again in the backward: the activations of one layer at a time, for one more forward of
compute (TRL's ``gradient_checkpointing``). transformers turns a layer's KV cache off under its checkpointing,
since a layer that writes the cache would write it again in the replay; the continuations of ``SharedPrefix`` only
read theirs (``ReadOnlyLayer``), so they keep it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import partial

import torch
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer


class ReadOnlyLayer(DynamicLayer):
    """A cache layer holding a prefix's keys and values that a forward reads and never extends: ``update`` returns
    the prefix followed by the new states and stores nothing in the cache, so a checkpointed layer's replay sees the
    same cache. ``rows`` picks the prefix's rows for a batch (taken in ``update``: inside a checkpointed layer only
    the running layer's copy exists); with ``record`` the layer keeps its last result (``written``), the keys and
    values a forward produced."""

    def __init__(self, rows: torch.Tensor | None = None, record: bool = False) -> None:
        super().__init__()
        self.rows, self.record = rows, record
        self.written: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_initialized:  # holding a prefix (nothing: the forward starts the sequences)
            keys, values = (self.keys, self.values) if self.rows is None else (self.keys[self.rows],
                                                                               self.values[self.rows])
            key_states, value_states = torch.cat([keys, key_states], -2), torch.cat([values, value_states], -2)
        if self.record:
            self.written = (key_states, value_states)
        return key_states, value_states

    @classmethod
    def holding(cls, keys: torch.Tensor | None, values: torch.Tensor | None, rows: torch.Tensor | None = None,
                record: bool = False) -> ReadOnlyLayer:
        """A layer with these keys and values [P, heads, L, head_dim] (None: empty)."""
        layer = cls(rows, record)
        if keys is not None:
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        return layer


def read_only(cache: Cache, rows: torch.Tensor | None = None, record: bool = False) -> Cache:
    """``cache`` with its full-attention layers made ``ReadOnlyLayer`` (others, e.g. sliding-window layers, as
    they are: a checkpointed replay through them fails loudly in torch's checkpoint checks)."""
    cache.layers = [ReadOnlyLayer.holding(layer.keys, layer.values, rows, record) if type(layer) is DynamicLayer
                    else layer for layer in cache.layers]
    return cache


@contextlib.contextmanager
def layer_checkpointing(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, the training forwards of ``model``'s decoder layers are checkpointed (non-reentrant
    ``torch.utils.checkpoint``); a KV cache passed to them must not be written (``ReadOnlyLayer``)."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)] if enabled else []
    saved = [(m.gradient_checkpointing, m.__dict__.get("_can_checkpoint_with_cache"),
              m.__dict__.get("_gradient_checkpointing_func")) for m in layers]
    for m in layers:
        m.gradient_checkpointing, m._can_checkpoint_with_cache = True, True
        m._gradient_checkpointing_func = partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
    try:
        yield
    finally:
        for m, (on, can, func) in zip(layers, saved):
            m.gradient_checkpointing = on
            for name, value in (("_can_checkpoint_with_cache", can), ("_gradient_checkpointing_func", func)):
                if value is None:
                    m.__dict__.pop(name, None)
                else:
                    setattr(m, name, value)
