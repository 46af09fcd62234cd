"""The training core: data order, schedule, checkpoints (atomic, safe to load), resume guards."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from ahalab.errors import UserError
from ahalab.training.checkpoint import latest_checkpoint, list_checkpoints, load_state, save_checkpoint
from ahalab.training.data_order import DataOrder
from ahalab.training.schedule import lr_at


def test_data_order_is_a_seeded_shuffle_per_epoch() -> None:
    order = DataOrder(5, seed=3)
    first, second = order.take(5), order.take(5)
    assert sorted(first) == sorted(second) == list(range(5)) and first != second
    again = DataOrder(5, seed=3, position=3)
    assert again.take(4) == (first + second)[3:7] and again.epoch == 7 / 5
    assert DataOrder(5, seed=4).take(5) != first


def test_lr_schedule_warms_up_then_decays() -> None:
    assert [lr_at(s, 10, 1.0, "constant", warmup=2) for s in (1, 2, 3, 10)] == [0.5, 1.0, 1.0, 1.0]
    cosine = [lr_at(s, 10, 1.0, "cosine") for s in range(1, 11)]
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.05


class _Tok:
    def save_pretrained(self, path: Path, state_dict=None) -> None:
        (Path(path) / "tokenizer.json").write_text("{}")


class _Model(torch.nn.Linear):
    def save_pretrained(self, path: Path, state_dict=None) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), Path(path) / "weights.pt")


def _save(run: Path, step: int, keep: int = 2, config: dict | None = None) -> Path:
    model = _Model(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return save_checkpoint(run, step, model, _Tok(), opt, data_position=step * 8, keep=keep, config=config)


def test_checkpoint_restores_every_rng_and_loads_without_unpickling(tmp_path) -> None:
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    path = _save(tmp_path, 3)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(9), random.seed(9), np.random.seed(9)
    model = _Model(2, 2)
    state = load_state(path, torch.optim.AdamW(model.parameters()))
    assert state == {"step": 3, "data_position": 24}
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    torch.load(path / "state.pt", weights_only=True)  # plain tensors and lists only


def test_a_crafted_checkpoint_cannot_run_code(tmp_path) -> None:
    import pickle

    path = _save(tmp_path, 1)

    class Evil:
        def __reduce__(self):
            return (Path(tmp_path / "pwned").write_text, ("x",))

    with open(path / "state.pt", "wb") as f:
        pickle.dump({"step": Evil()}, f)
    model = _Model(2, 2)
    with pytest.raises(pickle.UnpicklingError):
        load_state(path, torch.optim.AdamW(model.parameters()))
    assert not (tmp_path / "pwned").exists()


def test_saves_keep_the_newest_and_clear_a_killed_save(tmp_path) -> None:
    stale = tmp_path / "checkpoints" / ".tmp-step-000002"
    stale.mkdir(parents=True)
    (stale / "half.bin").write_bytes(b"x")
    for step in (1, 2, 3):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000002", "step-000003"]
    assert not stale.exists() and latest_checkpoint(tmp_path).name == "step-000003"
    with pytest.raises(ValueError, match="keep must be >= 1"):
        _save(tmp_path, 4, keep=0)


def test_a_full_disk_names_itself_and_leaves_the_last_checkpoint(tmp_path, monkeypatch) -> None:
    """torch reports a full disk mid-save as "unexpected pos"; the save says what happened and cleans up."""
    _save(tmp_path, 1)

    def full_disk(obj, path) -> None:
        Path(path).write_bytes(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1037332352 vs 1037332240")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"could not write checkpoint step 2 .*unexpected pos.*GiB free.*"
                                        r"Last complete checkpoint: .*step-000001"):
        _save(tmp_path, 2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000001"]


def test_keep_checkpoints_zero_writes_none(tiny_model, tmp_path) -> None:
    from ahalab.rl.config import ZeroConfig, ZeroEval
    from ahalab.rl.trainer import train_zero
    from ahalab.runs import RunDir

    cfg = ZeroConfig(model=tiny_model, engine="hf", steps=2, prompts_per_step=2, generations=2, max_new_tokens=4,
                     train_size=20, rewards={"repetition": 1.0}, eval=ZeroEval(every=0), keep_checkpoints=0,
                     checkpoint_every=1, sample_every=0, out=str(tmp_path))
    train_zero(cfg, RunDir.create(cfg.out, "zero"))
    assert latest_checkpoint(tmp_path) is None and (tmp_path / "model").is_dir()


def test_resume_refuses_a_config_that_changes_results(tiny_model, tmp_path) -> None:
    from ahalab.config import load_config
    from ahalab.rl.config import ZeroConfig
    from ahalab.rl.trainer import ZeroTrainer, train_zero
    from ahalab.runs import RunDir

    base = [f"model={tiny_model}", "engine=hf", "steps=1", "prompts_per_step=2", "generations=2",
            "max_new_tokens=4", "train_size=20", "rewards={repetition: 1.0}", "eval.every=0", "sample_every=0",
            f"out={tmp_path}"]
    train_zero(load_config(ZeroConfig, None, base), RunDir.create(str(tmp_path), "zero"))
    config_before = (tmp_path / "config.yaml").read_text()
    changed = load_config(ZeroConfig, None, base + ["lr=0.5", "threads=1"])
    with pytest.raises(UserError, match=r"other settings \(lr\).*--allow-config-change"):
        ZeroTrainer(changed, RunDir(tmp_path), resume=True)
    assert (tmp_path / "config.yaml").read_text() == config_before  # a refused resume leaves the config alone
    neutral = load_config(ZeroConfig, None, base + ["threads=1", "checkpoint_every=5"])
    ZeroTrainer(neutral, RunDir(tmp_path), resume=True).engine.close()  # settings that cannot change results
    ZeroTrainer(changed, RunDir(tmp_path), resume=True, allow_config_change=True).engine.close()


def test_choices_are_checked_when_the_config_is_built() -> None:
    from ahalab.config import from_dict, load_config
    from ahalab.rl.config import ZeroConfig

    for key, value, allowed in (("scale_rewards", "sdt", "std, none"), ("baseline", "leave-one-out", "mean, rloo"),
                                ("loss", "ppo", "grpo, dr_grpo, dapo, rloo"), ("lr_schedule", "linear", "constant"),
                                ("engine", "tpu", "vllm, hf, auto")):
        with pytest.raises(UserError, match=f"{key}: '{value}' is not one of {allowed}"):
            from_dict(ZeroConfig, {key: value})
    with pytest.raises(UserError, match="scale_rewards: 'x' is not one of std, none"):
        ZeroConfig(scale_rewards="x")  # direct construction too
    with pytest.raises(UserError, match="unknown reward 'acuracy'"):
        load_config(ZeroConfig, None, ["rewards={acuracy: 1.0}"])
    with pytest.raises(UserError, match="unknown prompt format 'r2'"):
        load_config(ZeroConfig, None, ["format=r2"])


def test_trainer_threads_leave_a_vllm_bound_process_alone(monkeypatch) -> None:
    """After vLLM bound the threads (``torch.set_num_threads`` replaced by a warning), the trainer does not call it."""
    import torch

    from ahalab.training import loop

    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    loop._set_threads(torch.get_num_threads() + 1)
    assert calls == []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    loop._set_threads(3)
    assert calls == []


def test_adamw_8bit_keeps_8bit_moments_and_steps_like_adamw() -> None:
    """``optim: adamw_8bit``: bitsandbytes' AdamW with uint8 moments (2 bytes a parameter instead of 8), whose steps
    follow torch's AdamW (blockwise quantisation error only); adamw_8bit with FSDP is refused."""
    from ahalab.training.config import TrainingConfig
    from ahalab.training.loop import make_optimizer

    torch.manual_seed(0)
    start = torch.randn(256, 128)
    grads = [torch.randn(256, 128) for _ in range(5)]
    ends = {}
    for optim in ("adamw_torch", "adamw_8bit"):
        param = torch.nn.Parameter(start.clone())
        opt = make_optimizer([param], TrainingConfig(optim=optim, lr=1e-2, weight_decay=0.01))
        for g in grads:
            param.grad = g.clone()
            opt.step()
        ends[optim] = param.detach()
        if optim == "adamw_8bit":
            assert opt.state[param]["state1"].dtype == torch.uint8 == opt.state[param]["state2"].dtype
    moved = (ends["adamw_torch"] - start).abs().mean()
    assert (ends["adamw_8bit"] - ends["adamw_torch"]).abs().mean() < 0.05 * moved
    with pytest.raises(UserError, match="adamw_8bit"):
        TrainingConfig(optim="adamw_8bit", sharding="fsdp2").validate()
