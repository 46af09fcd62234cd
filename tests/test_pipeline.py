"""Recipe runner: wiring checks, skipping unchanged stages, resuming an interrupted one, redoing changed ones."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ahalab.errors import UserError
from ahalab.pipeline import run_recipe
from ahalab.stages import STAGE_KINDS, register_stage

CALLS: list[tuple[str, bool]] = []


@register_stage("test_make", outputs=("value", "path"))
def _make(config: dict, stage_dir: Path, resume: bool) -> dict:
    CALLS.append((stage_dir.name, resume))
    if config.get("crash") and not (stage_dir / "partial").exists():
        (stage_dir / "partial").write_text("checkpoint")
        raise KeyboardInterrupt  # killed mid-stage
    (stage_dir / "out.txt").write_text(str(config["x"]))
    return {"value": config["x"] * 2, "path": str(stage_dir / "out.txt")}


@register_stage("test_use", outputs=("total",))
def _use(config: dict, stage_dir: Path, resume: bool) -> dict:
    CALLS.append((stage_dir.name, resume))
    return {"total": config["a"] + config["b"]}


RECIPE = """
defaults: {x: 1}
stages:
  - name: first
    kind: test_make
  - name: second
    kind: test_make
    config: {x: 5}
  - name: sum
    kind: test_use
    config: {a: "${first.value}", b: "${second.value}"}
"""


def _recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    f = tmp_path / "r.yaml"
    f.write_text(text)
    return f


def test_skip_unchanged_and_redo_downstream_of_a_change(tmp_path) -> None:
    CALLS.clear()
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    values = run_recipe(recipe, out, log=lambda s: None)
    assert values["sum"]["total"] == 12 and len(CALLS) == 3
    CALLS.clear()
    assert run_recipe(recipe, out, log=lambda s: None)["sum"]["total"] == 12
    assert CALLS == []  # all skipped
    values = run_recipe(recipe, out, ["second.x=6"], log=lambda s: None)
    assert values["sum"]["total"] == 14
    assert [c[0] for c in CALLS] == ["02-second", "03-sum"]  # first is unchanged
    assert json.loads((out / "03-sum" / "stage.json").read_text())["status"] == "done"


def test_a_failing_stage_records_its_error(tmp_path) -> None:
    recipe = _recipe(tmp_path, "stages:\n  - name: sum\n    kind: test_use\n    config: {a: 1}\n")
    with pytest.raises(KeyError):
        run_recipe(recipe, tmp_path / "run", log=lambda s: None)
    meta = json.loads((tmp_path / "run" / "01-sum" / "stage.json").read_text())
    assert meta["status"] == "failed" and meta["error"] == "KeyError: 'b'"


def test_interrupted_stage_resumes_and_finishes_the_same(tmp_path) -> None:
    CALLS.clear()
    recipe = _recipe(tmp_path, RECIPE.replace("config: {x: 5}", "config: {x: 5, crash: true}"))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, out, log=lambda s: None)
    lines: list[str] = []
    run_recipe(recipe, out, dry_run=True, log=lines.append)
    assert "first (test_make)" in lines[0] and lines[0].endswith("done")
    assert lines[1].endswith("resume") and "reads first.value, second.value" in lines[2]
    CALLS.clear()
    values = run_recipe(recipe, out, log=lambda s: None)
    assert CALLS == [("02-second", True), ("03-sum", False)]
    assert values["sum"]["total"] == 12


def test_until_stops_after_the_named_stage_and_the_full_run_skips_it(tmp_path) -> None:
    CALLS.clear()
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    lines: list[str] = []
    values = run_recipe(recipe, out, until="second", log=lines.append)
    assert set(values) == {"first", "second"} and [c[0] for c in CALLS] == ["01-first", "02-second"]
    assert ": run (after --until second: not run now); reads" in lines[2] and not (out / "03-sum").exists()
    CALLS.clear()
    assert run_recipe(recipe, out, log=lambda s: None)["sum"]["total"] == 12
    assert CALLS == [("03-sum", False)]
    with pytest.raises(UserError, match="--until names no stage 'third'; its stages: first, second, sum"):
        run_recipe(recipe, out, until="third", log=lambda s: None)


@pytest.mark.parametrize("text,message", [
    (RECIPE.replace("${first.value}", "${later.value}"), "no earlier stage is named 'later'"),
    (RECIPE.replace("${first.value}", "${sum.total}"), "it runs later"),
    (RECIPE.replace("${first.value}", "${first.model}"), "stage 'first' has no output 'model'; its outputs: value, path"),
    (RECIPE.replace("kind: test_use", "kind: nope"), "unknown kind 'nope'; valid kinds:"),
    (RECIPE.replace("name: second", "name: first"), "duplicate stage name 'first'"),
    ("stages: []", "non-empty 'stages'"),
])
def test_dry_run_catches_wiring_errors(tmp_path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        run_recipe(_recipe(tmp_path, text), tmp_path / "run", dry_run=True, log=lambda s: None)


def test_unknown_override_stage(tmp_path) -> None:
    with pytest.raises(UserError, match="unknown stage"):
        run_recipe(_recipe(tmp_path), tmp_path / "run", ["nostage.x=1"], dry_run=True, log=lambda s: None)


def test_eval_stage_is_registered() -> None:
    from ahalab.stages import load_stage_kinds

    load_stage_kinds()
    assert STAGE_KINDS["eval"].outputs == ("summary", "accuracy")


# --- never lose or reuse stale work -------------------------------------------------------------------


FILE_RECIPE = """
stages:
  - name: first
    kind: test_make
    config: {x: 1, data: "%s"}
"""


def test_a_changed_input_file_makes_a_done_stage_stale(tmp_path) -> None:
    CALLS.clear()
    data = tmp_path / "in.jsonl"
    data.write_text('{"q": 1}\n')
    recipe, out = _recipe(tmp_path, FILE_RECIPE % data), tmp_path / "run"
    run_recipe(recipe, out, log=lambda s: None)
    run_recipe(recipe, out, log=lambda s: None)
    assert len(CALLS) == 1  # unchanged: skipped
    data.write_text('{"q": 2}\n')  # same name, new content
    lines: list[str] = []
    run_recipe(recipe, out, dry_run=True, log=lines.append)
    assert lines[0].endswith("redo")


def test_a_changed_code_version_makes_a_done_stage_stale(tmp_path, monkeypatch) -> None:
    from ahalab import pipeline

    recipe, out = _recipe(tmp_path), tmp_path / "run"
    run_recipe(recipe, out, log=lambda s: None)
    monkeypatch.setattr(pipeline, "code_version", lambda: "another-version")
    lines: list[str] = []
    run_recipe(recipe, out, dry_run=True, log=lines.append)
    assert lines and all(": redo" in line for line in lines)
    kept: list[str] = []  # --allow-code-change: unchanged config and inputs keep their finished work
    run_recipe(recipe, out, dry_run=True, log=kept.append, allow_code_change=True)
    assert len(kept) == len(lines) and all(": done" in line for line in kept)
    changed: list[str] = []  # ... but not past a change of config, nor downstream of one
    run_recipe(recipe, out, ["first.x=99"], dry_run=True, log=changed.append, allow_code_change=True)
    assert [line.split(": ")[1].split(";")[0] for line in changed] == ["redo", "done", "redo"]


def test_neutral_settings_do_not_redo_and_a_redo_moves_finished_work_aside(tmp_path, tiny_model) -> None:
    """A zero stage: changing threads keeps it done; changing lr moves the old stage folder aside (kept)."""
    import ahalab.rl.stage  # noqa: F401  (registers zero)
    from ahalab.pipeline import load_recipe, plan
    from ahalab.stages import load_stage_kinds

    load_stage_kinds()
    text = f"stages:\n  - name: z\n    kind: zero\n    config: {{model: {tiny_model}, steps: 1, threads: 1}}\n"
    recipe, out = _recipe(tmp_path, text), tmp_path / "run"
    (out / "01-z").mkdir(parents=True)
    (out / "01-z" / "traces.jsonl").write_text("paid for\n")
    _, stages = load_recipe(recipe)
    first = plan(stages, out)[0]
    (out / "01-z" / "stage.json").write_text(json.dumps({"hash": first.hash, "status": "done", "outputs": {}}))
    _, stages = load_recipe(recipe, ["z.threads=2", "z.checkpoint_every=3"])
    assert plan(stages, out)[0].state == "done"
    _, stages = load_recipe(recipe, ["z.lr=0.5"])
    assert plan(stages, out)[0].state == "redo"
    from ahalab.pipeline import move_aside

    note = move_aside(out / "01-z", force=False)
    aside = [d for d in out.iterdir() if d.name.startswith("01-z.old-")]
    assert "moved aside" in note and len(aside) == 1 and (aside[0] / "traces.jsonl").read_text() == "paid for\n"
    assert not (out / "01-z").exists()


@pytest.mark.parametrize("name", ["y/../../victim", "../x", "a b", "", ".hidden", "x.y"])
def test_stage_names_cannot_leave_the_run_folder(tmp_path, name) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    text = RECIPE.replace("name: first", f"name: {json.dumps(name)}").replace("${first.value}", "1")
    with pytest.raises(UserError, match="letters, digits and underscores"):
        run_recipe(_recipe(tmp_path, text), tmp_path / "run", log=lambda s: None)
    assert victim.exists() and not (tmp_path / "run").exists()
