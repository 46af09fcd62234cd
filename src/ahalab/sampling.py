"""The one sampling path: render prompts -> one seeded engine call -> prefix + completion -> grade.

    samples = sample(engine, task, problems, "r1", n=8, temperature=0.7, max_tokens=256, seed=3)
    samples[i][j]  # the j-th Sample of problems[i]: prompt, completion, text, answer, score, tokens, ...

Evaluation, the inference-time scaling strategies, GRPO rollouts and engine teachers all call
``sample``; strategies that continue partial texts (beam search, budget forcing) call ``generate``
on prompt strings and grade at the end. The whole workload goes to the engine in one call seeded
``seed`` (vLLM's continuous batching keeps its batch full; the CPU build has no per-request seeds, so
one seed per call is what makes a run reproducible: the same arguments give the same samples). Callers
that must keep partial results (a teacher's resumable cache) pass ``chunk_size``; chunk ``i`` is then
seeded ``seed + i``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ahalab.config import Config
from ahalab.engines import EngineName
from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.prompts import Rendered, render
from ahalab.tasks.base import Task
from ahalab.types import Completion, Problem, Sample


@dataclass
class SamplingConfig(Config):
    """What every command that samples a model on a task's problems is told (eval, scale)."""

    model: str = "smollm2-135m"
    task: str = "arithmetic"
    task_options: dict[str, Any] | None = None
    data: str | None = None  # file-based tasks: a local JSONL (or hub id); synthetic tasks generate from seed
    limit: int | None = 200
    format: str = "cot"
    max_tokens: int = 512
    engine: EngineName | None = None
    dtype: str | None = None  # None: the engine's default (vLLM: bf16 where native, else float32; HF float32)
    seed: int = 0
    out: str | None = None

    def validate(self) -> None:
        from ahalab.prompts import get_format

        get_format(self.format)

    def load_problems(self) -> tuple[Task, list[Problem]]:
        """The task and its problems; UserError when there are none."""
        from ahalab.tasks import get_task

        task = get_task(self.task, **(self.task_options or {}))
        problems = task.load(self.data, limit=self.limit, seed=self.seed)
        if not problems:
            raise UserError(f"task '{self.task}' produced no problems (data: {self.data or 'generated'})")
        return task, problems

    def engine_maker(self) -> Callable[[], Engine]:
        """Makes this config's engine (for ``ahalab.engines.engine_or_new``)."""
        from functools import partial

        from ahalab.engines import engine_for

        return partial(engine_for, self.model, self.engine, self.dtype, self.seed)


def generate(engine: Engine, prompts: list[str], n: int = 1, *, seed: int = 0, chunk_size: int | None = None,
             desc: str | None = None, **options: Any) -> tuple[list[list[Completion]], list[float]]:
    """``n`` completions per prompt from seeded ``engine.generate`` calls (one unless ``chunk_size``) and each
    prompt's share of wall time; ``desc`` labels a progress bar over the prompts."""
    outs: list[list[Completion]] = []
    walls: list[float] = []
    size = chunk_size or max(1, len(prompts))
    for ci, lo in enumerate(range(0, len(prompts), size)):
        part = prompts[lo:lo + size]
        start = time.perf_counter()
        outs.extend(engine.generate(part, n=n, seed=seed + ci, progress=desc, **options))
        walls += [(time.perf_counter() - start) / len(part)] * len(part)
    return outs, walls


def prompt_tokens(engine: Engine, prompt: str, completion: Completion) -> int:
    """Tokens in ``prompt`` (from the engine's record when it gives one)."""
    if completion.prompt_token_ids is not None:
        return len(completion.prompt_token_ids)
    return len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])


def render_all(engine: Engine, task: Task, problems: list[Problem], fmt: str,
               chat: bool | None = None) -> list[Rendered]:
    """Each problem rendered in prompt format ``fmt`` for the engine's tokenizer."""
    return [render(engine.tokenizer, task, p.question, fmt, chat=chat) for p in problems]


def sample(engine: Engine, task: Task, problems: list[Problem], fmt: str, *, n: int = 1, temperature: float = 0.0,
           top_p: float = 1.0, max_tokens: int = 512, seed: int = 0, chat: bool | None = None,
           logprobs: bool = False, stop: list[str] | None = None, chunk_size: int | None = None,
           desc: str | None = None) -> list[list[Sample]]:
    """``n`` graded samples per problem, in problem order (see the module doc)."""
    rendered = render_all(engine, task, problems, fmt, chat)
    outs, walls = generate(engine, [r.prompt for r in rendered], n, seed=seed, chunk_size=chunk_size, desc=desc,
                           temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=stop, logprobs=logprobs)
    grades = iter(task.grade_many([(p, r.prefix + c.text) for p, r, comps in zip(problems, rendered, outs)
                                   for c in comps]))  # all at once: code tasks run the programs in parallel
    result = []
    for problem, r, comps, wall in zip(problems, rendered, outs, walls):
        p_len = prompt_tokens(engine, r.prompt, comps[0]) if comps else 0
        result.append([Sample(problem, r.prompt, r.prefix, c, *next(grades), j, p_len, wall / len(comps))
                       for j, c in enumerate(comps)])
    return result
