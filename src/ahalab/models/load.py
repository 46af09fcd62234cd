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


def with_lora(model, r: int, alpha: int | None, targets: str | list[str], adapter: str | Path | None = None):
    """``model`` with a trainable LoRA adapter: a new one (alpha default 2r; ``targets`` "all-linear", module
    names, or a comma-separated string of them), or the one saved in ``adapter``."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    if isinstance(targets, str) and targets != "all-linear":
        targets = targets.split(",")
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha or 2 * r, target_modules=targets, lora_dropout=0.0))


def save_model(model, tokenizer, out: str | Path, state_dict: dict | None = None) -> Path:
    """Save ``model`` (a LoRA adapter merged into its base first) and ``tokenizer`` as a plain HF directory
    that engines and trainers load (``state_dict``: its weights gathered from sharded ranks; default: its own);
    written to a temporary directory and renamed into place."""
    import os
    import shutil
    import tempfile

    out = Path(out)
    if hasattr(model, "merge_and_unload"):  # a peft model: ship the merged weights, not the adapter
        model = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make the model private to this user
    model.save_pretrained(tmp, state_dict=state_dict)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out
