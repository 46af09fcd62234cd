"""The settings every trainer shares (GRPO and SFT): model, optimiser, schedule, precision, LoRA, checkpoints, hub."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from ahalab.config import Config
from ahalab.errors import UserError
from ahalab.training.hub import HUB_KEYS, check_hub
from ahalab.training.schedule import Schedule

Sharding = Literal["none", "fsdp2"]
Optim = Literal["adamw_torch", "adamw_8bit"]


@dataclass
class TrainingConfig(Config):
    model: str = "smollm2-135m"
    lr: float = 1e-5
    lr_schedule: Schedule = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    optim: Optim = "adamw_torch"  # adamw_8bit: bitsandbytes' 8-bit AdamW moments, 0.8 GB less for the default model
    #                           (ahalab.training.loop.make_optimizer; docs/benchmarks.md "Memory")
    max_grad_norm: float = 1.0
    micro_batch_tokens: int = 2048  # tokens per forward
    gradient_checkpointing: bool = False  # recompute each decoder layer's activations in the backward: 2 GiB less
    #                           at the peak of a 64-sequence GRPO update for 12% more time (docs/benchmarks.md)
    bf16: bool | Literal["auto"] = "auto"  # bf16 autocast for the decoder (log-softmax and loss stay float32); auto: where
    #                           the CPU/GPU has native bf16 (see ahalab.precision)
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: int | None = None  # None: 2 x lora_r
    lora_targets: str | list[str] = "all-linear"  # or module names: q_proj,v_proj
    device: str | None = None  # None: cuda when available, else cpu
    num_processes: int = 1  # training processes on this node (data parallel, ahalab.training.distributed); > 1
    #                           without a launcher: the command launches itself on that many through accelerate
    sharding: Sharding = "none"  # fsdp2: parameters, gradients and optimiser state sharded across the processes
    #                           (FSDP2, ahalab.training.distributed; also set by accelerate's launcher's FSDP config)
    threads: int | None = None  # torch threads (None: torch's default)
    seed: int = 0
    checkpoint_every: int = 10  # steps; the last step always checkpoints (unless keep_checkpoints is 0)
    keep_checkpoints: int = 2  # newest checkpoints kept; 0: write none (a resume starts over)
    out: str | None = None
    report_to: list[str] = field(default_factory=list)  # experiment trackers: tensorboard, wandb, mlflow, trackio
    #                           (none: no tracker); each metrics row goes to them too (ahalab.training.trackers)
    # the hub (ahalab.training.hub; token: $HF_TOKEN or `hf auth login`, never a config key: configs are written out)
    push_to_hub: bool = False  # at the end, upload model/ (model card included) to the hub; a failed push keeps the
    #                           run, is recorded in summary.json ("hub") and makes the command exit non-zero
    hub_model_id: str | None = None  # "name" (your namespace) or "owner/name"; None: the run directory's name
    hub_private_repo: bool | None = None  # create the repo private; None: the namespace's default

    NEUTRAL: ClassVar[frozenset[str]] = frozenset({"out", "threads", "sharding", "gradient_checkpointing",
                                                   "checkpoint_every", "keep_checkpoints", "report_to"}) | HUB_KEYS

    def validate(self) -> None:
        from ahalab.training.trackers import check_report_to

        check_report_to(self.report_to)
        check_hub(self.push_to_hub, self.hub_model_id)
        if self.micro_batch_tokens < 1:
            raise UserError(f"micro_batch_tokens must be >= 1 (got {self.micro_batch_tokens})")
        if self.sharding != "none" and self.optim != "adamw_torch":
            raise UserError(f"optim {self.optim} with sharding {self.sharding} is not supported: bitsandbytes' "
                            "optimisers take whole tensors; use optim: adamw_torch")
        if self.sharding != "none" and self.lora_r:
            raise UserError(f"sharding {self.sharding} with LoRA is not implemented; train LoRA data parallel "
                            "(sharding: none): its trainable weights are small")
        targets = self.lora_targets.split(",") if isinstance(self.lora_targets, str) else self.lora_targets
        if self.lora_r and "lm_head" in targets:
            raise UserError("lora_targets: an adapter on lm_head is not supported (the loss reads the head's weight, "
                            "ahalab.models.logprobs); adapt the decoder's layers (all-linear leaves the head out)")
        if self.num_processes < 1:
            raise UserError(f"num_processes must be >= 1 (got {self.num_processes})")
        for name in ("warmup_steps", "checkpoint_every", "keep_checkpoints", "lora_r"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise UserError(f"lr and max_grad_norm must be > 0 (got {self.lr}, {self.max_grad_norm})")
