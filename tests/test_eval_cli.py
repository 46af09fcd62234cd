"""`ahalab eval` end to end on a tiny random model (HF and vLLM engines), bad input, and the real model."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ahalab.cli import main

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _eval(tmp_path: Path, name: str, *args: str) -> tuple[dict, Path]:
    out = tmp_path / name
    assert main(["eval", "--out", str(out), *args]) == 0
    return json.loads((out / "summary.json").read_text()), out


@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[needs_vllm, pytest.mark.vllm])])
def test_eval_end_to_end_is_reproducible(tmp_path, tiny_model, engine) -> None:
    args = ["--model", tiny_model, "--engine", engine, "--task", "arithmetic", "--limit", "6", "--samples", "4",
            "--max-tokens", "12", "--seed", "3", "--format", "cot", "dtype=float32"]
    s1, out1 = _eval(tmp_path, "a", *args)
    s2, out2 = _eval(tmp_path, "b", *args)
    for f in ("config.yaml", "samples.jsonl", "summary.json", "report.md", "pass_maj_at_k.png"):
        assert (out1 / f).exists(), f
    rows = [json.loads(line) for line in (out1 / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {"prompt", "completion", "answer", "correct", "tokens"} <= set(rows[0])
    assert s1["problems"] == 6 and s1["samples"] == 4
    assert {"accuracy", "pass@2", "pass@4", "maj@2", "maj@4", "mean_tokens", "wall_s"} <= set(s1)
    assert 0 < s1["mean_tokens"] <= 12
    assert (out1 / "samples.jsonl").read_text() == (out2 / "samples.jsonl").read_text()


def _fails(capsys, *args: str) -> str:
    assert main(["eval", *args]) == 2
    return capsys.readouterr().err


def test_bad_input_gets_clear_errors(tmp_path, tiny_model, capsys) -> None:
    base = ["--model", tiny_model, "--engine", "hf", "--out", str(tmp_path / "r")]
    assert "valid" in _fails(capsys, *base, "--task", "nope").lower()
    assert "limit" in _fails(capsys, *base, "--task", "arithmetic", "--limit", "0").lower()
    assert "not one of vllm, hf" in _fails(capsys, "--model", tiny_model, "engine=tpu", "--task", "arithmetic")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    assert "bad.jsonl:2" in _fails(capsys, *base, "--task", "jsonl", "--data", str(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "1+1?"}\n')
    assert "answer" in _fails(capsys, *base, "--task", "jsonl", "--data", str(missing))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert "empty" in _fails(capsys, *base, "--task", "jsonl", "--data", str(empty)).lower()
    assert "direct" in _fails(capsys, *base, "--task", "arithmetic", "--limit", "2", "--format", "fancy")


@pytest.mark.slow
def test_default_model_on_20_arithmetic_problems(tmp_path) -> None:
    s, out = _eval(tmp_path, "real", "--task", "arithmetic", "--limit", "20", "--format", "cot", "--max-tokens", "256")
    assert s["problems"] == 20 and s["extracted"] > 0.5
    assert "accuracy" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "gsm8k_test.jsonl").exists(), reason="../shared/data not present")
def test_default_model_on_gsm8k_file(tmp_path) -> None:
    s, _ = _eval(tmp_path, "gsm8k", "--task", "gsm8k", "--data", str(SHARED / "gsm8k_test.jsonl"), "--limit", "8",
                 "--max-tokens", "256")
    assert s["problems"] == 8
