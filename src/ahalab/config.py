"""Configs: dataclasses filled from a YAML recipe plus dotted ``key=value`` CLI overrides.

    cfg = load_config(MyConfig, "recipes/zero_quick.yaml", ["train.lr=2e-5", "steps=30"])

Unknown keys, wrongly typed values and values outside a ``Literal`` field's choices raise UserError naming
the file and the key (with the valid values), when the config is built: before any model loads.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ahalab.errors import UserError

T = TypeVar("T")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["a.b=3", "c=[1,2]"] -> {"a": {"b": 3}, "c": [1, 2]} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override '{item}': expected key=value (e.g. lr=1e-5 or eval.limit=100)")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw) if raw else ""
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of keys to values")
    return data


def choices(tp: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) type, else None."""
    if typing.get_origin(tp) is typing.Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        arms = [choices(a) for a in typing.get_args(tp) if a is not type(None)]
        if arms and all(a is not None for a in arms):
            return tuple(v for a in arms for v in a)
    return None


def _check_choice(tp: Any, value: Any, where: str) -> None:
    allowed = choices(tp)
    if allowed is not None and value is not None and value not in allowed:
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}")


def check_choices(cfg: Any, where: str = "config") -> None:
    """UserError for any ``Literal`` field of dataclass ``cfg`` holding a value outside its choices."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        _check_choice(hints[f.name], getattr(cfg, f.name), f"{where}.{f.name}")


class Config:
    """Base of ahalab's config dataclasses: choices are checked on construction; ``validate`` checks the rest.

    ``NEUTRAL`` names the settings that cannot change a run's results (threads, output folder, how often
    checkpoints are written): a resume or a recipe re-run may change them freely.
    """

    NEUTRAL: typing.ClassVar[frozenset[str]] = frozenset({"out"})

    def __post_init__(self) -> None:
        check_choices(self, type(self).__name__)

    def validate(self) -> None:
        """Cross-field checks (override); run before any model loads."""


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    _check_choice(tp, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except UserError:
                continue
        raise UserError(f"{where}: {value!r} is not one of {', '.join(_describe(a) for a in args)}")
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        inner = args[0] if args else Any
        return [_coerce(inner, v, where) for v in items]
    if origin is dict or tp is Any or origin is typing.Literal:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return tp(value)
            except (TypeError, ValueError):
                raise UserError(f"{where}: expected a number, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        return str(value)
    return value


def _describe(tp: Any) -> str:
    """How a type's values are written in a recipe (for error messages)."""
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true, false"
    allowed = choices(tp)
    return ", ".join(map(str, allowed)) if allowed else getattr(tp, "__name__", str(tp))


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys list the valid ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field left out
        raise UserError(f"{where}: {e}") from None


def load_raw(recipe: str | Path | None = None, overrides: list[str] | None = None,
             flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recipe file <- explicitly given CLI ``flags`` <- dotted ``key=value`` overrides, as plain data."""
    return merge(merge(read_yaml(recipe) if recipe else {}, flags or {}), parse_overrides(overrides or []))


def load_config(cls: type[T], recipe: str | Path | None = None, overrides: list[str] | None = None,
                flags: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- recipe file <- explicitly given CLI ``flags`` <- dotted ``key=value`` overrides,
    validated."""
    cfg = from_dict(cls, load_raw(recipe, overrides, flags), str(recipe) if recipe else "config")
    if isinstance(cfg, Config):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml in run directories)."""
    return dataclasses.asdict(cfg)


def changed_settings(old: dict[str, Any], new: dict[str, Any], neutral: frozenset[str]) -> list[str]:
    """Top-level keys whose values differ between two config dicts, ignoring the ``neutral`` ones."""
    return sorted(k for k in set(old) | set(new) if k not in neutral and old.get(k) != new.get(k))
