"""The `eval` recipe stage."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.stages import register_stage

if TYPE_CHECKING:
    from ahalab.eval.evaluate import EvalConfig


@register_stage("eval", outputs=("summary", "accuracy"), about="evaluate a model on a task",
                config="ahalab.eval.evaluate:EvalConfig")
def eval_stage(cfg: EvalConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.eval.evaluate import run_eval

    summary, run_dir = run_eval(cfg)
    return {"summary": str(run_dir.file("summary.json")), "accuracy": summary["accuracy"]}
