"""The training loop both trainers stand on (GRPO in ``ahalab.rl``, SFT in ``ahalab.sft``).

    trainer = SomeTrainer(cfg, run, resume=True)  # set-up, model (+ LoRA), optimiser, data order, resume
    trainer.train()                               # start() once, then train_step(step) to total_steps,
                                                  # logging metrics and checkpointing; then finish()

Set-up: seed, device (on many CPU ranks, each rank's cores), torch threads, bf16 autocast, the model from its
base or the last checkpoint (LoRA adapters attached or restored), AdamW. Each step, a subclass's ``train_step``
builds its batch and loss, calls ``set_lr(step)`` and ``optimizer_step(step, loss)`` (gradient clipping and the NaN/inf
guard), and returns its metrics (to metrics.jsonl and the ``report_to`` trackers). Resume restores optimiser,
RNG and data position from the last checkpoint, refuses a config change that would alter results (unless
allowed), and drops metric and sample rows logged after that checkpoint (they are redone). With ``push_to_hub``
the saved model directory then goes to the hub (``ahalab.training.hub``).

With many processes (``ahalab.training.distributed``) every rank runs this loop on its share of each step;
``optimizer_step`` sums the gradients and the loss over the ranks first, checkpoints keep every rank's RNG
states, and rank 0 alone writes the run directory (config, metrics, checkpoints, ``finish``, hub push). With
``sharding: fsdp2`` the model is sharded (FSDP2): a step's forwards start with ``self.dist.unshard(self.model)``,
and checkpoints and the final model are gathered whole on every rank, then written by rank 0.
"""
from __future__ import annotations

import json
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from types import BuiltinFunctionType
from typing import Any

import torch

from ahalab.config import to_dict
from ahalab.errors import UserError
from ahalab.precision import use_bf16
from ahalab.runs import RunDir, read_jsonl
from ahalab.training.card import write_model_card
from ahalab.training.checkpoint import check_resumable, latest_checkpoint, load_state, rng_state, save_checkpoint
from ahalab.training.config import TrainingConfig
from ahalab.training.data_order import DataOrder
from ahalab.training.distributed import Distributed
from ahalab.training.hub import push_run
from ahalab.training.schedule import lr_at
from ahalab.training.trackers import Trackers

log = logging.getLogger(__name__)

LOGGED = ("metrics.jsonl", "samples.jsonl")  # per-step files a resume trims back to the checkpoint


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a NaN/inf loss or gradient); the message names the last good checkpoint."""


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainingConfig) -> torch.optim.Optimizer:
    """AdamW with ``cfg``'s lr and weight decay: torch's (two float32 moments, 8 bytes a parameter) or, with
    ``optim: adamw_8bit``, bitsandbytes' 8-bit blockwise-quantised moments (2 bytes a parameter: 0.8 GB less for
    the default model), TRL's ``optim="adamw_8bit"``."""
    if cfg.optim == "adamw_torch":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    try:
        import bitsandbytes as bnb
    except ImportError as e:
        raise UserError("optim: adamw_8bit needs bitsandbytes (pip install bitsandbytes; `make` installs it)") from e
    return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _set_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` unless torch already uses ``n`` threads or a vLLM engine started in this process
    has bound its OpenMP threads (it replaces the function with one that only warns)."""
    if torch.get_num_threads() == n:
        return
    if not isinstance(torch.set_num_threads, BuiltinFunctionType):
        log.info("keeping %d torch threads: vLLM bound this process's threads", torch.get_num_threads())
        return
    torch.set_num_threads(n)


class Trainer(ABC):
    """Set-up, optimiser, schedule, checkpoints and the step loop; subclasses give ``train_step`` and ``finish``.

    A subclass's ``__init__`` calls ``super().__init__``, builds its data and ``self.order`` (a
    ``DataOrder``) and ``self.total_steps``, then ``self.resume()``.
    """

    METHOD: str  # what the model card calls the training method (grpo, sft)
    order: DataOrder
    total_steps: int
    trackers: Trackers

    def __init__(self, cfg: TrainingConfig, run: RunDir, resume: bool = False,
                 allow_config_change: bool = False) -> None:
        from ahalab.models import load_model, resolve_model, with_lora

        cfg.validate()
        self.cfg, self.run = cfg, run
        torch.manual_seed(cfg.seed)
        self.dist = Distributed(cfg.device, cfg.sharding)
        if cfg.threads or self.dist.cores:  # default on many CPU ranks: one thread per core of the rank's share
            _set_threads(cfg.threads or len(self.dist.cores))
        self.device = self.dist.device
        self.autocast = use_bf16(cfg.bf16, self.device.type)
        self.model_dir = resolve_model(cfg.model)
        self.checkpoint = latest_checkpoint(run.path) if resume else None
        if self.checkpoint is not None and not allow_config_change:
            check_resumable(self.checkpoint, cfg)
        if self.dist.main:  # after the check: a refused resume leaves the run's config as it was
            run.write_config(to_dict(cfg))
        full = self.checkpoint is not None and not cfg.lora_r
        self.model, self.tokenizer = load_model(str(self.checkpoint / "model") if full else self.model_dir)
        if cfg.lora_r:
            self.model = with_lora(self.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets,
                                   None if self.checkpoint is None else self.checkpoint / "model")
        self.model.to(self.device).train()
        self.dist.shard(self.model)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, cfg)
        self.step = 0
        self.resuming = resume
        self.weights: dict[str, torch.Tensor] | None = None  # FSDP: the full weights gathered for save_model

    def resume(self) -> None:
        """Continue from the last checkpoint (if resuming); drop rows logged after it."""
        if not self.resuming:
            return
        if self.checkpoint is not None:
            state = load_state(self.checkpoint, self.optimizer, self.dist.rank, self.dist.place_optimizer_state)
            self.step, self.order.position = state["step"], state["data_position"]
            self.resumed()
            if self.dist.main:
                print(f"resuming from {self.checkpoint} (step {self.step})")
        if not self.dist.main:
            return
        for name in LOGGED:
            if self.run.file(name).exists():
                rows = read_jsonl(self.run.file(name), tolerate_torn_tail=True)
                kept = [r for r in rows if self.checkpoint is not None and r["step"] <= self.step]
                self.run.write_text(name, "".join(json.dumps(r) + "\n" for r in kept))

    def resumed(self) -> None:
        """Hook: the weights and state of a checkpoint were just restored."""

    # --- the loop -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Hook: runs once before the first step of a run (not when resuming past it); may ``record`` a step-0 row."""

    @abstractmethod
    def train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step (1-based ``step``); returns its metrics."""

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """The step's line on the terminal."""

    @abstractmethod
    def finish(self) -> dict[str, Any]:
        """After the last step: save the model, write summary and report; returns the summary (its "trained_model":
        the saved model directory, the one ``push_to_hub`` uploads)."""

    def record(self, step: int, metrics: dict[str, Any]) -> None:
        """A metrics row (the same on every rank): to metrics.jsonl and the trackers of ``report_to``, by rank 0."""
        if self.dist.main:
            self.run.log_metrics(step, **metrics)
            self.trackers.log(step, metrics)

    def train(self) -> dict[str, Any] | None:
        """Run (or continue) to ``total_steps``; returns the summary (None on ranks other than 0)."""
        self.trackers = Trackers(self.cfg.report_to if self.dist.main else [], self.run.path, to_dict(self.cfg))
        try:
            if self.step == 0:
                self.start()
            while self.step < self.total_steps:
                step = self.step + 1
                metrics = self.train_step(step)
                self.record(step, metrics)
                if self.dist.main:
                    self.log(step, metrics)
                self.step = step
                every = self.cfg.checkpoint_every
                if self.cfg.keep_checkpoints and (step == self.total_steps or (every and step % every == 0)):
                    rng = self.dist.gather([rng_state()])  # every rank's, for an exact resume
                    weights, moments = self.dist.weights(self.model), self.dist.optimizer_state(self.optimizer)
                    if self.dist.main:
                        save_checkpoint(self.run.path, step, self.model, self.tokenizer, self.optimizer,
                                        self.order.position, self.cfg.keep_checkpoints, to_dict(self.cfg),
                                        self.METHOD, rng, weights, moments)
            self.weights = self.dist.weights(self.model)  # FSDP: gathered here, on every rank, for save_model
            if not self.dist.main:
                return None
            summary = self.finish()
            if self.cfg.push_to_hub:  # after finish() saved the model and summary.json: a failed push loses nothing
                push_run(self.run, summary, summary["trained_model"], repo_id=self.cfg.hub_model_id,
                         private=self.cfg.hub_private_repo, what=f"{self.METHOD} run")
            return summary
        finally:
            self.trackers.close()

    # --- pieces of a step -----------------------------------------------------------------------------

    def set_lr(self, step: int) -> float:
        """Set and return the scheduled learning rate of ``step``."""
        cfg = self.cfg
        lr = lr_at(step, self.total_steps, cfg.lr, cfg.lr_schedule, cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def optimizer_step(self, step: int, loss: float) -> tuple[float, float]:
        """Sum the accumulated gradients and ``loss`` (this rank's part of the step's loss) over the ranks, clip, stop
        on a non-finite loss or gradient, step AdamW; returns the step's loss and the gradient norm."""
        self.dist.sync_gradients(self.model, self.params)
        loss, = self.dist.reduce(loss)
        grad_norm = float(self.dist.full(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)))
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            last = latest_checkpoint(self.run.path)
            raise TrainingError(f"step {step}: loss {loss} / gradient norm {grad_norm} is not finite; stopped "
                                f"without saving. Last good checkpoint: {last or 'none'} (continue with --resume, "
                                "perhaps with a lower lr or max_grad_norm)")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm

    def save_model(self, results: dict[str, Any] | None = None) -> Path:
        """The trained model as a plain HF directory (LoRA merged), for engines and evaluation, with its model
        card (README.md; ``results``: held-out metric -> value)."""
        from ahalab.models import save_model

        path = save_model(self.model, self.tokenizer, self.run.file("model"), self.weights)
        write_model_card(path, self.METHOD, to_dict(self.cfg), results)
        return path
