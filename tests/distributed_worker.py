"""What tests/test_distributed.py launches: one process alone, or each rank of a torchrun / accelerate launch.

    python distributed_worker.py grpo|sft MODEL OUT [SHARDING]    one optimiser step per variant; each rank's metrics
                                                                  and parameters after it in OUT/<variant>-rank<R>.pt
    python distributed_worker.py vllm MODEL OUT         2 GRPO steps, vLLM rollouts ($ZERO_EXTRA: more settings,
                                                        JSON, e.g. server mode); each rank's cores, its threads'
                                                        affinity and its engine against the policy in
                                                        OUT/vllm-rank<R>.json
SHARDING is the trainers' ``sharding`` setting (none, fsdp2); metrics, gradients and parameters are saved whole.
``noisy7`` is a reward for `ahalab zero` runs (``distributed_worker:noisy7``, with tests/ on PYTHONPATH).
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
from pathlib import Path

import torch

from ahalab.engines.base import Engine
from ahalab.types import Completion

random.seed(1000 + int(os.environ.get("RANK", "0")))  # each rank its own stream, which a resume must restore


def say7(completions, **_) -> list[float]:
    """The 7s in a completion."""
    from ahalab.rewards import contents

    return [c.count("7") / 4 for c in contents(completions)]


def noisy7(completions, trainer_state, **kw) -> list[float]:
    """``say7`` plus noise from this rank's python RNG (an exact resume restores it per rank); raises at step
    $CRASH_AT_STEP, to stop a run the way a crash would."""
    if str(trainer_state.global_step) == os.environ.get("CRASH_AT_STEP"):
        raise RuntimeError(f"crash at step {trainer_state.global_step}")
    return [r + 0.1 * random.random() for r in say7(completions)]


class FixedEngine(Engine):
    """The same completions for the same prompt, whatever batch it comes in: a group of "What is A + B?" is flat when
    A is a multiple of 3 (no signal: dynamic sampling drops it), else completion j holds j sevens."""

    def __init__(self, tokenizer) -> None:
        super().__init__("fixed")
        self._tokenizer = tokenizer

    @property
    def tokenizer(self):
        return self._tokenizer

    def load_weights(self, named_tensors) -> None:
        pass

    def generate(self, prompts, n=1, **_):
        out = []
        for prompt in prompts:
            a = int(re.findall(r"What is (\d+) \+ (\d+)\?", prompt)[0][0])
            texts = ["1 2 3" if a % 3 == 0 else " ".join(["7"] * j + ["1"] * (a % 4)) + " end" for j in range(n)]
            ids = self.tokenizer(prompt)["input_ids"]
            out.append([Completion(t, self.tokenizer(t)["input_ids"], "stop", prompt_token_ids=ids) for t in texts])
        return out


def grpo(model: str, out: Path, sharding: str) -> None:
    from ahalab.rewards import REWARDS
    from ahalab.rl.config import ZeroConfig, ZeroEval
    from ahalab.rl.trainer import ZeroTrainer
    from ahalab.runs import RunDir

    REWARDS["say7"] = say7
    variants = {"grpo": {"loss": "grpo"}, "dapo": {"loss": "dapo", "beta": 0.1, "mu": 2, "max_sampling_rounds": 3}}
    for name, extra in variants.items():
        cfg = ZeroConfig(model=model, engine="hf", steps=1, prompts_per_step=5, generations=4, max_new_tokens=8,
                         train_size=60, rewards={"say7": 1.0}, lr=1e-4, threads=1, eval=ZeroEval(every=0),
                         keep_checkpoints=0, sample_every=1, sample_groups=0,
                         micro_batch_tokens=48, sharding=sharding, out=str(out / name), **extra)
        trainer = ZeroTrainer(cfg, RunDir(cfg.out))
        trainer.engine = FixedEngine(trainer.tokenizer)
        grads = _capture_gradients(trainer)
        _save(trainer, trainer.train_step(1), grads, out / name)


def sft(model: str, out: Path, sharding: str) -> None:
    from ahalab.runs import RunDir
    from ahalab.sft.config import SFTConfig
    from ahalab.sft.trainer import SFTTrainer

    system = {"role": "system", "content": "Think step by step and answer in <answer></answer> tags. " * 2}
    answers = [f"{i} + 7 = {i + 7}. " * (1 + i % 3) + f"<answer>{i + 7}</answer>" for i in range(7)]
    rows = [{"messages": [system, {"role": "user", "content": f"What is {i} + 7?"},
                          {"role": "assistant", "content": answer}]} for i, answer in enumerate(answers)]
    data = out / "sft.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # "alone": one example per forward, the same forwards however the step is shared (the comparison to 1e-5);
    # "prefix": the default layout, whose forwards (the shared prefix of each rank's share) differ with the ranks
    variants = {"alone": {"shared_prefix": False, "packing": False, "micro_batch_tokens": 16},
                "prefix": {"micro_batch_tokens": 160}}
    for name, extra in variants.items():
        cfg = SFTConfig(model=model, train=[str(data)], batch_size=7, max_steps=1, lr=1e-4, threads=1,
                        keep_checkpoints=0, sharding=sharding, out=str(out / name), **extra)
        trainer = SFTTrainer(cfg, RunDir(cfg.out))
        grads = _capture_gradients(trainer)
        _save(trainer, trainer.train_step(1), grads, out / name)


def vllm(model: str, out: Path) -> None:
    from ahalab.rl.config import ZeroConfig, ZeroEval
    from ahalab.rl.trainer import ZeroTrainer
    from ahalab.runs import RunDir
    from weight_checks import engine_vs_policy

    settings = {"engine_dtype": "float32", "lr": 1e-2, **json.loads(os.environ.get("ZERO_EXTRA", "{}"))}
    cfg = ZeroConfig(model=model, engine="vllm", steps=2, prompts_per_step=2, generations=4, max_new_tokens=8,
                     train_size=50, rewards={"language": 1.0, "repetition": 1.0}, eval=ZeroEval(every=0),
                     keep_checkpoints=0, sample_every=0, out=str(out / "run"), **settings)
    trainer = ZeroTrainer(cfg, RunDir(cfg.out))
    with trainer.engine:
        trainer.train()
        to_policy, to_base = engine_vs_policy(trainer, model)
        threads = {int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
        rank = trainer.dist.rank
        (out / f"vllm-rank{rank}.json").write_text(json.dumps({
            "world": trainer.dist.world, "cores": trainer.dist.cores, "threads": threads,
            "bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"), "torch_threads": torch.get_num_threads(),
            "to_policy": to_policy, "to_base": to_base, "engine": trainer.engine.name,
            "trained": sum(r["sequences_trained"] for r in trainer.run.metrics()) if rank == 0 else None}))


def _capture_gradients(trainer) -> dict[str, torch.Tensor]:
    """The gradients the optimiser steps with (after the ranks' sum), captured as it steps."""
    grads: dict[str, torch.Tensor] = {}
    step = trainer.optimizer.step

    def capture(*args, **kwargs):
        grads.update({k: trainer.dist.full(v.grad.clone()) for k, v in trainer.model.named_parameters()
                      if v.grad is not None})
        return step(*args, **kwargs)

    trainer.optimizer.step = capture
    return grads


def _save(trainer, metrics: dict, grads: dict[str, torch.Tensor], path: Path) -> None:
    """This rank's metrics of the step, the gradient and the parameters after it (whole), how many processes shared
    it and the fraction of the parameters' elements this rank holds (FSDP: its shards)."""
    from torch.distributed.tensor import DTensor

    named = dict(trainer.model.named_parameters())
    params = {k: trainer.dist.full(v.detach().clone()) for k, v in named.items()}
    held = sum(v.to_local().numel() if isinstance(v, DTensor) else v.numel() for v in named.values())
    torch.save({"world": trainer.dist.world, "metrics": metrics, "grads": grads, "params": params,
                "held": held / sum(v.numel() for v in params.values())},
               path.parent / f"{path.name}-rank{trainer.dist.rank}.pt")


if __name__ == "__main__":
    mode, model, out, sharding = [*sys.argv[1:4], *sys.argv[4:5], "none"][:4]
    if mode == "vllm":
        vllm(model, Path(out))
    else:
        {"grpo": grpo, "sft": sft}[mode](model, Path(out), sharding)
