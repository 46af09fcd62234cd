"""Supervised fine-tuning on chat datasets: completion-only loss, packing, bf16 autocast, full or LoRA, resumable.

The loop, top to bottom (``SFTTrainer.train``): the next ``batch_size`` examples of a seeded
per-epoch shuffle -> the prefix they all share (the system prompt) run once, the rest in padded
micro-batches attending to it; without one, packed (or padded) micro-batches; at most
``micro_batch_tokens`` tokens each ->
summed NLL of the trained tokens, backward per micro-batch -> the step's gradient divided by its
trained-token count (a token mean over the whole step) -> clip, AdamW -> metrics, checkpoints
(``ahalab.rl.checkpoint``: atomic, with optimiser, RNG and data position). At the end the model
(LoRA merged into it) is saved to ``<run>/model`` and evaluated on the configured sets with
``ahalab.eval``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ahalab.errors import UserError
from ahalab.models.prefix import SharedPrefix
from ahalab.precision import use_bf16
from ahalab.rl.checkpoint import latest_checkpoint, load_state, save_checkpoint
from ahalab.runs import RunDir
from ahalab.sft.collate import (Example, MicroBatch, completion_nll, pack, pad_batches, split_shared_prefix,
                                 tokenize_row)


@dataclass
class SFTConfig:
    model: str = "smollm2-135m"
    train: list[str] = field(default_factory=list)  # dataset JSONL files (chat "messages" rows)
    epochs: float = 2.0
    max_steps: int | None = None  # stop earlier than the epochs say
    batch_size: int = 16  # examples per optimiser step
    lr: float = 5e-5
    lr_schedule: str = "cosine"  # constant | cosine
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 1024  # longer examples are left out (and counted)
    packing: bool = True
    shared_prefix: bool = True  # run the prefix all of a step's examples share (system prompt) once per step,
    #                             the rest in padded micro-batches (packing applies to steps without one)
    micro_batch_tokens: int = 4096  # tokens per forward: a packed row, or a padded batch
    bf16: bool | str = "auto"  # bf16 autocast for the decoder (LM head and loss stay float32); auto: where native
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: int | None = None  # None: 2 x lora_r
    lora_targets: str | list[str] = "all-linear"
    device: str | None = None  # None: cuda when available, else cpu
    threads: int | None = None
    seed: int = 0
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    evals: list[dict[str, Any]] = field(default_factory=list)  # ahalab eval settings each, plus "name"
    out: str | None = None

    def validate(self) -> None:
        if not self.train:
            raise UserError("sft needs training data: train: [file.jsonl, ...] (or --train FILE)")
        if self.batch_size < 1 or self.epochs <= 0 or self.micro_batch_tokens < 1 or self.max_seq_len < 2:
            raise UserError("sft needs batch_size >= 1, epochs > 0, micro_batch_tokens >= 1 and max_seq_len >= 2")
        if self.lr_schedule not in ("constant", "cosine"):
            raise UserError(f"lr_schedule must be constant or cosine (got {self.lr_schedule!r})")
        use_bf16(self.bf16)  # true, false or auto


def lr_at(cfg: SFTConfig, step: int, total: int) -> float:
    """Linear warm-up, then constant or cosine decay towards 0 at the last step."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps - 1) / max(total - cfg.warmup_steps, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class DataOrder:
    """Example indices in a seeded shuffle per epoch; ``position`` counts examples handed out (resume point)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.position = size, seed, 0
        self._epoch, self._order = -1, list(range(size))

    def _epoch_order(self, epoch: int) -> list[int]:
        if epoch != self._epoch:
            self._epoch, self._order = epoch, list(range(self.size))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
        return self._order

    def take(self, n: int) -> list[int]:
        out = [self._epoch_order(p // self.size)[p % self.size] for p in range(self.position, self.position + n)]
        self.position += n
        return out


def load_examples(files: list[str], tokenizer: Any, max_seq_len: int) -> tuple[list[Example], int]:
    """Tokenized examples of all files, and how many were left out for exceeding ``max_seq_len``."""
    from ahalab.data.dataset import load_rows

    examples = [tokenize_row(tokenizer, row["messages"]) for f in files for row in load_rows(f)]
    kept = [ex for ex in examples if len(ex) <= max_seq_len and any(ex.trained)]
    return kept, len(examples) - len(kept)


class SFTTrainer:
    """``train()`` runs (or, with ``resume``, continues) the SFT run in ``run``."""

    def __init__(self, cfg: SFTConfig, run: RunDir, resume: bool = False) -> None:
        from ahalab.models import load_model, resolve_model, with_lora

        cfg.validate()
        self.cfg, self.run = cfg, run
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.autocast = use_bf16(cfg.bf16, self.device.type)
        self.model_dir = resolve_model(cfg.model)
        ckpt = latest_checkpoint(run.path) if resume else None
        full_ckpt = ckpt is not None and not cfg.lora_r
        self.model, self.tokenizer = load_model(str(ckpt / "model") if full_ckpt else self.model_dir)
        if cfg.lora_r:
            self.model = with_lora(self.model, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets,
                                   None if ckpt is None else ckpt / "model")
        self.model.to(self.device)
        self.model.train()
        self.examples, self.too_long = load_examples(cfg.train, self.tokenizer, cfg.max_seq_len)
        if not self.examples:
            raise UserError(f"no usable training examples in {', '.join(cfg.train)} ({self.too_long} longer than "
                            f"max_seq_len {cfg.max_seq_len})")
        self.order = DataOrder(len(self.examples), cfg.seed)
        self.total_steps = math.ceil(cfg.epochs * len(self.examples) / cfg.batch_size)
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        if ckpt is not None:
            state = load_state(ckpt, self.optimizer)
            self.step, self.order.position = state["step"], state["data_position"]
            print(f"resuming from {ckpt} (step {self.step})")
        if resume and self.run.file("metrics.jsonl").exists():  # rows after the checkpoint are redone
            kept = [r for r in self.run.metrics() if r["step"] <= self.step]
            self.run.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in kept))

    def micro_batches(self, examples: list[Example]) -> tuple[SharedPrefix | None, list[MicroBatch]]:
        """The step's shared prefix (run now, ``None`` if off or too short) and micro-batches of the rest."""
        cfg, pad_id = self.cfg, self.tokenizer.pad_token_id
        shared, rest = split_shared_prefix(examples) if cfg.shared_prefix else ([], examples)
        if shared:
            ids = torch.tensor([shared])
            return (SharedPrefix(self.model, ids, torch.ones_like(ids), self.autocast),
                    pad_batches(rest, cfg.micro_batch_tokens, pad_id))
        if cfg.packing:
            return None, pack(examples, max(cfg.micro_batch_tokens, max(len(e) for e in examples)))
        return None, pad_batches(examples, cfg.micro_batch_tokens, pad_id)

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step on the next ``batch_size`` examples; the loss is the mean NLL per trained token."""
        cfg = self.cfg
        start = time.perf_counter()
        batch = [self.examples[i] for i in self.order.take(cfg.batch_size)]
        lr = lr_at(cfg, step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        prefix, mbs = self.micro_batches(batch)
        targets = sum(mb.num_targets for mb in mbs)
        loss_sum = 0.0
        for mb in mbs:
            loss = completion_nll(self.model, mb, self.autocast, prefix) / targets
            loss.backward()
            loss_sum += loss.item()
        if prefix is not None:
            prefix.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
        if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
            raise UserError(f"step {step}: loss {loss_sum} / gradient norm {grad_norm} is not finite; last good "
                            f"checkpoint: {latest_checkpoint(self.run.path) or 'none'} (resume with a lower lr)")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        wall = time.perf_counter() - start
        tokens = sum(len(ex) for ex in batch)  # the examples' tokens, however they were batched
        return {"loss": loss_sum, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "trained_tokens": targets,
                "micro_batches": len(mbs), "shared_prefix": 0 if prefix is None else prefix.mask.size(1),
                "tokens_per_s": tokens / wall, "time_step_s": wall,
                "epoch": self.order.position / len(self.examples)}

    def train(self) -> dict[str, Any]:
        """Run to ``total_steps``, save the final model, evaluate; returns the summary."""
        cfg = self.cfg
        while self.step < self.total_steps:
            step = self.step + 1
            metrics = self.train_step(step)
            self.run.log_metrics(step, **metrics)
            self.step = step
            print(f"step {step}/{self.total_steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
                  f"{metrics['tokens_per_s']:.0f} tok/s  epoch {metrics['epoch']:.2f}", flush=True)
            if step == self.total_steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save_checkpoint(self.run.path, step, self.model, self.tokenizer, self.optimizer, self.order.position,
                                cfg.keep_checkpoints)
        return self.finish()

    def save_model(self) -> Path:
        """The trained model as a plain HF directory (LoRA merged), for engines and evaluation."""
        from ahalab.models import save_model

        return save_model(self.model, self.tokenizer, self.run.file("model"))

    def finish(self) -> dict[str, Any]:
        from ahalab.report import line_plot

        rows = self.run.metrics()
        model_dir = self.save_model()
        trained = [r for r in rows if "time_step_s" in r]
        train_time = sum(r["time_step_s"] for r in trained)
        summary: dict[str, Any] = {
            "model": self.cfg.model, "trained_model": str(model_dir), "steps": self.step,
            "examples": len(self.examples), "left_out_too_long": self.too_long,
            "loss_start": trained[0]["loss"] if trained else None, "loss_end": trained[-1]["loss"] if trained else None,
            "train_time_s": round(train_time, 2),
            "tokens_per_s": round(sum(r["tokens"] for r in trained) / train_time, 1) if train_time else None,
        }
        if trained:
            line_plot(self.run.file("loss.png"), {"loss": ([r["step"] for r in trained], [r["loss"] for r in trained])},
                      xlabel="step", ylabel="mean NLL per trained token", title="SFT loss")
        del self.model, self.optimizer  # free memory before the eval engine loads
        summary["eval"] = evaluate_model(str(model_dir), self.cfg.evals, self.run)
        self.run.write_json("summary.json", summary)
        write_report(self.run, dataclasses.asdict(self.cfg), summary)
        return summary


def evaluate_model(model: str, evals: list[dict[str, Any]], run: RunDir, prefix: str = "eval") -> dict[str, Any]:
    """Accuracy of ``model`` on each eval set (``ahalab.eval``; run directories under ``run``), by name."""
    from ahalab.config import from_dict
    from ahalab.eval.commands import EvalConfig, run_eval

    results: dict[str, Any] = {}
    for i, spec in enumerate(evals):
        spec = dict(spec)
        name = str(spec.pop("name", f"{spec.get('task', 'eval')}{i}"))
        cfg = from_dict(EvalConfig, {"format": "r1", **spec, "model": model, "out": str(run.file(f"{prefix}-{name}"))},
                        f"evals[{i}]")
        summary, _ = run_eval(cfg, tag=prefix)
        results[name] = {"accuracy": summary["accuracy"], "problems": summary["problems"]}
    return results


def write_report(run: RunDir, config: dict[str, Any], summary: dict[str, Any]) -> None:
    from ahalab.report import markdown_table

    evals = [{"eval set": k, **v} for k, v in (summary.get("eval") or {}).items()]
    lines = ["# SFT run", "", f"Model `{config['model']}` trained on {', '.join(config['train'])}.", "",
             markdown_table([{k: v for k, v in summary.items() if k != "eval"}]), "## Evaluation", "",
             markdown_table(evals) if evals else "(no eval sets configured)\n", "![loss](loss.png)", ""]
    run.write_text("report.md", "\n".join(lines))

