"""Rollouts: prompts from a resumable stream -> engine samples -> rewards -> group advantages."""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ahalab.engines.base import Engine
from ahalab.rewards import combine
from ahalab.rl.grpo import group_advantages
from ahalab.types import Completion, Problem


class PromptStream:
    """Training problems in a seeded shuffled order, epoch after epoch.

    ``position`` (problems handed out so far) is its whole state: a checkpoint stores it and a resumed
    run continues with exactly the problems the interrupted one would have drawn next.
    """

    def __init__(self, problems: list[Problem], seed: int, position: int = 0) -> None:
        self.problems, self.seed, self.position = problems, seed, position
        self._orders: dict[int, list[int]] = {}

    def take(self, n: int) -> list[Problem]:
        out = []
        for _ in range(n):
            epoch, i = divmod(self.position, len(self.problems))
            if epoch not in self._orders:
                order = list(range(len(self.problems)))
                random.Random(f"{self.seed}/{epoch}").shuffle(order)
                self._orders = {epoch: order}
            out.append(self.problems[self._orders[epoch][i]])
            self.position += 1
        return out


@dataclass
class Rollouts:
    """Groups of ``group_size`` completions per problem (group after group), with rewards and advantages."""

    problems: list[Problem]  # one per group
    prompts: list[str]  # one per group
    completions: list[Completion]  # group after group
    texts: list[str]  # what rewards saw: the prompt's assistant prefix + the completion
    rewards: dict[str, list[float | None]]  # per reward function
    total: torch.Tensor  # [n] weighted sum
    advantages: torch.Tensor  # [n]
    group_size: int

    @property
    def num_groups(self) -> int:
        return len(self.problems)

    def group_std(self) -> torch.Tensor:
        return self.total.view(-1, self.group_size).std(1)

    def select(self, groups: list[int]) -> Rollouts:
        """These groups only."""
        rows = [g * self.group_size + j for g in groups for j in range(self.group_size)]
        return Rollouts([self.problems[g] for g in groups], [self.prompts[g] for g in groups],
                        [self.completions[i] for i in rows], [self.texts[i] for i in rows],
                        {k: [v[i] for i in rows] for k, v in self.rewards.items()}, self.total[rows],
                        self.advantages[rows], self.group_size)

    @staticmethod
    def concat(parts: list[Rollouts]) -> Rollouts:
        first = parts[0]
        return Rollouts([p for r in parts for p in r.problems], [p for r in parts for p in r.prompts],
                        [c for r in parts for c in r.completions], [t for r in parts for t in r.texts],
                        {k: [x for r in parts for x in r.rewards[k]] for k in first.rewards},
                        torch.cat([r.total for r in parts]), torch.cat([r.advantages for r in parts]),
                        first.group_size)


def rollout(engine: Engine, problems: list[Problem], render: Callable[[str], tuple[str, str]],
            reward_fns: dict[str, Callable], weights: dict[str, float], *, group_size: int, temperature: float,
            top_p: float, max_tokens: int, seed: int, scale: str, baseline: str) -> Rollouts:
    """Sample ``group_size`` completions per problem, score them and compute group advantages.

    ``render(question) -> (prompt, assistant prefix)``; rewards see prefix + completion.
    """
    rendered = [render(p.question) for p in problems]
    outs = engine.generate([prompt for prompt, _ in rendered], n=group_size, temperature=temperature, top_p=top_p,
                           max_tokens=max_tokens, seed=seed)
    completions = [c for comps in outs for c in comps]
    texts = [prefix + c.text for (_, prefix), comps in zip(rendered, outs) for c in comps]
    rows = [p for p in problems for _ in range(group_size)]
    columns = {"problem": rows, "answer": [p.answer for p in rows],
               "completion_tokens": [c.num_tokens for c in completions]}
    rewards = {name: fn(texts, **columns) for name, fn in reward_fns.items()}
    total = torch.tensor(combine(rewards, weights), dtype=torch.float32)
    return Rollouts(problems, [prompt for prompt, _ in rendered], completions, texts, rewards, total,
                    group_advantages(total, group_size, scale=scale, baseline=baseline), group_size)
