"""The R1-Zero loop: rollouts -> rewards -> group advantages -> GRPO update -> weight sync, step after step.

One step, top to bottom (``ZeroTrainer.train_step``):
  1. take prompts from the seeded stream; the engine samples ``generations`` completions per prompt
     (dynamic sampling: drop groups whose rewards are all equal and sample more prompts);
  2. rewards -> group advantages (``ahalab.rl.grpo.group_advantages``);
  3. update: completions with a zero advantage are skipped (without a KL term they add nothing to the
     loss); each prompt goes through the policy once, its completions continue from its KV cache in
     length-sorted micro-batches, logits only at completion tokens (``ahalab.rl.batch``); ``grpo_loss``
     per micro-batch, gradients accumulated, clipped, AdamW; ``mu`` passes, the first pass's detached
     log-probabilities serving as the old policy's (no extra forward);
  4. the engine gets the new weights (vLLM: ``load_weights``; the HF engine shares the model).
Then metrics, samples, held-out eval and checkpoints at their intervals.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from ahalab.errors import UserError
from ahalab.precision import use_bf16
from ahalab.rewards import format_exact, get_reward
from ahalab.rl.analytics import reflection_rate, write_plots, write_report
from ahalab.rl.batch import Prefix, PromptChunk, plan_batches
from ahalab.rl.checkpoint import latest_checkpoint, load_state, save_checkpoint
from ahalab.rl.config import ZeroConfig
from ahalab.rl.grpo import grpo_loss
from ahalab.rl.rollout import PromptStream, Rollouts, rollout
from ahalab.runs import RunDir, read_jsonl


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (a NaN/inf loss or gradient); the message names the last good checkpoint."""


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def train_zero(cfg: ZeroConfig, run: RunDir, resume: bool = False) -> dict[str, Any]:
    """Run (or continue) GRPO per ``cfg`` in ``run``, then close its engine, errors included; returns the summary."""
    trainer = ZeroTrainer(cfg, run, resume=resume)
    with trainer.engine:
        return trainer.train()


class ZeroTrainer:
    """GRPO on one model with rule rewards; ``train()`` runs (or, with ``resume``, continues) the run in ``run``."""

    def __init__(self, cfg: ZeroConfig, run: RunDir, resume: bool = False) -> None:
        from ahalab.engines import default_engine_name, make_engine
        from ahalab.models import load_model, resolve_model, with_lora
        from ahalab.tasks import get_task

        cfg.validate()
        self.cfg, self.run = cfg, run
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.task = get_task(cfg.task, **cfg.task_options)
        self.eval_problems = self.task.load(cfg.eval.data or cfg.data, limit=cfg.eval.limit, seed=cfg.seed + 1) \
            if cfg.eval.every else []
        held_out = {p.question for p in self.eval_problems}
        train = [p for p in self.task.load(cfg.data, limit=cfg.train_size, seed=cfg.seed) if p.question not in held_out]
        if not train:
            raise UserError(f"task '{cfg.task}' gave no training problems outside the held-out set")
        self.stream = PromptStream(train, cfg.seed)

        self.model_dir = resolve_model(cfg.model)
        ckpt = latest_checkpoint(run.path) if resume else None
        self.policy, self.tokenizer = load_model(self.model_dir if ckpt is None or cfg.lora_r else str(ckpt / "model"))
        if cfg.lora_r:
            self.policy = with_lora(self.policy, cfg.lora_r, cfg.lora_alpha, cfg.lora_targets,
                                    None if ckpt is None else ckpt / "model")
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.policy.to(self.device).train()
        self.reference = None
        if cfg.beta and not cfg.lora_r:  # LoRA: the reference is the policy with its adapter turned off
            self.reference = load_model(self.model_dir)[0].to(self.device).eval().requires_grad_(False)
        self.autocast = use_bf16(cfg.bf16, self.device.type)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)

        engine_opts: dict[str, Any] = {"seed": cfg.seed, **({"dtype": cfg.engine_dtype} if cfg.engine_dtype else {}),
                                       **cfg.engine_options}
        engine_name = cfg.engine or default_engine_name()
        if engine_name == "hf":  # generate with the very model being trained: nothing to sync
            engine_opts["model"] = self.policy
        self.engine = make_engine(engine_name, self.model_dir, **engine_opts)
        self.shares_model = getattr(self.engine, "model", None) is self.policy
        context = {"task": self.task, "max_tokens": cfg.max_new_tokens}
        self.reward_fns = {name: get_reward(name, **context, **cfg.reward_options.get(name, {}))
                           for name in cfg.rewards}

        self.step = 0
        if resume:
            self._resume(ckpt)

    # --- setup helpers ----------------------------------------------------------------------------

    def render(self, question: str) -> tuple[str, str]:
        """(prompt, assistant prefix) for a question in the run's format."""
        from ahalab.prompts import render

        r = render(self.engine.tokenizer, self.task, question, self.cfg.format, chat=self.cfg.chat)
        return r.prompt, r.prefix

    def _resume(self, ckpt) -> None:
        """Continue from the last checkpoint; metrics and samples logged after it are dropped (they are redone)."""
        if ckpt is not None:
            state = load_state(ckpt, self.optimizer)
            self.step, self.stream.position = state["step"], state["data_position"]
            self.sync_weights()
            print(f"resuming from {ckpt} (step {self.step})")
        for name in ("metrics.jsonl", "samples.jsonl"):
            if self.run.file(name).exists():
                rows = read_jsonl(self.run.file(name), tolerate_torn_tail=True)
                kept = [r for r in rows if ckpt is not None and r["step"] <= self.step]
                self.run.write_text(name, "".join(json.dumps(r) + "\n" for r in kept))

    # --- the loop -----------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.step == 0 and cfg.eval.every and cfg.eval.at_start:
            self.run.log_metrics(0, **self.evaluate())
        while self.step < cfg.steps:
            step = self.step + 1
            metrics = self.train_step(step)
            if cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.steps):
                metrics.update(self.evaluate())
            self.run.log_metrics(step, **metrics)
            self._print(step, metrics)
            self.step = step
            if step == cfg.steps or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                save_checkpoint(self.run.path, step, self.policy, self.tokenizer, self.optimizer,
                                self.stream.position, cfg.keep_checkpoints)
        return self.finish()

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        batch, sampled = self.sample_batch(step)
        t1 = time.perf_counter()
        stats = self.update(batch, step)
        t2 = time.perf_counter()
        if stats["sequences_trained"]:
            self.sync_weights()
        t3 = time.perf_counter()
        if self.cfg.sample_every and step % self.cfg.sample_every == 0:
            self._write_samples(step, sampled)
        return {**self.rollout_metrics(sampled, batch), **stats, "time_rollout_s": t1 - t0, "time_train_s": t2 - t1,
                "time_sync_s": t3 - t2, "time_step_s": t3 - t0}

    def rollout_seed(self, step: int, round_: int) -> int:
        """The sampling seed of (step, round): a resumed run samples exactly what the first would have."""
        return self.cfg.seed * 1_000_003 + step * 101 + round_

    def sample_batch(self, step: int) -> tuple[Rollouts, Rollouts]:
        """(the groups to train on, every group sampled this step)."""
        cfg = self.cfg
        dynamic = cfg.preset("dynamic_sampling")
        sampled: list[Rollouts] = []
        kept: list[Rollouts] = []
        for round_ in range(cfg.max_sampling_rounds if dynamic else 1):
            need = cfg.prompts_per_step - sum(k.num_groups for k in kept)
            part = rollout(self.engine, self.stream.take(need), self.render, self.reward_fns, cfg.rewards,
                           group_size=cfg.generations, temperature=cfg.temperature, top_p=cfg.top_p,
                           max_tokens=cfg.max_new_tokens, seed=self.rollout_seed(step, round_),
                           scale=cfg.preset("scale_rewards"), baseline=cfg.preset("baseline"))
            sampled.append(part)
            kept.append(part.select([g for g, s in enumerate(part.group_std().tolist()) if s > 0]) if dynamic else part)
            if sum(k.num_groups for k in kept) == cfg.prompts_per_step:
                break
        return Rollouts.concat(kept), Rollouts.concat(sampled)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay (towards 0 at the last step)."""
        cfg = self.cfg
        if step <= cfg.warmup_steps:
            return cfg.lr * step / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return cfg.lr
        progress = (step - cfg.warmup_steps - 1) / max(cfg.steps - cfg.warmup_steps, 1)
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def update(self, batch: Rollouts, step: int) -> dict[str, Any]:
        """``mu`` optimiser steps on ``batch``; loss normalisers span the whole batch, as in TRL."""
        cfg = self.cfg
        comps = batch.completions
        in_loss = [i for i, c in enumerate(comps) if not (cfg.mask_truncated and c.finish_reason == "length")]
        rows = [i for i in in_loss if comps[i].token_ids and (cfg.beta != 0 or batch.advantages[i] != 0)]
        lr = self.lr_at(step)
        stats: dict[str, Any] = {"lr": lr, "sequences_trained": len(rows)}
        if not rows:  # no signal in this batch: no optimiser step
            return stats
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        chunks = plan_batches([c.prompt_token_ids for c in comps], [c.token_ids for c in comps], rows,
                              cfg.micro_batch_tokens, self.tokenizer.pad_token_id)
        norm = {"num_sequences": len(comps), "num_tokens": sum(comps[i].num_tokens for i in in_loss),
                "max_completion_len": cfg.max_new_tokens}
        variant = {"loss_type": cfg.loss, "epsilon": cfg.epsilon, "epsilon_high": cfg.preset("epsilon_high"),
                   "beta": cfg.beta}
        refs = self.reference_logprobs(chunks) if cfg.beta else None
        olds: list[torch.Tensor] = []
        tokens = sum(mb.num_tokens for chunk in chunks for mb in chunk.micro_batches)
        loss_sum = kl_sum = clipped_sum = 0.0
        for _ in range(cfg.mu):
            k = 0  # micro-batch number: the same order in every pass
            for chunk in chunks:
                prefix = Prefix(self.policy, chunk, self.autocast)  # each prompt once
                for mb in chunk.micro_batches:
                    logp = prefix.logprobs(mb, cfg.temperature)
                    if len(olds) == k:  # first pass: the policy that sampled the batch, no extra forward
                        olds.append(logp.detach())
                    loss, s = grpo_loss(logp, olds[k], refs[k] if refs else None,
                                        batch.advantages[mb.index].to(self.device), mb.mask.to(self.device),
                                        **variant, **norm)
                    loss.backward()
                    loss_sum, kl_sum, clipped_sum = loss_sum + loss.item(), kl_sum + s["kl"], clipped_sum + s["clipped"]
                    k += 1
                prefix.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm))
            if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                last = latest_checkpoint(self.run.path)
                raise TrainingError(f"step {step}: loss {loss_sum} / gradient norm {grad_norm} is not finite; stopped "
                                    f"without saving. Last good checkpoint: {last or 'none'} (continue with --resume, "
                                    "perhaps with a lower lr or max_grad_norm)")
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        neg_logp = -sum(float(old.sum()) for old in olds)  # padding holds 0
        return {**stats, "tokens_trained": tokens, "loss": loss_sum / cfg.mu, "grad_norm": grad_norm,
                "kl": kl_sum / (tokens * cfg.mu), "clip_fraction": clipped_sum / (tokens * cfg.mu),
                # Monte-Carlo entropy estimate: mean -log p of the sampled tokens (unbiased at temperature 1)
                "entropy": neg_logp / tokens}

    @torch.no_grad()
    def reference_logprobs(self, chunks: list[PromptChunk]) -> list[torch.Tensor]:
        """Log-probabilities under the frozen initial model (with LoRA: the policy with its adapter off)."""
        model = self.policy if self.reference is None else self.reference
        out: list[torch.Tensor] = []
        with self.policy.disable_adapter() if self.reference is None else contextlib.nullcontext():
            for chunk in chunks:
                prefix = Prefix(model, chunk, self.autocast)
                out += [prefix.logprobs(mb, self.cfg.temperature) for mb in chunk.micro_batches]
        return out

    def policy_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every weight of the policy under its HF name; with LoRA, adapted layers carry the merged weight."""
        if not self.cfg.lora_r:
            yield from ((name, p.detach()) for name, p in self.policy.named_parameters())
            return
        from peft.tuners.lora import LoraLayer

        model = self.policy.base_model.model
        with torch.no_grad():
            merged = {f"{name}.weight": module.base_layer.weight + module.get_delta_weight("default")
                      for name, module in model.named_modules() if isinstance(module, LoraLayer)}
        for name, p in model.named_parameters():
            if "lora_" not in name:
                name = name.replace(".base_layer", "")
                yield name, merged.get(name, p).detach()

    def sync_weights(self) -> None:
        if not self.shares_model:
            self.engine.load_weights(self.policy_weights())

    # --- measuring and logging ----------------------------------------------------------------------

    def rollout_metrics(self, sampled: Rollouts, batch: Rollouts) -> dict[str, Any]:
        lengths = [c.num_tokens for c in sampled.completions]
        total = sampled.total.tolist()
        rows = [p for p in sampled.problems for _ in range(sampled.group_size)]
        m: dict[str, Any] = {"reward_mean": _mean(total), "reward_std": statistics.pstdev(total)}
        for name, values in sampled.rewards.items():
            present = [v for v in values if v is not None]
            m[f"reward_{name}_mean"] = _mean(present)
            m[f"reward_{name}_std"] = statistics.pstdev(present) if present else None
        m.update(accuracy=_mean([float(self.task.grade(p, t).correct) for p, t in zip(rows, sampled.texts)]),
                 format_rate=_mean(format_exact(sampled.texts)),
                 zero_std_groups=_mean([float(s == 0) for s in sampled.group_std().tolist()]),
                 groups_sampled=sampled.num_groups, groups_kept=batch.num_groups,
                 completion_tokens_mean=_mean(lengths), completion_tokens_max=max(lengths),
                 truncated_rate=_mean([float(c.finish_reason == "length") for c in sampled.completions]),
                 reflection_rate=reflection_rate(sampled.texts), data_position=self.stream.position)
        return m

    def evaluate(self) -> dict[str, Any]:
        """Greedy accuracy, format rate, length and reflection rate on the held-out problems."""
        from ahalab.eval.evaluate import evaluate

        cfg = self.cfg
        start = time.perf_counter()
        result = evaluate(self.engine, self.task, self.eval_problems, fmt=cfg.format, temperature=0.0,
                          max_tokens=cfg.eval.max_tokens, seed=cfg.seed, chat=cfg.chat, progress=False)
        texts = [r["completion"] for r in result.records]
        return {"eval_accuracy": result.summary["accuracy"], "eval_format_rate": _mean(format_exact(texts)),
                "eval_mean_tokens": _mean([r["tokens"] for r in result.records]),
                "eval_reflection_rate": reflection_rate(texts), "time_eval_s": time.perf_counter() - start}

    def _write_samples(self, step: int, sampled: Rollouts) -> None:
        """The first group's completions, with their rewards and advantages."""
        g = sampled.group_size
        self.run.append("samples.jsonl", [
            {"step": step, "problem_id": sampled.problems[0].id, "question": sampled.problems[0].question,
             "answer": sampled.problems[0].answer, "prompt": sampled.prompts[0], "completion": sampled.texts[i],
             "reward": sampled.total[i].item(),
             "advantage": sampled.advantages[i].item(), **{f"reward_{k}": v[i] for k, v in sampled.rewards.items()},
             "tokens": sampled.completions[i].num_tokens, "finish_reason": sampled.completions[i].finish_reason}
            for i in range(g)])

    def _print(self, step: int, m: dict[str, Any]) -> None:
        evaluated = f" | eval acc {m['eval_accuracy']:.3f}" if "eval_accuracy" in m else ""
        print(f"step {step}/{self.cfg.steps}  reward {m['reward_mean']:.3f}  acc {m['accuracy']:.3f}  "
              f"format {m['format_rate']:.3f}  len {m['completion_tokens_mean']:.0f}  trained "
              f"{m['sequences_trained']}/{m['groups_sampled'] * self.cfg.generations}  "
              f"| rollout {m['time_rollout_s']:.1f}s train {m['time_train_s']:.1f}s sync {m['time_sync_s']:.2f}s"
              f"{evaluated}", flush=True)

    def finish(self) -> dict[str, Any]:
        """summary.json, plots and report.md from the metrics series."""
        from ahalab.models import save_model

        rows = self.run.metrics()
        evals = [r for r in rows if "eval_accuracy" in r]
        trained = [r for r in rows if "time_step_s" in r]
        summary = {
            "steps": self.step, "model": self.cfg.model, "task": self.cfg.task, "loss": self.cfg.loss,
            "eval_accuracy_start": evals[0]["eval_accuracy"] if evals and evals[0]["step"] == 0 else None,
            "eval_accuracy_end": evals[-1]["eval_accuracy"] if evals else None,
            "eval_format_rate_end": evals[-1]["eval_format_rate"] if evals else None,
            "train_reward_end": trained[-1]["reward_mean"] if trained else None,
            "median_step_s": statistics.median(r["time_step_s"] for r in trained) if trained else None,
            "train_time_s": sum(r["time_step_s"] for r in trained),
            "checkpoint": str(latest_checkpoint(self.run.path)),
            "trained_model": str(save_model(self.policy, self.tokenizer, self.run.file("model"))),
        }
        self.run.write_json("summary.json", summary)
        write_plots(self.run, rows)
        write_report(self.run, dataclasses.asdict(self.cfg), rows, summary)
        return summary
