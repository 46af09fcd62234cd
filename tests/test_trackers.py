"""report_to trackers (checked at config load, TensorBoard and W&B fed every metrics row) and model cards."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from ahalab.config import load_config
from ahalab.errors import UserError
from ahalab.rl.config import ZeroConfig, ZeroEval
from ahalab.runs import RunDir
from ahalab.training.card import model_card
from ahalab.training.trackers import check_report_to


def _tiny_zero(model: str, out: Path, **kw) -> ZeroConfig:
    base = dict(model=model, engine="hf", steps=3, prompts_per_step=2, generations=2, max_new_tokens=4, train_size=20,
                rewards={"language": 1.0, "repetition": 1.0}, lr=1e-2, threads=1, checkpoint_every=0, sample_every=0,
                eval=ZeroEval(every=0), out=str(out))
    return ZeroConfig(**{**base, **kw})


def test_report_to_is_checked_when_the_config_loads(monkeypatch) -> None:
    assert load_config(ZeroConfig, overrides=["report_to=none"]).report_to == ["none"]
    assert check_report_to(["none"]) == [] and check_report_to([]) == []
    assert load_config(ZeroConfig, overrides=["report_to=tensorboard"]).report_to == ["tensorboard"]
    with pytest.raises(UserError, match="unknown tracker 'neptune'; valid: none, tensorboard, wandb"):
        load_config(ZeroConfig, overrides=["report_to=[tensorboard, neptune]"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match="mlflow needs the mlflow package: pip install mlflow"):
        load_config(ZeroConfig, overrides=["report_to=[mlflow]"])


def test_tensorboard_holds_the_metrics_rows_and_the_model_gets_a_card(tiny_model, tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ahalab.rl.trainer import train_zero

    cfg = _tiny_zero(tiny_model, tmp_path / "run", report_to=["tensorboard"], eval=ZeroEval(every=3, limit=2,
                                                                                              max_tokens=4))
    run = RunDir.create(cfg.out, "zero")
    summary = train_zero(cfg, run)
    rows = run.metrics()
    events = EventAccumulator(str(run.file("tensorboard")))
    events.Reload()
    for key in ("reward_mean", "loss", "eval_accuracy"):
        logged = {r["step"]: r[key] for r in rows if isinstance(r.get(key), (int, float))}
        assert logged, key
        got = {e.step: e.value for e in events.Scalars(key)}
        assert got == pytest.approx(logged), key
    assert 0 in {e.step for e in events.Scalars("eval_accuracy")}  # the untrained model's row (start())

    card = (Path(summary["trained_model"]) / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"library_name": "transformers", "tags": ["ahalab", "grpo", "reasoning"]}  # a local base model
    assert f"`{tiny_model}`" in card and "`language` x 1.0" in card and "| generations | 2 |" in card
    assert "## Held-out results" in card and f"| eval_accuracy | {summary['eval_accuracy_end']:.4g} |" in card
    assert "Trained with ahalab " in card
    checkpoints = sorted((run.path / "checkpoints").glob("step-*"))
    assert checkpoints and all("## Key settings" in (c / "model" / "README.md").read_text() for c in checkpoints)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_offline_run_gets_the_rows(tiny_model, tmp_path, monkeypatch) -> None:
    from ahalab.rl.trainer import train_zero

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _tiny_zero(tiny_model, tmp_path / "run", steps=2, report_to=["wandb"])
    run = RunDir.create(cfg.out, "zero")
    train_zero(cfg, run)
    [events] = list(run.file("wandb").glob("offline-run-*/run-*.wandb"))  # the rows, for `wandb sync`
    data = events.read_bytes()
    assert b"reward_mean" in data and b"grad_norm" in data


def test_model_card_front_matter_and_body_for_sft() -> None:
    config = {"model": "HuggingFaceTB/SmolLM2-135M-Instruct", "train": ["runs/data/cd.jsonl"], "lr": 5e-5,
              "epochs": 2.0, "batch_size": 16, "lora_r": 0, "seed": 0}
    card = model_card("sft", config, {"held accuracy (10 problems)": 0.3}, command=["ahalab", "sft", "--lr", "5e-5"])
    front = yaml.safe_load(card.split("---")[1])
    assert front == {"library_name": "transformers", "tags": ["ahalab", "sft", "reasoning"],
                     "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert "supervised fine-tuning" in card and "`runs/data/cd.jsonl`" in card and "| lr | 5e-05 |" in card
    assert "| held accuracy (10 problems) | 0.3 |" in card and "ahalab sft --lr 5e-5" in card
