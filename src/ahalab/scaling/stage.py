"""The `scale` recipe stage: an inference-time scaling run (see ahalab.scaling.commands)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.stages import register_stage

if TYPE_CHECKING:
    from ahalab.scaling.config import ScaleConfig


@register_stage("scale", outputs=("summary", "report"), about="inference-time scaling: budget sweep, beam, "
                "DVTS, budget forcing, adaptive or route",
                config="ahalab.scaling.config:config_class")
def scale_stage(cfg: ScaleConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.scaling.commands import run_scale

    run_dir, _ = run_scale(cfg)
    return {"summary": str(run_dir.file("summary.json")), "report": str(run_dir.file("report.md"))}
