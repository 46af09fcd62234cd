#!/usr/bin/env python3
"""SFT training throughput: ahalab's SFT trainer vs TRL's SFTTrainer, same data, model and settings, same run.

    python benchmarks/sft_throughput.py --model smollm2-135m --examples 512 --batch-size 16 --steps 20 \\
        --bf16 --packing --threads 2 --out runs/bench/sft_throughput.json

Data: countdown journey traces from the program teacher (``--examples`` rows, chat form, r1 prompt), or
``--data FILE``. Both trainers get the same rows, completion-only loss (TRL: the conversational
prompt-completion form, whose default loss is on the completion only), full fine-tuning from float32
weights, AdamW at the same lr, ``--batch-size`` examples per optimiser step. ahalab runs the prefix all of a
step's examples share (the r1 system prompt, ~100 tokens) once and the rest in padded micro-batches of at most
``--row-tokens`` (``--ablate-prefix`` also times it without that, packing each step's examples into rows of at
most ``--row-tokens`` with ``--packing``); TRL packs the dataset into rows of
``--row-tokens`` (bfd, padding-free) and takes ``--batch-size * mean example length / --row-tokens`` rows
per step, so both see about the same tokens per step. bf16 autocast on both with ``--bf16``. The first
step is a warm-up and not counted. Throughput = the examples' tokens (no padding; a shared prefix counted
in every example, as TRL processes it) per second of training steps (data collation included); the JSON
line also has the speed ratio ahalab / TRL.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


def make_data(examples: int, out: Path) -> str:
    from ahalab.data.build import DataConfig, build_dataset

    built = build_dataset(DataConfig(task="countdown", limit=examples, journey="search", examples=examples,
                                     out=str(out)))
    return built["journey"]


def bench_ahalab(a: argparse.Namespace, data: str, run_dir: Path, shared_prefix: bool) -> dict[str, Any]:
    from ahalab.runs import RunDir
    from ahalab.sft.config import SFTConfig
    from ahalab.sft.trainer import SFTTrainer

    cfg = SFTConfig(model=a.model, train=[data], batch_size=a.batch_size, lr=a.lr, lr_schedule="constant",
                    bf16=a.bf16, packing=a.packing, shared_prefix=shared_prefix, micro_batch_tokens=a.row_tokens,
                    max_seq_len=a.row_tokens, seed=0, out=str(run_dir))
    trainer = SFTTrainer(cfg, RunDir(run_dir))
    rows = [trainer.train_step(step) for step in range(1, a.steps + 2)][1:]  # no checkpoints: steps only
    tokens, wall = sum(r["tokens"] for r in rows), sum(r["time_step_s"] for r in rows)
    return {"tokens_per_s": round(tokens / wall, 1), "tokens": tokens, "wall_s": round(wall, 3), "steps": len(rows),
            "loss_last": rows[-1]["loss"], "mean_example_tokens": _mean_len(trainer)}


def _mean_len(trainer: Any) -> float:
    return sum(len(e) for e in trainer.examples) / len(trainer.examples)


def bench_trl(a: argparse.Namespace, data: str, out: Path, mean_len: float) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ahalab.models import load_model, resolve_model
    from ahalab.sft.data import load_rows

    rows = load_rows(data)
    dataset = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    model, tokenizer = load_model(resolve_model(a.model))
    per_step = max(1, round(a.batch_size * mean_len / a.row_tokens)) if a.packing else a.batch_size
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
                     learning_rate=a.lr, lr_scheduler_type="constant", max_steps=a.steps + 1, bf16=a.bf16,
                     packing=a.packing, max_length=a.row_tokens, completion_only_loss=True, logging_steps=10_000,
                     save_strategy="no", report_to=[], dataloader_num_workers=0, seed=0, disable_tqdm=True,
                     use_cpu=not torch.cuda.is_available())
    ends: list[float] = []
    tokens: list[int] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[StepTimes()])
    collate = trainer.data_collator

    def counting(features):
        batch = collate(features)
        mask = batch.get("attention_mask")
        tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    trainer.data_collator = counting
    trainer.train()
    counted = sum(tokens[1:len(ends)])  # steps 2..n: the batches collated after the first step
    wall = ends[-1] - ends[0]
    return {"tokens_per_s": round(counted / wall, 1), "tokens": counted, "wall_s": round(wall, 3),
            "steps": len(ends) - 1, "rows_per_step": per_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--data", help="chat JSONL (default: countdown journey traces from the program teacher)")
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="measured steps (after one warm-up step)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--row-tokens", type=int, default=2048, help="packed row length / longest sequence")
    ap.add_argument("--packing", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--ablate-prefix", action="store_true",
                    help="also time ahalab without its shared-prefix forward (packing or padding only)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--out", help="also write the JSON result here")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        tmp = Path(tmp)
        data = a.data or make_data(a.examples, tmp / "data")
        ours = bench_ahalab(a, data, tmp / "ahalab", shared_prefix=True)
        plain = bench_ahalab(a, data, tmp / "ahalab-plain", shared_prefix=False) if a.ablate_prefix else None
        trl = bench_trl(a, data, tmp / "trl", ours["mean_example_tokens"])
    result = {"model": a.model, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "threads": torch.get_num_threads(), "batch_size": a.batch_size, "packing": a.packing, "bf16": a.bf16,
              "ahalab": ours, "trl": trl,
              "ahalab_over_trl": round(ours["tokens_per_s"] / trl["tokens_per_s"], 3)}
    if plain is not None:
        result["ahalab_no_shared_prefix"] = plain
        result["no_shared_prefix_over_trl"] = round(plain["tokens_per_s"] / trl["tokens_per_s"], 3)
    line = json.dumps(result)
    print(line)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
