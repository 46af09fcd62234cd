"""`ahalab sft`: supervised fine-tuning on chat datasets (completion-only loss, packing), then evaluation."""
from __future__ import annotations

import argparse
from typing import Any

from ahalab.args import add_hub_args, add_process_args, add_resume_args, explicit_flags, recipe_path

EPILOG = """examples:
  ahalab sft --train runs/data/shortcut.jsonl --epochs 2 --lr 5e-5 --out runs/sft \\
      --eval countdown:../shared/data/countdown_cd3_test.jsonl
  ahalab sft --config recipes/my_sft.yaml lora_r=16 lr=1e-4
  ahalab sft --out runs/sft --resume                 # continue after a crash or kill
  ahalab sft --train data/cd/train.jsonl --num-processes 2 --out runs/sft2   # 2 processes, same gradient

Every setting is a key of ahalab/sft/trainer.py: SFTConfig; key=value overrides reach nested ones
(e.g. 'evals=[{task: countdown, seed: 1234, limit: 256, name: heldout}]'). The run directory gets
config.yaml, metrics.jsonl, checkpoints/, model/ (the trained model, LoRA merged), eval-<name>/,
summary.json, report.md and loss.png.
"""


def parse_eval_spec(spec: str) -> dict[str, Any]:
    """"task" or "task:data" (a file) -> an eval entry; the name is the file's stem or the task."""
    from pathlib import Path

    task, _, data = spec.partition(":")
    return {"task": task, "name": Path(data).stem if data else task, **({"data": data} if data else {})}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning on chat JSONL (completion-only loss, packing, LoRA)",
                       description="Fine-tune a model on chat rows ({'messages': [...]}): loss on the assistant "
                       "tokens only; the prefix a step's examples share (system prompt) runs once per step, else "
                       "short examples are packed without attention across them; bf16 autocast, full or "
                       "LoRA, checkpoints for --resume; then evaluate the trained model with ahalab eval.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML recipe with SFTConfig keys")
    p.add_argument("--model", help="model to fine-tune (alias, local dir, hub id); default smollm2-135m")
    p.add_argument("--train", nargs="+", help="dataset JSONL file(s) in chat form")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", dest="max_steps", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int, help="examples per optimiser step")
    p.add_argument("--lr", type=float, help="learning rate (full fine-tuning ~5e-5, LoRA ~1e-4)")
    p.add_argument("--lora-r", dest="lora_r", type=int, help="LoRA rank (0: full fine-tuning)")
    p.add_argument("--eval", dest="eval_specs", action="append", metavar="TASK[:FILE]",
                   help="evaluate the trained model on this task (repeatable)")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run directory (default runs/sft-<time>)")
    add_process_args(p)
    add_hub_args(p)
    add_resume_args(p)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.config import load_config
    from ahalab.sft.config import SFTConfig
    from ahalab.sft.trainer import SFTTrainer
    from ahalab.training.distributed import train_run

    flags = explicit_flags(args, skip=("eval_specs",))
    if args.eval_specs:
        flags["evals"] = [parse_eval_spec(s) for s in args.eval_specs]
    cfg = load_config(SFTConfig, recipe_path(args), args.overrides, flags)
    done = train_run("sft", cfg, args.resume, args.allow_config_change,
                     lambda run: SFTTrainer(cfg, run, args.resume, args.allow_config_change).train())
    if done is not None:
        summary, path = done
        evals = ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in summary["eval"].items())
        print(f"loss {summary['loss_start']:.3f} -> {summary['loss_end']:.3f} in {summary['steps']} steps"
              f"{'; accuracy ' + evals if evals else ''}; run directory: {path}")
    return 0
