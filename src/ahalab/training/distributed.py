"""Many training processes on one node, through accelerate: data parallelism (and FSDP2) written once for GRPO and SFT.

    accelerate launch --multi_gpu --num_processes 2 -m ahalab sft ...   # or torchrun --nproc_per_node 2 -m ahalab ...
    ahalab sft --num-processes 2 ...                                    # the same, launched by ahalab itself

Every process (rank) loads the same model and takes the same global data order; each step, every rank works
on its contiguous share of the step's prompts or examples (``share``; a GRPO group never splits), losses are
normalised by the step's global counts, and the gradients are summed across ranks once per optimiser step
(``sync_gradients``), so every rank takes the same AdamW step as one process on the whole batch would.
accelerate's ``Accelerator`` provides the process group (gloo on CPU, NCCL on GPU), each rank's device, the
split and the collectives; the model is not wrapped in DDP: the loop's forwards call the decoder and the LM
head directly (a shared prompt's KV cache, ``ahalab.models.prefix``) and backpropagate in several pieces per
step, which never run DDP's forward hooks, so gradients are reduced explicitly, one all-reduce per bucket.

On CPU each rank is bound to its own share of the node's cores (``bind_cores``: rank r of N on C cores takes cores
r*C/N .. (r+1)*C/N - 1, or its entry of ``VLLM_CPU_OMP_THREADS_BIND``), training threads and its vLLM engine alike,
so that ranks never compete for a core.

Sharded (``sharding: fsdp2``, or accelerate's launcher with recipes/accelerate/fsdp2.yaml): torch's FSDP2
(``fully_shard``, per decoder layer and the root) keeps each rank's shard of the parameters, gradients and AdamW
state. The ranks run different numbers of forwards and backwards (their shares differ; a rank may have none), so
no collective may hang on a forward: ``unshard`` gathers all parameters once at the start of a step's forwards,
gradients accumulate unreduced, and ``sync_gradients`` reduce-scatters them once (a synced zero-weighted backward
on every rank) and reshards. So a rank holds whole parameters and gradients during the update and only its shard
otherwise (during rollouts, between steps); the optimiser state stays sharded. Checkpoints and the final model
are gathered whole (``weights``, ``optimizer_state``: the layout of one process, so a run resumes sharded or not).
DeepSpeed is refused (``launcher_sharding``).

Rank 0 alone writes the run directory (config, metrics, samples, checkpoints, model, reports, hub push); the
other ranks write nothing there. With one process every helper here is the identity: nothing is reduced,
nothing changes.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch

from ahalab.errors import UserError
from ahalab.training.config import Sharding

if TYPE_CHECKING:
    from ahalab.runs import RunDir
    from ahalab.training.config import TrainingConfig

log = logging.getLogger(__name__)
T = TypeVar("T")
BUCKET = 1 << 24  # gradient elements per all-reduce
RELAUNCHED = "AHALAB_RELAUNCHED"  # set for the processes `--num-processes` launched (their parent reports)


def launched_world() -> int:
    """Processes a launcher (torchrun, accelerate launch) started this one among; 1 without a launcher."""
    if "WORLD_SIZE" not in os.environ and "ACCELERATE_USE_CPU" in os.environ and "MASTER_ADDR" in os.environ:
        # accelerate's simple launcher (no GPU, no config) sets MASTER_ADDR only when asked for several processes,
        # then starts one: fail before a run trains on one process thinking it is on N
        raise UserError("`accelerate launch --num_processes N` without a GPU or a config file starts ONE process "
                        "(accelerate's CPU launcher). Start N CPU processes with `accelerate launch --config_file "
                        "recipes/accelerate/ddp_cpu.yaml --num_processes N -m ahalab ...` (or --multi_gpu), or "
                        "`ahalab zero|sft ... --num-processes N`")
    return int(os.environ.get("WORLD_SIZE", "1"))


class Distributed:
    """This process's place among the training processes (accelerate's ``Accelerator``) and the collectives the
    training loop needs; with one process each of them returns its input. ``sharding`` "fsdp2" (or a launcher's
    FSDP config) shards the model (``shard``), with many processes only."""

    def __init__(self, device: str | None = None, sharding: Sharding = "none") -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedType

        cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
        self.accelerator = Accelerator(cpu=cpu)  # cpu: accelerate only makes a gloo group when told so
        kind = self.accelerator.distributed_type
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        if self.world != launched_world():
            raise UserError(f"launched as one of {launched_world()} processes but accelerate set up {self.world}")
        self.fsdp = launcher_sharding(sharding) == "fsdp2" and self.world > 1  # one process: nothing to shard
        if kind not in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU, DistributedType.FSDP):
            raise UserError(f"accelerate is set up for {kind.value}; ahalab's training loop runs data parallel or "
                            "FSDP2 (recipes/accelerate/), see docs/scaling.md")
        if self.world > 1 and device not in (None, "cpu", "cuda"):
            raise UserError(f"device {device!r}: with {self.world} processes each rank takes its own device "
                            "(device: cpu, cuda or unset)")
        # one process: the device as before accelerate (cuda when available); many: each rank's (cuda:<local rank>)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")) if self.world == 1 \
            else self.accelerator.device
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
        self.cores = rank_cores(self.accelerator.local_process_index, local_world) \
            if self.world > 1 and self.device.type == "cpu" else None
        if self.world > 1:
            log.info("rank %d of %d on %s, %s backend%s%s", self.rank, self.world, self.device,
                     torch.distributed.get_backend(), f", cores {self.cores}" if self.cores else "",
                     ", FSDP2 sharding" if self.fsdp else "")

    def share(self, items: list[T]) -> list[T]:
        """This rank's contiguous part of ``items`` (the first ranks take one more when they do not divide)."""
        if self.world == 1:
            return items
        with self.accelerator.split_between_processes(items) as part:
            return list(part)

    def gather(self, items: list[T]) -> list[T]:
        """Every rank's ``items``, concatenated in rank order, on every rank."""
        if self.world == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)  # all_gather_object, flattened

    def reduce(self, *values: float, op: Literal["sum", "max"] = "sum") -> tuple[Any, ...]:
        """The sums (or maxima) of ``values`` over the ranks, each returned as the type it came in (ints stay ints)."""
        if self.world == 1:
            return values
        from accelerate.utils import reduce

        total = reduce(torch.tensor(values, dtype=torch.float64, device=self.device), op).tolist()
        return tuple(type(v)(t) for v, t in zip(values, total))

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj])[0]

    def barrier(self) -> None:
        """Wait until every rank is here."""
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def close(self) -> None:
        """Wait until every rank is done (rank 0 writes the run's last files), then leave the process group: a rank
        that exits with its gloo group open can abort ("terminate called without an active exception"). A colocated
        vLLM engine (``external_launcher``) ends the group when it closes: then there is nothing left to do."""
        if self.world > 1 and torch.distributed.is_initialized():
            self.barrier()
            self.accelerator.end_training()

    def shard(self, model: torch.nn.Module) -> None:
        """FSDP2 (torch's ``fully_shard``) on ``model``: each decoder layer (the model's ``_no_split_modules``) one
        unit, the rest (embeddings, final norm, LM head: a tied weight once) the root's. The loop calls the decoder
        directly, never ``model.forward``, and reads the LM head's weight (``token_logprobs``); the decoder and the
        LM head (``sync_gradients``) enter through the root's forward hooks (``register_fsdp_forward_method``), which
        every backward then finishes. Parameters stay sharded between steps and are gathered for a step by
        ``unshard``; gradients are summed (divide factor 1, not FSDP's mean: losses are normalised by the whole step's
        counts). No-op without FSDP."""
        if not self.fsdp:
            return
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        blocks = set(getattr(model, "_no_split_modules", None) or [])
        for module in [m for m in model.modules() if type(m).__name__ in blocks]:
            fully_shard(module, reshard_after_forward=False)
        fully_shard(model, reshard_after_forward=False)
        for module in _fsdp_modules(model):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain sum: gloo has no pre-multiplied one
        for name, part in (("_decoder_forward", model.get_decoder()), ("_head_forward", model.get_output_embeddings())):
            setattr(model, name, part.forward)
            register_fsdp_forward_method(model, name)
            part.forward = getattr(model, name)

    def unshard(self, model: torch.nn.Module) -> None:
        """FSDP: gather every unit's parameters for the forwards and backwards up to the next ``sync_gradients``, on
        every rank at once (ranks run different numbers of forwards, so no collective may hang on one); gradients
        then accumulate unreduced. The loop's direct decoder and LM-head calls see plain tensors. No-op otherwise."""
        if not self.fsdp:
            return
        model.set_requires_gradient_sync(False)
        model.set_reshard_after_backward(False)
        for module in _fsdp_modules(model):
            module.unshard()

    def sync_gradients(self, model: torch.nn.Module, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over the ranks (a rank that ran no backward adds zeros); afterwards every
        rank holds the whole step's gradient: FSDP, its shard of it (one reduce-scatter per unit, then the
        parameters are resharded); otherwise all of it (all-reduce in buckets of ``BUCKET`` elements)."""
        if self.world == 1:
            return
        if self.fsdp:  # FSDP reduces in a synced backward: one zero-weighted token, on every rank
            model.set_requires_gradient_sync(True)
            model.set_reshard_after_backward(True)
            hidden = model.get_decoder()(input_ids=torch.zeros(1, 1, dtype=torch.long, device=self.device))
            (model.get_output_embeddings()(hidden.last_hidden_state).sum() * 0).backward()
            return
        from accelerate.utils import reduce

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        bucket: list[torch.Tensor] = []
        for i, g in enumerate(grads):
            bucket.append(g)
            if i == len(grads) - 1 or sum(b.numel() for b in bucket) + grads[i + 1].numel() > BUCKET:
                flat = reduce(torch.cat([b.reshape(-1) for b in bucket]), "sum")  # [n]
                for b, part in zip(bucket, flat.split([b.numel() for b in bucket])):
                    b.copy_(part.view_as(b))
                bucket = []
        for p, g in zip(params, grads):
            p.grad = g

    def full(self, obj: T) -> T:
        """``obj`` (a tensor, or dicts and lists of them) with every sharded tensor (DTensor) gathered whole, on
        every rank (collective: every rank passes the same structure); unchanged without FSDP."""
        if not self.fsdp:
            return obj
        from torch.distributed.tensor import DTensor

        if isinstance(obj, DTensor):
            return obj.full_tensor()  # type: ignore[return-value]
        if isinstance(obj, dict):
            return type(obj)((k, self.full(v)) for k, v in obj.items())  # type: ignore[return-value]
        if isinstance(obj, list):
            return [self.full(v) for v in obj]  # type: ignore[return-value]
        return obj

    def weights(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """FSDP: the model's full state dict, gathered on every rank (to save it), a tied weight under its first name
        only (as ``save_pretrained`` writes it); None otherwise (the model's own)."""
        if not self.fsdp:
            return None
        tied = set(dict(model.named_parameters(remove_duplicate=False))) - set(dict(model.named_parameters()))
        return self.full({k: v for k, v in model.state_dict().items() if k not in tied})

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """FSDP: the optimiser's state dict with its sharded moments gathered whole, on every rank, laid out as one
        process's (a checkpoint resumes sharded or not); None otherwise (the optimiser's own)."""
        return self.full(optimizer.state_dict()) if self.fsdp else None

    def place_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
        """A whole optimiser state dict (a checkpoint's) cut to this rank's shards of ``optimizer``'s parameters."""
        if not self.fsdp:
            return state
        from torch.distributed.tensor import DTensor, distribute_tensor

        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, moments in state["state"].items():
            p = params[i]
            if isinstance(p, DTensor):
                moments.update({k: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                                for k, v in moments.items() if v.shape == p.shape})
        return state



def launcher_sharding(sharding: Sharding) -> Sharding:
    """``sharding``, or "fsdp2" where accelerate's launcher asked for FSDP (its config's ``fsdp_config``, passed in the
    environment; on CPU its ``Accelerator`` would ignore it and run DDP). DeepSpeed and FSDP settings ahalab does
    not implement are refused, naming what to use instead."""
    env = os.environ
    if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        raise UserError("accelerate is set up for DeepSpeed; ahalab's training loop does not run under DeepSpeed's "
                        "engine (it owns backward, the optimiser step and gradient accumulation, which the loop does "
                        "itself): shard with FSDP2 (recipes/accelerate/fsdp2.yaml or sharding=fsdp2), see "
                        "docs/scaling.md")
    if env.get("ACCELERATE_USE_FSDP", "").lower() != "true":
        return sharding
    if env.get("FSDP_VERSION", "1") != "2":
        raise UserError("accelerate is set up for FSDP version 1; ahalab shards with FSDP2 only (fsdp_version: 2, "
                        "recipes/accelerate/fsdp2.yaml)")
    asked = [k for k in ("FSDP_OFFLOAD_PARAMS", "FSDP_ACTIVATION_CHECKPOINTING") if env.get(k, "").lower() == "true"]
    if asked:
        raise UserError(f"{', '.join(k.lower() for k in asked)}: not implemented by ahalab's FSDP2 sharding (set them "
                        "false, recipes/accelerate/fsdp2.yaml)")
    return "fsdp2"


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@functools.cache
def rank_cores(local_rank: int, local_world: int) -> list[int] | None:
    """``bind_cores`` once per process (a second trainer in it keeps the binding: the first rewrote the environment
    that ``bind_cores`` reads)."""
    return bind_cores(local_rank, local_world)


def bind_cores(local_rank: int, local_world: int) -> list[int] | None:
    """Bind this process (its threads now, and so the threads they start) to its share of the cores it may use and
    return them: entry ``local_rank`` of ``VLLM_CPU_OMP_THREADS_BIND`` when that is a list per rank ("0-3|4-7", vLLM's
    form), else the ``local_rank``-th of ``local_world`` contiguous slices; None with the binding off
    (``VLLM_CPU_OMP_THREADS_BIND=nobind``) or fewer cores than ranks. ``VLLM_CPU_OMP_THREADS_BIND`` and
    ``OMP_NUM_THREADS`` are then this rank's: an engine started later sees them (vLLM's in-process CPU engine
    keeps the process's binding; its worker processes, where it starts them, bind to that list)."""
    spec = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
    allowed = sorted(os.sched_getaffinity(0))
    if spec == "nobind" or (spec == "auto" and len(allowed) < local_world):
        log.warning("rank %d: not binding cores (VLLM_CPU_OMP_THREADS_BIND=%s, %d cores for %d ranks)", local_rank,
                    spec, len(allowed), local_world)
        return None
    if spec == "auto":
        cores = allowed[local_rank * len(allowed) // local_world:(local_rank + 1) * len(allowed) // local_world]
    else:
        lists = spec.split("|")
        if len(lists) != local_world:
            raise UserError(f"VLLM_CPU_OMP_THREADS_BIND={spec!r} names {len(lists)} core lists for {local_world} ranks")
        cores = [c for part in lists[local_rank].split(",") for c in _core_range(part)]
    for thread in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(thread), cores)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
    os.environ["OMP_NUM_THREADS"] = str(len(cores))
    return cores


def _core_range(part: str) -> range:
    """"4-7" -> 4..7, "5" -> 5."""
    lo, _, hi = part.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def train_run(command: str, cfg: TrainingConfig, resume: bool, allow_config_change: bool,
              train: Callable[[RunDir], dict[str, Any] | None]) -> tuple[dict[str, Any], Path] | None:
    """``train`` the run of `ahalab COMMAND` (``cfg.out``; ``zero``, ``sft``, also their recipe stages).

    Without a launcher and with ``cfg.num_processes`` > 1, launch `ahalab COMMAND` on that many processes
    through accelerate's launcher on this resolved config and return the summary their rank 0 wrote. Otherwise
    train in this process (one of a launched run's ranks, or the only process). Returns (summary, run directory)
    where they are to be reported: None on ranks other than 0 and in the processes a parent launched."""
    from ahalab.runs import RunDir

    if cfg.num_processes > 1 and launched_world() == 1:
        return launch(command, cfg, resume, allow_config_change)
    dist = Distributed(cfg.device, cfg.sharding)
    if dist.world > 1 and cfg.num_processes not in (1, dist.world):
        raise UserError(f"num_processes is {cfg.num_processes} but the launcher started {dist.world} processes")
    cfg.num_processes = dist.world
    cfg.sharding = launcher_sharding(cfg.sharding)  # as the run's config.yaml records it
    run = RunDir.create(cfg.out, command) if dist.main else None
    path = dist.broadcast(str(run.path) if run else None)  # the directory rank 0 named (a timestamp by default)
    cfg.out = cfg.out or (path if dist.world > 1 else None)
    summary = train(run or RunDir(path))
    dist.close()
    return (summary, run.path) if run and summary is not None and not os.environ.get(RELAUNCHED) else None


def launch(command: str, cfg: TrainingConfig, resume: bool, allow_config_change: bool) -> tuple[dict[str, Any], Path]:
    """Run `ahalab COMMAND` on ``cfg.num_processes`` processes of this node (accelerate's launcher, torchrun
    underneath) on ``cfg`` as resolved here, written to the run's config.yaml; returns the summary they wrote and the
    run directory."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from ahalab.config import to_dict
    from ahalab.runs import RunDir
    from ahalab.training.checkpoint import check_resumable, latest_checkpoint

    run = RunDir.create(cfg.out, command)
    ckpt = latest_checkpoint(run.path) if resume else None
    if ckpt is not None and not allow_config_change:
        check_resumable(ckpt, cfg)  # here, before config.yaml changes, as the trainer would
    run.write_config(to_dict(cfg))  # the ranks read exactly this config
    args = [command, "--out", str(run.path), *(["--resume"] if resume else ["--config", str(run.file("config.yaml"))]),
            *(["--allow-config-change"] if allow_config_change else [])]
    with socket.socket() as s:  # a free port for the ranks' rendezvous (runs side by side do not collide)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --multi_gpu selects accelerate's torchrun launcher on CPUs too (its --cpu launcher starts one process);
    # each rank then makes a gloo group on CPU, NCCL on GPUs (Distributed)
    launcher = launch_command_parser().parse_args(
        ["--multi_gpu", "--num_processes", str(cfg.num_processes), "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "ahalab", *args])
    os.environ[RELAUNCHED] = "1"
    try:
        launch_command(launcher)
    except ChildFailedError as e:
        exits = ", ".join(f"rank {rank}: exit {f.exitcode}" for rank, f in e.failures.items())
        raise UserError(f"the {cfg.num_processes} training processes of {run.path} stopped ({exits}); their messages "
                        "are above") from None
    finally:
        del os.environ[RELAUNCHED]
    return json.loads(run.file("summary.json").read_text()), run.path
