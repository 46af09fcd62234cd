"""`ahalab zero`: R1-Zero, i.e. GRPO with rule-based rewards straight on a model (no SFT stage)."""
from __future__ import annotations

import argparse

from ahalab.args import add_hub_args, add_process_args, add_resume_args, explicit_flags, recipe_path

EPILOG = """examples:
  ahalab zero --config recipes/zero_quick.yaml
  ahalab zero --config recipes/zero_quick.yaml --steps 40 lr=2e-5 eval.every=5 rewards.format_exact=0.5
  ahalab zero --task countdown --loss dapo --lora-r 16 --lr 1e-4 --out runs/cd
  ahalab zero --out runs/cd --resume                 # continue after a crash or kill, exactly
  ahalab zero --config recipes/zero_quick.yaml --num-processes 2 --out runs/zq2   # 2 processes, each its share
  ahalab zero --config recipes/zero_quick.yaml --push-to-hub --hub-model-id me/zero-quick   # model/ to the hub
  ahalab zero --config recipes/zero_quick.yaml \
      'rewards={accuracy: 1.0, "trl.rewards:think_format_reward": 0.2}'   # any TRL-style reward function

Every setting is a key of the recipe (see ahalab/rl/config.py: ZeroConfig; choices are checked
before any model loads); key=value overrides
reach nested ones (eval.limit=100, task_options.level=2, reward_options.overlong.cache=16).
The run directory gets config.yaml, metrics.jsonl (one row per step), samples.jsonl,
checkpoints/, summary.json, report.md and PNG plots (reward, accuracy, length, reflection).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zero", help="R1-Zero: GRPO with rule rewards (accuracy, format) straight on a model",
                       description="Sample groups of completions per prompt, score them with rule rewards, and "
                       "update the model with GRPO (or Dr. GRPO, DAPO, RLOO); evaluate on held-out problems "
                       "as it goes. Flags win over the recipe; key=value overrides win over both.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe (e.g. recipes/zero_quick.yaml)")
    p.add_argument("--model", help="alias (smollm2-135m, the default), local HF dir, .gguf file, or hub id")
    p.add_argument("--task", help="arithmetic | countdown | gsm8k | math500 | jsonl")
    p.add_argument("--format", help="prompt format (r1: <think>/<answer> tags, assistant prefix <think>)")
    p.add_argument("--steps", type=int, help="optimisation steps (one batch of rollouts each)")
    p.add_argument("--prompts-per-step", dest="prompts_per_step", type=int, help="prompts (groups) per step")
    p.add_argument("--generations", type=int, help="completions per prompt (group size, >= 2)")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, help="completion length limit")
    p.add_argument("--lr", type=float, help="learning rate (full fine-tuning ~1e-5, LoRA ~1e-4)")
    p.add_argument("--loss", choices=["grpo", "dr_grpo", "dapo", "rloo"],
                   help="variant: grpo (std-scaled, per-sequence mean), dr_grpo (no length/std normalisation), "
                   "dapo (token mean, clip-higher, dynamic sampling), rloo (leave-one-out baseline)")
    p.add_argument("--beta", type=float, help="KL coefficient to the initial model (0: no reference model)")
    p.add_argument("--mu", type=int, help="optimisation passes per batch of rollouts")
    p.add_argument("--lora-r", dest="lora_r", type=int, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--engine", choices=["vllm", "hf", "auto"], help="rollout engine (default vllm when installed)")
    p.add_argument("--threads", type=int, help="torch threads for training")
    p.add_argument("--seed", type=int, help="seed for data, sampling and initialisation (same seed, same run)")
    p.add_argument("--out", help="run directory (default runs/zero-<time>)")
    add_process_args(p)
    add_hub_args(p)
    add_resume_args(p)
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. eval.every=5")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.config import load_config
    from ahalab.rl.config import ZeroConfig
    from ahalab.rl.trainer import train_zero
    from ahalab.training.distributed import train_run

    cfg = load_config(ZeroConfig, recipe_path(args), args.overrides, explicit_flags(args))
    done = train_run("zero", cfg, args.resume, args.allow_config_change,
                     lambda run: train_zero(cfg, run, resume=args.resume, allow_config_change=args.allow_config_change))
    if done is not None:
        summary, path = done
        print(f"eval accuracy {summary['eval_accuracy_start']} -> {summary['eval_accuracy_end']} "
              f"after {summary['steps']} steps; run directory: {path}")
    return 0
