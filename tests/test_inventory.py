"""`ahalab runs`: kind, status and headline of synthetic run directories, as a table and as JSON."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from ahalab.cli import main


def _run(d: Path, config: dict | None = None, summary: dict | None = None, metrics: list[dict] | None = None,
         stage: dict | None = None) -> None:
    d.mkdir(parents=True)
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (d / "summary.json").write_text(json.dumps(summary))
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 3, "rew')
    if stage is not None:
        (d / "stage.json").write_text(json.dumps(stage))


def test_runs_lists_kind_status_and_headline(tmp_path, capsys) -> None:
    _run(tmp_path / "eval-a", {"task": "arithmetic", "limit": 10}, {"accuracy": 0.25})
    _run(tmp_path / "mine", {"generations": 4, "rewards": {"accuracy": 1.0}}, None,
         [{"step": 1, "reward_mean": 0.1}, {"step": 2, "reward_mean": 0.5}])  # killed mid-line
    _run(tmp_path / "sft-b", {"train": ["x.jsonl"], "epochs": 1},
         {"loss_end": 0.5, "eval": {"held": {"accuracy": 0.75}}})
    _run(tmp_path / "pipe" / "01-direct", stage={"kind": "eval", "status": "done"}, summary={"accuracy": 0.5})
    _run(tmp_path / "pipe" / "02-zero", stage={"kind": "zero", "status": "failed", "error": "TrainingError: nan"})
    (tmp_path / "notes").mkdir()  # not a run
    assert main(["runs", str(tmp_path), "--json"]) == 0
    rows = {Path(r["path"]).relative_to(tmp_path).as_posix(): r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"eval-a", "mine", "sft-b", "pipe", "pipe/01-direct", "pipe/02-zero"}
    got = {k: (r["kind"], r["status"], r["headline"]) for k, r in rows.items()}
    assert got == {"eval-a": ("eval", "finished", "accuracy 0.25"),
                   "mine": ("zero", "interrupted", "reward_mean 0.5 (step 2)"),
                   "sft-b": ("sft", "finished", "held accuracy 0.75"),
                   "pipe": ("pipeline", "interrupted", "1/2 stages done"),
                   "pipe/01-direct": ("eval", "finished", "accuracy 0.5"),
                   "pipe/02-zero": ("zero", "failed", "error: TrainingError: nan")}
    assert main(["runs", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "kind", "status", "result", "age"] and len(table) == 2 + 6
    assert main(["runs", str(tmp_path / "nowhere")]) == 0
    assert "no run directories" in capsys.readouterr().out
