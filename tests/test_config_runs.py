"""Config loading with overrides; run-directory IO (atomic writes, JSONL errors, torn tails)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from ahalab.config import load_config, parse_overrides
from ahalab.errors import UserError
from ahalab.runs import DataError, RunDir, append_jsonl, atomic_write_text, read_jsonl


@dataclass
class Inner:
    lr: float = 1e-5
    levels: list[int] = field(default_factory=lambda: [1])


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_precedence_recipe_flags_overrides(tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: from-recipe\nsteps: 5\ninner:\n  lr: 2.0e-5\n")
    cfg = load_config(Outer, recipe, ["inner.levels=[1,3]", "flag=true"], flags={"steps": 7})
    assert cfg.name == "from-recipe" and cfg.steps == 7 and cfg.flag is True
    assert cfg.inner.lr == 2e-5 and cfg.inner.levels == [1, 3]


def test_unknown_key_and_bad_type_name_the_key(tmp_path) -> None:
    with pytest.raises(UserError, match="inner.*unknown key.*lrr.*valid keys: levels, lr"):
        load_config(Outer, None, ["inner.lrr=1"])
    with pytest.raises(UserError, match="steps: expected a number"):
        load_config(Outer, None, ["steps=many"])
    with pytest.raises(UserError, match="expected key=value"):
        parse_overrides(["steps"])


def test_bad_yaml_names_file_and_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: a\nsteps: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(Outer, bad)


def test_jsonl_errors_name_file_and_line(tmp_path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"a": 1}\n\n{"a": 2\n{"a": 3}\n')
    with pytest.raises(DataError, match=r"d.jsonl:3: malformed JSON"):
        read_jsonl(f)
    f.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: expected a JSON object"):
        read_jsonl(f)


def test_torn_tail_is_tolerated_only_when_asked(tmp_path) -> None:
    f = tmp_path / "m.jsonl"
    append_jsonl(f, [{"step": 1}, {"step": 2}])
    with open(f, "a") as h:
        h.write('{"step": 3, "lo')  # what a kill mid-append leaves
    assert read_jsonl(f, tolerate_torn_tail=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(DataError):
        read_jsonl(f)


def test_atomic_write_leaves_no_temp_files(tmp_path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


def test_run_dir_layout(tmp_path) -> None:
    run = RunDir.create(str(tmp_path / "run"), "eval", {"model": "m", "steps": 3})
    run.log_metrics(1, loss=0.5)
    run.write_json("summary.json", {"accuracy": 0.25})
    assert "model: m" in run.file("config.yaml").read_text()
    assert run.metrics() == [{"step": 1, "loss": 0.5}]
    assert json.loads(run.file("summary.json").read_text()) == {"accuracy": 0.25}
