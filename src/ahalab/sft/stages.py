"""The `sft` recipe stage: fine-tune on chat JSONL, then evaluate (see ahalab.sft.trainer)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ahalab.pipeline import register_stage


@register_stage("sft", outputs=("model", "summary"), about="supervised fine-tuning (completion-only, packed), "
                "then evaluation",
                config="ahalab.sft.trainer:SFTConfig")
def sft_stage(config: dict[str, Any], stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.config import from_dict, to_dict
    from ahalab.runs import RunDir
    from ahalab.sft.trainer import SFTConfig, SFTTrainer

    cfg = from_dict(SFTConfig, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
    run = RunDir.create(cfg.out, "sft", to_dict(cfg))
    summary = SFTTrainer(cfg, run, resume=resume).train()
    return {"model": summary["trained_model"], "summary": str(run.file("summary.json"))}
