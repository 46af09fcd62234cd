"""Step-level tree search: beam search and DVTS (diverse verifier tree search), as in search-and-learn.

A step is the text up to the next blank line ("\\n\\n"). Every round, each live path of each tree is
extended by ``expansions`` sampled next steps (the first round samples ``width * expansions`` first
steps per tree), a step scorer (a PRM, or the policy's own step logprob via ``confidence``) scores the
candidates, and each tree keeps its ``width`` best unfinished ones. A path finishes at end of
sequence, at ``max_tokens`` or after ``max_steps``; the answer is the finished path the scorer rates
highest on the whole solution.

- beam search: ``trees=1, width=N / M, expansions=M`` (N paths per round);
- DVTS: ``trees=N / M, width=1, expansions=M`` (independent greedy subtrees, for diversity).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ahalab.engines.base import Engine
from ahalab.sampling import generate, render_all
from ahalab.scaling.scorers import Scorer
from ahalab.scaling.strategies import Cost, Outcome, call_cost, graded_outcome
from ahalab.tasks.base import Task
from ahalab.types import Completion, Problem

STEP = "\n\n"


@dataclass
class Path:
    """A partial solution in one tree of one problem."""

    problem: int
    tree: int
    text: str = ""  # generated so far (steps joined by STEP)
    logprobs: list[float] = field(default_factory=list)  # all generated tokens
    step_logprobs: list[float] = field(default_factory=list)  # the newest step's tokens
    tokens: int = 0
    steps: int = 0
    done: bool = False
    score: float = 0.0


def ended(engine: Engine, completion: Completion) -> bool:
    """Whether a step ended the sequence (its last token is special: EOS, end of turn) rather than at a
    step break or the step's token cap."""
    ids = completion.token_ids
    return completion.finish_reason == "stop" and bool(ids) and ids[-1] in engine.tokenizer.all_special_ids


def extend(engine: Engine, path: Path, c: Completion, max_steps: int, max_tokens: int) -> Path:
    """``path`` with step ``c`` appended (a step break added unless the sequence ended)."""
    done = ended(engine, c)
    text = path.text + c.text
    if not done and c.finish_reason == "stop" and not text.endswith(STEP):
        text += STEP
    tokens = path.tokens + c.num_tokens
    return Path(path.problem, path.tree, text, path.logprobs + list(c.logprobs or []), list(c.logprobs or []),
                tokens, path.steps + 1, done or tokens >= max_tokens or path.steps + 1 >= max_steps)


def tree_search(engine: Engine, task: Task, problems: list[Problem], scorer: Scorer, *, fmt: str = "cot",
                trees: int = 1, width: int = 4, expansions: int = 4, max_steps: int = 12, step_tokens: int = 128,
                max_tokens: int = 512, temperature: float = 0.8, seed: int = 0,
                chat: bool | None = None) -> list[Outcome]:
    """Search all problems together (one engine call per round); see the module docstring."""
    rendered = render_all(engine, task, problems, fmt, chat)
    costs = [Cost() for _ in problems]
    finished: list[list[Path]] = [[] for _ in problems]
    live = [Path(i, t) for i in range(len(problems)) for t in range(trees)]
    rnd = 0
    while live:
        n = width * expansions if rnd == 0 else expansions
        prompts = [rendered[p.problem].prompt + p.text for p in live]
        outs, walls = generate(engine, prompts, n, seed=seed + 10007 * rnd, temperature=temperature,
                               max_tokens=step_tokens, stop=[STEP], logprobs=True)
        children: list[Path] = []
        for p, prompt, comps, wall in zip(live, prompts, outs, walls):
            costs[p.problem] += call_cost(engine, prompt, comps, wall)
            children += [extend(engine, p, comp, max_steps, max_tokens) for comp in comps]
        for i, problem in enumerate(problems):
            mine = [c for c in children if c.problem == i]
            scores = scorer(problem, [rendered[i].prefix + c.text for c in mine], [c.step_logprobs for c in mine])
            for c, s in zip(mine, scores):
                c.score = float(s)
            finished[i] += [c for c in mine if c.done]
        kept: dict[tuple[int, int], list[Path]] = {}
        for c in children:
            if not c.done:
                kept.setdefault((c.problem, c.tree), []).append(c)
        live = [c for group in kept.values() for c in sorted(group, key=lambda c: -c.score)[:width]]
        rnd += 1
    return [pick(task, problem, rendered[i].prefix, finished[i], scorer, costs[i], rounds=rnd)
            for i, problem in enumerate(problems)]


def pick(task: Task, problem: Problem, prefix: str, paths: list[Path], scorer: Scorer, cost: Cost,
         **info: Any) -> Outcome:
    """The finished path the scorer rates highest on the whole solution, graded."""
    texts = [prefix + p.text for p in paths]
    scores = scorer(problem, texts, [p.logprobs for p in paths])
    best = max(range(len(paths)), key=lambda j: scores[j])
    return graded_outcome(task, problem, texts[best], cost, score=float(scores[best]), finished=len(paths), **info)


def beam_search(engine: Engine, task: Task, problems: list[Problem], scorer: Scorer, n: int = 16, beam_width: int = 4,
                **kw: Any) -> list[Outcome]:
    """Beam search with ``n`` paths per round: keep ``n // beam_width``, extend each ``beam_width`` times."""
    return tree_search(engine, task, problems, scorer, trees=1, width=max(1, n // beam_width), expansions=beam_width,
                       **kw)


def dvts(engine: Engine, task: Task, problems: list[Problem], scorer: Scorer, n: int = 16, beam_width: int = 4,
         **kw: Any) -> list[Outcome]:
    """DVTS with ``n`` paths per round: ``n // beam_width`` independent subtrees, each keeping its best path."""
    return tree_search(engine, task, problems, scorer, trees=max(1, n // beam_width), width=1, expansions=beam_width,
                       **kw)
