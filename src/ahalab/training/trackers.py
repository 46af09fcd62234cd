"""Experiment trackers a training run reports to (``report_to``, the names TRL users know): every numeric metric
of each metrics.jsonl row, at its step, also goes to TensorBoard (event files in the run directory), Weights &
Biases, MLflow or Trackio. metrics.jsonl stays the record; a tracker is a view of it."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any, Protocol

from ahalab.errors import UserError

# tracker -> (module it needs, pip package that provides it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow"), "trackio": ("trackio", "trackio")}


def check_report_to(names: list[str]) -> list[str]:
    """The trackers ``names`` asks for ("none" alone: none); UserError for an unknown one or a missing library."""
    if names == ["none"]:
        return []
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"report_to: unknown tracker {name!r}; valid: none, {', '.join(TRACKERS)}")
        module, package = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"report_to: {name} needs the {package} package: pip install {package}")
    return list(dict.fromkeys(names))


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans and the step left out)."""
    return {k: float(v) for k, v in metrics.items() if k != "step" and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoard:
    def __init__(self, run_path: Path, name: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_path / "tensorboard"))
        self.writer.add_text("config", f"```\n{config}\n```")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """Mode, project and entity from wandb's own variables (WANDB_MODE=offline, WANDB_PROJECT, ...)."""

    def __init__(self, run_path: Path, name: str, config: dict[str, Any]) -> None:
        import wandb

        self.run = wandb.init(name=name, dir=str(run_path), config=config, reinit="create_new")

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MLflow:
    """Tracking URI and experiment from MLflow's variables (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME)."""

    def __init__(self, run_path: Path, name: str, config: dict[str, Any]) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=name)
        mlflow.log_params({k: str(v)[:500] for k, v in config.items()})

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class Trackio:
    def __init__(self, run_path: Path, name: str, config: dict[str, Any]) -> None:
        import trackio

        self.trackio = trackio
        trackio.init(project="ahalab", name=name, config=config)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.trackio.log(metrics, step=step)

    def close(self) -> None:
        self.trackio.finish()


OPENERS: dict[str, type] = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow, "trackio": Trackio}


class Trackers:
    """The run's trackers as one: ``log`` a metrics row to each, ``close`` them all."""

    def __init__(self, names: list[str], run_path: Path, config: dict[str, Any]) -> None:
        self.trackers: list[Tracker] = [OPENERS[n](run_path, run_path.name, config) for n in check_report_to(names)]

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        values = scalars(metrics)
        for tracker in self.trackers:
            tracker.log(step, values)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
