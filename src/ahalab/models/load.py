"""Load a causal LM and its tokenizer for training or HF generation; save a trained one."""
from __future__ import annotations

from pathlib import Path


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


def save_model(model, tokenizer, out: str | Path) -> Path:
    """Save ``model`` (a LoRA adapter merged into its base first) and ``tokenizer`` as a plain HF directory
    that engines and trainers load; written to a temporary directory and renamed into place."""
    import os
    import shutil
    import tempfile

    out = Path(out)
    if hasattr(model, "merge_and_unload"):  # a peft model: ship the merged weights, not the adapter
        model = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the model private to this user
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
