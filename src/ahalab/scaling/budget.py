"""Budget forcing (s1, Muennighoff et al. 2025): control how long a model thinks.

Thinking runs until the end-of-thinking marker (``end_think``, a stop string; with ``None`` the end of
the sequence) or the thinking cap. Each time the model tries to stop, up to ``waits`` times, the
marker is suppressed and ``wait`` is appended so it keeps thinking. At the cap, thinking is cut off.
Then, if there is a marker, it is appended and the model writes its answer (after ``answer_cue`` when
it was cut off); without a marker, only a cut-off response gets ``answer_cue`` and an answer phase.
"""
from __future__ import annotations

from dataclasses import dataclass

from ahalab.engines.base import Engine
from ahalab.sampling import generate, render_all
from ahalab.scaling.strategies import Cost, Outcome, call_cost, graded_outcome
from ahalab.tasks.base import Task
from ahalab.types import Problem


@dataclass
class Thought:
    """One problem's budget-forcing state."""

    text: str = ""  # generated after the prompt, appended Waits included
    thinking_tokens: int = 0
    waits: int = 0
    capped: bool = False
    thinking: bool = True


def budget_forcing(engine: Engine, task: Task, problems: list[Problem], *, fmt: str = "r1", think_tokens: int = 512,
                   waits: int = 0, answer_tokens: int = 64, end_think: str | None = "</think>", wait: str = "\nWait",
                   answer_cue: str = "\nFinal answer:", temperature: float = 0.0, seed: int = 0,
                   chat: bool | None = None) -> list[Outcome]:
    """Think under a cap of ``think_tokens`` generated tokens, forced ``waits`` times past the first stop."""
    rendered = render_all(engine, task, problems, fmt, chat)
    state = [Thought() for _ in problems]
    costs = [Cost() for _ in problems]
    rnd = 0
    while todo := [i for i, s in enumerate(state) if s.thinking]:
        # one engine call per distinct remaining budget (an engine call has one max_tokens)
        for left in sorted({think_tokens - state[i].thinking_tokens for i in todo}):
            group = [i for i in todo if think_tokens - state[i].thinking_tokens == left]
            prompts = [rendered[i].prompt + state[i].text for i in group]
            outs, walls = generate(engine, prompts, seed=seed + 10007 * rnd, temperature=temperature, max_tokens=left,
                                   stop=[end_think] if end_think else None)
            for i, prompt, (c,), wall in zip(group, prompts, outs, walls):
                s = state[i]
                s.text += c.text
                s.thinking_tokens += c.num_tokens
                costs[i] += call_cost(engine, prompt, [c], wall)
                s.capped = c.finish_reason == "length" or s.thinking_tokens >= think_tokens
                s.thinking = not s.capped and s.waits < waits
                if s.thinking:
                    s.text += wait
                    s.waits += 1
        rnd += 1
    answering = [i for i, s in enumerate(state) if end_think or s.capped]
    for i in answering:
        state[i].text += (end_think or "") + (answer_cue if state[i].capped else "")
    if answering:
        prompts = [rendered[i].prompt + state[i].text for i in answering]
        outs, walls = generate(engine, prompts, seed=seed + 10007 * rnd, temperature=temperature,
                               max_tokens=answer_tokens)
        for i, prompt, (c,), wall in zip(answering, prompts, outs, walls):
            state[i].text += c.text
            costs[i] += call_cost(engine, prompt, [c], wall)
    return [graded_outcome(task, problem, r.prefix + s.text, cost, thinking_tokens=s.thinking_tokens, waits=s.waits,
                           capped=s.capped) for problem, r, s, cost in zip(problems, rendered, state, costs)]
