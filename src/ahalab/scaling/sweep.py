"""The budget sweep: one sampling pass, then every strategy x budget by subsampling (search-and-learn).

Per problem, ``N`` samples are drawn once (plus one greedy pass for the greedy baseline) and scored
once per scorer. For each seed, each problem's samples are put in a seeded random order; budget
``k`` uses the first ``k`` of them, so budgets are nested within a seed (with ``first``, e.g. the greedy
answers, budget ``k`` is ``first`` plus the first ``k - 1``: a check picks greedy unless it fails and a
sample passes, as candidate lists seeded with the greedy program do). A strategy's accuracy at
budget ``k`` is averaged over seeds, with a 95% t-interval over seeds (the subsampling noise) and
over problems (the finite test set), and its cost is the generated (and forward) tokens of the
samples it used, averaged per problem.
"""
from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ahalab.errors import UserError
from ahalab.eval.metrics import safe_equivalent
from ahalab.scaling.adaptive import stopping_point
from ahalab.scaling.scorers import SCORERS
from ahalab.scaling.strategies import Equivalent, best_of_n, vote, weighted_vote
from ahalab.stats import ci_text, interval, mean
from ahalab.types import Problem, Sample

# Sweep strategy kinds and their default scorer (None: takes no scorer).
KINDS: dict[str, str | None] = {"majority": None, "best-of-n": "confidence", "weighted-vote": "confidence",
                                "adaptive": None, "pass@k": None}


@dataclass(frozen=True)
class Spec:
    """A sweep strategy: ``kind`` (see KINDS) with an optional scorer name."""

    kind: str
    scorer: str | None = None

    @property
    def oracle(self) -> bool:
        return self.kind == "pass@k" or self.scorer == "oracle"

    @property
    def name(self) -> str:
        return self.kind + (f"[{self.scorer}]" if self.scorer else "") + (" (oracle)" if self.oracle else "")


def parse_strategies(items: Sequence[str]) -> list[Spec]:
    """["majority", "best-of-n:orm", "weighted-vote", ...] -> Specs (best-of-n/weighted-vote default to confidence)."""
    specs = []
    for item in items:
        kind, _, scorer = item.strip().partition(":")
        if kind not in KINDS:
            raise UserError(f"unknown sweep strategy '{kind}'; valid: {', '.join(KINDS)} (scored ones take "
                            f":SCORER, one of {', '.join(SCORERS)})")
        if scorer and KINDS[kind] is None:
            raise UserError(f"sweep strategy '{kind}' takes no scorer (got '{item}')")
        if scorer and scorer not in SCORERS:
            raise UserError(f"unknown scorer '{scorer}' in '{item}'; valid: {', '.join(SCORERS)}")
        specs.append(Spec(kind, scorer or KINDS[kind]))
    return specs


def choose(spec: Spec, samples: Sequence[Sample], equivalent: Equivalent) -> int:
    """Index of the sample ``spec`` picks from ``samples`` (adaptive: vote over what it was given)."""
    if spec.kind in ("majority", "adaptive"):
        return vote(samples, equivalent)
    if spec.kind == "best-of-n":
        return best_of_n(samples, spec.scorer)
    if spec.kind == "weighted-vote":
        return weighted_vote(samples, spec.scorer, equivalent)
    return next((i for i, s in enumerate(samples) if s.correct), 0)  # pass@k: any correct one


def answer_classes(answers: Sequence[str | None], equivalent: Equivalent) -> Equivalent:
    """``equivalent`` over ``answers`` as a lookup: their equivalence classes are computed once.

    Each distinct string is compared with one representative per class found so far (never with
    itself again), so every later vote over any subset, budget and seed is counting.
    """
    ids: dict[str, int] = {}
    reps: list[str] = []
    for a in answers:
        if a is None or a in ids:
            continue
        ids[a] = next((c for c, r in enumerate(reps) if safe_equivalent(equivalent, r, a)), len(reps))
        if ids[a] == len(reps):
            reps.append(a)

    def eq(a: str, b: str) -> bool:
        return a == b or (a in ids and b in ids and ids[a] == ids[b])

    return eq


def orders(problems: Sequence[Problem], n: int, seed: int) -> list[list[int]]:
    """Each problem's sample order for one seed (a function of seed and problem id only)."""
    return [random.Random(f"{seed}/{p.id}").sample(range(n), n) for p in problems]


def sweep(problems: Sequence[Problem], samples: Sequence[Sequence[Sample]], specs: Sequence[Spec],
          budgets: Sequence[int], seeds: Sequence[int], equivalent: Equivalent, threshold: float = 0.95,
          baseline: Sequence[bool] | None = None, first: Sequence[Sample] | None = None) -> list[dict[str, Any]]:
    """One row per (strategy, budget): accuracy over seeds and problems, tokens per problem.

    ``baseline`` (per-problem correctness of a reference, e.g. greedy) adds each row's paired
    difference from it with a 95% interval over problems. ``first`` (one sample per problem, e.g. the
    greedy one) leads every candidate list: budget ``k`` is it plus ``k - 1`` subsampled samples. Rows
    carry ``per_problem`` (seed-averaged correctness) for further comparisons.
    """
    n = min(len(s) for s in samples) + (first is not None)
    if not budgets or max(budgets) > n or min(budgets) < 1:
        raise UserError(f"budgets must be between 1 and the samples per problem ({n}); got {list(budgets)}")
    if first is not None:  # the leading sample becomes index 0 of every group, never reordered
        samples = [[f, *group] for f, group in zip(first, samples)]
    eqs = [answer_classes([s.answer for s in group], equivalent) for group in samples]
    order = {seed: orders(problems, n, seed) if first is None else
             [[0, *(j + 1 for j in o)] for o in orders(problems, n - 1, seed)] for seed in seeds}
    stops = {(seed, i): stopping_point([samples[i][j].answer for j in order[seed][i]], eqs[i], threshold)
             for seed in seeds for i in range(len(problems))} if any(s.kind == "adaptive" for s in specs) else {}
    rows = []
    for spec in specs:
        for k in budgets:
            accs, gens, fwds = [], [], []
            per_problem = [0.0] * len(problems)
            for seed in seeds:
                correct = gen = fwd = 0
                for i, group in enumerate(samples):
                    used = min(stops[(seed, i)], k) if spec.kind == "adaptive" else k
                    sub = [group[j] for j in order[seed][i][:used]]
                    idx = choose(spec, sub, eqs[i])
                    ok = idx >= 0 and sub[idx].correct
                    correct += ok
                    per_problem[i] += ok / len(seeds)
                    gen += sum(s.tokens for s in sub)
                    fwd += sum(s.prompt_tokens + s.tokens for s in sub)
                accs.append(correct / len(problems))
                gens.append(gen / len(problems))
                fwds.append(fwd / len(problems))
            rows.append(row(spec.name, k, per_problem, interval(accs), mean(gens), mean(fwds), baseline))
    return rows


def row(strategy: str, budget: int, per_problem: list[float], seed_ci: tuple[float, float] | None, gen: float,
        fwd: float, baseline: Sequence[bool] | None) -> dict[str, Any]:
    """A sweep table row; ``seed_ci`` None for a strategy without subsampling (greedy)."""
    out: dict[str, Any] = {"strategy": strategy, "budget": budget, "accuracy": mean(per_problem)}
    out["ci_seeds"] = list(seed_ci) if seed_ci else None
    out["ci_problems"] = list(interval(per_problem))
    out["gen tokens"], out["forward tokens"] = gen, fwd
    if baseline is not None:
        diffs = [p - b for p, b in zip(per_problem, baseline)]
        out["vs baseline"], out["ci_vs_baseline"] = mean(diffs), list(interval(diffs))
    out["per_problem"] = per_problem
    return out


def greedy_row(samples: Sequence[Sequence[Sample]]) -> dict[str, Any]:
    """The greedy baseline's row (one greedy sample per problem)."""
    correct = [float(g[0].correct) for g in samples]
    return row("greedy", 1, correct, None, mean([g[0].tokens for g in samples]),
               mean([g[0].prompt_tokens + g[0].tokens for g in samples]), correct)


def table_rows(rows: Sequence[dict[str, Any]], wall_per_token: float) -> list[dict[str, Any]]:
    """Sweep rows for printing: intervals as text, an estimated wall time per problem."""
    out = []
    for r in rows:
        out.append({"strategy": r["strategy"], "budget": r["budget"], "accuracy": r["accuracy"],
                    "95% CI (seeds)": ci_text(*r["ci_seeds"]) if r["ci_seeds"] else "",
                    "95% CI (problems)": ci_text(*r["ci_problems"]),
                    "vs greedy": f"{r['vs baseline']:+.3f} {ci_text(*r['ci_vs_baseline'])}",
                    "gen tokens": r["gen tokens"], "forward tokens": r["forward tokens"],
                    "est. wall s": r["gen tokens"] * wall_per_token})
    return out


def timed(fn, *args: Any, **kw: Any) -> tuple[Any, float]:
    """(fn(*args, **kw), seconds it took)."""
    start = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - start
