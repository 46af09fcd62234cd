"""Load a causal LM and its tokenizer for training or HF generation."""
from __future__ import annotations


def load_model(model_dir: str, dtype=None, device: str | None = None):
    """(model, tokenizer) from a local HF directory (float32 unless ``dtype``); adds a pad token if missing."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32)
    if device:
        model.to(device)
    return model, tokenizer
