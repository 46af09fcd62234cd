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
    from ahalab.training.distributed import train_run

    # its engine closed before the next stage starts one; num_processes > 1: the stage's own processes
    summary, path = train_run("zero", cfg, resume, False, lambda run: train_zero(cfg, run, resume=resume))
    return {"model": summary["trained_model"], "summary": str(path / "summary.json"),
            "accuracy": summary["eval_accuracy_end"]}
