"""The Engine interface: every sampler in ahalab (eval, strategies, RL rollouts) goes through it."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING

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
