"""The `sft` recipe stage: fine-tune on chat JSONL, then evaluate (see ahalab.sft.trainer)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.stages import register_stage

if TYPE_CHECKING:
    from ahalab.sft.config import SFTConfig


@register_stage("sft", outputs=("model", "summary"), about="supervised fine-tuning (completion-only, packed), "
                "then evaluation",
                config="ahalab.sft.config:SFTConfig")
def sft_stage(cfg: SFTConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.sft.trainer import SFTTrainer
    from ahalab.training.distributed import train_run

    summary, path = train_run("sft", cfg, resume, False, lambda run: SFTTrainer(cfg, run, resume=resume).train())
    return {"model": summary["trained_model"], "summary": str(path / "summary.json")}
