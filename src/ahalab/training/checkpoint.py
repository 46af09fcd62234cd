"""Training checkpoints, written atomically: a temporary directory renamed into place when complete.

    checkpoints/step-000010/
        model/            save_pretrained of the policy (a full model, or a LoRA adapter)
        optimizer.pt      optimiser state
        state.pt          step, data position, torch/CUDA/python/numpy RNG states of each process (rank), as
                          tensors and plain lists only
        config.json       the run's config, to refuse a resume that would change results

Every file and the directory are fsynced before the rename, so a checkpoint directory either exists
whole or not at all and a kill at any moment leaves the last complete one to resume from; a
``.tmp-step-*`` left by a kill mid-save is removed by the next save. Everything is loaded with
``torch.load(weights_only=True)``: a crafted checkpoint cannot run code.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ahalab.config import changed_settings, to_dict
from ahalab.errors import UserError
from ahalab.training.card import write_model_card

PREFIX = "step-"
TMP = ".tmp-"


def checkpoint_dir(run_path: Path) -> Path:
    return run_path / "checkpoints"


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors and plain lists."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(mt), gauss],
                             "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be written (a full disk, most often); the message names the last complete one."""


def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then each directory (so the rename publishes complete data)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_path: Path, step: int, model: torch.nn.Module, tokenizer: Any,
                    optimizer: torch.optim.Optimizer, data_position: int, keep: int,
                    config: dict[str, Any] | None = None, method: str | None = None,
                    rng: list[dict[str, Any]] | None = None, model_state: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write checkpoint ``step`` and delete all but the newest ``keep`` (>= 1); with ``method`` its model
    directory gets a model card too (it is a loadable HF model like the final one). ``rng``: every rank's
    ``rng_state()``, in rank order (default: this process's). ``model_state``, ``optimizer_state``: the model's and the
    optimiser's state dicts gathered from sharded ranks (default: their own)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (got {keep}); a run that keeps no checkpoints writes none")
    root = checkpoint_dir(run_path)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f"{TMP}{PREFIX}*"):  # a kill during an earlier save
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f"{TMP}{PREFIX}{step:06d}"
    tmp.mkdir()
    try:
        model.save_pretrained(tmp / "model", state_dict=model_state)
        tokenizer.save_pretrained(tmp / "model")
        if method is not None:
            write_model_card(tmp / "model", method, config or {})
        torch.save(optimizer_state or optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"step": step, "data_position": data_position, "rng": rng or [rng_state()]}, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(config or {}, default=str, sort_keys=True))
        _fsync_tree(tmp)
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError ("unexpected pos ...")
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
        shutil.rmtree(tmp, ignore_errors=True)
        free = shutil.disk_usage(root).free
        last = latest_checkpoint(run_path)
        raise CheckpointError(
            f"could not write checkpoint step {step} to {root} ({e}); {free / 2**30:.2f} GiB free there after "
            f"{written / 2**30:.2f} GiB written{' (the disk is full)' if free < written else ''}. Last complete "
            f"checkpoint: {last or 'none'}; free space (or set checkpoint_every / keep_checkpoints) and resume") from e
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    fsync_dir(root)
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


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The config a checkpoint was written under ({} for one written before configs were stored)."""
    f = path / "config.json"
    return json.loads(f.read_text()) if f.exists() else {}


def check_resumable(path: Path, cfg: Any) -> None:
    """Refuse to resume checkpoint ``path`` under ``cfg`` when a setting that changes results differs (a setting the
    checkpoint predates counts as its default)."""
    saved = checkpoint_config(path)
    changed = changed_settings({**to_dict(type(cfg)()), **saved}, to_dict(cfg), type(cfg).NEUTRAL) if saved else []
    if changed:
        raise UserError(f"{path} was written with other settings ({', '.join(changed)}); resuming would mix two "
                        "runs. Resume with the run's own config.yaml, or pass --allow-config-change")


def load_state(path: Path, optimizer: torch.optim.Optimizer, rank: int = 0,
               place: Callable[[torch.optim.Optimizer, dict], dict] | None = None) -> dict[str, Any]:
    """Restore the optimiser state (``place``: cut to this rank's shards first) and rank ``rank``'s RNG states from
    checkpoint ``path`` (a rank the checkpoint has none for, resumed on more processes than it was written with,
    keeps its own); returns its step and data position."""
    saved = torch.load(path / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(place(optimizer, saved) if place else saved)
    state = torch.load(path / "state.pt", weights_only=True)
    ranks = [state["rng"]] if isinstance(state["rng"], dict) else state["rng"]  # a dict: from before per-rank states
    if rank < len(ranks):
        set_rng_state(ranks[rank])
    return {"step": state["step"], "data_position": state["data_position"]}
