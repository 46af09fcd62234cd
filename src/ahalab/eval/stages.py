"""The `eval` recipe stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ahalab.pipeline import register_stage


@register_stage("eval", outputs=("summary", "accuracy"), about="evaluate a model on a task")
def eval_stage(config: dict[str, Any], stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.config import from_dict
    from ahalab.eval.commands import EvalConfig, run_eval

    cfg = from_dict(EvalConfig, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
    summary, run_dir = run_eval(cfg)
    return {"summary": str(run_dir.file("summary.json")), "accuracy": summary["accuracy"]}
