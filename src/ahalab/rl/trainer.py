"""The R1-Zero loop: rollouts -> rewards -> group advantages -> GRPO update -> weight sync, step after step.

One step, top to bottom (``ZeroTrainer.train_step``; the loop around it, checkpoints and resume are the
training core's, ``ahalab.training.loop``):
  1. take prompts in the seeded data order; ``ahalab.sampling`` samples ``generations`` completions per
     prompt (dynamic sampling: drop groups whose rewards are all equal and sample more prompts);
  2. rewards (TRL's keyword contract, ``ahalab.rewards``) -> group advantages (``ahalab.rl.loss``);
  3. update: completions with a zero advantage are skipped (without a KL term they add nothing to the
     loss); each prompt goes through the policy once, its completions continue from its KV cache in
     length-sorted micro-batches, logits only at completion tokens (``ahalab.rl.batch``); ``grpo_loss``
     per micro-batch, gradients accumulated, clipped, AdamW; ``mu`` passes, the first pass's detached
     log-probabilities serving as the old policy's (no extra forward);
  4. the engine gets the new weights (vLLM: ``load_weights``; the HF engine shares the model); a vLLM engine in
     sleep mode sleeps from the end of the rollouts to this sync.
Then metrics, samples and the held-out eval at their intervals.

With many processes (``ahalab.training.distributed``) every rank samples and scores its contiguous share of the
step's prompts with its own engine (whole groups: advantages stay within a rank) and every rank then holds all
of them, so dynamic sampling, metrics and samples.jsonl see exactly the step one process would; the update
splits the kept groups between the ranks and normalises by the whole batch's counts. The held-out eval is
split the same way. Generation is colocated (``vllm_mode: colocate``: each rank's own engine, each given the new
weights) or one `vllm serve` for every rank (``server``: each rank sends its share of the prompts, rank 0 pushes the
weights and the others wait for it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch

from ahalab.errors import UserError
from ahalab.models.prefix import micro_batch_cost
from ahalab.rewards import format_exact, get_reward
from ahalab.rl.analytics import STALL_ADVICE, reflection_rate, stalled_at, write_plots, write_report
from ahalab.rl.batch import MicroBatch, Prefix, PromptChunk, plan_batches
from ahalab.rl.config import ZeroConfig
from ahalab.rl.loss import grpo_loss, sampling_ratio
from ahalab.rl.rollout import Rollouts, rollout
from ahalab.runs import RunDir, release_memory
from ahalab.training.data_order import DataOrder
from ahalab.training.loop import Trainer
from ahalab.types import Completion, Problem

log = logging.getLogger(__name__)


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def train_zero(cfg: ZeroConfig, run: RunDir, resume: bool = False, allow_config_change: bool = False) -> dict[str, Any]:
    """Run (or continue) GRPO per ``cfg`` in ``run``, then close its engine, errors included; returns the summary."""
    trainer = ZeroTrainer(cfg, run, resume=resume, allow_config_change=allow_config_change)
    with trainer.engine:
        summary = trainer.train()
        trainer.dist.barrier()  # rank 0 has written the run's files; closing a colocated vLLM ends the process group
        return summary


def engine_logprobs(comps: list[Completion], mb: MicroBatch) -> torch.Tensor:
    """The engine's log-probabilities of the micro-batch's completion tokens, laid out as ``mb.mask`` [b, Lc]; NaN
    where the engine gave none."""
    out = torch.full(mb.mask.shape, float("nan"))  # [b, Lc]
    for row, i in enumerate(mb.index.tolist()):
        lps = comps[i].logprobs or []
        out[row, :len(lps)] = torch.tensor(lps, dtype=out.dtype)
    return out


def colocated_cpu_dtype(engine: str, mode: str, world: int, device: str) -> str | None:
    """The rollout engine's dtype when ``engine_dtype`` is unset: float32 for vLLM colocated on several CPU ranks,
    else None (the engine's default). Measured (docs/scaling.md, "bf16 engines on CPU ranks"): zero_quick on 2 CPU
    ranks with bf16 vLLM engines collapsed in all four runs (held-out 17.5% -> 0%: format rewarded, answers lost),
    with the sampling correction too; with float32 engines it learns (17.5% -> 62%). The cause is not found: the
    engines get the policy's weights, and their per-token log-probabilities differ from the policy's by 0.02-0.03
    nats on average."""
    return "float32" if engine == "vllm" and mode == "colocate" and world > 1 and device == "cpu" else None


class ZeroTrainer(Trainer):
    """GRPO on one model with rule rewards; ``train()`` runs (or, with ``resume``, continues) the run in ``run``."""

    METHOD = "grpo"
    cfg: ZeroConfig

    def __init__(self, cfg: ZeroConfig, run: RunDir, resume: bool = False, allow_config_change: bool = False) -> None:
        from ahalab.engines import default_engine_name, make_engine
        from ahalab.tasks import get_task
        from ahalab.tasks.decontaminate import decontaminate_against

        super().__init__(cfg, run, resume, allow_config_change)
        self.policy = self.model
        self.task = get_task(cfg.task, **cfg.task_options)
        # the held-out problems stay out of training whether or not they are evaluated (eval.every: 0)
        self.eval_problems = self.task.load(cfg.eval.data or cfg.data, limit=cfg.eval.limit, seed=cfg.seed + 1) \
            if cfg.eval.limit else []
        held_out = {p.question for p in self.eval_problems}
        clean = decontaminate_against([p for p in self.task.load(cfg.data, limit=cfg.train_size, seed=cfg.seed)
                                       if p.question not in held_out], cfg.decontaminate, cfg.ngram, cfg.overlap)
        if cfg.decontaminate and self.dist.main:
            run.write_json("decontamination.json", {"summary": clean.summary, "removed": clean.removed})
        self.train_problems = clean.kept
        if not self.train_problems:
            raise UserError(f"task '{cfg.task}' gave no training problems outside the held-out and decontamination "
                            "sets")
        self.order = DataOrder(len(self.train_problems), cfg.seed)
        self.total_steps = cfg.steps
        self.reference = None  # loaded once the policy leaves it (LoRA: the policy with its adapter turned off)
        self.moved = False  # whether the policy differs from the reference: an optimiser step, a restored checkpoint

        engine_name = cfg.engine or default_engine_name()
        dtype = cfg.engine_dtype or colocated_cpu_dtype(engine_name, cfg.vllm_mode, self.dist.world, self.device.type)
        if dtype and not cfg.engine_dtype and self.dist.main:
            log.warning("%d CPU ranks with colocated vLLM: float32 engines (bf16 ones collapsed GRPO runs on CPU "
                        "ranks, docs/scaling.md); engine_dtype=bfloat16 to override", self.dist.world)
        engine_opts: dict[str, Any] = {"seed": cfg.seed, **({"dtype": dtype} if dtype else {}), **cfg.engine_options}
        # the sampling correction needs the log-probabilities of the distribution vLLM sampled from
        self.corrects = cfg.vllm_importance_sampling_correction and engine_name == "vllm" and cfg.vllm_mode == "colocate"
        if self.corrects:
            engine_opts["logprobs_mode"] = "processed_logprobs"
        if engine_name == "hf" and not self.dist.fsdp:  # generate with the very model being trained: nothing to sync
            engine_opts["model"] = self.policy
        if cfg.vllm_mode == "server":
            from ahalab.engines.server import VLLMServerEngine

            self.engine = VLLMServerEngine(self.model_dir, cfg.vllm_server_url(),
                                           cfg.vllm_sync_dir or run.path / "vllm-sync", wait=cfg.vllm_server_timeout,
                                           **({"dtype": cfg.engine_dtype} if cfg.engine_dtype else {}),
                                           **cfg.engine_options)
        else:
            self.engine = make_engine(engine_name, self.model_dir, **engine_opts)
        self.shares_model = getattr(self.engine, "model", None) is self.policy
        context = {"task": self.task, "max_tokens": cfg.max_new_tokens}
        self.reward_fns = {name: get_reward(name, **context, **cfg.reward_options.get(name, {}))
                           for name in cfg.rewards}
        self.resume()

    def resumed(self) -> None:
        self.moved = True
        self.sync_weights()

    # --- the loop -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.engine.shared:  # a server may hold other weights (another run's) than this run's first policy
            self.sync_weights()
        if self.cfg.eval.every and self.cfg.eval.at_start:
            self.record(0, self.evaluate())

    def train_step(self, step: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        batch, sampled = self.sample_batch(step)
        self.engine.sleep()  # the engine's memory to the update: vLLM's sleep mode (GPU), its KV cache pages (CPU)
        # and the allocator's free pages (here and after the sync): each phase starts from what is live, not from the
        release_memory()  # last one's high-water mark (0.12 GiB off a 3-step zero_quick's peak, same update time)
        t1 = time.perf_counter()
        stats = self.update(batch, step)
        t2 = time.perf_counter()
        if stats["sequences_trained"]:
            self.sync_weights()
        release_memory()
        t3 = time.perf_counter()
        if self.dist.main and self.cfg.sample_every and step % self.cfg.sample_every == 0:
            self._write_samples(step, sampled)
        metrics = {**self.rollout_metrics(sampled, batch), **stats, "time_rollout_s": t1 - t0,
                   "time_train_s": t2 - t1, "time_sync_s": t3 - t2, "time_step_s": t3 - t0}
        if self.cfg.eval.every and (step % self.cfg.eval.every == 0 or step == self.cfg.steps):
            metrics.update(self.evaluate())
        return metrics

    def rollout_seed(self, step: int, round_: int) -> int:
        """The sampling seed of (step, round) on this rank: a resumed run samples exactly what the first would have."""
        return self.cfg.seed * 1_000_003 + step * 101 + round_ + 7_919 * self.dist.rank

    def rollouts(self, problems: list[Problem], step: int, round_: int) -> Rollouts:
        """Rollouts of ``problems``: each rank samples and scores its share, then every rank holds them all."""
        cfg = self.cfg
        mine = self.dist.share(problems)
        part = rollout(self.engine, self.task, mine, cfg.format, self.reward_fns, cfg.rewards,
                       group_size=cfg.generations, temperature=cfg.temperature, top_p=cfg.top_p,
                       max_tokens=cfg.max_new_tokens, seed=self.rollout_seed(step, round_),
                       scale=cfg.preset("scale_rewards"), baseline=cfg.preset("baseline"), chat=cfg.chat,
                       state={"global_step": step, "max_steps": cfg.steps}, logprobs=self.corrects) if mine else None
        return Rollouts.concat([p for p in self.dist.gather([part]) if p is not None])

    def sample_batch(self, step: int) -> tuple[Rollouts, Rollouts]:
        """(the groups to train on, every group sampled this step)."""
        cfg = self.cfg
        dynamic = cfg.preset("dynamic_sampling")
        sampled: list[Rollouts] = []
        kept: list[Rollouts] = []
        for round_ in range(cfg.max_sampling_rounds if dynamic else 1):
            need = cfg.prompts_per_step - sum(k.num_groups for k in kept)
            part = self.rollouts([self.train_problems[i] for i in self.order.take(need)], step, round_)
            sampled.append(part)
            kept.append(part.select([g for g, s in enumerate(part.group_std().tolist()) if s > 0]) if dynamic else part)
            if sum(k.num_groups for k in kept) == cfg.prompts_per_step:
                break
        return Rollouts.concat(kept), Rollouts.concat(sampled)

    def update(self, batch: Rollouts, step: int) -> dict[str, Any]:
        """``mu`` optimiser steps on ``batch`` (this rank's share of its groups); loss normalisers span the whole
        batch, as in TRL."""
        cfg = self.cfg
        comps = [s.completion for s in batch.samples]
        in_loss = [i for i, c in enumerate(comps) if not (cfg.mask_truncated and c.finish_reason == "length")]
        rows = [i for i in in_loss if comps[i].token_ids and (cfg.beta != 0 or batch.advantages[i] != 0)]
        lr = self.set_lr(step)
        stats: dict[str, Any] = {"lr": lr, "sequences_trained": len(rows)}
        if not rows:  # no signal in this batch: no optimiser step (on any rank: every rank holds the batch)
            return stats
        groups = set(self.dist.share(list(range(batch.num_groups))))
        mine = [i for i in rows if i // batch.group_size in groups]
        chunks = plan_batches([c.prompt_token_ids for c in comps], [c.token_ids for c in comps], mine,
                              cfg.micro_batch_tokens, self.tokenizer.pad_token_id,
                              micro_batch_cost(self.device, cfg.micro_batch_tokens))
        norm = {"num_sequences": len(comps), "num_tokens": sum(comps[i].num_tokens for i in in_loss),
                "max_completion_len": cfg.max_new_tokens}
        variant = {"loss_type": cfg.loss, "epsilon": cfg.epsilon, "epsilon_high": cfg.preset("epsilon_high"),
                   "beta": cfg.beta}
        # until the first optimiser step the policy is the reference: the first pass's log-probabilities are its own
        refs = self.reference_logprobs(chunks) if cfg.beta and self.moved else None
        olds: list[torch.Tensor] = []
        weights: list[torch.Tensor | None] = []  # the sampling correction's, per micro-batch
        tokens = sum(mb.num_tokens for chunk in chunks for mb in chunk.micro_batches)
        loss_sum = kl_sum = clipped_sum = diff_sum = weight_sum = 0.0
        for _ in range(cfg.mu):
            self.dist.unshard(self.policy)
            k = 0  # micro-batch number: the same order in every pass
            for chunk in chunks:
                prefix = Prefix(self.policy, chunk, self.autocast, cfg.gradient_checkpointing)  # each prompt once
                for mb in chunk.micro_batches:
                    logp = prefix.logprobs(mb, cfg.temperature)
                    mask = mb.mask.to(self.device)  # [b, Lc]
                    if len(olds) == k:  # first pass: the policy that sampled the batch, no extra forward
                        olds.append(logp.detach())
                        weights.append(None)
                        if self.corrects:
                            sampled = engine_logprobs(comps, mb).to(self.device)  # [b, Lc], NaN where none
                            weights[k] = sampling_ratio(olds[k], sampled, mask, cfg.sampling_correction(),
                                                        cfg.vllm_importance_sampling_clip_min,
                                                        cfg.vllm_importance_sampling_clip_max)  # [b, Lc] or [b, 1]
                            diff_sum += float(torch.nan_to_num((olds[k] - sampled).abs() * mask).sum())
                            weight_sum += float((weights[k] * mask).sum())
                    ref = refs[k] if refs else olds[k] if cfg.beta else None
                    loss, s = grpo_loss(logp, olds[k], ref,
                                        batch.advantages[mb.index].to(self.device), mask, **variant, **norm,
                                        sampling_weights=weights[k])
                    loss.backward()
                    loss_sum, kl_sum, clipped_sum = loss_sum + loss.item(), kl_sum + s["kl"], clipped_sum + s["clipped"]
                    k += 1
                prefix.backward()
            loss, grad_norm = self.optimizer_step(step, loss_sum)  # loss: loss_sum over the ranks
            self.moved = True
        neg_logp = -sum(float(old.sum()) for old in olds)  # padding holds 0
        tokens, kl_sum, clipped_sum, neg_logp, diff_sum, weight_sum = self.dist.reduce(
            tokens, kl_sum, clipped_sum, neg_logp, diff_sum, weight_sum)
        correction = {"sampling_logp_diff": diff_sum / tokens, "sampling_weight_mean": weight_sum / tokens} \
            if self.corrects else {}
        return {**stats, "tokens_trained": tokens, "loss": loss / cfg.mu, "grad_norm": grad_norm,
                "kl": kl_sum / (tokens * cfg.mu), "clip_fraction": clipped_sum / (tokens * cfg.mu),
                # Monte-Carlo entropy estimate: mean -log p of the sampled tokens (unbiased at temperature 1)
                "entropy": neg_logp / tokens, **correction}

    @torch.no_grad()
    def reference_logprobs(self, chunks: list[PromptChunk]) -> list[torch.Tensor]:
        """Log-probabilities under the frozen initial model (with LoRA: the policy with its adapter off), loaded
        when first needed (a run whose policy never moves never holds a second copy of the model)."""
        from ahalab.models import load_model

        if self.reference is None and not self.cfg.lora_r:
            self.reference = load_model(self.model_dir)[0].to(self.device).eval().requires_grad_(False)
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
            yield from ((name, self.dist.full(p.detach())) for name, p in self.policy.named_parameters())
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
        """The engine gets the policy's weights; one engine behind every rank (a server) gets them from rank 0, and
        no rank samples again before it has."""
        if self.shares_model:
            return
        if self.dist.main or not self.engine.shared:
            self.engine.load_weights(self.policy_weights())
        if self.engine.shared:
            self.dist.barrier()

    # --- measuring and logging ----------------------------------------------------------------------

    def rollout_metrics(self, sampled: Rollouts, batch: Rollouts) -> dict[str, Any]:
        lengths = [s.tokens for s in sampled.samples]
        total = sampled.total.tolist()
        m: dict[str, Any] = {"reward_mean": _mean(total), "reward_std": statistics.pstdev(total)}
        for name, values in sampled.rewards.items():
            present = [v for v in values if v is not None]
            m[f"reward_{name}_mean"] = _mean(present)
            m[f"reward_{name}_std"] = statistics.pstdev(present) if present else None
        m.update(accuracy=_mean([float(s.correct) for s in sampled.samples]),
                 format_rate=_mean(format_exact(sampled.texts)),
                 zero_std_groups=_mean([float(s == 0) for s in sampled.group_std().tolist()]),
                 groups_sampled=sampled.num_groups, groups_kept=batch.num_groups,
                 completion_tokens_mean=_mean(lengths), completion_tokens_max=max(lengths),
                 truncated_rate=_mean([float(s.finish_reason == "length") for s in sampled.samples]),
                 reflection_rate=reflection_rate(sampled.texts), data_position=self.order.position)
        return m

    def evaluate(self) -> dict[str, Any]:
        """Greedy accuracy, format rate, length and reflection rate on the held-out problems."""
        from ahalab.eval.evaluate import evaluate

        cfg = self.cfg
        start = time.perf_counter()
        mine = self.dist.share(self.eval_problems)
        groups = evaluate(self.engine, self.task, mine, fmt=cfg.format, temperature=0.0, max_tokens=cfg.eval.max_tokens,
                          seed=cfg.seed, chat=cfg.chat, progress=False).samples if mine else []
        flat = self.dist.gather([s for group in groups for s in group])
        texts = [s.text for s in flat]
        return {"eval_accuracy": sum(s.correct for s in flat) / len(flat),  # as ahalab.eval's accuracy
                "eval_format_rate": _mean(format_exact(texts)),
                "eval_mean_tokens": _mean([s.tokens for s in flat]),
                "eval_reflection_rate": reflection_rate(texts), "time_eval_s": time.perf_counter() - start}

    def _write_samples(self, step: int, sampled: Rollouts) -> None:
        """The completions of the first ``sample_groups`` groups (all: 0), with their rewards and advantages."""
        groups = self.cfg.sample_groups or sampled.num_groups
        rows = []
        for i, s in enumerate(sampled.samples[:groups * sampled.group_size]):
            problem = sampled.problems[i // sampled.group_size]
            rows.append({"step": step, "problem_id": problem.id, "question": problem.question, "answer": problem.answer,
                         "prompt": s.prompt, "completion": s.text, "reward": sampled.total[i].item(),
                         "advantage": sampled.advantages[i].item(),
                         **{f"reward_{k}": v[i] for k, v in sampled.rewards.items()},
                         "tokens": s.tokens, "finish_reason": s.finish_reason})
        self.run.append("samples.jsonl", rows)

    def log(self, step: int, m: dict[str, Any]) -> None:
        evaluated = f" | eval acc {m['eval_accuracy']:.3f}" if "eval_accuracy" in m else ""
        print(f"step {step}/{self.cfg.steps}  reward {m['reward_mean']:.3f}  acc {m['accuracy']:.3f}  "
              f"format {m['format_rate']:.3f}  len {m['completion_tokens_mean']:.0f}  trained "
              f"{m['sequences_trained']}/{m['groups_sampled'] * self.cfg.generations}  "
              f"| rollout {m['time_rollout_s']:.1f}s train {m['time_train_s']:.1f}s sync {m['time_sync_s']:.2f}s"
              f"{evaluated}", flush=True)
        if stalled_at(self.run.metrics()) == step:
            log.warning("step %d: %s", step, STALL_ADVICE)

    def finish(self) -> dict[str, Any]:
        """summary.json, plots and report.md from the metrics series."""
        from ahalab.training.checkpoint import latest_checkpoint

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
            "stalled_at_step": stalled_at(rows),
        }
        held_out = {"eval_accuracy_start": summary["eval_accuracy_start"],
                    "eval_accuracy": summary["eval_accuracy_end"], "eval_format_rate": summary["eval_format_rate_end"],
                    "eval_problems": len(self.eval_problems)}
        summary["trained_model"] = str(self.save_model({k: v for k, v in held_out.items() if v is not None}
                                                       if evals else None))
        self.run.write_summary(summary)
        write_plots(self.run, rows)
        write_report(self.run, dataclasses.asdict(self.cfg), rows, summary)
        return summary
