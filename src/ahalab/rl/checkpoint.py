"""Training checkpoints, written atomically: a temporary directory renamed into place when complete.

    checkpoints/step-000010/
        model/            save_pretrained of the policy (a full model, or a LoRA adapter)
        optimizer.pt      optimiser state
        state.pt          step, data position, torch/python/numpy RNG states

A checkpoint directory either exists whole or not at all, so a kill at any moment leaves the last
complete one to resume from.
"""
from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"


def checkpoint_dir(run_path: Path) -> Path:
    return run_path / "checkpoints"


def save_checkpoint(run_path: Path, step: int, model: torch.nn.Module, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, data_position: int, keep: int) -> Path:
    """Write checkpoint ``step`` and delete all but the newest ``keep``."""
    root = checkpoint_dir(run_path)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{PREFIX}{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"step": step, "data_position": data_position, "torch_rng": torch.get_rng_state(),
                "python_rng": random.getstate(), "numpy_rng": np.random.get_state()}, tmp / "state.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_path)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_path: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(run_path)
    return sorted(p for p in root.glob(f"{PREFIX}*") if p.is_dir()) if root.exists() else []


def latest_checkpoint(run_path: Path) -> Path | None:
    found = list_checkpoints(run_path)
    return found[-1] if found else None


def load_state(path: Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore the optimiser and RNG states from checkpoint ``path``; returns its step and data position."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = torch.load(path / "state.pt", weights_only=False)
    torch.set_rng_state(state["torch_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])
    return {"step": state["step"], "data_position": state["data_position"]}
