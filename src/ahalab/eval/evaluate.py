"""evaluate(): render prompts, sample through an engine, grade, and summarise (accuracy, pass@k, maj@k)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ahalab.engines.base import Engine
from ahalab.eval.metrics import default_ks, majority_vote, pass_at_k
from ahalab.tasks.base import Task
from ahalab.types import Problem


@dataclass
class EvalResult:
    records: list[dict[str, Any]]  # one per (problem, sample)
    summary: dict[str, Any]
    per_problem: list[dict[str, Any]] = field(default_factory=list)


def evaluate(engine: Engine, task: Task, problems: list[Problem], fmt: str = "cot", samples: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 512, seed: int = 0,
             chat: bool | None = None, chunk_size: int = 64, progress: bool = True) -> EvalResult:
    """Sample ``samples`` completions per problem and grade them with the task's verifier.

    Generation goes in chunks of ``chunk_size`` problems, chunk i seeded with ``seed + i``, so the
    same arguments reproduce the same result.
    """
    from tqdm import tqdm

    from ahalab.prompts import render

    rendered = [render(engine.tokenizer, task, p.question, fmt, chat=chat) for p in problems]
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = tqdm(total=len(problems), desc=f"eval {task.name}", unit="problem", disable=not progress)
    for ci, lo in enumerate(range(0, len(problems), chunk_size)):
        chunk = problems[lo:lo + chunk_size]
        outs = engine.generate([r.prompt for r in rendered[lo:lo + chunk_size]], n=samples,
                               temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed + ci)
        for problem, r, comps in zip(chunk, rendered[lo:lo + chunk_size], outs):
            for si, c in enumerate(comps):
                g = task.grade(problem, r.prefix + c.text)
                records.append({"problem_id": problem.id, "sample": si, "prompt": r.prompt,
                                "completion": r.prefix + c.text, "answer": g.answer, "gold": problem.answer,
                                "correct": g.correct, "score": g.score, "tokens": c.num_tokens,
                                "finish_reason": c.finish_reason})
        bar.update(len(chunk))
    bar.close()
    wall = time.perf_counter() - start
    summary, per_problem = summarize(records, task, samples)
    gen_tokens = sum(r["tokens"] for r in records)
    summary.update(wall_s=round(wall, 3), gen_tokens_per_s=round(gen_tokens / wall, 1) if wall > 0 else None)
    return EvalResult(records=records, summary=summary, per_problem=per_problem)


def summarize(records: list[dict[str, Any]], task: Task, samples: int) -> tuple[dict[str, Any], list[dict]]:
    """accuracy (= pass@1, mean over samples), unbiased pass@k, maj@k, token statistics."""
    by_problem: dict[str, list[dict]] = {}
    for r in records:
        by_problem.setdefault(r["problem_id"], []).append(r)
    ks = default_ks(samples)
    per_problem = []
    for pid, rows in by_problem.items():
        rows.sort(key=lambda r: r["sample"])
        n, c = len(rows), sum(r["correct"] for r in rows)
        row = {"problem_id": pid, "n": n, "correct": c}
        for k in ks:
            row[f"pass@{k}"] = pass_at_k(n, c, k)
            if k > 1:
                _, idx, _ = majority_vote([r["answer"] for r in rows[:k]], task.equivalent)
                row[f"maj@{k}"] = float(idx >= 0 and rows[idx]["correct"])
        per_problem.append(row)
    m = len(per_problem)
    summary: dict[str, Any] = {
        "task": task.name,
        "problems": m,
        "samples": samples,
        "accuracy": sum(r["correct"] for r in records) / len(records) if records else 0.0,
    }
    for key in [f"pass@{k}" for k in ks if k > 1] + [f"maj@{k}" for k in ks if k > 1]:
        summary[key] = sum(p[key] for p in per_problem) / m if m else 0.0
    tokens = [r["tokens"] for r in records]
    summary["mean_tokens"] = sum(tokens) / len(tokens) if tokens else 0.0
    summary["truncated"] = sum(r["finish_reason"] == "length" for r in records) / len(records) if records else 0.0
    summary["extracted"] = sum(r["answer"] is not None for r in records) / len(records) if records else 0.0
    return summary, per_problem
