"""Recipe stage kinds: the registry method rooms add their stage to and the recipe runner reads.

A method room registers its stage in its ``stage`` module (``ahalab.rl.stage``, ...):

    @register_stage("zero", outputs=("model", "summary"), about="...", config="ahalab.rl.config:ZeroConfig")
    def zero_stage(cfg: ZeroConfig, stage_dir: Path, resume: bool) -> dict[str, Any]: ...

``config`` names the stage's config dataclass ("module:Class"; imported only when needed, so ``--help``
stays fast), or a function that picks the class from the raw config (``ahalab scale``: one class per mode).
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# runner(config, stage_dir, resume) -> outputs (name -> value, e.g. a path or a number); the config is the
# stage kind's config dataclass (its ``out`` set to the stage directory), or the plain dict for kinds without one
StageRunner = Callable[[Any, Path, bool], dict[str, Any]]
STAGE_MODULES = ("ahalab.eval.stage", "ahalab.scaling.stage", "ahalab.rl.stage", "ahalab.data.stage",
                 "ahalab.sft.stage", "ahalab.report", "ahalab.distill")


@dataclass(frozen=True)
class StageKind:
    name: str
    outputs: tuple[str, ...]
    run: StageRunner
    about: str = ""
    config: str = ""  # "module:Class" or "module:function(raw config) -> Class"

    def config_class(self, raw: dict[str, Any] | None = None) -> type | None:
        if not self.config:
            return None
        module, attr = self.config.split(":")
        found = getattr(importlib.import_module(module), attr)
        return found if isinstance(found, type) else found(raw or {})

    def config_keys(self, raw: dict[str, Any] | None = None) -> set[str] | None:
        cls = self.config_class(raw)
        return None if cls is None else {f.name for f in dataclasses.fields(cls) if f.init} - {"out"}

    def build_config(self, config: dict[str, Any], stage_dir: Path) -> Any:
        """The runner's config: the dataclass with the stage directory as its output directory, validated."""
        from ahalab.config import Config, from_dict

        cls = self.config_class(config)
        if cls is None:
            return config
        cfg = from_dict(cls, {**config, "out": str(stage_dir)}, f"stage {stage_dir.name}")
        if isinstance(cfg, Config):
            cfg.validate()
        return cfg


STAGE_KINDS: dict[str, StageKind] = {}


def register_stage(name: str, outputs: tuple[str, ...], about: str = "",
                   config: str = "") -> Callable[[StageRunner], StageRunner]:
    """Decorator: make ``fn`` runnable as a recipe stage of kind ``name`` producing ``outputs``."""
    def deco(fn: StageRunner) -> StageRunner:
        STAGE_KINDS[name] = StageKind(name, outputs, fn, about, config)
        return fn
    return deco


def load_stage_kinds() -> dict[str, StageKind]:
    """Import the modules that register stage kinds; returns the registry."""
    for mod in STAGE_MODULES:
        importlib.import_module(mod)
    return STAGE_KINDS
