"""`ahalab runs [DIR]`: the run directories under DIR with their kind, status, headline metric and age."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from ahalab.runs import DataError, read_jsonl

# config.yaml keys that tell a run's kind, most telling first (a recipe stage's stage.json names it outright)
KIND_KEYS = (("runs", "report"), ("generations", "zero"), ("epochs", "sft"), ("strategy", "scale"),
             ("teacher", "data"), ("task", "eval"))
# summary.json keys for the headline metric, first present wins (an sft run's eval sets after the first two)
HEADLINE = ("eval_accuracy_end", "accuracy", "loss_end", "train_reward_end", "kept")


def _read(path: Path, loader: Any) -> Any:
    """A run file's content, or None when it is missing or unreadable (a run may be mid-write)."""
    try:
        return loader(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def is_run(d: Path) -> bool:
    return any((d / name).is_file() for name in ("config.yaml", "summary.json", "stage.json", "metrics.jsonl"))


def is_pipeline(d: Path) -> bool:
    return any((s / "stage.json").is_file() for s in d.iterdir() if s.is_dir())


def kind_of(d: Path, stage: dict | None, config: dict | None, summary: dict | None) -> str:
    if stage and stage.get("kind"):
        return str(stage["kind"])
    if is_pipeline(d):
        return "pipeline"
    for data in (config, (summary or {}).get("settings")):
        if isinstance(data, dict):
            for key, kind in KIND_KEYS:
                if key in data:
                    return kind
    return d.name.split("-")[0] or "?"


def headline(d: Path, summary: dict | None) -> str:
    """The run's key result: held-out accuracy, loss or reward from summary.json, else the last metrics row."""
    if isinstance(summary, dict):
        evals = [(f"{name} accuracy", r.get("accuracy")) for name, r in (summary.get("eval") or {}).items()
                 if isinstance(r, dict)]  # sft: one entry per eval set
        greedy = [(f"greedy {r.get('run')}", r.get("greedy")) for r in summary.get("rows") or []
                  if isinstance(r, dict) and isinstance(r.get("greedy"), (int, float))]  # report: the best run
        candidates = [*((k, summary.get(k)) for k in HEADLINE[:2]), *evals,
                      *((k, summary.get(k)) for k in HEADLINE[2:]),
                      *sorted(greedy, key=lambda kv: -kv[1])[:1]]
        for key, value in candidates:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return f"{key} {value:.4g}"
    try:
        rows = read_jsonl(d / "metrics.jsonl", tolerate_torn_tail=True)
    except DataError:
        rows = []
    last = rows[-1] if rows else {}
    for key in ("reward_mean", "loss"):
        if isinstance(last.get(key), (int, float)):
            return f"{key} {last[key]:.4g} (step {last.get('step')})"
    return ""


def describe(d: Path) -> dict[str, Any]:
    """One row of the listing for run directory ``d``."""
    stage = _read(d / "stage.json", json.loads)
    config = _read(d / "config.yaml", yaml.safe_load)
    summary = _read(d / "summary.json", json.loads)
    kind = kind_of(d, stage, config, summary)
    if kind == "pipeline":
        metas = [_read(s / "stage.json", json.loads) or {} for s in stages(d)]
        done = sum(m.get("status") == "done" for m in metas)
        status = "finished" if done == len(metas) else "interrupted"
        metric = f"{done}/{len(metas)} stages done"
    else:
        failed = (stage or {}).get("status") == "failed"  # a recipe stage records its error
        status = "failed" if failed else "finished" if summary is not None or (stage or {}).get("status") == "done" \
            else "interrupted"
        metric = f"error: {stage['error']}" if failed and stage.get("error") else headline(d, summary)
    mtime = max((f.stat().st_mtime for f in d.iterdir()), default=d.stat().st_mtime)
    return {"path": str(d), "kind": kind, "status": status, "headline": metric, "modified": mtime}


def stages(d: Path) -> list[Path]:
    """A pipeline's current stage directories (not those moved aside)."""
    return [s for s in sorted(d.iterdir()) if (s / "stage.json").is_file() and ".old-" not in s.name]


def find_runs(root: Path) -> list[Path]:
    """Run directories under ``root`` (itself included): each one, and a pipeline's stages one level below it."""
    if not root.is_dir():
        return []
    found: list[Path] = []
    for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if is_run(d) or is_pipeline(d):
            found.append(d)
        if d != root and is_pipeline(d):
            found += stages(d)
    return found


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list run directories: kind, status, headline metric, age",
                       description="List the run directories under DIR (and the stages of pipeline runs) with "
                       "their kind, status (finished: summary written; interrupted: not), key result and age.")
    p.add_argument("dir", nargs="?", default="runs", help="where to look (default ./runs)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.plots import text_table

    rows = [describe(d) for d in find_runs(Path(args.dir))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no run directories under {args.dir}")
        return 0
    now = time.time()
    print(text_table([{"run": r["path"], "kind": r["kind"], "status": r["status"], "result": r["headline"],
                           "age": age(now - r["modified"])} for r in rows]), end="")
    return 0
