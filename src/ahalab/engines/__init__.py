"""Generation engines: vLLM (default when installed) and transformers (reference and fallback)."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from ahalab.engines.base import Engine
from ahalab.errors import UserError

EngineName = Literal["vllm", "hf", "auto"]
ENGINES = ("vllm", "hf")


def vllm_available() -> bool:
    """Whether vLLM is installed (checked without importing it)."""
    return importlib.util.find_spec("vllm") is not None


def default_engine_name() -> str:
    return "vllm" if vllm_available() else "hf"


def make_engine(name: str | None, model_dir: str, **options: Any) -> Engine:
    """Build engine ``name`` ("vllm", "hf"; None or "auto": vLLM when installed) for a local model directory."""
    name = default_engine_name() if name in (None, "auto") else name
    if name not in ENGINES:
        raise UserError(f"unknown engine '{name}'; valid engines: {', '.join(ENGINES)} (or auto)")
    if name == "hf":
        from ahalab.engines.hf import HFEngine

        return HFEngine(model_dir, **options)
    if not vllm_available():
        raise UserError("engine 'vllm' is not installed: `pip install -e .[cpu]` (CPU) or, with a CUDA torch, "
                        "`pip install -e .[gpu]`; or use --engine hf")
    from ahalab.engines.vllm import VLLMEngine

    return VLLMEngine(model_dir, **options)


def engine_for(model: str, engine: str | None = None, dtype: str | None = None, seed: int = 0,
               **options: Any) -> Engine:
    """A new engine (``engine``: vllm, hf, None/auto) for a model name (alias, directory, .gguf, hub id)."""
    from ahalab.models import resolve_model

    return make_engine(engine, resolve_model(model), seed=seed, **({"dtype": dtype} if dtype else {}), **options)


@contextmanager
def engine_or_new(engine: Engine | None, make: Callable[[], Engine]) -> Iterator[Engine]:
    """``engine`` as given (the caller owns it), or one made by ``make`` and closed on leaving, errors included."""
    if engine is not None:
        yield engine
        return
    with make() as made:
        yield made
