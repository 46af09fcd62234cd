"""VLLMServerEngine: generation by a `vllm serve` process (other devices or another host) over its OpenAI-compatible
HTTP API; new weights through a filesystem both sides see and vLLM's in-place reload from disk.

    VLLM_SERVER_DEV_MODE=1 vllm serve MODEL_DIR --port 8000 ...      # the dev endpoints: /collective_rpc, caches
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ahalab.engines.base import Engine
from ahalab.engines.http import OpenAIClient, RequestError
from ahalab.types import Completion

if TYPE_CHECKING:
    import torch


class VLLMServerEngine(Engine):
    """Generates with a running `vllm serve` at ``base_url`` (its root: ``http://host:port``) serving ``model_dir``.

    ``generate`` sends one ``/v1/completions`` request per prompt (with its ``n``), all at once up to
    ``concurrency``, through ``ahalab.engines.http.OpenAIClient`` (retries, ``timeout`` per request); the server
    answers with token ids (``return_token_ids``) and, asked for, the sampled tokens' log-probabilities (vLLM's raw
    logprobs, as the in-process engine's). ``seed``: prompt i is seeded ``seed + i`` (a server seeds per request).
    ``model`` is the served model name (default: the server's first, ``/v1/models``).

    ``load_weights`` writes every weight (``FullWeights``, in ``dtype``: default the checkpoint's) as one
    safetensors file into a new directory under ``sync_dir``, which the server must read at the same path (one
    machine, or a shared filesystem), then asks the server through vLLM's development endpoint ``/collective_rpc``
    (the server runs with ``VLLM_SERVER_DEV_MODE=1``) to run ``reload_weights(weights_path=that directory)`` on its
    workers, and resets its prefix cache (``/reset_prefix_cache``: KV of the old weights); the previous directory
    is removed. The engine is ``shared``: with many training ranks each sends its own prompts, and one of them
    loads the weights (``ahalab.rl.trainer``). ``close`` removes the last directory; the server keeps running.
    """

    name = "vllm-server"
    shared = True

    def __init__(self, model_dir: str, base_url: str, sync_dir: str | Path, model: str | None = None,
                 dtype: str | None = None, wait: float = 240.0, concurrency: int = 64, timeout: float = 600.0,
                 max_retries: int = 2) -> None:
        from transformers import AutoTokenizer

        from ahalab.engines.hf import torch_dtype
        from ahalab.engines.vllm import FullWeights, _stored_dtype

        super().__init__(model_dir)
        self.client = OpenAIClient(base_url, concurrency=concurrency, timeout=timeout, max_retries=max_retries)
        self.client.wait_until_up("/health", wait)
        self.model = model or self.client.request("GET", "/v1/models")["data"][0]["id"]
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.dtype = torch_dtype(dtype) if dtype else _stored_dtype(model_dir)
        self.full_weights = FullWeights(model_dir)
        self.sync_dir = Path(sync_dir).resolve()
        self.loaded: Path | None = None  # the directory the server last reloaded from
        self.version = 0

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None,
                 logprobs: bool = False, progress: str | None = None) -> list[list[Completion]]:
        bodies = [{"model": self.model, "prompt": prompt, "n": n, "temperature": temperature, "top_p": top_p,
                   "max_tokens": max_tokens, "stop": stop or [], "return_token_ids": True,
                   **({"seed": seed + i} if seed is not None else {}), **({"logprobs": 0} if logprobs else {})}
                  for i, prompt in enumerate(prompts)]
        out: list[list[Completion]] = [[] for _ in prompts]
        failures = self.client.request_all("/v1/completions", bodies, lambda _, data: _completions(data, logprobs),
                                           out.__setitem__)
        if failures:
            raise RequestError(f"vllm serve at {self.client.base_url}: {len(failures)} of {len(prompts)} prompts "
                               f"failed (first: {failures[0][1]})")
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        from safetensors.torch import save_file

        from ahalab.engines.vllm import LM_HEAD

        weights = self.full_weights(named_tensors, self.dtype)
        self.version += 1
        path = self.sync_dir / f"weights-{os.getpid()}-{self.version:06d}"  # a new path each time: nothing stale
        path.mkdir(parents=True)
        # a tied lm_head is the embedding tensor itself, which safetensors will not store twice
        save_file({name: t.clone() if name == LM_HEAD else t.contiguous() for name, t in weights.items()},
                  str(path / "model.safetensors"))
        self.client.request("POST", "/collective_rpc", {"method": "reload_weights", "kwargs": {
            "weights_path": str(path), "is_checkpoint_format": True}})
        self.client.request("POST", "/reset_prefix_cache")
        self._remove_loaded()
        self.loaded = path

    def _remove_loaded(self) -> None:
        if self.loaded is not None:
            shutil.rmtree(self.loaded, ignore_errors=True)
            self.loaded = None

    def close(self) -> None:
        self._remove_loaded()


def _completions(data: Any, logprobs: bool) -> list[Completion]:
    """The completions of one ``/v1/completions`` answer in choice order; ValueError (retried) if it is not one."""
    try:
        choices = sorted(data["choices"], key=lambda c: c["index"])
        return [Completion(text=c["text"], token_ids=list(c["token_ids"]),
                           finish_reason="length" if c["finish_reason"] == "length" else "stop",
                           logprobs=list(c["logprobs"]["token_logprobs"]) if logprobs else None,
                           prompt_token_ids=list(c["prompt_token_ids"])) for c in choices]
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a completion with token ids: {type(e).__name__} {e} in {str(data)[:200]}") from None
