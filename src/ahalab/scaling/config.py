"""`ahalab scale` settings: the ones every mode shares, and one small config class per mode.

``strategy`` picks the mode and so the class (``config_class``); a key another mode uses is an error
naming the mode's own keys.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ahalab.errors import UserError
from ahalab.sampling import SamplingConfig

Mode = Literal["sweep", "beam", "dvts", "budget-forcing", "adaptive", "route"]
ScorerName = Literal["confidence", "orm", "prm", "self_check", "oracle"]


@dataclass
class ScaleConfig(SamplingConfig):
    strategy: Mode = "sweep"
    temperature: float = 0.8
    top_p: float = 1.0

    BUDGET: ClassVar[str] = ""  # what a budget means in this mode
    MIN_BUDGET: ClassVar[int] = 1

    def validate(self) -> None:
        super().validate()
        budgets = getattr(self, "budgets", None)
        if budgets is not None and (not budgets or min(budgets) < self.MIN_BUDGET):
            raise UserError(f"{self.strategy} budgets ({self.BUDGET}) must be >= {self.MIN_BUDGET}; got {budgets}")


@dataclass
class SweepConfig(ScaleConfig):
    """One sampling pass of ``max_samples`` per problem, then every strategy x budget by subsampling."""

    strategies: list[str] = field(default_factory=lambda: ["majority", "best-of-n", "weighted-vote", "adaptive",
                                                            "pass@k"])
    max_samples: int = 32
    budgets: list[int] | None = None  # None: 1, 2, 4 ... max_samples
    seeds: int = 5  # subsampling seeds
    greedy_first: bool = False  # the greedy answer is candidate 1 at every budget (budget k: greedy + k-1 samples)
    threshold: float = 0.95  # the adaptive strategy's Beta stopping rule confidence
    orm: str | None = None  # HF sequence-classification checkpoint for the "orm" scorer
    prm: str | None = None  # HF sequence-classification checkpoint for the "prm" scorer

    BUDGET: ClassVar[str] = "samples per problem"

    def validate(self) -> None:
        super().validate()
        if self.max_samples < 1 or self.seeds < 1:
            raise UserError("--max-samples and --seeds must be >= 1")
        most = self.max_samples + self.greedy_first
        if self.budgets and max(self.budgets) > most:
            raise UserError(f"sweep budgets must be <= --max-samples {self.max_samples}"
                            f"{' + 1 (--greedy-first)' if self.greedy_first else ''}; got {self.budgets}")
        from ahalab.scaling.sweep import parse_strategies

        parse_strategies(self.strategies)

    def resolved_budgets(self) -> list[int]:
        from ahalab.eval.metrics import default_ks

        return self.budgets or default_ks(self.max_samples)


@dataclass
class SearchConfig(ScaleConfig):
    """Beam search or DVTS over blank-line steps; budget = paths per round."""

    budgets: list[int] = field(default_factory=lambda: [4, 8, 16])
    scorer: ScorerName = "confidence"  # step scorer: policy step logprob | prm | orm | self_check | oracle
    beam_width: int = 4  # expansions per kept path (M)
    step_tokens: int = 128
    max_steps: int = 12
    orm: str | None = None
    prm: str | None = None

    BUDGET: ClassVar[str] = "paths per round"

    def validate(self) -> None:
        super().validate()
        if self.beam_width < 1 or any(b < self.beam_width or b % self.beam_width for b in self.budgets):
            raise UserError(f"{self.strategy} budgets must be multiples of --beam-width {self.beam_width}; got "
                            f"{self.budgets}")


@dataclass
class BudgetForcingConfig(ScaleConfig):
    """s1 budget forcing; budget = forced Waits."""

    budgets: list[int] = field(default_factory=lambda: [0, 1, 2, 4])
    think_tokens: int = 512  # thinking cap
    answer_tokens: int = 64
    end_think: str | None = None  # None: "</think>" for the r1 format, else the end of the sequence

    BUDGET: ClassVar[str] = "forced Waits"
    MIN_BUDGET: ClassVar[int] = 0


@dataclass
class AdaptiveConfig(ScaleConfig):
    """Adaptive consistency through the engine; budget = max samples."""

    budgets: list[int] = field(default_factory=lambda: [4, 8, 16])
    threshold: float = 0.95  # Beta stopping rule's confidence
    chunk: int = 1  # samples per problem per round

    BUDGET: ClassVar[str] = "max samples"

    def validate(self) -> None:
        super().validate()
        if self.chunk < 1:
            raise UserError("chunk must be >= 1")


@dataclass
class RouteConfig(ScaleConfig):
    """When to reason: a cheap direct probe, escalating to CoT + vote when it is unsure."""

    probe_samples: int = 4  # short direct samples (1: the greedy direct answer and its confidence)
    probe_temperature: float = 0.7
    direct_tokens: int = 32
    route_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    reason_samples: int = 8  # CoT samples voted on when escalating (and by always-reason)

    def validate(self) -> None:
        super().validate()
        if min(self.reason_samples, self.probe_samples) < 1:
            raise UserError("reason_samples and probe_samples must be >= 1")


MODES: dict[str, type[ScaleConfig]] = {"sweep": SweepConfig, "beam": SearchConfig, "dvts": SearchConfig,
                                       "budget-forcing": BudgetForcingConfig, "adaptive": AdaptiveConfig,
                                       "route": RouteConfig}


def config_class(raw: dict[str, Any]) -> type[ScaleConfig]:
    """The config class of the mode a raw config names (``strategy``, default sweep)."""
    mode = raw.get("strategy", "sweep")
    if mode not in MODES:
        raise UserError(f"strategy: {mode!r} is not one of {', '.join(MODES)}")
    return MODES[mode]
