"""Rollouts: problems -> G samples each (``ahalab.sampling``) -> rewards (TRL's contract) -> group advantages."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from ahalab.engines.base import Engine
from ahalab.rewards import combine
from ahalab.rl.loss import Baseline, RewardScale, group_advantages
from ahalab.sampling import sample
from ahalab.tasks.base import Task
from ahalab.types import Problem, Sample


@dataclass
class Rollouts:
    """Groups of ``group_size`` samples per problem (group after group), with rewards and advantages."""

    samples: list[Sample]  # group after group
    rewards: dict[str, list[float | None]]  # per reward function
    total: torch.Tensor  # [n] weighted sum
    advantages: torch.Tensor  # [n]
    group_size: int
    problems: list[Problem] = field(init=False)  # one per group

    def __post_init__(self) -> None:
        self.problems = [s.problem for s in self.samples[::self.group_size]]

    @property
    def num_groups(self) -> int:
        return len(self.problems)

    @property
    def texts(self) -> list[str]:
        """What rewards saw: each prompt's assistant prefix + its completion."""
        return [s.text for s in self.samples]

    def group_std(self) -> torch.Tensor:
        return self.total.view(-1, self.group_size).std(1)  # [groups]

    def select(self, groups: list[int]) -> Rollouts:
        """These groups only."""
        rows = [g * self.group_size + j for g in groups for j in range(self.group_size)]
        return Rollouts([self.samples[i] for i in rows], {k: [v[i] for i in rows] for k, v in self.rewards.items()},
                        self.total[rows], self.advantages[rows], self.group_size)

    @staticmethod
    def concat(parts: list[Rollouts]) -> Rollouts:
        first = parts[0]
        return Rollouts([s for r in parts for s in r.samples],
                        {k: [x for r in parts for x in r.rewards[k]] for k in first.rewards},
                        torch.cat([r.total for r in parts]), torch.cat([r.advantages for r in parts]),
                        first.group_size)


def reward_inputs(samples: list[Sample], task: Task, fmt: str, chat: bool, **state: Any) -> dict[str, Any]:
    """The keyword arguments TRL's GRPOTrainer gives reward functions, for these samples (see ahalab.rewards)."""
    from ahalab.prompts import build_messages

    problems = [s.problem for s in samples]
    if chat:  # TRL's conversational form
        prompts: list[Any] = [build_messages(p.question, fmt, task.answer_hint, assistant_prefix=False)[0]
                              for p in problems]
        completions: list[Any] = [[{"role": "assistant", "content": s.text}] for s in samples]
    else:
        prompts, completions = [s.prompt for s in samples], [s.text for s in samples]
    meta = {k: [p.meta.get(k) for p in problems] for k in dict.fromkeys(k for p in problems for k in p.meta)}
    return {**meta, "prompts": prompts, "completions": completions,
            "completion_ids": [s.completion.token_ids for s in samples], "problem": problems,
            "question": [p.question for p in problems], "answer": [p.answer for p in problems],
            "trainer_state": SimpleNamespace(**state)}


def rollout(engine: Engine, task: Task, problems: list[Problem], fmt: str, reward_fns: dict[str, Callable],
            weights: dict[str, float], *, group_size: int, temperature: float, top_p: float, max_tokens: int,
            seed: int, scale: RewardScale, baseline: Baseline, chat: bool | None = None,
            state: dict[str, Any] | None = None, logprobs: bool = False) -> Rollouts:
    """Sample ``group_size`` completions per problem (with the engine's log-probabilities of the sampled tokens when
    ``logprobs``), score them and compute group advantages."""
    from ahalab.prompts import uses_chat

    groups = sample(engine, task, problems, fmt, n=group_size, temperature=temperature, top_p=top_p,
                    max_tokens=max_tokens, seed=seed, chat=chat, logprobs=logprobs)
    samples = [s for group in groups for s in group]
    inputs = reward_inputs(samples, task, fmt, uses_chat(engine.tokenizer, chat), **(state or {}))
    rewards = {name: list(fn(**inputs)) for name, fn in reward_fns.items()}
    total = torch.tensor(combine(rewards, weights), dtype=torch.float32)  # [n]
    return Rollouts(samples, rewards, total, group_advantages(total, group_size, scale=scale, baseline=baseline),
                    group_size)
