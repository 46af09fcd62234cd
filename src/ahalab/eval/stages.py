"""The `eval` recipe stage."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.pipeline import register_stage

if TYPE_CHECKING:
    from ahalab.eval.commands import EvalConfig
    from ahalab.eval.compare import CompareConfig


@register_stage("eval", outputs=("summary", "accuracy"), about="evaluate a model on a task",
                config="ahalab.eval.commands:EvalConfig")
def eval_stage(cfg: EvalConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.eval.commands import run_eval

    summary, run_dir = run_eval(cfg)
    return {"summary": str(run_dir.file("summary.json")), "accuracy": summary["accuracy"]}


@register_stage("report", outputs=("summary", "report"), about="compare models (runs: [LABEL=${stage.model}, ...]) "
                "on one held-out set: greedy, maj@k, tokens, training time",
                config="ahalab.eval.compare:CompareConfig")
def report_stage(cfg: CompareConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.eval.compare import compare

    _, out = compare(cfg)  # evaluations finished before an interruption are reused
    return {"summary": str(out / "summary.json"), "report": str(out / "report.md")}
