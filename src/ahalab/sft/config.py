"""SFTConfig: every setting of an `ahalab sft` run."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ahalab.errors import UserError
from ahalab.training.config import TrainingConfig
from ahalab.training.schedule import Schedule


@dataclass
class SFTConfig(TrainingConfig):
    train: list[str] = field(default_factory=list)  # dataset JSONL files (chat "messages" rows)
    epochs: float = 2.0
    max_steps: int | None = None  # stop earlier than the epochs say
    batch_size: int = 16  # examples per optimiser step
    lr: float = 5e-5
    lr_schedule: Schedule = "cosine"
    max_seq_len: int = 1024  # longer examples are left out (and counted)
    packing: bool = True
    shared_prefix: bool = True  # run the prefix all of a step's examples share (system prompt) once per step,
    #                             the rest in padded micro-batches (packing applies to steps without one)
    micro_batch_tokens: int = 4096  # tokens per forward: a packed row, or a padded batch
    checkpoint_every: int = 50
    evals: list[dict[str, Any]] = field(default_factory=list)  # ahalab eval settings each, plus "name"

    # the step's gradient and data order do not depend on how many processes share the step
    NEUTRAL: ClassVar[frozenset[str]] = TrainingConfig.NEUTRAL | {"evals", "num_processes"}

    def validate(self) -> None:
        super().validate()
        if not self.train:
            raise UserError("sft needs training data: train: [file.jsonl, ...] (or --train FILE)")
        if self.batch_size < 1 or self.epochs <= 0 or self.max_seq_len < 2:
            raise UserError("sft needs batch_size >= 1, epochs > 0 and max_seq_len >= 2")
        from ahalab.config import from_dict
        from ahalab.eval.evaluate import EvalConfig

        for i, spec in enumerate(self.evals):  # checked now, not after the training they follow
            if not isinstance(spec, dict):
                raise UserError(f"evals[{i}]: an eval set is a mapping of `ahalab eval` settings plus name")
            from_dict(EvalConfig, {k: v for k, v in spec.items() if k != "name"}, f"evals[{i}]")
