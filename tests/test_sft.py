"""SFT: completion-only masks, packing without cross-attention, the trainer's resume and LoRA paths."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ahalab.data.build import DataConfig, build_dataset
from ahalab.models.prefix import SharedPrefix
from ahalab.runs import RunDir
from ahalab.sft.collate import Example, completion_nll, pack, pad_batches, split_shared_prefix, tokenize_row
from ahalab.sft.config import SFTConfig
from ahalab.sft.data import load_rows
from ahalab.sft.trainer import SFTTrainer

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 12 + 7?"},
            {"role": "assistant", "content": "<think>\n12 + 7 = 19\n</think>\n<answer>19</answer>"}]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from ahalab.models import load_model

    model, tokenizer = load_model(tiny_model)
    return model.eval(), tokenizer


def test_completion_only_mask_covers_exactly_the_assistant_answer(tiny):
    _, tok = tiny
    ex = tokenize_row(tok, MESSAGES)
    trained = tok.decode([t for t, m in zip(ex.input_ids, ex.trained) if m])
    prompt = tok.decode([t for t, m in zip(ex.input_ids, ex.trained) if not m])
    assert trained == MESSAGES[-1]["content"] + "<|im_end|>\n"
    assert prompt == tok.apply_chat_template(MESSAGES[:-1], tokenize=False, add_generation_prompt=True)
    first = ex.trained.index(True)
    assert all(ex.trained[first:]) and not any(ex.trained[:first])


def test_completion_only_mask_matches_the_eval_prompt(tiny):
    from ahalab.data.dataset import make_row
    from ahalab.prompts import render
    from ahalab.tasks import get_task
    from ahalab.types import Problem

    _, tok = tiny
    task = get_task("arithmetic")
    problem = Problem("p", "What is 2 + 3?", "5")
    row = make_row(problem, task, "2 + 3 = 5", "5", "t")
    ex = tokenize_row(tok, row["messages"])
    text = tok.decode(ex.input_ids)
    prompt = render(tok, task, problem.question, "r1")
    assert text.startswith(prompt.prompt)  # what eval feeds the model, "<think>" prefix included
    assert tok.decode([t for t, m in zip(ex.input_ids, ex.trained) if m]).startswith("<think>")


def _examples(tok, n: int) -> list[Example]:
    rows = [[{"role": "user", "content": f"What is {i} + {i * 3}?"},
             {"role": "assistant", "content": f"<think>{'step ' * (i % 4)}</think>\n<answer>{i * 4}</answer>"}]
            for i in range(1, n + 1)]
    return [tokenize_row(tok, r) for r in rows]


def test_packing_keeps_examples_separate(tiny):
    model, tok = tiny
    examples = _examples(tok, 5)
    [row] = pack(examples, max_tokens=10_000)
    assert row.examples == 5 and row.input_ids.shape[0] == 1
    with torch.no_grad():
        packed = model(input_ids=row.input_ids, position_ids=row.position_ids, use_cache=False).logits[0]
        order = sorted(examples, key=len, reverse=True)  # pack's layout: first-fit decreasing
        start = 0
        for ex in order:
            alone = model(input_ids=torch.tensor([ex.input_ids])).logits[0]
            torch.testing.assert_close(packed[start:start + len(ex)], alone, atol=1e-4, rtol=1e-4)
            start += len(ex)
        # the loss agrees whether examples are packed, padded or alone
        nll_packed = completion_nll(model, row)
        nll_padded = sum(completion_nll(model, mb) for mb in pad_batches(examples, 10_000, tok.pad_token_id))
        nll_alone = sum(completion_nll(model, mb) for ex in examples for mb in pack([ex], 10_000))
    torch.testing.assert_close(nll_packed, nll_alone, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(nll_padded, nll_alone, atol=1e-3, rtol=1e-4)
    assert row.num_targets == sum(sum(ex.trained) for ex in examples)


def test_shared_prefix_gives_the_same_loss_and_gradient(tiny_model):
    """The system prompt run once per step, remainders attending to its cache: the packed path's numbers."""
    from transformers import AutoModelForCausalLM

    from ahalab.models import load_model

    _, tok = load_model(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64)
    system = {"role": "system", "content": "Think step by step inside <think> tags, then answer in <answer> tags."}
    examples = [tokenize_row(tok, [system, *row]) for row in
                [[{"role": "user", "content": f"What is {i} + {i * 3}?"},
                  {"role": "assistant", "content": f"<think>{'step ' * (i % 4)}</think>\n<answer>{i * 4}</answer>"}]
                 for i in range(1, 6)]]
    shared, rest = split_shared_prefix(examples, min_len=4)
    assert len(shared) >= 4 and all(ex.input_ids == shared + r.input_ids for ex, r in zip(examples, rest))
    assert not any(ex.trained[len(shared)] for ex in examples)  # the cut leaves every target in the remainders

    def loss_and_grads(use_prefix: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        if use_prefix:
            ids = torch.tensor([shared])
            prefix = SharedPrefix(model, ids, torch.ones_like(ids))
            mbs = pad_batches(rest, 2 * max(len(r) for r in rest), tok.pad_token_id)  # several micro-batches
            assert len(mbs) > 1
        else:
            prefix, mbs = None, pack(examples, 10_000)
        total = sum(completion_nll(model, mb, prefix=prefix) for mb in mbs)
        total.backward()
        if prefix is not None:
            prefix.backward()
        return total.detach(), [p.grad.clone() for p in model.parameters()]

    plain_loss, plain_grads = loss_and_grads(False)
    shared_loss, shared_grads = loss_and_grads(True)
    torch.testing.assert_close(shared_loss, plain_loss, atol=1e-8, rtol=1e-8)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)  # RMSNorm runs in float32 even here


def test_no_shared_prefix_without_a_common_start():
    a, b = Example([1, 2, 3, 4], [False, False, True, True]), Example([1, 5, 3, 4], [False, False, True, True])
    assert split_shared_prefix([a, b], min_len=1) == ([1], [a.suffix(1), b.suffix(1)])
    assert split_shared_prefix([a, b], min_len=2) == ([], [a, b])
    # the prefix's last position must not predict a trained token: its hidden state is not kept
    assert split_shared_prefix([a, a], min_len=1) == ([1], [a.suffix(1), a.suffix(1)])
    c = Example([1, 2, 3, 4], [False, True, True, True])
    assert split_shared_prefix([a, c], min_len=1) == ([], [a, c])


def test_pack_respects_the_row_size(tiny):
    _, tok = tiny
    examples = _examples(tok, 12)
    longest = max(len(e) for e in examples)
    rows = pack(examples, max_tokens=2 * longest)
    assert all(r.input_ids.shape[1] <= 2 * longest for r in rows)
    assert sum(r.examples for r in rows) == 12 and len(rows) <= 7
    for mb in pad_batches(examples, 3 * longest, tok.pad_token_id):
        assert mb.input_ids.numel() <= 3 * longest


@pytest.fixture(scope="module")
def countdown_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("sftdata") / "d"
    return build_dataset(DataConfig(task="countdown", limit=24, journey="search", out=str(out)))


def _cfg(tiny_model, data, out, **kw) -> SFTConfig:
    return SFTConfig(model=tiny_model, train=[data["shortcut"]], batch_size=8, lr=1e-3, epochs=2,
                     micro_batch_tokens=512, checkpoint_every=2, threads=1, out=str(out), **kw)


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_8bit"])
def test_sft_trains_and_resumes_exactly(tiny_model, countdown_data, tmp_path, optim):
    straight = SFTTrainer(_cfg(tiny_model, countdown_data, tmp_path / "a", max_steps=4, optim=optim),
                          RunDir(tmp_path / "a"))
    summary = straight.train()
    assert summary["steps"] == 4 and summary["loss_end"] < summary["loss_start"]
    assert (tmp_path / "a" / "model" / "config.json").exists() and (tmp_path / "a" / "report.md").exists()

    crashing = SFTTrainer(_cfg(tiny_model, countdown_data, tmp_path / "b", max_steps=4, optim=optim),
                          RunDir(tmp_path / "b"))
    step = crashing.train_step

    def crash_at_3(n: int):
        if n == 3:
            raise KeyboardInterrupt  # killed after the step-2 checkpoint
        return step(n)

    crashing.train_step = crash_at_3
    with pytest.raises(KeyboardInterrupt):
        crashing.train()
    resumed = SFTTrainer(_cfg(tiny_model, countdown_data, tmp_path / "b", max_steps=4, optim=optim),
                         RunDir(tmp_path / "b"), resume=True)
    assert resumed.step == 2 and resumed.order.position == 16
    resumed.train()
    a = RunDir(tmp_path / "a").metrics()
    b = RunDir(tmp_path / "b").metrics()
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)


def test_sft_with_gradient_checkpointing_trains_the_same_steps(tiny_model, countdown_data, tmp_path):
    losses = []
    for on in (False, True):
        cfg = _cfg(tiny_model, countdown_data, tmp_path / str(on), max_steps=2, gradient_checkpointing=on)
        SFTTrainer(cfg, RunDir(tmp_path / str(on))).train()
        losses.append([r["loss"] for r in RunDir(tmp_path / str(on)).metrics() if "loss" in r])
    assert len(losses[0]) == 2
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_sft_lora_saves_a_merged_model(tiny_model, countdown_data, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(tiny_model, countdown_data, tmp_path, max_steps=1, lora_r=4, packing=False)
    summary = SFTTrainer(cfg, RunDir(tmp_path)).train()
    model = AutoModelForCausalLM.from_pretrained(summary["trained_model"])
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert len(load_rows(countdown_data["shortcut"])) == summary["examples"]


def test_distill_runs_the_whole_pipeline(tiny_model, tmp_path):
    from ahalab.distill import DistillConfig, run_distill

    evals = [{"name": "heldout", "task": "countdown", "seed": 1234, "limit": 3, "engine": "hf", "max_tokens": 8}]
    cfg = DistillConfig(model=tiny_model, evals=evals, train_on="shortcut", out=str(tmp_path / "run"),
                        data=DataConfig(task="countdown", limit=20, journey="search", decontaminate=[
                            {"task": "countdown", "seed": 1234, "limit": 3}]),
                        sft=SFTConfig(max_steps=1, batch_size=4, threads=1))
    summary, run = run_distill(cfg)
    assert set(summary["accuracy"]) == {"base", "distilled"}
    assert summary["accuracy"]["distilled"]["heldout"]["problems"] == 3
    assert (run.path / "data" / "shortcut.jsonl").exists() and (run.path / "sft" / "model").exists()
    assert (run.path / "base-heldout" / "summary.json").exists() and "| base |" in run.file("report.md").read_text()


def test_cli_parsers_and_recipe_wiring(tmp_path):
    import argparse

    import ahalab.data.stage  # noqa: F401  (registers distill_data)
    import ahalab.sft.stage  # noqa: F401  (registers sft)
    from ahalab import distill
    from ahalab.config import load_config
    from ahalab.data import commands as data_commands
    from ahalab.distill import DistillConfig
    from ahalab.pipeline import check_wiring, load_recipe
    from ahalab.sft import commands as sft_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    data_commands.add_parser(sub)
    distill.add_parser(sub)
    sft_commands.add_parser(sub)
    args = parser.parse_args(["distill", "--task", "arithmetic", "--teacher", "engine", "--samples", "8",
                              "--out", str(tmp_path), "sft.epochs=1"])
    cfg = load_config(DistillConfig, args.config, args.overrides, data_commands.nested_flags(args, (
        "task", "teacher", "teacher_model", "base_url", "samples", "journey", "limit")))
    assert (cfg.data.task, cfg.data.teacher, cfg.data.samples, cfg.sft.epochs) == ("arithmetic", "engine", 8, 1.0)
    args = parser.parse_args(["sft", "--train", "a.jsonl", "--eval", "countdown:x/cd3_test.jsonl",
                              "--eval", "arithmetic"])
    assert args.train == ["a.jsonl"] and args.eval_specs == ["countdown:x/cd3_test.jsonl", "arithmetic"]
    assert sft_commands.parse_eval_spec("countdown:x/cd3_test.jsonl") == {"task": "countdown", "name": "cd3_test",
                                                                          "data": "x/cd3_test.jsonl"}
    recipes = Path(__file__).parent.parent / "recipes"
    for recipe in ("distill_countdown.yaml", "star_arithmetic.yaml", "distill_code.yaml"):
        load_config(DistillConfig, recipes / recipe).validate()
    _, stages = load_recipe(recipes / "journey_countdown.yaml")
    check_wiring(stages, "journey_countdown.yaml")
