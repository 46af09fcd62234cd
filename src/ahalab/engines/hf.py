"""HFEngine: transformers ``generate``; the reference engine, and the fallback where vLLM is not installed."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.types import Completion

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype an engine ``dtype`` option names."""
    if name not in DTYPES:
        raise UserError(f"unknown dtype '{name}'; valid: {', '.join(DTYPES)}")
    return DTYPES[name]

# Explicit neutral values, so sampling knobs in a model's generation_config.json (and transformers' own
# default top_k=50) do not apply: both engines sample from exactly what generate() was asked for.
_NEUTRAL = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0}
_NEUTRAL_SAMPLING = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0}


class _SampledLogprobs(LogitsProcessor):
    """Logits processor recording the log-probability of each sampled token under the raw logits.

    It sees the logits before temperature/top-p (custom processors run before the sampling warpers),
    keeps one step's log-softmax and reads the sampled token from the next step's ``input_ids``: memory
    is one (rows, vocab) tensor, not one per step as with ``output_logits``.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []
        self.last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.last is not None:
            self.steps.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        self.last = scores.float().log_softmax(-1)
        return scores

    def result(self, sequences: torch.Tensor) -> torch.Tensor:
        """(rows, generated) logprobs, given generate's final sequences."""
        self.steps.append(self.last.gather(1, sequences[:, -1:]).squeeze(1))
        return torch.stack(self.steps, 1).cpu()


class HFEngine(Engine):
    """Generation with transformers (left-padded batches, KV cache).

    ``batch_size`` bounds the sequences per ``generate`` call (prompts x n). ``seed`` seeds torch once at
    construction, like vLLM's engine seed; ``generate(seed=...)`` reseeds torch before the call. Pass
    ``model`` to generate with an in-memory model (e.g. the one a trainer is updating); it is put in eval
    mode during generation and restored after. ``ignore_eos`` always generates ``max_tokens`` tokens
    (throughput benchmarks). Logprobs are the log-softmax of the raw next-token logits (before
    temperature and top-p), as vLLM's default ``logprobs_mode="raw_logprobs"``.
    """

    name = "hf"

    def __init__(self, model_dir: str, dtype: str = "float32", device: str | None = None, batch_size: int = 32,
                 seed: int = 0, model: torch.nn.Module | None = None, ignore_eos: bool = False) -> None:
        super().__init__(model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if model is None:
            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype)).to(device).eval()
        self.model = model
        self.batch_size = batch_size
        self.ignore_eos = ignore_eos
        gen_eos = model.generation_config.eos_token_id
        eos = [self._tokenizer.eos_token_id] + (gen_eos if isinstance(gen_eos, list) else [gen_eos])
        self.eos_token_ids = sorted({e for e in eos if e is not None})
        pad = self._tokenizer.pad_token_id
        self.pad_token_id = self.eos_token_ids[0] if pad is None else pad
        torch.manual_seed(seed)

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts: list[str], n: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                 max_tokens: int = 256, stop: list[str] | None = None, seed: int | None = None,
                 logprobs: bool = False, progress: str | None = None) -> list[list[Completion]]:
        from tqdm import tqdm

        if seed is not None:
            torch.manual_seed(seed)
        per_call = max(1, self.batch_size // n)
        was_training = self.model.training
        self.model.eval()
        try:
            with tqdm(total=len(prompts), desc=progress, unit="prompt", disable=progress is None) as bar:
                out: list[list[Completion]] = []
                for lo in range(0, len(prompts), per_call):
                    out += self._generate_batch(prompts[lo:lo + per_call], n, temperature, top_p, max_tokens,
                                                stop or [], logprobs)
                    bar.update(len(out) - bar.n)
                return out
        finally:
            self.model.train(was_training)

    @torch.inference_mode()
    def _generate_batch(self, prompts: list[str], n: int, temperature: float, top_p: float, max_tokens: int,
                        stop: list[str], logprobs: bool) -> list[list[Completion]]:
        prompt_ids = self._tokenizer(prompts)["input_ids"]
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompt_ids])
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids])
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, **_NEUTRAL_SAMPLING} \
            if temperature > 0 else {"do_sample": False}
        recorder = _SampledLogprobs() if logprobs else None
        out = self.model.generate(
            input_ids=input_ids.to(self.model.device), attention_mask=attention_mask.to(self.model.device),
            max_new_tokens=max_tokens, num_return_sequences=n, **sampling, **_NEUTRAL,
            eos_token_id=[] if self.ignore_eos else self.eos_token_ids, pad_token_id=self.pad_token_id,
            stop_strings=stop or None, tokenizer=self._tokenizer if stop else None,
            logits_processor=LogitsProcessorList([recorder] if recorder else []))
        generated = out[:, width:].cpu()
        lps = recorder.result(out) if recorder else None
        results: list[list[Completion]] = []
        for row, tokens in enumerate(generated.tolist()):
            ids, text, reason = self._finish(tokens, stop)
            results.append(Completion(text=text, token_ids=ids, finish_reason=reason,
                                      logprobs=lps[row, :len(ids)].tolist() if lps is not None else None,
                                      prompt_token_ids=prompt_ids[row // n]))
        return [results[i:i + n] for i in range(0, len(results), n)]

    def _finish(self, tokens: list[int], stop: list[str]) -> tuple[list[int], str, str]:
        """Cut one generated row after its EOS or the token completing a stop string (the rest is padding).

        Returns (token ids, text without special tokens and cut before the stop string, finish reason).
        """
        end = next((i + 1 for i, t in enumerate(tokens) if t in self.eos_token_ids), None) \
            if not self.ignore_eos else None
        tokens = tokens[:end]
        text = self._tokenizer.decode(tokens, skip_special_tokens=True)
        hits = [i for i in (text.find(s) for s in stop) if i >= 0]
        if hits:
            lo, hi = 1, len(tokens)  # shortest prefix whose text contains a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in self._tokenizer.decode(tokens[:mid], skip_special_tokens=True) for s in stop):
                    hi = mid
                else:
                    lo = mid + 1
            return tokens[:lo], text[:min(hits)], "stop"
        return tokens, text, "stop" if end is not None else "length"

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        params = dict(self.model.named_parameters(remove_duplicate=False))  # tied weights under both names
        with torch.no_grad():
            for name, tensor in named_tensors:
                if name not in params:
                    raise KeyError(f"load_weights: {name!r} is not a parameter of the model")
                params[name].copy_(tensor)
