"""The `distill_data` recipe stage: build a distillation dataset (see ahalab.data.build)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.stages import register_stage

if TYPE_CHECKING:
    from ahalab.data.build import DataConfig

FILES = ("train", "journey", "shortcut", "shortcut_tokens")


@register_stage("distill_data", outputs=("dir", *FILES), about="teacher traces -> filters -> decontamination -> "
                "chat JSONL (absent files are null)",
                config="ahalab.data.build:DataConfig")
def distill_data_stage(cfg: DataConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.data.build import build_dataset

    built = build_dataset(cfg)  # the teacher cache in stage_dir makes a re-run resume
    return {"dir": built["dir"], **{name: built.get(name) for name in FILES}}
