"""`ahalab distill`: generate -> verify/filter -> decontaminate -> SFT -> evaluate, in one run.

It composes two method rooms (``ahalab.data`` builds the dataset, ``ahalab.sft`` trains on it), so it
sits on the top floor beside the recipe runner.

With the engine teacher and no ``data.teacher_model`` the student is its own teacher: rejection-
sampling fine-tuning (STaR): best-of-N verified samples of the model become its SFT data. With
``rounds`` > 1 each round samples from the previous round's model and fine-tunes the base model again
on the new data (as STaR restarts from the base model every iteration).

    <out>/base-<eval>/            the base model's evaluation (eval_base)
    <out>/[round-K/]data/         the dataset (see ahalab.data.build)
    <out>/[round-K/]sft/          the SFT run, its model/ and eval-<eval>/
    <out>/summary.json, report.md accuracy of every model on every eval set
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from ahalab.config import Config, to_dict
from ahalab.data.build import DataConfig, build_dataset
from ahalab.errors import UserError
from ahalab.plots import markdown_table
from ahalab.runs import RunDir
from ahalab.sft.config import SFTConfig

DatasetFile = Literal["train", "journey", "shortcut", "shortcut_tokens"]
DATASET_FILES = ("train", "journey", "shortcut", "shortcut_tokens")


@dataclass
class DistillConfig(Config):
    model: str = "smollm2-135m"  # the student (also data.model and sft.model)
    evals: list[dict[str, Any]] = field(default_factory=list)  # ahalab eval settings each, plus "name"
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    train_on: DatasetFile = "train"  # which dataset file the student learns from
    rounds: int = 1  # STaR iterations (engine teacher only)
    eval_base: bool = True
    out: str | None = None

    def validate(self) -> None:
        self.data.validate()
        if self.rounds < 1 or (self.rounds > 1 and self.data.teacher != "engine"):
            raise UserError("rounds > 1 (STaR iterations) needs the engine teacher (it samples from the latest "
                            "model)")


def run_distill(cfg: DistillConfig, resume: bool = False) -> tuple[dict[str, Any], RunDir]:
    """Run the whole pipeline into ``cfg.out``; returns (summary, run directory)."""
    from ahalab.models import resolve_model
    from ahalab.sft.trainer import SFTTrainer, evaluate_model

    cfg.validate()
    run = RunDir.create(cfg.out, "distill", to_dict(cfg))
    results: dict[str, dict[str, Any]] = {}
    if cfg.eval_base and cfg.evals:
        results["base"] = evaluate_model(resolve_model(cfg.model), cfg.evals, run, prefix="base")
    teacher_model = cfg.data.teacher_model
    rounds: list[dict[str, Any]] = []
    for r in range(1, cfg.rounds + 1):
        where = run.path / f"round-{r}" if cfg.rounds > 1 else run.path
        data_cfg = dataclasses.replace(cfg.data, model=cfg.model, teacher_model=teacher_model, out=str(where / "data"))
        built = build_dataset(data_cfg)
        if cfg.train_on not in built:
            have = ", ".join(k for k in DATASET_FILES if k in built)
            raise UserError(f"train_on '{cfg.train_on}': this dataset has {have} (set data.journey for the others)")
        sft_cfg = dataclasses.replace(cfg.sft, model=cfg.model, train=[built[cfg.train_on]], evals=cfg.evals,
                                      out=str(where / "sft"))
        summary = SFTTrainer(sft_cfg, RunDir.create(sft_cfg.out, "sft"), resume=resume).train()
        teacher_model = summary["trained_model"]
        name = f"round {r}" if cfg.rounds > 1 else "distilled"
        results[name] = summary["eval"]
        rounds.append({"round": r, "examples": summary["examples"], "data": built["summary"],
                       "trained_model": summary["trained_model"], "loss_end": summary["loss_end"]})
    summary = {"model": cfg.model, "train_on": cfg.train_on, "accuracy": results, "rounds": rounds}
    run.write_summary(summary)
    table = [{"model": m, **{k: v["accuracy"] for k, v in evals.items()}} for m, evals in results.items()]
    run.write_text("report.md", f"# Distillation: {cfg.model} on {cfg.data.task}\n\nTeacher: {cfg.data.teacher}; "
                   f"trained on {cfg.train_on}.\n\n" + markdown_table(table))
    return summary, run


DISTILL_EPILOG = """examples:
  ahalab distill --config recipes/distill_countdown.yaml --out runs/distill-cd
  ahalab distill --task arithmetic --teacher engine --samples 8 --out runs/star  # STaR self-distillation
  ahalab distill --config recipes/distill_countdown.yaml train_on=journey sft.epochs=2

Keys: ahalab/distill.py: DistillConfig (model, evals, train_on, rounds, eval_base, data.*, sft.*).
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ahalab.data.commands import add_data_flags

    d = sub.add_parser("distill", help="distill: teacher data -> verify/filter -> decontaminate -> SFT -> evaluate",
                       description="The whole distillation pipeline in one run; with the engine teacher and no "
                       "teacher model, STaR-style self-distillation (rejection-sampling fine-tuning).",
                       epilog=DISTILL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--config", help="YAML with DistillConfig keys (e.g. recipes/distill_countdown.yaml)")
    d.add_argument("--model", help="the student model (default smollm2-135m)")
    add_data_flags(d)
    d.add_argument("--train-on", dest="train_on", choices=["train", "journey", "shortcut", "shortcut_tokens"])
    d.add_argument("--rounds", type=int, help="STaR iterations (engine teacher)")
    d.add_argument("--out", help="run directory (default runs/distill-<time>)")
    d.add_argument("--resume", action="store_true", help="continue the run in --out (teacher cache, SFT checkpoint)")
    d.add_argument("overrides", nargs="*", metavar="key=value")
    d.set_defaults(func=run_distill_command)


def run_distill_command(args: argparse.Namespace) -> int:
    from ahalab.args import recipe_path
    from ahalab.config import load_config
    from ahalab.data.commands import nested_flags

    nest = ("task", "teacher", "teacher_model", "base_url", "samples", "journey", "limit", "workers")
    cfg = load_config(DistillConfig, recipe_path(args), args.overrides, nested_flags(args, nest))
    summary, run = run_distill(cfg, resume=args.resume)
    for model, evals in summary["accuracy"].items():
        print(f"{model}: " + ", ".join(f"{k} {v['accuracy']:.3f}" for k, v in evals.items()))
    print(f"run directory: {run.path}")
    return 0
