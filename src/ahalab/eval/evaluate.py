"""Evaluation: sample through ``ahalab.sampling``, summarise (accuracy, pass@k, maj@k, tokens), write a run directory."""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ahalab.engines.base import Engine
from ahalab.errors import UserError
from ahalab.eval.metrics import default_ks, majority_vote, pass_at_k
from ahalab.runs import RunDir
from ahalab.sampling import SamplingConfig, sample
from ahalab.tasks.base import Task
from ahalab.types import Problem, Sample


@dataclass
class EvalConfig(SamplingConfig):
    samples: int = 1
    temperature: float | None = None  # None: 0 (greedy) for one sample, 0.8 for several
    top_p: float = 1.0

    def validate(self) -> None:
        super().validate()
        if self.samples < 1:
            raise UserError(f"--samples must be >= 1 (got {self.samples})")

    def resolved(self, engine: str) -> EvalConfig:
        """A copy with the defaults that depend on other settings filled in (this config is left as is)."""
        temperature = self.temperature if self.temperature is not None else (0.0 if self.samples == 1 else 0.8)
        return dataclasses.replace(self, temperature=temperature, engine=engine)


@dataclass
class EvalResult:
    samples: list[list[Sample]]  # per problem
    summary: dict[str, Any]
    per_problem: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> list[dict[str, Any]]:
        """samples.jsonl rows, one per (problem, sample)."""
        return [s.record() for group in self.samples for s in group]


def evaluate(engine: Engine, task: Task, problems: list[Problem], fmt: str = "cot", samples: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, max_tokens: int = 512, seed: int = 0,
             chat: bool | None = None, progress: bool = True) -> EvalResult:
    """Sample ``samples`` completions per problem, graded by the task's verifier, and summarise them."""
    start = time.perf_counter()
    groups = sample(engine, task, problems, fmt, n=samples, temperature=temperature, top_p=top_p,
                    max_tokens=max_tokens, seed=seed, chat=chat, desc=f"eval {task.name}" if progress else None)
    wall = time.perf_counter() - start
    summary, per_problem = summarize(groups, task, samples)
    gen_tokens = sum(s.tokens for group in groups for s in group)
    summary.update(wall_s=round(wall, 3), gen_tokens_per_s=round(gen_tokens / wall, 1) if wall > 0 else None)
    return EvalResult(samples=groups, summary=summary, per_problem=per_problem)


def summarize(groups: list[list[Sample]], task: Task, samples: int) -> tuple[dict[str, Any], list[dict]]:
    """accuracy (= pass@1, mean over samples), unbiased pass@k (k = 1, 2, 4, ..., and the code benchmarks' 10 and
    100 when there are more samples), maj@k, token statistics."""
    ks = sorted(set(default_ks(samples)) | {k for k in (10, 100) if k < samples})
    per_problem = []
    for group in groups:
        n, c = len(group), sum(s.correct for s in group)
        row: dict[str, Any] = {"problem_id": group[0].problem.id, "n": n, "correct": c}
        for k in ks:
            row[f"pass@{k}"] = pass_at_k(n, c, k)
            if k > 1:
                _, idx, _ = majority_vote([s.answer for s in group[:k]], task.equivalent)
                row[f"maj@{k}"] = float(idx >= 0 and group[idx].correct)
        per_problem.append(row)
    flat = [s for group in groups for s in group]
    m = len(per_problem)
    summary: dict[str, Any] = {"task": task.name, "problems": m, "samples": samples,
                               "accuracy": sum(s.correct for s in flat) / len(flat) if flat else 0.0}
    for key in [f"pass@{k}" for k in ks if k > 1] + [f"maj@{k}" for k in ks if k > 1]:
        summary[key] = sum(p[key] for p in per_problem) / m if m else 0.0
    summary["mean_tokens"] = sum(s.tokens for s in flat) / len(flat) if flat else 0.0
    summary["truncated"] = sum(s.finish_reason == "length" for s in flat) / len(flat) if flat else 0.0
    summary["extracted"] = sum(s.answer is not None for s in flat) / len(flat) if flat else 0.0
    return summary, per_problem


def run_eval(cfg: EvalConfig, engine: Engine | None = None, tag: str = "eval") -> tuple[dict[str, Any], RunDir]:
    """Evaluate per ``cfg`` (with ``engine``, or a new one closed afterwards); write the run directory.

    Returns (summary, RunDir): config.yaml, samples.jsonl, summary.json, report.md (+ a pass@k plot).
    """
    from ahalab.config import to_dict
    from ahalab.engines import engine_or_new
    from ahalab.eval.report import write_eval_report

    cfg.validate()
    task, problems = cfg.load_problems()
    run_dir = RunDir.create(cfg.out, tag)  # before the engine starts: its start-up logs go to log.txt
    with engine_or_new(engine, cfg.engine_maker()) as used:
        cfg = cfg.resolved(used.name)
        run_dir.write_config(to_dict(cfg))
        result = evaluate(used, task, problems, fmt=cfg.format, samples=cfg.samples, temperature=cfg.temperature,
                          top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed)
    run_dir.write_text("samples.jsonl", "".join(json.dumps(r) + "\n" for r in result.records))
    run_dir.write_summary(result.summary)
    write_eval_report(run_dir, cfg, result)
    return result.summary, run_dir

