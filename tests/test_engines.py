"""Engines on the tiny random model: sampling contract, stop/EOS handling, logprobs, weight sync, HF vs vLLM."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ahalab.engines import ENGINES, default_engine_name, engine_or_new, make_engine, vllm_available
from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.types import Completion

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vLLM is not installed")
QUESTIONS = ["What is 12 + 7?", "Using the numbers 3, 5, 7", "wait", "Answer:"]  # greedy on "wait" ends in EOS
LONG = "What is 12 + 7? Think step by step. " * 12  # several KV blocks: exercises vLLM's prefix cache


@pytest.fixture(scope="module")
def hf(tiny_model):
    return make_engine("hf", tiny_model)


@pytest.fixture(scope="module")
def vllm(tiny_model):
    return make_engine("vllm", tiny_model, dtype="float32", max_model_len=512, kv_cache_gib=0.25)


@pytest.fixture(params=["hf", pytest.param("vllm", marks=[needs_vllm, pytest.mark.vllm])])
def engine(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def prompts(hf) -> list[str]:
    chat = [hf.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                             add_generation_prompt=True) for q in QUESTIONS]
    return chat + [LONG]


@pytest.fixture(scope="module")
def ref_model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


def token_ids(outs: list[list[Completion]]) -> list[list[list[int]]]:
    return [[c.token_ids for c in comps] for comps in outs]


def check_completion(c: Completion, engine, max_tokens: int) -> None:
    """Invariants of every completion: EOS only last and only when finished by "stop", length bounds."""
    eos = engine.tokenizer.eos_token_id
    assert c.prompt_token_ids and 0 < c.num_tokens <= max_tokens
    assert eos not in c.token_ids[:-1]
    if c.token_ids[-1] == eos:
        assert c.finish_reason == "stop"
    elif c.finish_reason == "length":
        assert c.num_tokens == max_tokens


def test_n_samples_shape_and_invariants(engine, prompts) -> None:
    outs = engine.generate(prompts, n=3, temperature=1.0, max_tokens=12, seed=0)
    assert [len(comps) for comps in outs] == [3] * len(prompts)
    for comps in outs:
        assert len({tuple(c.prompt_token_ids) for c in comps}) == 1
        for c in comps:
            check_completion(c, engine, 12)


def test_seed_reproduces_and_differs(engine, prompts) -> None:
    def sample(seed: int) -> list[list[list[int]]]:
        return token_ids(engine.generate(prompts[:2], n=4, temperature=1.0, top_p=0.95, max_tokens=16, seed=seed))

    first = sample(1)
    assert sample(1) == first
    assert sample(2) != first
    assert len({tuple(ids) for ids in first[0]}) > 1  # the n samples of one prompt differ


def test_greedy_is_deterministic_and_respects_max_tokens(engine, prompts) -> None:
    a = engine.generate(prompts, max_tokens=24)
    assert token_ids(engine.generate(prompts, max_tokens=24, seed=123)) == token_ids(a)
    reasons = [comps[0].finish_reason for comps in a]
    assert reasons[QUESTIONS.index("wait")] == "stop" and reasons.count("length") == len(prompts) - 1
    for comps in a:
        check_completion(comps[0], engine, 24)
    short = engine.generate(prompts, max_tokens=5)  # "wait" needs more than 5 tokens to reach its EOS
    assert all(c[0].num_tokens == 5 and c[0].finish_reason == "length" for c in short)


def test_stop_string_cuts_text_and_finishes_stop(engine, prompts) -> None:
    full = engine.generate(prompts[:1], max_tokens=24)[0][0]
    k, stop = next((m.start(), m.group()) for m in re.finditer(r"[A-Za-z0-9]{2}", full.text) if m.start() >= 2)
    cut = engine.generate(prompts[:1], max_tokens=24, stop=[stop, "never-generated"], logprobs=True)[0][0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:k]
    assert cut.token_ids == full.token_ids[:cut.num_tokens]
    assert stop in engine.tokenizer.decode(cut.token_ids) and stop not in engine.tokenizer.decode(cut.token_ids[:-1])
    assert len(cut.logprobs) == cut.num_tokens


def test_logprobs_are_raw_logsoftmax_of_sampled_tokens(engine, prompts, ref_model) -> None:
    """Per token, <= 0, and equal to log-softmax of the model's raw logits (before temperature/top-p)."""
    for greedy in (True, False):
        outs = engine.generate(prompts, n=1 if greedy else 2, temperature=0.0 if greedy else 0.7, top_p=0.9,
                               max_tokens=10, seed=4, logprobs=True)
        for comps in outs:
            for c in comps:
                assert len(c.logprobs) == c.num_tokens and all(lp <= 0 for lp in c.logprobs)
                ids = torch.tensor([c.prompt_token_ids + c.token_ids])
                with torch.no_grad():
                    logits = ref_model(ids).logits[0, len(c.prompt_token_ids) - 1:-1]
                ref = logits.log_softmax(-1).gather(1, ids[0, len(c.prompt_token_ids):, None]).squeeze(1)
                torch.testing.assert_close(torch.tensor(c.logprobs), ref, atol=1e-4, rtol=0)


def test_load_weights_changes_outputs_and_roundtrips(engine, hf, prompts, ref_model) -> None:
    """Perturbed weights change the output (and, for vLLM, match HF on the same weights); originals restore it.

    Weights go by ``named_parameters`` names, so a tied lm_head is not sent under its own name.
    """
    original = {name: p.detach().clone() for name, p in ref_model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    perturbed = {name: t + 0.05 * torch.randn(t.shape, generator=gen) for name, t in original.items()}
    before = token_ids(engine.generate(prompts, max_tokens=16))
    try:
        for e in {id(engine): engine, id(hf): hf}.values():
            e.load_weights(perturbed.items())
        after = token_ids(engine.generate(prompts, max_tokens=16))
        assert after != before
        assert after == token_ids(hf.generate(prompts, max_tokens=16))
    finally:
        for e in {id(engine): engine, id(hf): hf}.values():
            e.load_weights(original.items())
    assert token_ids(engine.generate(prompts, max_tokens=16)) == before


@needs_vllm
def test_load_model_serves_a_fine_tune_in_place_and_refuses_another_model(engine, prompts, ref_model, tiny_model,
                                                                          tmp_path) -> None:
    """A fine-tune (same architecture and tokenizer) is served by reloading weights: the outputs of a fresh HF engine
    on it; a directory with another tokenizer is refused and changes nothing."""
    import shutil

    from transformers import AutoModelForCausalLM

    gen = torch.Generator().manual_seed(1)
    tuned = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    other = tmp_path / "tuned"
    tuned.save_pretrained(other)
    for f in Path(tiny_model).iterdir():
        if f.is_file() and not (other / f.name).exists():
            shutil.copy(f, other / f.name)
    before = token_ids(engine.generate(prompts, max_tokens=16))
    try:
        assert engine.load_model(str(other)) and engine.model_dir == str(other)
        assert token_ids(engine.generate(prompts, max_tokens=16)) == token_ids(
            make_engine("hf", str(other)).generate(prompts, max_tokens=16)) != before
    finally:
        assert engine.load_model(tiny_model)
    assert token_ids(engine.generate(prompts, max_tokens=16)) == before
    stranger = tmp_path / "stranger"
    shutil.copytree(other, stranger)
    (stranger / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert not engine.load_model(str(stranger)) and engine.model_dir == tiny_model
    assert token_ids(engine.generate(prompts, max_tokens=16)) == before


@pytest.mark.vllm
def test_hf_and_vllm_agree_on_greedy_float32(hf, vllm, prompts) -> None:
    a = hf.generate(prompts, max_tokens=16, logprobs=True)
    b = vllm.generate(prompts, max_tokens=16, logprobs=True)
    for x, y in zip(a, b):
        x, y = x[0], y[0]
        assert (x.prompt_token_ids, x.token_ids, x.finish_reason) == (y.prompt_token_ids, y.token_ids, y.finish_reason)
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4, rtol=0)


@needs_vllm
@pytest.mark.vllm
def test_vllm_refuses_partial_weights(vllm, ref_model) -> None:
    with pytest.raises(ValueError, match="every weight"):
        vllm.load_weights([(n, p) for n, p in ref_model.named_parameters() if "q_proj" in n])


def test_make_engine_names(tiny_model, monkeypatch) -> None:
    assert ENGINES == ("vllm", "hf") and default_engine_name() in ENGINES
    with pytest.raises(UserError, match="vllm, hf"):
        make_engine("tpu", tiny_model)
    monkeypatch.setattr("ahalab.engines.vllm_available", lambda: False)
    assert default_engine_name() == "hf"
    assert make_engine(None, tiny_model).name == "hf"
    with pytest.raises(UserError, match=r"pip install -e \.\[cpu\]"):
        make_engine("vllm", tiny_model)


@needs_vllm
@pytest.mark.vllm
def test_closed_vllm_engine_leaves_the_process_clean(tiny_model, prompts) -> None:
    import gc

    options = {"dtype": "float32", "max_model_len": 512, "kv_cache_gib": 0.25}
    first = make_engine("vllm", tiny_model, **options)
    expected = token_ids(first.generate(prompts, max_tokens=8))
    first.close()
    first.close()  # idempotent
    assert first.llm is None
    with make_engine("vllm", tiny_model, **options) as second:
        del first
        gc.collect()  # the closed engine's collection must not tear down the running one's state
        assert token_ids(second.generate(prompts, max_tokens=8)) == expected
    assert second.llm is None


def _module_refs(worker):
    import weakref

    return [weakref.ref(m) for m in worker.model_runner.model.modules()]


@needs_vllm
@pytest.mark.vllm
def test_a_closed_vllm_engine_frees_its_model_after_weight_reloads(tiny_model, prompts) -> None:
    """vLLM's layerwise reload table kept the layers (and their weights) of a reloaded model alive after close."""
    import gc

    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    engine = make_engine("vllm", tiny_model, dtype="float32", max_model_len=512, kv_cache_gib=0.25)
    engine.load_weights(policy.named_parameters())
    engine.generate(prompts, max_tokens=4)
    (modules,) = engine.llm.collective_rpc(_module_refs)
    engine.close()
    gc.collect()
    from vllm.model_executor.layers.rotary_embedding import _ROPE_DICT

    shared = {id(m) for m in _ROPE_DICT.values()}  # vLLM's process-wide rotary cache: shared with any open engine
    assert [m() for m in modules if m() is not None and id(m()) not in shared] == []


class Closable(Engine):
    """An engine that only records whether it was closed."""

    closed = False
    tokenizer = None

    def generate(self, prompts, **kwargs):
        return [[] for _ in prompts]

    def load_weights(self, named_tensors):
        pass

    def close(self) -> None:
        self.closed = True


def test_engine_or_new_closes_only_what_it_made_even_on_errors() -> None:
    given = Closable("given")
    with engine_or_new(given, lambda: Closable("unused")) as used:
        assert used is given
    assert not given.closed  # the caller's engine stays open
    made: list[Closable] = []
    with pytest.raises(RuntimeError), engine_or_new(None, lambda: made.append(Closable("new")) or made[0]) as used:
        assert used is made[0]
        raise RuntimeError("a failing evaluation")
    assert made[0].closed


@needs_vllm
@pytest.mark.vllm
def test_float32_checkpoint_loads_into_bfloat16_engine_without_per_weight_warnings(tiny_model, prompts, tmp_path,
                                                                                    monkeypatch) -> None:
    """vLLM narrows a float32 checkpoint into bfloat16 parameters with a warning per weight; the engine casts first.
    Same weights as a checkpoint stored in bfloat16, so the same greedy tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm.model_executor.models import utils

    stored_bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(stored_bf16)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(stored_bf16)
    warnings: list[str] = []
    monkeypatch.setattr(utils.logger, "warning", lambda msg, *args: warnings.append(msg % args))
    options = {"dtype": "bfloat16", "max_model_len": 512, "kv_cache_gib": 0.25}
    with make_engine("vllm", str(stored_bf16), **options) as native:
        expected = token_ids(native.generate(prompts, max_tokens=8))
    with make_engine("vllm", tiny_model, **options) as cast:
        assert token_ids(cast.generate(prompts, max_tokens=8)) == expected
    assert not [m for m in warnings if m.startswith("Attempted to load weight")]


def test_untouched_zeros_are_zeros_resident_only_where_written() -> None:
    from ahalab.engines.vllm import UntouchedZeros

    with UntouchedZeros(min_bytes=1 << 20):
        big = torch.zeros(64 << 20, dtype=torch.int8, device="cpu")
        small = torch.zeros(1 << 10, dtype=torch.int8)
        other = torch.zeros(64 << 20, dtype=torch.float32)
    span = [(big.data_ptr(), big.numel())]
    assert _resident_bytes(span) == 0 and _resident_bytes([(other.data_ptr(), 1 << 20)]) > 0
    big[: 1 << 20] = 1
    assert _resident_bytes(span) == 1 << 20 and int(big.sum()) == 1 << 20 and not small.any()


def _resident_bytes(spans: list[tuple[int, int]]) -> int:
    """How many bytes of the whole pages inside ``spans`` are resident in memory (Linux ``mincore``)."""
    import ctypes
    import os

    from ahalab.runs import whole_pages

    page = os.sysconf("SC_PAGE_SIZE")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    total = 0
    for address, size in spans:
        start, end = whole_pages(address, size)
        pages = (end - start) // page
        vec = ctypes.create_string_buffer(pages)
        assert libc.mincore(start, end - start, vec) == 0, ctypes.get_errno()
        total += sum(b & 1 for b in vec.raw) * page
    return total


@needs_vllm
@pytest.mark.vllm
def test_vllm_on_cpu_holds_resident_only_the_kv_blocks_generation_writes(tiny_model, prompts) -> None:
    """The 1 GiB KV cache is never resident while the engine starts (``UntouchedZeros``) nor after, a little of it
    after generating, none after sleep() (what a trainer calls before each update) or a weight reload; generation
    after a release is unchanged."""
    import vllm  # noqa: F401  (its import's memory is not the engine's)

    from ahalab.engines.vllm import _kv_cache_spans
    from ahalab.runs import _rss_mib, peak_rss_mib, reset_peak_rss

    reset_peak_rss()
    before = _rss_mib()
    with make_engine("vllm", tiny_model, dtype="float32", max_model_len=512, kv_cache_gib=1.0) as vllm:
        assert peak_rss_mib() - before < 512  # MiB: half the cache
        spans = vllm.llm.collective_rpc(_kv_cache_spans)[0]
        size = sum(n for _, n in spans)
        assert size >= 0.9 * (1 << 30)
        assert _resident_bytes(spans) < 0.01 * size
        first = vllm.generate(prompts, max_tokens=16, logprobs=True)
        assert 0 < _resident_bytes(spans) < 0.2 * size
        vllm.sleep()
        assert _resident_bytes(spans) < 0.01 * size
        again = vllm.generate(prompts, max_tokens=16, logprobs=True)
        assert _resident_bytes(spans) > 0
        vllm.load_model(tiny_model)  # a model switch (``ahalab report``) also gives the stale KV's pages back
        assert _resident_bytes(spans) < 0.01 * size
    assert [c[0].token_ids for c in again] == [c[0].token_ids for c in first]
    torch.testing.assert_close(torch.tensor(again[0][0].logprobs), torch.tensor(first[0][0].logprobs))
