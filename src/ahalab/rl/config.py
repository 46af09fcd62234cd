"""ZeroConfig: every setting of an `ahalab zero` run (R1-Zero: GRPO straight on a model, rule rewards)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ahalab.config import Config
from ahalab.engines import EngineName
from ahalab.errors import UserError
from ahalab.prompts import get_format
from ahalab.rl.loss import LOSS_PRESETS, Baseline, LossType, RewardScale, SamplingCorrection
from ahalab.training.config import TrainingConfig


@dataclass
class ZeroEval(Config):
    """Held-out greedy evaluation during training (problems drawn with a different seed, never trained on)."""

    every: int = 10  # steps; 0: never (the problems are still kept out of training)
    data: str | None = None  # a held-out file (default: drawn from the training data and removed from it)
    limit: int = 200  # 0: no held-out set
    max_tokens: int = 256
    at_start: bool = True  # evaluate the untrained model as step 0


@dataclass
class ZeroConfig(TrainingConfig):
    # model and data
    task: str = "arithmetic"
    task_options: dict[str, Any] = field(default_factory=dict)  # e.g. {level: 1} for arithmetic
    data: str | None = None  # file-based tasks: training data (JSONL or hub id)
    train_size: int = 5000  # problems in the training pool (synthetic tasks generate this many)
    # evaluation sets to keep out of the training pool, as in `ahalab data`: [{task, data, limit, seed, options}]
    # (word n-gram overlap, ahalab.tasks.decontaminate); what was removed goes to decontamination.json
    decontaminate: list[dict[str, Any]] | None = None
    ngram: int = 8
    overlap: float = 0.5
    format: str = "r1"
    chat: bool | None = None  # None: the chat template when the tokenizer has one
    # rollouts
    steps: int = 25
    prompts_per_step: int = 8
    generations: int = 8
    max_new_tokens: int = 160
    temperature: float = 1.0
    top_p: float = 1.0
    engine: EngineName | None = None  # vllm (default when installed) | hf
    engine_dtype: str | None = None  # None: the engine's default (vLLM: bf16 where native, HF float32)
    engine_options: dict[str, Any] = field(default_factory=dict)  # more engine settings, e.g. on a GPU shared
    #                            with training: {gpu_memory_utilization: 0.3, enable_sleep_mode: true}, on CPU
    #                            {kv_cache_gib: 1} per rank (see ahalab.engines.vllm.VLLMEngine, engines.server)
    # where vLLM generates (as TRL's vllm_mode; docs/scaling.md): colocate: each training rank's own engine in its
    # process, given the new weights after each step; server: a `vllm serve` process (VLLM_SERVER_DEV_MODE=1) at
    # vllm_server_base_url (None: http://host:port), reached over HTTP; the new weights go through vllm_sync_dir,
    # a directory the server reads at the same path (None: the run's vllm-sync/)
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    vllm_server_host: str = "127.0.0.1"
    vllm_server_port: int = 8000
    vllm_server_timeout: float = 240.0  # seconds to wait for the server to answer /health
    vllm_sync_dir: str | None = None
    # rewards: name -> weight (see ahalab.rewards.REWARDS, or "module:function" for any TRL-style reward
    # function, e.g. trl.rewards:think_format_reward), and per-reward options
    rewards: dict[str, float] = field(default_factory=lambda: {"accuracy": 1.0, "format_soft": 0.5})
    reward_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the GRPO variant; unset fields below take the variant's preset (see ahalab.rl.loss.LOSS_PRESETS)
    loss: LossType = "grpo"
    scale_rewards: RewardScale | None = None
    baseline: Baseline | None = None
    epsilon: float = 0.2
    epsilon_high: float | None = None
    dynamic_sampling: bool | None = None  # drop groups whose rewards are all equal and sample more prompts
    max_sampling_rounds: int = 4  # dynamic sampling: rollout rounds per step at most
    mask_truncated: bool = False  # leave completions that hit max_new_tokens out of the loss
    beta: float = 0.0  # KL to the frozen initial model (k3 estimator); 0: no reference model
    mu: int = 1  # optimisation passes per batch
    # A colocated vLLM samples with its own kernels and precision (bf16 where native): its probabilities differ from
    # the trained policy's (docs/scaling.md: 0.02-0.03 nats a token here). TRL's correction: weight each token (or
    # sequence) by pi_policy / pi_vLLM (ahalab.rl.loss.sampling_ratio); *_truncate clamps the weights to
    # [clip_min, clip_max], *_mask zeroes those outside. Mode None: token_truncate (the TIS paper's; rloo, which
    # weighs whole sequences: sequence_truncate). Colocated vLLM only (it reports the log-probabilities of the
    # distribution it sampled: processed_logprobs).
    vllm_importance_sampling_correction: bool = True
    vllm_importance_sampling_mode: SamplingCorrection | None = None
    vllm_importance_sampling_clip_min: float | None = None
    vllm_importance_sampling_clip_max: float | None = 2.0
    # run directory
    eval: ZeroEval = field(default_factory=ZeroEval)
    sample_every: int = 5  # write completions to samples.jsonl every K steps (0: never)
    sample_groups: int = 1  # how many of the step's groups to write (0: all, to audit every rewarded sample)

    NEUTRAL: ClassVar[frozenset[str]] = TrainingConfig.NEUTRAL | {"sample_every", "sample_groups",
                                                                  "vllm_server_base_url", "vllm_server_host",
                                                                  "vllm_server_port", "vllm_server_timeout",
                                                                  "vllm_sync_dir"}

    def preset(self, key: str) -> Any:
        """This run's value of a variant setting: the explicit one, else the loss preset's."""
        value = getattr(self, key)
        return LOSS_PRESETS[self.loss][key] if value is None else value

    def sampling_correction(self) -> SamplingCorrection:
        """The sampling correction's mode (``vllm_importance_sampling_mode``, or the loss's default)."""
        return self.vllm_importance_sampling_mode or ("sequence_truncate" if self.loss == "rloo" else "token_truncate")

    def vllm_server_url(self) -> str:
        """The server's root URL (server mode)."""
        return self.vllm_server_base_url or f"http://{self.vllm_server_host}:{self.vllm_server_port}"

    def validate(self) -> None:
        from ahalab.tasks.decontaminate import check_eval_specs

        super().validate()
        get_format(self.format)
        check_eval_specs(self.decontaminate)
        if self.vllm_mode == "server" and self.engine == "hf":
            raise UserError("vllm_mode: server generates with a vLLM server; it takes engine: vllm (or unset)")
        if self.generations < 2:
            raise UserError("generations must be >= 2 (advantages compare completions of the same prompt)")
        for name, value in (("steps", self.steps), ("prompts_per_step", self.prompts_per_step),
                            ("max_new_tokens", self.max_new_tokens), ("mu", self.mu),
                            ("max_sampling_rounds", self.max_sampling_rounds)):
            if value < 1:
                raise UserError(f"{name} must be >= 1 (got {value})")
        if self.eval.every and self.eval.limit < 1:
            raise UserError(f"eval.limit must be >= 1 to evaluate every {self.eval.every} steps (got {self.eval.limit})")
        if min(self.sample_every, self.sample_groups) < 0:
            raise UserError("sample_every and sample_groups must be >= 0 (0: never / all groups)")
        if self.loss == "rloo" and self.sampling_correction().startswith("token"):
            raise UserError("loss rloo weighs whole sequences: vllm_importance_sampling_mode must be sequence_mask or "
                            f"sequence_truncate (got {self.vllm_importance_sampling_mode})")
        if not self.rewards:
            raise UserError("rewards: name at least one reward function (e.g. {accuracy: 1.0})")
        from ahalab.rewards import get_reward

        for name in self.rewards:
            get_reward(name)  # UserError for an unknown name, before any model loads

