"""`ahalab scale`: inference-time scaling, as a one-pass budget sweep or one strategy run through the engine."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from ahalab.args import add_common_model_args, explicit_flags

if TYPE_CHECKING:
    from ahalab.engines.base import Engine
    from ahalab.runs import RunDir
    from ahalab.scaling.config import (AdaptiveConfig, BudgetForcingConfig, RouteConfig, ScaleConfig, SearchConfig,
                                       SweepConfig)
    from ahalab.tasks.base import Task
    from ahalab.types import Problem



def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ahalab.scaling.config import MODES

    p = sub.add_parser(
        "scale", help="inference-time scaling: budget sweep (SC, best-of-n, weighted vote, adaptive), beam, DVTS, "
        "budget forcing, routing", description="Default (--strategy sweep): one sampling pass of --max-samples per "
        "problem plus a greedy pass, then every strategy in --strategies at every budget by subsampling over --seeds "
        "seeds: a table of accuracy (95% intervals over seeds and over problems, difference from greedy) and mean "
        "tokens per problem, and a PNG of accuracy vs generated tokens. Other --strategy modes generate through the "
        "engine once per budget: " + "; ".join(f"{m}: budget = {c.BUDGET}" for m, c in MODES.items() if c.BUDGET and m != "sweep")
        + ". route compares a cheap-probe router with always-direct and always-reason. Each mode has its own "
        "settings (ahalab/scaling/config.py); a flag of another mode is an error.")
    add_common_model_args(p)
    p.add_argument("--strategy", choices=list(MODES), help="mode (default sweep)")
    p.add_argument("--strategies", type=_names, help="sweep strategies, comma-separated: majority, best-of-n[:scorer], "
                   "weighted-vote[:scorer], adaptive, pass@k (oracle); scorers: confidence (default), orm, prm, "
                   "self_check (the task's gold-free check, e.g. countdown's numbers and target), oracle")
    p.add_argument("--max-samples", dest="max_samples", type=int, help="sweep: samples per problem (default 32)")
    p.add_argument("--budgets", type=_ints, help="comma-separated, e.g. 1,2,4,8,16,32")
    p.add_argument("--seeds", type=int, help="sweep: subsampling seeds (default 5)")
    p.add_argument("--greedy-first", dest="greedy_first", action="store_true", default=None,
                   help="sweep: the greedy answer is candidate 1 at every budget (budget k = greedy + k-1 samples)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.8)")
    p.add_argument("--orm", help="outcome reward model: HF sequence-classification checkpoint (dir or hub id)")
    p.add_argument("--prm", help="process reward model for beam/dvts: HF sequence-classification checkpoint")
    p.add_argument("--scorer", choices=["confidence", "prm", "orm", "self_check", "oracle"],
                   help="beam/dvts step scorer (default confidence)")
    p.add_argument("--beam-width", dest="beam_width", type=int, help="beam/dvts: expansions per kept path (default 4)")
    p.add_argument("--think-tokens", dest="think_tokens", type=int, help="budget-forcing: thinking cap (default 512)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.config import from_dict, load_raw
    from ahalab.scaling.config import config_class

    raw = load_raw(args.config, args.overrides, explicit_flags(args))
    cfg = from_dict(config_class(raw), raw, f"scale --strategy {raw.get('strategy', 'sweep')}")
    cfg.validate()
    run_dir, printed = run_scale(cfg)
    print(printed)
    print(f"run directory: {run_dir.path} (report.md, summary.json, samples.jsonl, accuracy_vs_tokens.png)")
    return 0


def run_scale(cfg: ScaleConfig, engine: Engine | None = None) -> tuple[RunDir, str]:
    """Run ``cfg``'s mode; write the run directory (anew: an earlier run's files there are replaced).
    Returns (RunDir, text tables)."""
    import dataclasses

    from ahalab.config import to_dict
    from ahalab.engines import engine_or_new
    from ahalab.runs import RunDir
    from ahalab.scaling.config import RouteConfig, SweepConfig

    cfg.validate()
    task, problems = cfg.load_problems()
    run_dir = RunDir.create(cfg.out, f"scale-{cfg.strategy}")  # before the engine: its start-up logs go to log.txt
    with engine_or_new(engine, cfg.engine_maker()) as used:
        cfg = dataclasses.replace(cfg, engine=used.name)
        run_dir.write_config(to_dict(cfg))
        run_dir.file("samples.jsonl").unlink(missing_ok=True)  # this run's samples only
        runner = {SweepConfig: run_sweep, RouteConfig: run_route}.get(type(cfg), run_budgets)
        result = runner(cfg, used, task, problems, run_dir)
    return run_dir, result


def _intro(cfg: ScaleConfig, problems: list[Problem]) -> list[str]:
    return [f"Model `{cfg.model}`, engine `{cfg.engine}`, task `{cfg.task}` ({len(problems)} problems"
            f"{', options ' + str(cfg.task_options) if cfg.task_options else ''}), format `{cfg.format}`, "
            f"max {cfg.max_tokens} new tokens, seed {cfg.seed}."]


def run_sweep(cfg: SweepConfig, engine: Engine, task: Task, problems: list[Problem], run_dir: RunDir) -> str:
    """Greedy pass + one sampling pass, scores once per sample, then the subsampled sweep."""
    from ahalab.sampling import sample
    from ahalab.scaling.report import write_report
    from ahalab.scaling.scorers import make_scorer
    from ahalab.scaling.strategies import score_samples
    from ahalab.scaling.sweep import greedy_row, parse_strategies, sweep, table_rows, timed

    specs = parse_strategies(cfg.strategies)
    budgets = cfg.resolved_budgets()
    scorers = {s.scorer: make_scorer(s.scorer, task, cfg.orm, cfg.prm) for s in specs if s.scorer}
    greedy, greedy_s = timed(sample, engine, task, problems, cfg.format, max_tokens=cfg.max_tokens, seed=cfg.seed,
                             logprobs=True, desc="greedy pass")
    samples, sampling_s = timed(sample, engine, task, problems, cfg.format, n=cfg.max_samples,
                                temperature=cfg.temperature, max_tokens=cfg.max_tokens, top_p=cfg.top_p,
                                seed=cfg.seed + 1, logprobs=True, desc="sampling pass")
    first = [g[0] for g in greedy] if cfg.greedy_first else None  # greedy leads every budget's candidates
    scored = [[f, *group] for f, group in zip(first, samples)] if first else samples
    _, scoring_s = timed(lambda: [score_samples(problems, scored, n, s) for n, s in scorers.items()])
    base = greedy_row(greedy)
    rows, sweep_s = timed(sweep, problems, samples, specs, budgets, range(cfg.seed, cfg.seed + cfg.seeds),
                          task.equivalent, cfg.threshold, base["per_problem"], first)
    sampled_tokens = sum(s.tokens for group in samples for s in group)
    timing = {"greedy_pass_s": greedy_s, "sampling_pass_s": sampling_s, "scoring_s": scoring_s, "sweep_s": sweep_s,
              "sampled_tokens": sampled_tokens, "sampling_tokens_per_s": sampled_tokens / sampling_s,
              "strategies": len(specs), "budgets": len(budgets)}
    run_dir.append("samples.jsonl", [
        {"problem_id": p.id, "level": p.meta.get("level"), "sample": j if j >= 0 else "greedy", "gold": p.answer,
         "answer": s.answer, "correct": s.correct, "tokens": s.tokens, "prompt_tokens": s.prompt_tokens,
         "finish_reason": s.finish_reason, "scores": s.scores, "text": s.text}
        for p, g, group in zip(problems, greedy, samples) for j, s in [(-1, g[0]), *enumerate(group)]])
    all_rows = [base, *rows]
    run_dir.write_summary({"mode": "sweep", "timing": timing,
                                        "rows": [{k: v for k, v in r.items() if k != "per_problem"} for r in all_rows]})
    shown = table_rows(all_rows, sampling_s / sampled_tokens if sampled_tokens else 0.0)
    intro = _intro(cfg, problems) + [
        "", f"One greedy pass ({greedy_s:.1f} s) and one sampling pass of {cfg.max_samples} samples per problem at "
        f"temperature {cfg.temperature} ({sampling_s:.1f} s, {sampled_tokens} tokens); scoring {scoring_s:.1f} s; "
        f"all {len(specs)} strategies x {len(budgets)} budgets by subsampling over {cfg.seeds} seeds in "
        f"{sweep_s:.1f} s, with no further generation."
        + (" Every budget's candidates start with the greedy answer (budget k: greedy + k-1 samples)."
           if cfg.greedy_first else ""), "",
        "Budget = samples drawn per problem. `vs greedy`: paired accuracy difference from greedy decoding with its "
        "95% interval over problems. `est. wall s`: generated tokens x the sampling pass's seconds per token. Rows "
        "marked (oracle) use the gold answer: an upper bound for analysis, not a usable strategy; `[self_check]` rows "
        "use the task's own check of what the problem states (no gold answer), usable at test time.", "",
        self_consistency_line(all_rows)]
    return write_report(run_dir, f"Inference-time scaling: {task.name}", intro,
                        [("Accuracy vs budget", shown, list(shown[0]))], all_rows, band="ci_seeds")


def self_consistency_line(rows: list[dict]) -> str:
    """Majority vote at the largest budget vs greedy, with its interval."""
    maj = [r for r in rows if r["strategy"] == "majority"]
    if not maj:
        return ""
    r = maj[-1]
    lo, hi = r["ci_vs_baseline"]
    verdict = "beats" if lo > 0 else ("is worse than" if hi < 0 else "is not distinguishable from")
    return (f"**Self-consistency at k={r['budget']}** scores {r['accuracy']:.3f} vs greedy {rows[0]['accuracy']:.3f}: "
            f"{r['vs baseline']:+.3f} (95% CI [{lo:+.3f}, {hi:+.3f}] over problems), so it {verdict} greedy here.")


def _search(cfg: SearchConfig, engine: Engine, task: Task, problems: list[Problem], budget: int) -> list:
    from ahalab.scaling.beam import beam_search, dvts
    from ahalab.scaling.scorers import make_scorer

    search = {"beam": beam_search, "dvts": dvts}[cfg.strategy]
    return search(engine, task, problems, make_scorer(cfg.scorer, task, cfg.orm, cfg.prm), n=budget,
                  beam_width=cfg.beam_width, max_steps=cfg.max_steps, step_tokens=cfg.step_tokens, fmt=cfg.format,
                  max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)


def _budget_forcing(cfg: BudgetForcingConfig, engine: Engine, task: Task, problems: list[Problem],
                    budget: int) -> list:
    from ahalab.scaling.budget import budget_forcing

    return budget_forcing(engine, task, problems, fmt=cfg.format, think_tokens=cfg.think_tokens, waits=budget,
                          answer_tokens=cfg.answer_tokens, seed=cfg.seed,
                          end_think=cfg.end_think or ("</think>" if cfg.format == "r1" else None))


def _adaptive(cfg: AdaptiveConfig, engine: Engine, task: Task, problems: list[Problem], budget: int) -> list:
    from ahalab.scaling.adaptive import adaptive_consistency

    return adaptive_consistency(engine, task, problems, max_samples=budget, chunk=cfg.chunk, threshold=cfg.threshold,
                                fmt=cfg.format, max_tokens=cfg.max_tokens, temperature=cfg.temperature, seed=cfg.seed)


def run_budgets(cfg: SearchConfig | BudgetForcingConfig | AdaptiveConfig, engine: Engine, task: Task,
                problems: list[Problem], run_dir: RunDir) -> str:
    """beam / dvts / budget-forcing / adaptive: one engine run per budget, plus greedy decoding for reference."""
    from ahalab.scaling.config import AdaptiveConfig, BudgetForcingConfig, SearchConfig
    from ahalab.scaling.report import outcome_records, outcome_row, write_report
    from ahalab.scaling.strategies import sample_and_select
    from ahalab.scaling.sweep import Spec

    strategy = {SearchConfig: _search, BudgetForcingConfig: _budget_forcing, AdaptiveConfig: _adaptive}[type(cfg)]
    mode = cfg.strategy
    label = Spec(mode, cfg.scorer).name if isinstance(cfg, SearchConfig) else mode  # beam[oracle] (oracle)
    greedy = sample_and_select(engine, task, problems, lambda s: 0, fmt=cfg.format, n=1, temperature=0.0,
                               max_tokens=cfg.max_tokens, seed=cfg.seed)
    rows = [outcome_row("greedy", 1, greedy)]
    run_dir.append("samples.jsonl", outcome_records("greedy", 1, problems, greedy))
    for b in cfg.budgets:
        outcomes = strategy(cfg, engine, task, problems, b)
        rows.append(outcome_row(label, b, outcomes))
        run_dir.append("samples.jsonl", outcome_records(label, b, problems, outcomes))
    run_dir.write_summary({"mode": mode, "budget": cfg.BUDGET, "rows": rows})
    intro = _intro(cfg, problems) + ["", f"Budget = {cfg.BUDGET}. Intervals: 95% over problems. Costs are "
                                     "means per problem; forward tokens count every prompt re-read (no cache reuse)."]
    return write_report(run_dir, f"{mode}: {task.name}", intro, [(mode, rows, list(rows[0]))], rows)


def run_route(cfg: RouteConfig, engine: Engine, task: Task, problems: list[Problem], run_dir: RunDir) -> str:
    """The router against always-direct and always-reason, overall and per difficulty level."""
    from ahalab.scaling.report import outcome_records, outcome_row, write_report
    from ahalab.scaling.route import route, verdict

    k = cfg.reason_samples
    policies = route(engine, task, problems, thresholds=cfg.route_thresholds, probe_samples=cfg.probe_samples,
                     probe_temperature=cfg.probe_temperature, direct_tokens=cfg.direct_tokens,
                     reason_format=cfg.format, reason_samples=k, temperature=cfg.temperature,
                     max_tokens=cfg.max_tokens, seed=cfg.seed)
    rows, by_level = [], []
    levels = sorted({p.meta.get("level") for p in problems}, key=str)
    for name, outcomes in policies.items():
        escalated = [o.info.get("escalated", name == "always-reason") for o in outcomes]
        rows.append(outcome_row(name, "", outcomes, escalated=sum(escalated) / len(escalated)))
        run_dir.append("samples.jsonl", outcome_records(name, "", problems, outcomes))
        for level in levels:
            idx = [i for i, p in enumerate(problems) if p.meta.get("level") == level]
            by_level.append(outcome_row(name, "", [outcomes[i] for i in idx], level=level, problems=len(idx),
                                        escalated=sum(escalated[i] for i in idx) / len(idx)))
    run_dir.write_summary({"mode": "route", "rows": rows, "by_level": by_level, "verdict": verdict(rows)})
    probe = (f"{cfg.probe_samples} direct samples at temperature {cfg.probe_temperature} (signal: agreement share)"
             if cfg.probe_samples > 1 else "the greedy direct answer (signal: its confidence)")
    intro = _intro(cfg, problems) + [
        "", f"Probe: {probe}, at most {cfg.direct_tokens} tokens. route@t answers with the probe when its signal >= t, "
        f"else escalates to `{cfg.format}` with {k} samples and a majority vote (always-reason does that for every "
        "problem). Escalations reuse always-reason's samples; each policy is charged for the passes it uses.", "",
        f"**{verdict(rows)}**"]
    cols = ["strategy", "accuracy", "95% CI", "gen tokens", "forward tokens", "wall s", "escalated"]
    plot = [{**r, "strategy": "route" if r["strategy"].startswith("route") else r["strategy"]} for r in rows]
    return write_report(run_dir, f"When to reason: {task.name}", intro,
                        [("Policies", rows, cols), ("By level", by_level, ["level", "problems", *cols])], plot)
