"""The GRPO loop on the tiny model: masks, micro-batches, dynamic sampling, learning, NaN stop, kill -9 and resume."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.models.prefix import length_bins
from ahalab.rewards import REWARDS, contents
from ahalab.rl.batch import Prefix, plan_batches
from ahalab.rl.config import ZeroConfig, ZeroEval
from ahalab.runs import RunDir
from ahalab.types import Completion
from weight_checks import engine_vs_policy


def tiny_config(model: str, out: Path, **kw) -> ZeroConfig:
    base = dict(model=model, engine="hf", steps=4, prompts_per_step=2, generations=4, max_new_tokens=8,
                train_size=50, rewards={"language": 1.0, "repetition": 1.0}, lr=1e-2, threads=1,
                eval=ZeroEval(every=0), checkpoint_every=0, sample_every=0, out=str(out))
    return ZeroConfig(**{**base, **kw})


def make_trainer(cfg: ZeroConfig, resume: bool = False):
    from ahalab.rl.trainer import ZeroTrainer

    return ZeroTrainer(cfg, RunDir.create(cfg.out, "zero", dataclasses.asdict(cfg)), resume=resume)


# --- batching -----------------------------------------------------------------------------------------


def test_plan_shares_prompts_and_sorts_completions():
    prompts = [[1, 2, 3]] * 3 + [[4, 5]] * 2 + [[6, 7, 8, 9]]
    completions = [[2] * n for n in (2, 5, 1, 4, 6, 3)]
    chunks = plan_batches(prompts, completions, [0, 1, 2, 3, 4, 5], max_tokens=8, pad_id=0)
    assert [c.ids.shape[0] for c in chunks] == [2, 1]  # longest prompts first, <= 8 padded prompt tokens a chunk
    rows = [i for c in chunks for mb in c.micro_batches for i in mb.index.tolist()]
    assert sorted(rows) == [0, 1, 2, 3, 4, 5]
    for chunk in chunks:
        assert len({tuple(r) for r in chunk.ids.tolist()}) == chunk.ids.shape[0]
        assert torch.all(chunk.ids[:, -1] != 0)  # every prompt ends in the last column
        for mb in chunk.micro_batches:
            assert mb.ids.numel() <= 8 or len(mb.index) == 1
            assert mb.mask.sum(1).tolist() == [len(completions[i]) for i in mb.index.tolist()]
            for row, i in enumerate(mb.index.tolist()):
                prompt = chunk.ids[mb.prompt[row]][chunk.mask[mb.prompt[row]].bool()].tolist()
                assert prompt == prompts[i]
        lengths = [len(completions[i]) for mb in chunk.micro_batches for i in mb.index.tolist()]
        assert lengths == sorted(lengths, reverse=True)  # longest first: little padding


def _all_cuts(lengths: list[int]):
    """Every way to cut ``lengths`` into consecutive non-empty runs."""
    n = len(lengths)
    for mask in range(1 << max(n - 1, 0)):
        starts = [0] + [i + 1 for i in range(n - 1) if mask >> i & 1]
        yield [lengths[a:b] for a, b in zip(starts, starts[1:] + [n])]


@pytest.mark.parametrize("seed", range(30))
def test_length_bins_is_the_cheapest_cut(seed):
    """Against every cut of up to 9 items: runs within max_tokens (or one item), padded tokens + cost minimal."""
    rng = random.Random(seed)
    lengths = sorted((rng.choice([rng.randint(1, 4), rng.randint(5, 30)]) for _ in range(rng.randint(1, 9))),
                     reverse=True)
    max_tokens, cost = rng.randint(8, 60), rng.choice([0, 3, 64])

    def fits(run: list[int]) -> bool:
        return len(run) == 1 or len(run) * run[0] <= max_tokens

    def price(runs: list[list[int]]) -> int:
        return sum(len(r) * r[0] + cost for r in runs)

    runs = length_bins(lengths, lambda n: n, max_tokens, cost)
    assert [n for r in runs for n in r] == lengths and all(r and fits(r) for r in runs)
    assert price(runs) == min(price(c) for c in _all_cuts(lengths) if all(fits(r) for r in c))


def test_a_long_tail_is_not_padded_to_its_longest():
    """A GRPO batch's completions (2-128 tokens): greedy filling padded 2,384 tokens for 1,166, the cut 1,430."""
    lengths = [128, 128, 119, 103, 81, 64, 62, 56, 46, 36, 29, 26, 24, 22, 22, 22, 21, 19, 17, 17, 16, 16, 15, 13,
               12, 12, 12, 9, 8, 6, 3, 2]
    chunk, = plan_batches([[1, 2]] * len(lengths), [[3] * n for n in lengths], list(range(len(lengths))), 2048, 0)
    assert sum(mb.ids.numel() for mb in chunk.micro_batches) == 1430
    assert sum(mb.num_tokens for mb in chunk.micro_batches) == sum(lengths) == 1166


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("prompts", [[[5, 6, 7, 8, 9], [10, 11], [5, 6, 7, 8, 9], [12, 13, 14]],
                                     # prompts opening alike (the head runs once), one a prefix of another
                                     [[5, 6, 7, 8, 9], [5, 6, 7], [5, 6, 7, 8, 9], [5, 6, 12]]])
def test_logprobs_exclude_prompt_and_padding(tiny_model, bf16, prompts):
    """Shared-prompt, padded micro-batches give each sequence's log-probabilities as a lone plain forward does."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    completions = [[20, 21], [22, 23, 24, 25, 26], [27], [30, 31, 32]]
    chunks = plan_batches(prompts, completions, [0, 1, 2, 3], max_tokens=6, pad_id=0)
    assert len(chunks) == 2 and sum(len(c.micro_batches) for c in chunks) > 2
    seen = []
    with torch.no_grad():
        for chunk in chunks:
            prefix = Prefix(model, chunk, autocast=bf16)
            for mb in chunk.micro_batches:
                got = prefix.logprobs(mb)
                for row, i in enumerate(mb.index.tolist()):
                    ids = torch.tensor([prompts[i] + completions[i]])  # alone: no padding at all
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        logits = model(ids).logits[0, len(prompts[i]) - 1:-1]
                    logits = logits.float().log_softmax(-1)
                    expected = logits.gather(-1, torch.tensor(completions[i])[:, None])[:, 0]
                    n = len(completions[i])
                    torch.testing.assert_close(got[row, :n], expected, atol=0.05 if bf16 else 1e-5, rtol=0)
                    assert torch.all(got[row, n:] == 0) and torch.all(mb.mask[row, n:] == 0)
                    seen.append(i)
    assert sorted(seen) == [0, 1, 2, 3]


# --- dynamic sampling -------------------------------------------------------------------------------------


class ScriptedEngine(Engine):
    """Answers "What is A + B?": always right when A is even (a group with no signal), else right half the time."""

    name = "scripted"

    def __init__(self, tokenizer) -> None:
        super().__init__("scripted")
        self._tokenizer = tokenizer
        self.calls = 0

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=256, stop=None, seed=None,
                 logprobs=False, progress=None):
        self.calls += 1
        out = []
        for prompt in prompts:
            a, b = map(int, re.findall(r"What is (\d+) \+ (\d+)\?", prompt)[0])
            answers = [a + b if a % 2 == 0 or j % 2 == 0 else a + b + 1 for j in range(n)]
            ids = self._tokenizer(prompt)["input_ids"]
            out.append([Completion(f"</think> <answer>{x}</answer>", self._tokenizer(str(x))["input_ids"], "stop",
                                   prompt_token_ids=ids) for x in answers])
        return out

    def load_weights(self, named_tensors):
        pass


@pytest.mark.parametrize("dynamic", [True, False])
def test_dynamic_sampling_drops_flat_groups_and_refills(tiny_model, tmp_path, dynamic):
    cfg = tiny_config(tiny_model, tmp_path, loss="dapo", dynamic_sampling=dynamic, prompts_per_step=4,
                      max_sampling_rounds=20, rewards={"accuracy": 1.0})
    trainer = make_trainer(cfg)
    trainer.engine = ScriptedEngine(trainer.tokenizer)
    batch, sampled = trainer.sample_batch(step=1)
    flat = [int(p.question.split()[2]) % 2 == 0 for p in sampled.problems]
    assert sampled.num_groups == trainer.order.position  # every drawn prompt was sampled once
    if dynamic:
        assert batch.num_groups == 4 and all(s > 0 for s in batch.group_std().tolist())
        assert sampled.num_groups == 4 + sum(flat) and trainer.engine.calls > 1
    else:
        assert batch.num_groups == sampled.num_groups == 4 and trainer.engine.calls == 1
    metrics = trainer.rollout_metrics(sampled, batch)
    assert metrics["zero_std_groups"] == pytest.approx(sum(flat) / len(flat))
    assert batch.advantages.view(-1, 4).sum(1).abs().max() < 1e-5


def test_a_trl_reward_function_plugs_into_zero_unchanged(tiny_model, tmp_path):
    """trl.rewards.think_format_reward (written for TRL's conversational completions) scores ahalab's rollouts."""
    from trl.rewards import think_format_reward

    name = "trl.rewards:think_format_reward"
    cfg = tiny_config(tiny_model, tmp_path, prompts_per_step=3, rewards={name: 1.0, "accuracy": 1.0})
    trainer = make_trainer(cfg)
    trainer.engine = ScriptedEngine(trainer.tokenizer)
    _, sampled = trainer.sample_batch(step=1)
    expected = think_format_reward([[{"role": "assistant", "content": t}] for t in sampled.texts])
    assert sampled.rewards[name] == expected and set(expected) == {1.0}  # "<think></think> <answer>..."
    assert sampled.total.tolist() == [1.0 + s.score for s in sampled.samples]


class CollapsedEngine(ScriptedEngine):
    """Every sample in the exact format with the answer 0 (never right: both operands are positive): a policy
    collapsed into the format."""

    def generate(self, prompts, n=1, **kw):
        return [[Completion("</think> <answer>0</answer>", self._tokenizer("0")["input_ids"], "stop",
                            prompt_token_ids=self._tokenizer(p)["input_ids"]) for _ in range(n)] for p in prompts]


def test_a_run_collapsed_into_the_format_says_so_once_and_in_its_summary(tiny_model, tmp_path, caplog):
    """No sample right and all in format for 3 steps: no group has a signal; the step that ends the third such step
    warns (once), and summary.json names it."""
    from ahalab.rl.analytics import stalled_at

    cfg = tiny_config(tiny_model, tmp_path, steps=5, rewards={"accuracy": 1.0, "format_exact": 0.2}, format="r1")
    trainer = make_trainer(cfg)
    trainer.engine = CollapsedEngine(trainer.tokenizer)
    with caplog.at_level("WARNING", logger="ahalab.rl.trainer"):
        summary = trainer.train()
    rows = trainer.run.metrics()
    assert [(r["accuracy"], r["format_rate"], r["zero_std_groups"]) for r in rows] == [(0.0, 1.0, 1.0)] * 5
    assert summary["stalled_at_step"] == 3 == stalled_at(rows)
    warned = [r.getMessage() for r in caplog.records if "nothing to learn from" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("step 3: no sample was right for 3 steps")


def test_stalled_at_needs_the_steps_in_a_row_wrong_and_formatted() -> None:
    from ahalab.rl.analytics import stalled_at

    def rows(*steps):
        return [{"step": i + 1, "accuracy": a, "format_rate": f, "time_step_s": 1.0} for i, (a, f) in enumerate(steps)]

    collapsed, learning, unformatted = (0.0, 1.0), (0.02, 1.0), (0.0, 0.5)
    assert stalled_at(rows(collapsed, collapsed, collapsed)) == 3
    assert stalled_at(rows(collapsed, collapsed, learning, collapsed, collapsed)) is None  # a right sample resets it
    assert stalled_at(rows(unformatted, unformatted, unformatted)) is None  # a base model that has not learned tags
    assert stalled_at(rows(collapsed, learning, *[collapsed] * 4)) == 5
    assert stalled_at(rows(collapsed, collapsed) + [{"step": 2, "eval_accuracy": 0.0}]) is None  # evals are not steps
    assert stalled_at(rows(*[collapsed] * 2), steps=2) == 2


@pytest.mark.parametrize("groups, written", [(1, 1), (0, 3)])
def test_samples_log_one_group_or_all(tiny_model, tmp_path, groups, written):
    """sample_groups=0 writes every group, so a run's rewarded samples can all be audited."""
    cfg = tiny_config(tiny_model, tmp_path, prompts_per_step=3, rewards={"accuracy": 1.0}, sample_groups=groups)
    trainer = make_trainer(cfg)
    trainer.engine = ScriptedEngine(trainer.tokenizer)
    _, sampled = trainer.sample_batch(step=1)
    trainer._write_samples(1, sampled)
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == written * cfg.generations
    assert [r["question"] for r in rows[::cfg.generations]] == [p.question for p in sampled.problems[:written]]
    assert [r["completion"] for r in rows] == sampled.texts[:len(rows)]


# --- learning, NaN -------------------------------------------------------------------------------------------


def test_a_trivial_reward_rises(tiny_model, tmp_path, monkeypatch):
    """"Say 7": the reward counts the 7s in a completion; GRPO teaches the random tiny model to say them."""
    monkeypatch.setitem(REWARDS, "say7", lambda completions, **_: [c.count("7") / 4 for c in contents(completions)])
    cfg = tiny_config(tiny_model, tmp_path, steps=15, prompts_per_step=2, generations=8, rewards={"say7": 1.0})
    make_trainer(cfg).train()
    rewards = [r["reward_mean"] for r in RunDir(tmp_path).metrics()]
    assert len(rewards) == 15
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.5, rewards


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tiny_model, tmp_path, monkeypatch):
    from ahalab.rl import trainer as trainer_module
    from ahalab.training.loop import TrainingError

    trainer = make_trainer(tiny_config(tiny_model, tmp_path, steps=1, checkpoint_every=1))
    trainer.train()
    real = trainer_module.grpo_loss

    def nan_loss(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        return loss * float("nan"), stats

    monkeypatch.setattr(trainer_module, "grpo_loss", nan_loss)
    trainer.cfg.steps = trainer.total_steps = 6
    trainer.cfg.checkpoint_every = 0
    with pytest.raises(TrainingError, match="not finite.*step-000001"):
        trainer.train()
    assert len(RunDir(tmp_path).metrics()) < 6  # the failing step is not logged
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]


@pytest.mark.parametrize("lora_r", [0, 4])
def test_the_reference_is_the_policy_until_the_first_step(tiny_model, tmp_path, monkeypatch, lora_r):
    """With a KL term, step 1 takes the reference's log-probabilities from the policy's own first pass: no reference
    forward and (full fine-tuning) no second model until the policy moves; the same losses and KL step by step as a
    run that asks the reference every step; a run resumed from a checkpoint asks it again (the same steps as the
    uninterrupted run)."""
    from ahalab.rl.trainer import ZeroTrainer

    def series(out: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in RunDir(out).metrics()]

    calls: list[int] = []
    real_refs = ZeroTrainer.reference_logprobs
    monkeypatch.setattr(ZeroTrainer, "reference_logprobs", lambda self, chunks: calls.append(self.step) or
                        real_refs(self, chunks))
    cfg = dict(steps=3, beta=0.5, lora_r=lora_r, checkpoint_every=1)
    one = make_trainer(tiny_config(tiny_model, tmp_path / "one", **{**cfg, "steps": 1}))
    one.train()
    assert one.reference is None and not calls
    make_trainer(tiny_config(tiny_model, tmp_path / "lazy", **cfg)).train()
    assert calls == [1, 2]  # the updates of steps 2 and 3 (``step`` counts the steps done)
    eager = make_trainer(tiny_config(tiny_model, tmp_path / "eager", **cfg))
    eager.moved = True  # as if the policy had moved: the reference asked from step 1
    eager.train()
    rows = series(tmp_path / "lazy")
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[0]["kl"] == 0 and rows[1]["kl"] > 0
    for a, b in zip(rows, series(tmp_path / "eager")):
        assert a.keys() == b.keys()
        for key in ("reward_mean", "loss", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key

    class Stop(Exception):
        pass

    real_step = ZeroTrainer.train_step
    monkeypatch.setattr(ZeroTrainer, "train_step", lambda self, step: (_ for _ in ()).throw(Stop()) if step == 3
                        else real_step(self, step))
    with pytest.raises(Stop):
        make_trainer(tiny_config(tiny_model, tmp_path / "killed", **cfg)).train()
    monkeypatch.setattr(ZeroTrainer, "train_step", real_step)
    calls.clear()
    make_trainer(tiny_config(tiny_model, tmp_path / "killed", **cfg), resume=True).train()
    assert calls == [2]  # resumed after step 2: step 3 asked the reference
    for a, b in zip(series(tmp_path / "killed"), rows):
        for key in ("reward_mean", "loss", "kl"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


# --- vLLM weight sync --------------------------------------------------------------------------------------


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
@pytest.mark.parametrize("lora_r", [0, 4])
def test_vllm_gets_the_trained_weights(tiny_model, tmp_path, lora_r):
    """After training steps, vLLM's log-probabilities are the policy's (LoRA: merged), not the base model's."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    cfg = tiny_config(tiny_model, tmp_path, engine="vllm", engine_dtype="float32", steps=2, lora_r=lora_r)
    trainer = make_trainer(cfg)
    trainer.train()
    assert sum(r["sequences_trained"] for r in RunDir(tmp_path).metrics()) > 0
    to_policy, to_base = engine_vs_policy(trainer, tiny_model)
    assert to_policy < 1e-4 and to_base > 1e-3


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")
def test_the_sampling_correction_reads_the_distribution_vllm_sampled(tiny_model, tmp_path):
    """vLLM reports the log-probabilities of the tempered distribution it sampled (processed_logprobs), so with a
    float32 engine and a float32 policy the correction finds the policy's own numbers at temperature 0.7: weights 1,
    no gap (vLLM's raw log-probabilities, before temperature, are off by 0.5-1 here); off, it is not logged."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    for corrects in (True, False):
        out = tmp_path / str(corrects)
        cfg = tiny_config(tiny_model, out, engine="vllm", engine_dtype="float32", bf16=False, steps=2,
                          temperature=0.7, vllm_importance_sampling_correction=corrects)
        trainer = make_trainer(cfg)
        with trainer.engine:
            trainer.train()
        trained = [r for r in RunDir(out).metrics() if r.get("sequences_trained")]
        assert trained
        for r in trained:
            if corrects:
                assert r["sampling_logp_diff"] < 1e-4 and r["sampling_weight_mean"] == pytest.approx(1, abs=1e-3)
            else:
                assert "sampling_logp_diff" not in r


def test_an_adapter_on_the_lm_head_is_refused_when_the_config_is_built(tmp_path):
    with pytest.raises(UserError, match="lm_head"):
        tiny_config("m", tmp_path, lora_r=4, lora_targets="q_proj,lm_head").validate()


def test_rloo_takes_a_sequence_level_sampling_correction(tmp_path):
    with pytest.raises(UserError, match="sequence_mask"):
        tiny_config("m", tmp_path, loss="rloo", vllm_importance_sampling_mode="token_truncate").validate()


# --- kill -9 and resume ------------------------------------------------------------------------------------


def _cli(model: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "ahalab.cli", "zero", "--model", model, "--engine", "hf", "--out", str(out),
            "--steps", "8", "--prompts-per-step", "2", "--generations", "4", "--max-new-tokens", "8",
            "--lr", "0.01", "--threads", "1", "--seed", "3", "train_size=50", "checkpoint_every=2", "sample_every=1",
            "eval.every=3", "eval.limit=4", "eval.max_tokens=8", "rewards={language: 1.0, repetition: 1.0}", *extra]


def _series(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def test_kill_and_resume_reproduce_the_uninterrupted_run(tiny_model, tmp_path):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run(_cli(tiny_model, tmp_path / "full"), check=True, env=env, capture_output=True, timeout=120)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(tiny_model, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while not (killed / "checkpoints" / "step-000004").exists() and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()

    subprocess.run(_cli(tiny_model, killed, "--resume"), check=True, env=env, capture_output=True, timeout=120)
    assert [r["step"] for r in _series(killed)] == list(range(9))
    assert _series(killed) == _series(tmp_path / "full")
    samples = [json.loads(line)["step"] for line in (killed / "samples.jsonl").read_text().splitlines()]
    assert samples == [s for s in range(1, 9) for _ in range(4)]


# --- command line and recipes ------------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", sorted(Path(__file__).parents[1].glob("recipes/zero_*.yaml")), ids=lambda p: p.name)
def test_recipes_load(recipe):
    from ahalab.config import load_config

    cfg = load_config(ZeroConfig, recipe, ["steps=3", "eval.limit=10"])
    cfg.validate()
    assert cfg.steps == 3 and cfg.eval.limit == 10


def test_zero_help_lists_the_flags():
    import argparse

    from ahalab.rl.commands import add_parser

    parser = argparse.ArgumentParser(prog="ahalab")
    add_parser(parser.add_subparsers())
    text = parser._subparsers._group_actions[0].choices["zero"].format_help()
    for flag in ("--prompts-per-step", "--generations", "--max-new-tokens", "--loss", "--beta", "--mu", "--lora-r",
                 "--resume", "--config", "key=value"):
        assert flag in text


def test_held_out_problems_stay_out_of_training_even_when_never_evaluated(tiny_model, tmp_path):
    from ahalab.tasks import get_task

    pool = get_task("arithmetic", level=1).load(None, limit=2000, seed=0)
    held_out = {p.question for p in get_task("arithmetic", level=1).load(None, limit=500, seed=1)}
    overlap = sum(p.question in held_out for p in pool)
    assert overlap > 0  # the draw does overlap: the filter has work to do
    for every in (0, 2):
        trainer = make_trainer(tiny_config(tiny_model, tmp_path / f"e{every}", train_size=2000, seed=0,
                                           eval=ZeroEval(every=every, limit=500)))
        assert len(trainer.eval_problems) == 500
        assert len(trainer.train_problems) == 2000 - overlap
        assert not {p.question for p in trainer.train_problems} & held_out
    trainer = make_trainer(tiny_config(tiny_model, tmp_path / "none", train_size=2000, seed=0,
                                       eval=ZeroEval(every=0, limit=0)))
    assert trainer.eval_problems == [] and len(trainer.train_problems) == 2000
    with pytest.raises(UserError, match="eval.limit"):
        tiny_config(tiny_model, tmp_path / "bad", eval=ZeroEval(every=2, limit=0)).validate()


def test_training_pool_is_decontaminated_against_a_test_file(tiny_model, tmp_path):
    """``decontaminate`` keeps an evaluation file's problems out of GRPO's pool (as ``ahalab data`` does) and says
    which it removed; a malformed entry is refused when the config is checked."""
    from ahalab.tasks import get_task

    pool = get_task("arithmetic").load(limit=50, seed=0)
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps({"question": p.question, "answer": p.answer}) + "\n" for p in pool[:7]))
    cfg = tiny_config(tiny_model, tmp_path / "run", steps=1, eval=ZeroEval(every=0, limit=0),
                      decontaminate=[{"task": "jsonl", "data": str(test_file)}])  # short texts: exact copies
    trainer = make_trainer(cfg)
    questions = {p.question for p in trainer.train_problems}
    assert not questions & {p.question for p in pool[:7]} and len(questions) == 50 - 7
    report = json.loads((tmp_path / "run" / "decontamination.json").read_text())
    assert report["summary"]["removed"] == 7 and {r["problem_id"] for r in report["removed"]} == \
        {p.id for p in pool[:7]}
    with pytest.raises(UserError, match=r"decontaminate\[0\]"):
        tiny_config(tiny_model, tmp_path / "bad", decontaminate=[{"data": str(test_file)}]).validate()


def test_gradient_checkpointing_trains_the_same_steps(tiny_model, tmp_path):
    """The same run with ``gradient_checkpointing``: the same losses and rewards step by step (the activations are
    recomputed, not changed)."""
    rows = []
    for on in (False, True):
        cfg = tiny_config(tiny_model, tmp_path / str(on), steps=3, gradient_checkpointing=on)
        make_trainer(cfg).train()
        rows.append(RunDir(tmp_path / str(on)).metrics())
    assert sum("loss" in r for r in rows[0]) >= 2  # steps that trained (a step without signal has no loss)
    for plain, ckpt in zip(*rows):
        assert ckpt["reward_mean"] == pytest.approx(plain["reward_mean"])
        assert ("loss" in ckpt) == ("loss" in plain)
        assert ckpt.get("loss", 0) == pytest.approx(plain.get("loss", 0), rel=1e-4, abs=1e-7)
