"""The `scale` recipe stage: an inference-time scaling run (see ahalab.scaling.commands)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ahalab.pipeline import register_stage


@register_stage("scale", outputs=("summary", "report"), about="inference-time scaling: budget sweep, beam, "
                "DVTS, budget forcing, adaptive or route",
                config="ahalab.scaling.commands:ScaleConfig")
def scale_stage(config: dict[str, Any], stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.config import from_dict
    from ahalab.scaling.commands import ScaleConfig, run_scale

    cfg = from_dict(ScaleConfig, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
    run_dir, _ = run_scale(cfg)
    return {"summary": str(run_dir.file("summary.json")), "report": str(run_dir.file("report.md"))}
