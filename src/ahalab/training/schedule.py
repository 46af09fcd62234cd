"""Learning-rate schedules: linear warm-up, then constant or cosine decay."""
from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "cosine"]


def lr_at(step: int, total: int, lr: float, schedule: Schedule = "constant", warmup: int = 0) -> float:
    """The learning rate of optimiser step ``step`` (1-based) of ``total``: warm-up, then constant or cosine
    decay towards 0 at the last step."""
    if step <= warmup:
        return lr * step / warmup
    if schedule == "constant":
        return lr
    progress = (step - warmup - 1) / max(total - warmup, 1)
    return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
