"""The Engine interface: every sampler in ahalab (eval, strategies, RL rollouts) goes through it."""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.types import Completion

if TYPE_CHECKING:
    import torch


class Engine(ABC):
    """Generates completions for already-rendered prompt strings.

    ``generate`` returns one list of ``n`` completions per prompt, in prompt order. ``seed`` makes
    a call reproducible (same engine, same seed, same prompts -> same completions). ``progress``, when
    given, is the label of a progress bar over the call's prompts.
    """

    name: str = ""
    shared = False  # one engine behind many processes (a server): one of them loads the weights for all

    def __init__(self, model_dir: str) -> None:
        self.model_dir = model_dir

    @property
    @abstractmethod
    def tokenizer(self):  # a transformers tokenizer
        """The tokenizer prompts were rendered for."""

    @abstractmethod
    def generate(
        self,
        prompts: list[str],
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        stop: list[str] | None = None,
        seed: int | None = None,
        logprobs: bool = False,
        progress: str | None = None,
    ) -> list[list[Completion]]:
        """Sample ``n`` completions for each prompt."""

    def sleep(self) -> None:
        """Free the engine's memory while a trainer updates the policy, until the next ``load_weights`` or ``generate``
        wakes it (vLLM: its sleep mode where enabled on a GPU, its KV cache's pages on CPU); a no-op for the others."""

    def close(self) -> None:
        """Release the engine's resources now rather than whenever it is garbage-collected (idempotent)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abstractmethod
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Replace the model's weights in place (RL weight sync); names as in the HF state dict."""

    def load_model(self, model_dir: str) -> bool:
        """Serve ``model_dir`` from now on, its weights loaded in place (no new engine), when it is this engine's
        model otherwise (``serving_files``: a fine-tune of it, a checkpoint); False, nothing changed, when it is not
        or the engine is shared (make a new engine then)."""
        if self.shared or serving_files(model_dir) != serving_files(self.model_dir):
            return False
        self.load_weights(checkpoint_tensors(model_dir))
        self.model_dir = model_dir
        return True


# What an engine reads from a model directory besides its weights (the JSON ones less their bookkeeping keys).
SERVING_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja")
_BOOKKEEPING = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "_from_model_config"}


def serving_files(model_dir: str) -> dict[str, Any]:
    """The architecture (config.json) and the tokenizer, chat template and generation settings of a local model
    directory: equal for two directories when one engine can serve both by reloading weights."""
    files: dict[str, Any] = {}
    for name in SERVING_FILES:
        path = Path(model_dir) / name
        files[name] = path.read_bytes() if path.is_file() else None
        if files[name] is not None and name in ("config.json", "generation_config.json"):
            files[name] = {k: v for k, v in json.loads(files[name]).items() if k not in _BOOKKEEPING}
    return files


def checkpoint_weights(model_dir: str) -> Iterator[tuple[str, Any]]:
    """(name, its open safetensors file) for every weight stored in a model directory."""
    from safetensors import safe_open

    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f


def checkpoint_tensors(model_dir: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight in a model directory's safetensors files."""
    return ((name, f.get_tensor(name)) for name, f in checkpoint_weights(model_dir))
