"""Supervised fine-tuning on chat datasets: completion-only loss, packing, bf16 autocast, full or LoRA, resumable.

One step (``SFTTrainer.train_step``; the loop around it, checkpoints and resume are the training core's,
``ahalab.training.loop``): the next ``batch_size`` examples of the seeded per-epoch order -> the prefix
they all share (the system prompt) run once, the rest in padded micro-batches attending to it; without
one, packed (or padded) micro-batches; at most ``micro_batch_tokens`` tokens each -> summed NLL of the
trained tokens, backward per micro-batch -> the step's gradient divided by its trained-token count (a
token mean over the whole step) -> clip, AdamW. At the end the model (LoRA merged into it) is saved to
``<run>/model`` and evaluated on the configured sets with ``ahalab.eval``. With many processes each rank
takes its contiguous share of the step's examples and divides by the step's trained tokens over all ranks:
the summed gradient is the one-process gradient.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch

from ahalab.errors import UserError
from ahalab.models.prefix import SharedPrefix, micro_batch_cost
from ahalab.runs import RunDir
from ahalab.sft.collate import Example, MicroBatch, completion_nll, pack, pad_batches, split_shared_prefix, tokenize_row
from ahalab.sft.config import SFTConfig
from ahalab.sft.data import load_rows
from ahalab.training.card import write_model_card
from ahalab.training.data_order import DataOrder
from ahalab.training.loop import Trainer


def load_examples(files: list[str], tokenizer: Any, max_seq_len: int) -> tuple[list[Example], int]:
    """Tokenized examples of all files, and how many were left out for exceeding ``max_seq_len``."""
    examples = [tokenize_row(tokenizer, row["messages"]) for f in files for row in load_rows(f)]
    kept = [ex for ex in examples if len(ex) <= max_seq_len and any(ex.trained)]
    return kept, len(examples) - len(kept)


class SFTTrainer(Trainer):
    """``train()`` runs (or, with ``resume``, continues) the SFT run in ``run``."""

    METHOD = "sft"
    cfg: SFTConfig

    def __init__(self, cfg: SFTConfig, run: RunDir, resume: bool = False, allow_config_change: bool = False) -> None:
        super().__init__(cfg, run, resume, allow_config_change)
        self.examples, self.too_long = load_examples(cfg.train, self.tokenizer, cfg.max_seq_len)
        if not self.examples:
            raise UserError(f"no usable training examples in {', '.join(cfg.train)} ({self.too_long} longer than "
                            f"max_seq_len {cfg.max_seq_len})")
        self.order = DataOrder(len(self.examples), cfg.seed)
        self.total_steps = math.ceil(cfg.epochs * len(self.examples) / cfg.batch_size)
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.resume()

    def micro_batches(self, examples: list[Example]) -> tuple[SharedPrefix | None, list[MicroBatch]]:
        """The step's shared prefix (run now, ``None`` if off or too short) and micro-batches of the rest."""
        cfg, pad_id = self.cfg, self.tokenizer.pad_token_id
        cost = micro_batch_cost(self.device, cfg.micro_batch_tokens)
        shared, rest = split_shared_prefix(examples) if cfg.shared_prefix else ([], examples)
        if shared:
            ids = torch.tensor([shared])
            return (SharedPrefix(self.model, ids, torch.ones_like(ids), self.autocast, cfg.gradient_checkpointing),
                    pad_batches(rest, cfg.micro_batch_tokens, pad_id, cost))
        if cfg.packing:
            return None, pack(examples, max(cfg.micro_batch_tokens, max(len(e) for e in examples)))
        return None, pad_batches(examples, cfg.micro_batch_tokens, pad_id, cost)

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimiser step on the next ``batch_size`` examples (this rank's share of them); the loss is the mean NLL
        per trained token of the whole step."""
        cfg = self.cfg
        start = time.perf_counter()
        batch = [self.examples[i] for i in self.order.take(cfg.batch_size)]
        lr = self.set_lr(step)
        mine = self.dist.share(batch)
        self.dist.unshard(self.model)
        prefix, mbs = self.micro_batches(mine) if mine else (None, [])
        targets, micro = self.dist.reduce(sum(mb.num_targets for mb in mbs), len(mbs))
        loss_sum = 0.0
        for mb in mbs:
            loss = completion_nll(self.model, mb, self.autocast, prefix, cfg.gradient_checkpointing) / targets
            loss.backward()
            loss_sum += loss.item()
        if prefix is not None:
            prefix.backward()
        loss_sum, grad_norm = self.optimizer_step(step, loss_sum)
        shared = 0 if prefix is None else prefix.mask.size(1)
        wall, shared = self.dist.reduce(time.perf_counter() - start, shared, op="max")
        tokens = sum(len(ex) for ex in batch)  # the examples' tokens, however they were batched
        return {"loss": loss_sum, "lr": lr, "grad_norm": grad_norm, "tokens": tokens, "trained_tokens": targets,
                "micro_batches": micro, "shared_prefix": shared, "tokens_per_s": tokens / wall, "time_step_s": wall,
                "epoch": self.order.epoch}

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        print(f"step {step}/{self.total_steps}  loss {metrics['loss']:.4f}  lr {metrics['lr']:.2e}  "
              f"{metrics['tokens_per_s']:.0f} tok/s  epoch {metrics['epoch']:.2f}", flush=True)

    def finish(self) -> dict[str, Any]:
        from ahalab.plots import line_plot

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
        if summary["eval"]:
            write_model_card(model_dir, self.METHOD, dataclasses.asdict(self.cfg),
                             {f"{name} accuracy ({r['problems']} problems)": r["accuracy"]
                              for name, r in summary["eval"].items()})
        self.run.write_summary(summary)
        write_report(self.run, dataclasses.asdict(self.cfg), summary)
        return summary


def evaluate_model(model: str, evals: list[dict[str, Any]], run: RunDir, prefix: str = "eval") -> dict[str, Any]:
    """Accuracy of ``model`` on each eval set (``ahalab.eval``; run directories under ``run``), by name."""
    from ahalab.config import from_dict
    from ahalab.eval.evaluate import EvalConfig, run_eval

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
    from ahalab.plots import markdown_table

    evals = [{"eval set": k, **v} for k, v in (summary.get("eval") or {}).items()]
    lines = ["# SFT run", "", f"Model `{config['model']}` trained on {', '.join(config['train'])}.", "",
             markdown_table([{k: v for k, v in summary.items() if k != "eval"}]), "## Evaluation", "",
             markdown_table(evals) if evals else "(no eval sets configured)\n", "![loss](loss.png)", ""]
    run.write_text("report.md", "\n".join(lines))

