"""The `zero` recipe stage: GRPO with rule rewards on a model (see ahalab.rl.trainer)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.stages import register_stage

if TYPE_CHECKING:
    from ahalab.rl.config import ZeroConfig


@register_stage("zero", outputs=("model", "summary", "accuracy"), about="GRPO with rule rewards (R1-Zero, or RL "
                "after SFT); resumes from its checkpoints",
                config="ahalab.rl.config:ZeroConfig")
def zero_stage(cfg: ZeroConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.rl.trainer import train_zero
    from ahalab.runs import RunDir

    run = RunDir.create(cfg.out, "zero")
    summary = train_zero(cfg, run, resume=resume)  # its engine closed before the next stage starts one
    return {"model": summary["trained_model"], "summary": str(run.file("summary.json")),
            "accuracy": summary["eval_accuracy_end"]}
