"""The `eval` recipe stage."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ahalab.pipeline import register_stage


@register_stage("eval", outputs=("summary", "accuracy"), about="evaluate a model on a task",
                config="ahalab.eval.commands:EvalConfig")
def eval_stage(config: dict[str, Any], stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.config import from_dict
    from ahalab.eval.commands import EvalConfig, run_eval

    cfg = from_dict(EvalConfig, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
    summary, run_dir = run_eval(cfg)
    return {"summary": str(run_dir.file("summary.json")), "accuracy": summary["accuracy"]}


@register_stage("report", outputs=("summary", "report"), about="compare models (runs: [LABEL=${stage.model}, ...]) "
                "on one held-out set: greedy, maj@k, tokens, training time",
                config="ahalab.eval.compare:CompareConfig")
def report_stage(config: dict[str, Any], stage_dir: Path, resume: bool) -> dict[str, Any]:
    from ahalab.config import from_dict
    from ahalab.eval.compare import CompareConfig, compare

    cfg = from_dict(CompareConfig, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
    _, out = compare(cfg)  # finished evaluations under stage_dir/evals are reused on resume
    return {"summary": str(out / "summary.json"), "report": str(out / "report.md")}
