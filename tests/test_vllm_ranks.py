"""Generation at scale for GRPO (docs/scaling.md, "Generation: colocate or server"): each of 2 gloo ranks with its own
in-process vLLM engine bound to its own cores, and a real `vllm serve` process (CPU, the tiny model) generating for the
trainer over HTTP and given the new weights after each step; in both, rollouts after the sync come from the trained
weights."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ahalab.errors import UserError

TESTS = Path(__file__).parent
ENV = {**os.environ, "PYTHONPATH": f"{TESTS.parent / 'src'}{os.pathsep}{TESTS}", "TOKENIZERS_PARALLELISM": "false",
       "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")


def _two_ranks(model: str, out: Path, extra: dict | None = None) -> list[dict]:
    """tests/distributed_worker.py vllm on 2 torchrun ranks; each rank's report."""
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(TESTS / "distributed_worker.py"), "vllm", model, str(out)],
                          env={**ENV, "ZERO_EXTRA": json.dumps(extra or {})}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads((out / f"vllm-rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.multiprocess
@needs_vllm
def test_two_ranks_each_with_its_own_vllm_on_its_own_cores_get_the_trained_weights(tiny_model, tmp_path):
    reports = _two_ranks(tiny_model, tmp_path)
    allowed = sorted(os.sched_getaffinity(0))
    half = len(allowed) // 2
    assert [r["cores"] for r in reports] == [allowed[:half], allowed[half:2 * half]]  # rank r: its slice
    for r in reports:
        assert r["world"] == 2 and r["engine"] == "vllm"
        assert r["bind"] == ",".join(map(str, r["cores"]))  # what vLLM is told
        assert all(cores == r["cores"] for cores in r["threads"].values())  # every thread, vLLM's included
        assert r["torch_threads"] == len(r["cores"])
        assert r["to_policy"] < 1e-4 and r["to_base"] > 1e-3  # each rank's engine samples the trained policy
    assert reports[0]["trained"] > 0


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.multiprocess
@needs_vllm
def test_a_command_with_colocated_vllm_on_two_ranks_ends_cleanly(tiny_model, tmp_path):
    """`ahalab zero --num-processes 2` with a vLLM engine per rank exits 0 with its files written: closing a colocated
    engine ends the launcher's process group (vLLM's external_launcher), so the ranks meet before it and leave none."""
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "ahalab", "zero", "--model", tiny_model, "--engine", "vllm", "--out",
                           str(out), "--steps", "2", "--prompts-per-step", "2", "--generations", "4",
                           "--max-new-tokens", "8", "--num-processes", "2", "train_size=20", "eval.every=2",
                           "eval.limit=4", "eval.max_tokens=8", "rewards={language: 1.0, repetition: 1.0}",
                           "engine_options={kv_cache_gib: 0.25}"],
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and (out / "model" / "model.safetensors").exists()
    assert "float32 engines" in (out / "log.txt").read_text()  # the CPU ranks' default (docs/scaling.md)


# --- server mode -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vllm_server(tiny_model):
    """`vllm serve` of the tiny model on loopback, dev endpoints on (CPU, float32); its root URL."""
    pytest.importorskip("vllm")
    from ahalab.engines.http import OpenAIClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**ENV, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_model,
                               "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port),
                               "--dtype", "float32", "--max-model-len", "512", "--seed", "0", "--enforce-eager"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        OpenAIClient(url).wait_until_up("/health", 300)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def _perturbed(model: str, seed: int) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.mark.slow
@pytest.mark.vllm
@needs_vllm
def test_the_server_engine_generates_as_the_in_process_engine_before_and_after_new_weights(tiny_model, vllm_server,
                                                                                        tmp_path):
    from ahalab.engines.server import VLLMServerEngine
    from ahalab.engines.vllm import VLLMEngine

    prompts = ["What is 12 + 7?", "Using the numbers 3, 5, 7", "Let me check. verify"]
    server = VLLMServerEngine(tiny_model, vllm_server, tmp_path / "sync")
    with VLLMEngine(tiny_model, dtype="float32", kv_cache_gib=0.25, max_model_len=512) as local:
        def both() -> tuple[list, list]:
            a, b = (e.generate(prompts, max_tokens=12, logprobs=True) for e in (server, local))
            for x, y in zip(a, b):
                torch.testing.assert_close(torch.tensor(x[0].logprobs), torch.tensor(y[0].logprobs), atol=1e-4, rtol=0)
            return [g[0].token_ids for g in a], [g[0].token_ids for g in b]

        before, same = both()
        assert before == same and all(len(t) > 2 for t in before)
        for seed in (1, 2):  # two pushes: each reloads from its own directory, the last one's removed
            weights = dict(_perturbed(tiny_model, seed).named_parameters())
            server.load_weights(weights.items())
            local.load_weights(weights.items())
            after, same = both()
            assert after == same and after != before
            assert [p.name for p in (tmp_path / "sync").iterdir()] == [server.loaded.name]
            before = after
        sampled = [server.generate(prompts[:1], n=3, temperature=1.0, max_tokens=8, seed=5)[0] for _ in range(2)]
        assert [c.token_ids for c in sampled[0]] == [c.token_ids for c in sampled[1]]  # seeded: reproducible
        assert len({tuple(c.token_ids) for c in sampled[0]}) > 1
    server.close()
    assert not any((tmp_path / "sync").iterdir())


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.multiprocess
@needs_vllm
def test_two_ranks_train_with_one_vllm_server_and_sample_the_trained_weights(tiny_model, vllm_server, tmp_path):
    """`vllm_mode: server`: each rank sends its share of the prompts, rank 0 pushes the weights, the other waits."""
    reports = _two_ranks(tiny_model, tmp_path, {"vllm_mode": "server", "vllm_server_base_url": vllm_server})
    for r in reports:
        assert r["engine"] == "vllm-server"
        assert r["to_policy"] < 1e-4 and r["to_base"] > 1e-3  # both ranks see the weights rank 0 pushed
    assert reports[0]["trained"] > 0


def test_server_mode_is_checked_when_the_config_is_built():
    from ahalab.rl.config import ZeroConfig

    with pytest.raises(UserError, match="vllm_mode: server"):
        ZeroConfig(vllm_mode="server", engine="hf").validate()
    assert ZeroConfig(vllm_server_port=9000).vllm_server_url() == "http://127.0.0.1:9000"
    assert ZeroConfig(vllm_server_base_url="http://gpu7:8000").vllm_server_url() == "http://gpu7:8000"


# --- with fakes: core binding, sleep mode (GPU only, not run here) ------------------------------------------


def test_cores_are_split_between_ranks_or_taken_from_vllms_lists(monkeypatch):
    from ahalab.training import distributed

    bound: dict[int, list[int]] = {}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(os, "sched_setaffinity", lambda tid, cores: bound.__setitem__(tid, list(cores)))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for spec, rank, want in (("auto", 1, [2, 3]), ("auto", 3, [6, 7]), ("0-2,7|3-6", 0, [0, 1, 2, 7])):
        monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", spec)
        bound.clear()
        assert distributed.bind_cores(rank, 4 if spec == "auto" else 2) == want
        assert set(bound) == {int(t) for t in os.listdir("/proc/self/task")} and all(c == want for c in bound.values())
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, want))
        assert os.environ["OMP_NUM_THREADS"] == str(len(want))
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    assert distributed.bind_cores(0, 2) is None
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")
    with pytest.raises(UserError, match="1 core lists for 2 ranks"):
        distributed.bind_cores(0, 2)


class _FakeLLM:
    """What VLLMEngine asks of vllm.LLM around sleep mode, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: list[str]) -> None:
        self.calls.append(("wake_up", tuple(tags)))

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        self.calls.append((method, len(dict(kwargs["weights_iterator"]))))

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache",))

    def generate(self, prompts, params, use_tqdm) -> list:
        self.calls.append(("generate",))
        return []


def test_sleep_mode_sleeps_for_the_update_and_wakes_weights_to_load_then_the_cache_to_generate(tiny_model):
    """The GPU path written against vLLM's API (LLM.sleep(level=1), wake_up(tags)), checked with a fake LLM: the
    CPU build has no sleep mode (VLLMEngine refuses it there), and no GPU was available."""
    pytest.importorskip("vllm")
    from ahalab.engines.vllm import FullWeights, VLLMEngine
    from ahalab.models import load_model

    engine = object.__new__(VLLMEngine)  # no vllm.LLM behind it
    engine.llm, engine.dtype, engine.ignore_eos = _FakeLLM(), torch.float32, False
    engine.sleep_mode, engine.asleep, engine.full_weights = True, set(), FullWeights(tiny_model)
    engine.cpu = False  # a GPU engine
    weights = list(load_model(tiny_model)[0].named_parameters())
    engine.generate(["x"])
    engine.sleep()
    engine.sleep()  # asleep already: nothing more
    engine.load_weights(weights)
    engine.generate(["x"])
    engine.generate(["x"])
    assert engine.llm.calls == [("generate",), ("sleep", 1), ("wake_up", ("weights",)),
                                ("reload_weights", len(weights) + 1), ("reset_prefix_cache",),  # + the tied lm_head
                                ("wake_up", ("kv_cache",)), ("generate",), ("generate",)]
    engine.sleep_mode, engine.llm.calls = False, []
    engine.sleep()
    assert engine.llm.calls == []  # off (on a GPU): sleep is a no-op
    with pytest.raises(UserError, match="enable_sleep_mode"):
        VLLMEngine(tiny_model, enable_sleep_mode=True)  # refused on CPU, before an engine starts
