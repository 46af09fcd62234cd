"""Many processes (ahalab.training.distributed): one step on 2 gloo processes equals one process on the whole batch
(GRPO and SFT, loss, gradient norm and parameters to 1e-5 in float32), data parallel and sharded (FSDP2, each rank
holding half the parameters), rank 0 alone writes the run directory, and
a 2-process run killed after a checkpoint resumes on 2 processes exactly; another process count is refused unless
allowed, and then continues with the same prompts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ahalab.errors import UserError

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


def _worker(mode: str, model: str, out: Path, processes: int, sharding: str = "none") -> None:
    """tests/distributed_worker.py alone (the one-process path: no launcher, no process group) or on 2 gloo ranks."""
    script = [str(TESTS / "distributed_worker.py"), mode, model, str(out), sharding]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    done = subprocess.run([sys.executable, *(launcher if processes > 1 else []), *script], env=ENV, capture_output=True,
                          text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def alone(tiny_model, tmp_path_factory):
    """The one-process worker's output directory for a mode (run once per module)."""
    root, done = tmp_path_factory.mktemp("alone"), set()

    def get(mode: str) -> Path:
        if mode not in done:
            _worker(mode, tiny_model, root / mode, 1)
            done.add(mode)
        return root / mode
    return get


def _compare(one: Path, two: Path, variants: list[str], sharding: str, loss_rel: float = 1e-5) -> None:
    for name in variants:
        alone = torch.load(one / f"{name}-rank0.pt", weights_only=False)
        assert alone["world"] == 1
        for rank in (0, 1):
            shared = torch.load(two / f"{name}-rank{rank}.pt", weights_only=False)
            assert shared["world"] == 2
            assert shared["held"] == 1 if sharding == "none" else 0.4 < shared["held"] < 0.6, (name, shared["held"])
            a, b = alone["metrics"], shared["metrics"]  # every rank reports the whole step's metrics
            for key in a:
                if not key.startswith("time_") and key != "tokens_per_s":
                    assert b[key] == pytest.approx(a[key], rel=loss_rel, abs=1e-7), (name, rank, key)
            for key, p in alone["params"].items():
                torch.testing.assert_close(shared["params"][key], p, atol=1e-5, rtol=0, msg=f"{name} {key}")


SHARDINGS = pytest.mark.parametrize("sharding", ["none", "fsdp2"])


@pytest.mark.multiprocess
@SHARDINGS
def test_a_grpo_step_on_two_processes_is_the_one_process_step(tiny_model, alone, tmp_path, sharding):
    """5 prompts (3 + 2 per rank), fixed completions so that only the distribution differs; "grpo" (per-sequence
    means over the whole batch's sequences) and "dapo" (token mean over the whole batch's tokens, KL to the
    reference, 2 passes, dynamic sampling dropping flat groups and refilling across ranks). FSDP2: the ranks run
    different numbers of forwards (3 and 2 prompts' micro-batches), and the step is still the same."""
    one = alone("grpo")
    _worker("grpo", tiny_model, tmp_path / "two", 2, sharding)
    _compare(one, tmp_path / "two", ["grpo", "dapo"], sharding)
    dapo = torch.load(one / "dapo-rank0.pt", weights_only=False)["metrics"]
    assert dapo["groups_sampled"] > dapo["groups_kept"] == 5 and dapo["loss"] != 0  # refilled; a loss that shows
    for name in ("grpo", "dapo"):  # rank 0 wrote the run directory once: every group's samples, no rank's twice
        one, two = alone("grpo") / name, tmp_path / "two" / name
        assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
        rows = [json.loads(line) for line in (two / "samples.jsonl").read_text().splitlines()]
        assert rows == [json.loads(line) for line in (one / "samples.jsonl").read_text().splitlines()]


@pytest.mark.multiprocess
@SHARDINGS
def test_an_sft_step_on_two_processes_is_the_one_process_step(tiny_model, alone, tmp_path, sharding):
    """7 examples (4 + 3 per rank): one example per forward, so the forwards are the same either way and loss,
    gradient and parameters agree to 1e-5; in the default layout (each rank's own shared prefix) the forwards
    differ, and so do the float32 roundings (the loss still agrees to 1e-5, the gradient norm to 1e-4)."""
    _worker("sft", tiny_model, tmp_path / "two", 2, sharding)
    _compare(alone("sft"), tmp_path / "two", ["alone"], sharding)
    a = torch.load(alone("sft") / "prefix-rank0.pt", weights_only=False)["metrics"]
    b = torch.load(tmp_path / "two" / "prefix-rank0.pt", weights_only=False)["metrics"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert b["trained_tokens"] == a["trained_tokens"]


# --- resume across processes -------------------------------------------------------------------------------


def _zero(model: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ahalab zero` on 2 processes (launched by the command itself, --num-processes), HF engine sampling at
    temperature 1, a reward with noise from each rank's python RNG, held-out eval split between the ranks."""
    cmd = [sys.executable, "-m", "ahalab", "zero", "--model", model, "--engine", "hf", "--out", str(out),
           "--steps", "3", "--prompts-per-step", "3", "--generations", "4", "--max-new-tokens", "8", "--lr", "0.01",
           "--threads", "1", "--seed", "3", "--num-processes", "2", "train_size=40", "checkpoint_every=2",
           "sample_every=1", "sample_groups=0", "eval.every=2", "eval.limit=3", "eval.max_tokens=8",
           "rewards={'distributed_worker:noisy7': 1.0}", *extra]
    return subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=240)


def _series(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time_")} for r in rows]


def _samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_runs(tiny_model, tmp_path_factory):
    """A 2-process run straight through, and one that crashed on both ranks at step 3 (after the step-2 checkpoint)."""
    root = tmp_path_factory.mktemp("resume")
    full = _zero(tiny_model, root / "full")
    assert full.returncode == 0, full.stderr[-3000:]
    crashed = _zero(tiny_model, root / "crashed", env={"CRASH_AT_STEP": "3"})
    assert crashed.returncode != 0 and "crash at step 3" in crashed.stderr
    assert not (root / "crashed" / "summary.json").exists()
    assert [p.name for p in (root / "crashed" / "checkpoints").iterdir()] == ["step-000002"]
    return root


@pytest.mark.multiprocess
def test_a_two_process_run_resumes_on_two_processes_exactly(tiny_model, two_process_runs):
    full, resumed = two_process_runs / "full", two_process_runs / "resumed"
    shutil.copytree(two_process_runs / "crashed", resumed)
    state = torch.load(resumed / "checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert len(state["rng"]) == 2  # each rank's RNG states
    done = _zero(tiny_model, resumed, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from" in done.stdout and done.stdout.count("run directory:") == 1  # rank 0 reports, once
    assert [r["step"] for r in _series(resumed)] == list(range(4))
    assert _series(resumed) == _series(full)  # rewards carry each rank's RNG noise: restored per rank
    assert _samples(resumed) == _samples(full)
    assert json.loads((full / "summary.json").read_text())["steps"] == 3


@pytest.mark.multiprocess
def test_another_process_count_is_refused_unless_allowed_then_the_prompts_go_on(tiny_model, two_process_runs):
    """GRPO: each rank samples its share with its own seeds, so another count changes the completions; allowed,
    the data order is global and the resumed run trains on the prompts the 2-process run would have."""
    other = two_process_runs / "other"
    shutil.copytree(two_process_runs / "crashed", other)
    refused = _zero(tiny_model, other, "--resume", "--num-processes", "1")
    assert refused.returncode == 2 and "num_processes" in refused.stderr and "--allow-config-change" in refused.stderr
    done = _zero(tiny_model, other, "--resume", "--num-processes", "1", "--allow-config-change")
    assert done.returncode == 0, done.stderr[-3000:]
    full = two_process_runs / "full"
    assert [r["data_position"] for r in _series(other) if r["step"]] == [r["data_position"] for r in _series(full)
                                                                        if r["step"]]
    assert [s["question"] for s in _samples(other)] == [s["question"] for s in _samples(full)]


# --- one process: every helper is the identity --------------------------------------------------------------


def test_one_process_shares_everything_and_reduces_nothing():
    from ahalab.training.distributed import Distributed

    dist = Distributed("cpu", "fsdp2")  # one process: nothing to shard either
    assert (dist.rank, dist.world, dist.main, dist.device) == (0, 1, True, torch.device("cpu"))
    items = [3, 1, 2]
    assert dist.share(items) is items and dist.gather(items) is items and dist.broadcast(items) is items
    assert dist.reduce(0.1, 7) == (0.1, 7) and dist.reduce(2.5, op="max") == (2.5,)
    p, model = torch.nn.Parameter(torch.ones(2)), torch.nn.Linear(2, 2)
    dist.shard(model), dist.unshard(model), dist.sync_gradients(model, [p])
    assert p.grad is None and type(model.weight) is torch.nn.Parameter
    assert dist.full(items) is items and dist.weights(model) is None and dist.optimizer_state(None) is None


def test_accelerates_one_process_cpu_launch_of_n_processes_is_refused(monkeypatch):
    """Without a GPU or a config, `accelerate launch --num_processes 2` starts one process: refused, not run."""
    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils.launch import prepare_simple_launcher_cmd_env

    from ahalab.training.distributed import launched_world

    for key in ("WORLD_SIZE", "MASTER_ADDR", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(key, raising=False)
    for n, refused in ((1, False), (2, True)):
        args = launch_command_parser().parse_args(["--num_processes", str(n), "--mixed_precision", "no",
                                                   "--num_machines", "1", "--dynamo_backend", "no", "-m", "ahalab",
                                                   "zero"])
        args.use_cpu = args.cpu  # as launch_command fills it in before choosing the simple launcher
        with monkeypatch.context() as m:
            for key, value in prepare_simple_launcher_cmd_env(args)[1].items():
                m.setenv(key, value)
            if refused:
                with pytest.raises(UserError, match="ddp_cpu.yaml"):
                    launched_world()
            else:
                assert launched_world() == 1
            m.setenv("WORLD_SIZE", "2")  # torchrun's launcher (what ddp_cpu.yaml selects) says how many
            assert launched_world() == 2


def test_a_checkpoint_restores_this_ranks_rng_and_predates_num_processes(tmp_path):
    import random

    from ahalab.config import to_dict
    from ahalab.rl.config import ZeroConfig
    from ahalab.training.checkpoint import check_resumable, load_state, rng_state, save_checkpoint

    model = torch.nn.Linear(2, 2)
    model.save_pretrained = lambda path, state_dict=None: Path(path).mkdir(parents=True)
    tok = type("Tok", (), {"save_pretrained": lambda self, path: None})()
    opt = torch.optim.AdamW(model.parameters())
    states, expected = [], []
    for seed in (1, 2):  # two ranks' states, and what each draws next
        random.seed(seed), torch.manual_seed(seed)
        states.append(rng_state())
        expected.append((random.random(), torch.rand(1)))
    cfg = ZeroConfig()
    config = {k: v for k, v in to_dict(cfg).items() if k != "num_processes"}  # a checkpoint from before the key
    path = save_checkpoint(tmp_path, 1, model, tok, opt, 8, keep=1, config=config, rng=states)
    for rank in (1, 0):
        load_state(path, opt, rank)
        assert (random.random(), torch.rand(1)) == expected[rank]
    check_resumable(path, cfg)  # the missing setting counts as its default, 1
    with pytest.raises(UserError, match="num_processes"):
        check_resumable(path, ZeroConfig(num_processes=2))


def test_num_processes_is_checked_and_the_package_runs_as_a_module():
    from ahalab.sft.config import SFTConfig

    with pytest.raises(UserError, match="num_processes"):
        SFTConfig(train=["x.jsonl"], num_processes=0).validate()
    done = subprocess.run([sys.executable, "-m", "ahalab", "sft", "--help"], env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "--num-processes" in done.stdout


# --- FSDP2 checkpoints --------------------------------------------------------------------------------------


def _sft(model: str, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ahalab", "sft", "--model", model, "--train", str(data), "--out", str(out),
           "batch_size=4", "max_steps=3", "checkpoint_every=1", "keep_checkpoints=3", "threads=1", "lr=1e-3",
           "evals=[]", *extra]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.multiprocess
def test_an_fsdp2_run_saves_whole_weights_and_resumes_sharded_or_not(tiny_model, alone, tmp_path):
    """`ahalab sft --num-processes 2 sharding=fsdp2`: checkpoints and model/ hold the whole weights (gathered, the
    tied embedding once, as an unsharded run writes them) and the optimiser state laid out as one process's, so a
    resume from step 2 on 2 sharded processes redoes step 3 exactly, and on one unsharded process to float32
    rounding of the other layout."""
    from safetensors.torch import load_file

    data = alone("sft") / "sft.jsonl"
    full = tmp_path / "full"
    _sft(tiny_model, data, full, "--num-processes", "2", "sharding=fsdp2")
    weights = load_file(full / "model" / "model.safetensors")
    assert sorted(weights) == sorted(load_file(Path(tiny_model) / "model.safetensors"))
    for name, extra, tol in [("sharded", ("--num-processes", "2"), 1e-6),
                             ("alone", ("num_processes=1", "sharding=none"), 1e-4)]:
        run = tmp_path / name
        shutil.copytree(full, run)
        shutil.rmtree(run / "checkpoints" / "step-000003")
        assert "resuming from" in _sft(tiny_model, data, run, "--resume", *extra).stdout
        a, b = _series(full)[-1], _series(run)[-1]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=tol)
        for key, w in load_file(run / "model" / "model.safetensors").items():
            torch.testing.assert_close(w, weights[key], atol=tol, rtol=0, msg=f"{name} {key}")


def test_colocated_vllm_on_many_cpu_ranks_defaults_to_float32():
    """bf16 vLLM engines on 2 CPU ranks collapsed zero_quick (docs/scaling.md): there the unset engine_dtype is
    float32; one process, a GPU, a server or the HF engine keep the engine's default."""
    from ahalab.rl.trainer import colocated_cpu_dtype

    assert colocated_cpu_dtype("vllm", "colocate", 2, "cpu") == "float32"
    for args in [("vllm", "colocate", 1, "cpu"), ("vllm", "colocate", 2, "cuda"), ("vllm", "server", 2, "cpu"),
                 ("hf", "colocate", 2, "cpu")]:
        assert colocated_cpu_dtype(*args) is None, args
