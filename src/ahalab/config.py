"""Configs: dataclasses filled from a YAML recipe plus dotted ``key=value`` CLI overrides.

    cfg = load_config(MyConfig, "recipes/zero_quick.yaml", ["train.lr=2e-5", "steps=30"])

Unknown keys and wrongly typed values raise UserError naming the file and the key.
"""
from __future__ import annotations

import dataclasses
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


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping")
        return from_dict(tp, value, where)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except UserError:
                continue
        raise UserError(f"{where}: {value!r} is not a valid {tp}")
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


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys list the valid ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_config(cls: type[T], recipe: str | Path | None = None, overrides: list[str] | None = None,
                flags: dict[str, Any] | None = None) -> T:
    """Defaults of ``cls`` <- recipe file <- explicitly given CLI ``flags`` <- dotted ``key=value`` overrides."""
    data = merge(read_yaml(recipe) if recipe else {}, flags or {})
    data = merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data, str(recipe) if recipe else "config")


def to_dict(cfg: Any) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml in run directories)."""
    return dataclasses.asdict(cfg)
