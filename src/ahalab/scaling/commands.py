"""`ahalab scale`: inference-time scaling, as a one-pass budget sweep or one strategy run through the engine."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ahalab.eval.commands import add_common_model_args, config_engine, explicit_flags

MODES = ("sweep", "beam", "dvts", "budget-forcing", "adaptive", "route")
# What a budget means per mode, and the budgets used when none are given.
BUDGETS = {"sweep": ("samples per problem", None), "beam": ("paths per round", [4, 8, 16]),
           "dvts": ("paths per round", [4, 8, 16]), "budget-forcing": ("forced Waits", [0, 1, 2, 4]),
           "adaptive": ("max samples", [4, 8, 16])}


@dataclass
class ScaleConfig:
    model: str = "smollm2-135m"
    task: str = "arithmetic"
    task_options: dict[str, Any] | None = None
    data: str | None = None
    limit: int | None = 200
    strategy: str = "sweep"  # one of MODES
    strategies: list[str] = field(default_factory=lambda: ["majority", "best-of-n", "weighted-vote", "adaptive",
                                                            "pass@k"])
    max_samples: int = 32  # sweep: samples drawn per problem
    budgets: list[int] | None = None  # None: 1, 2, 4 ... max_samples for the sweep, BUDGETS for the other modes
    seeds: int = 5  # sweep: subsampling seeds
    format: str = "cot"
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512
    engine: str | None = None
    dtype: str | None = None
    seed: int = 0
    out: str | None = None
    orm: str | None = None  # HF sequence-classification checkpoint for the "orm" scorer
    prm: str | None = None  # HF sequence-classification checkpoint for the "prm" scorer (partial solutions)
    scorer: str = "confidence"  # beam/dvts step scorer: confidence (policy step logprob) | prm | orm | oracle
    beam_width: int = 4  # beam/dvts: expansions per kept path (M)
    step_tokens: int = 128
    max_steps: int = 12
    think_tokens: int = 512  # budget forcing: thinking cap
    answer_tokens: int = 64
    end_think: str | None = None  # None: "</think>" for the r1 format, else the end of the sequence
    threshold: float = 0.95  # adaptive: Beta stopping rule's confidence
    chunk: int = 1  # adaptive: samples per problem per round
    probe_samples: int = 4  # route: short direct samples (1: the greedy direct answer and its confidence)
    probe_temperature: float = 0.7
    direct_tokens: int = 32
    route_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    reason_samples: int = 8  # route: CoT samples voted on when escalating (and by always-reason)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "scale", help="inference-time scaling: budget sweep (SC, best-of-n, weighted vote, adaptive), beam, DVTS, "
        "budget forcing, routing", description="Default (--strategy sweep): one sampling pass of --max-samples per "
        "problem plus a greedy pass, then every strategy in --strategies at every budget by subsampling over --seeds "
        "seeds: a table of accuracy (95% intervals over seeds and over problems, difference from greedy) and mean "
        "tokens per problem, and a PNG of accuracy vs generated tokens. Other --strategy modes generate through the "
        "engine once per budget: " + "; ".join(f"{m}: budget = {b[0]}" for m, b in BUDGETS.items() if m != "sweep")
        + ". route compares a cheap-probe router with always-direct and always-reason.")
    add_common_model_args(p)
    p.add_argument("--strategy", choices=MODES, help="mode (default sweep)")
    p.add_argument("--strategies", type=_names, help="sweep strategies, comma-separated: majority, best-of-n[:scorer], "
                   "weighted-vote[:scorer], adaptive, pass@k (oracle); scorers: confidence (default), orm, prm, oracle")
    p.add_argument("--max-samples", dest="max_samples", type=int, help="sweep: samples per problem (default 32)")
    p.add_argument("--budgets", type=_ints, help="comma-separated, e.g. 1,2,4,8,16,32")
    p.add_argument("--seeds", type=int, help="sweep: subsampling seeds (default 5)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.8)")
    p.add_argument("--orm", help="outcome reward model: HF sequence-classification checkpoint (dir or hub id)")
    p.add_argument("--prm", help="process reward model for beam/dvts: HF sequence-classification checkpoint")
    p.add_argument("--scorer", help="beam/dvts step scorer: confidence (default) | prm | orm | oracle")
    p.add_argument("--beam-width", dest="beam_width", type=int, help="beam/dvts: expansions per kept path (default 4)")
    p.add_argument("--think-tokens", dest="think_tokens", type=int, help="budget-forcing: thinking cap (default 512)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.config import load_config

    cfg = load_config(ScaleConfig, args.config, args.overrides, explicit_flags(args))
    run_dir, printed = run_scale(cfg)
    print(printed)
    print(f"run directory: {run_dir.path} (report.md, summary.json, samples.jsonl, accuracy_vs_tokens.png)")
    return 0


def run_scale(cfg: ScaleConfig, engine=None):
    """Run ``cfg``'s mode; write the run directory. Returns (RunDir, text tables)."""
    from ahalab.config import to_dict
    from ahalab.engines import engine_or_new
    from ahalab.errors import UserError
    from ahalab.eval.metrics import default_ks
    from ahalab.runs import RunDir
    from ahalab.tasks import get_task

    if cfg.strategy not in MODES:
        raise UserError(f"unknown --strategy '{cfg.strategy}'; valid: {', '.join(MODES)}")
    if cfg.max_samples < 1 or cfg.seeds < 1:
        raise UserError("--max-samples and --seeds must be >= 1")
    if cfg.budgets is None and cfg.strategy in BUDGETS:
        cfg.budgets = BUDGETS[cfg.strategy][1] or default_ks(cfg.max_samples)
    if cfg.strategy in BUDGETS:
        low = 0 if cfg.strategy == "budget-forcing" else 1
        high = cfg.max_samples if cfg.strategy == "sweep" else None
        if not cfg.budgets or min(cfg.budgets) < low or (high and max(cfg.budgets) > high):
            raise UserError(f"{cfg.strategy} budgets ({BUDGETS[cfg.strategy][0]}) must be >= {low}"
                            f"{f' and <= --max-samples {high}' if high else ''}; got {cfg.budgets}")
    if min(cfg.reason_samples, cfg.probe_samples, cfg.chunk) < 1:
        raise UserError("reason_samples, probe_samples and chunk must be >= 1")
    task = get_task(cfg.task, **(cfg.task_options or {}))
    problems = task.load(cfg.data, limit=cfg.limit, seed=cfg.seed)
    if not problems:
        raise UserError(f"task '{cfg.task}' produced no problems (data: {cfg.data or 'generated'})")
    with engine_or_new(engine, partial(config_engine, cfg)) as used:
        cfg.engine = used.name
        run_dir = RunDir.create(cfg.out, f"scale-{cfg.strategy}", to_dict(cfg))
        runner = {"sweep": run_sweep, "route": run_route}.get(cfg.strategy, run_budgets)
        result = runner(cfg, used, task, problems, run_dir)
    return run_dir, result


def _intro(cfg: ScaleConfig, problems: list) -> list[str]:
    return [f"Model `{cfg.model}`, engine `{cfg.engine}`, task `{cfg.task}` ({len(problems)} problems"
            f"{', options ' + str(cfg.task_options) if cfg.task_options else ''}), format `{cfg.format}`, "
            f"max {cfg.max_tokens} new tokens, seed {cfg.seed}."]


def run_sweep(cfg: ScaleConfig, engine, task, problems, run_dir) -> str:
    """Greedy pass + one sampling pass, scores once per sample, then the subsampled sweep."""
    from ahalab.scaling.report import write_report
    from ahalab.scaling.scorers import make_scorer
    from ahalab.scaling.strategies import sample, score_samples
    from ahalab.scaling.sweep import greedy_row, parse_strategies, sweep, table_rows, timed

    specs = parse_strategies(cfg.strategies)
    scorers = {s.scorer: make_scorer(s.scorer, task, cfg.orm, cfg.prm) for s in specs if s.scorer}
    (greedy, _), greedy_s = timed(sample, engine, task, problems, cfg.format, 1, 0.0, cfg.max_tokens, seed=cfg.seed,
                                  desc="greedy pass")
    (samples, _), sampling_s = timed(sample, engine, task, problems, cfg.format, cfg.max_samples, cfg.temperature,
                                     cfg.max_tokens, top_p=cfg.top_p, seed=cfg.seed + 1, desc="sampling pass")
    _, scoring_s = timed(lambda: [score_samples(problems, samples, n, s) for n, s in scorers.items()])
    base = greedy_row(greedy)
    rows, sweep_s = timed(sweep, problems, samples, specs, cfg.budgets, range(cfg.seed, cfg.seed + cfg.seeds),
                          task.equivalent, cfg.threshold, base["per_problem"])
    sampled_tokens = sum(s.tokens for group in samples for s in group)
    timing = {"greedy_pass_s": greedy_s, "sampling_pass_s": sampling_s, "scoring_s": scoring_s, "sweep_s": sweep_s,
              "sampled_tokens": sampled_tokens, "sampling_tokens_per_s": sampled_tokens / sampling_s,
              "strategies": len(specs), "budgets": len(cfg.budgets)}
    run_dir.append("samples.jsonl", [
        {"problem_id": p.id, "level": p.meta.get("level"), "sample": j if j >= 0 else "greedy", "gold": p.answer,
         "answer": s.answer, "correct": s.correct, "tokens": s.tokens, "prompt_tokens": s.prompt_tokens,
         "finish_reason": s.finish_reason, "scores": s.scores, "text": s.text}
        for p, g, group in zip(problems, greedy, samples) for j, s in [(-1, g[0]), *enumerate(group)]])
    all_rows = [base, *rows]
    run_dir.write_json("summary.json", {"mode": "sweep", "timing": timing,
                                        "rows": [{k: v for k, v in r.items() if k != "per_problem"} for r in all_rows]})
    shown = table_rows(all_rows, sampling_s / sampled_tokens if sampled_tokens else 0.0)
    intro = _intro(cfg, problems) + [
        "", f"One greedy pass ({greedy_s:.1f} s) and one sampling pass of {cfg.max_samples} samples per problem at "
        f"temperature {cfg.temperature} ({sampling_s:.1f} s, {sampled_tokens} tokens); scoring {scoring_s:.1f} s; "
        f"all {len(specs)} strategies x {len(cfg.budgets)} budgets by subsampling over {cfg.seeds} seeds in "
        f"{sweep_s:.1f} s, with no further generation.", "",
        "Budget = samples drawn per problem. `vs greedy`: paired accuracy difference from greedy decoding with its "
        "95% interval over problems. `est. wall s`: generated tokens x the sampling pass's seconds per token. Rows "
        "marked (oracle) use the gold answer: an upper bound for analysis, not a usable strategy.", "",
        self_consistency_line(all_rows)]
    return write_report(run_dir, f"Inference-time scaling: {task.name}", intro,
                        [("Accuracy vs budget", shown, list(shown[0]))], all_rows, band="ci_seeds")


def self_consistency_line(rows: list[dict]) -> str:
    """The issue's bar: majority vote at k=8 (or the largest k) vs greedy, with its interval."""
    maj = [r for r in rows if r["strategy"] == "majority"]
    if not maj:
        return ""
    r = next((r for r in maj if r["budget"] == 8), maj[-1])
    lo, hi = r["ci_vs_baseline"]
    verdict = "beats" if lo > 0 else ("is worse than" if hi < 0 else "is not distinguishable from")
    return (f"**Self-consistency at k={r['budget']}** scores {r['accuracy']:.3f} vs greedy {rows[0]['accuracy']:.3f}: "
            f"{r['vs baseline']:+.3f} (95% CI [{lo:+.3f}, {hi:+.3f}] over problems), so it {verdict} greedy here.")


def run_budgets(cfg: ScaleConfig, engine, task, problems, run_dir) -> str:
    """beam / dvts / budget-forcing / adaptive: one engine run per budget, plus greedy decoding for reference."""
    from ahalab.errors import UserError
    from ahalab.scaling.adaptive import adaptive_consistency
    from ahalab.scaling.beam import beam_search, dvts
    from ahalab.scaling.budget import budget_forcing
    from ahalab.scaling.report import outcome_records, outcome_row, write_report
    from ahalab.scaling.scorers import make_scorer
    from ahalab.scaling.strategies import sample_and_select

    mode = cfg.strategy
    common = {"fmt": cfg.format, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature, "seed": cfg.seed}
    if mode in ("beam", "dvts"):
        if any(b < cfg.beam_width or b % cfg.beam_width for b in cfg.budgets):
            raise UserError(f"{mode} budgets must be multiples of --beam-width {cfg.beam_width}; got {cfg.budgets}")
        scorer = make_scorer(cfg.scorer, task, cfg.orm, cfg.prm)

    def run(budget: int) -> list:
        if mode in ("beam", "dvts"):
            search = beam_search if mode == "beam" else dvts
            return search(engine, task, problems, scorer, n=budget, beam_width=cfg.beam_width,
                          max_steps=cfg.max_steps, step_tokens=cfg.step_tokens, **common)
        if mode == "budget-forcing":
            return budget_forcing(engine, task, problems, fmt=cfg.format, think_tokens=cfg.think_tokens, waits=budget,
                                  answer_tokens=cfg.answer_tokens, seed=cfg.seed,
                                  end_think=cfg.end_think or ("</think>" if cfg.format == "r1" else None))
        return adaptive_consistency(engine, task, problems, max_samples=budget, chunk=cfg.chunk,
                                    threshold=cfg.threshold, **common)
    greedy = sample_and_select(engine, task, problems, lambda s: 0, fmt=cfg.format, n=1, temperature=0.0,
                               max_tokens=cfg.max_tokens, seed=cfg.seed)
    rows = [outcome_row("greedy", 1, greedy)]
    run_dir.append("samples.jsonl", outcome_records("greedy", 1, problems, greedy))
    for b in cfg.budgets:
        outcomes = run(b)
        rows.append(outcome_row(mode, b, outcomes))
        run_dir.append("samples.jsonl", outcome_records(mode, b, problems, outcomes))
    run_dir.write_json("summary.json", {"mode": mode, "budget": BUDGETS[mode][0], "rows": rows})
    intro = _intro(cfg, problems) + ["", f"Budget = {BUDGETS[mode][0]}. Intervals: 95% over problems. Costs are "
                                     "means per problem; forward tokens count every prompt re-read (no cache reuse)."]
    return write_report(run_dir, f"{mode}: {task.name}", intro, [(mode, rows, list(rows[0]))], rows)


def run_route(cfg: ScaleConfig, engine, task, problems, run_dir) -> str:
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
    run_dir.write_json("summary.json", {"mode": "route", "rows": rows, "by_level": by_level, "verdict": verdict(rows)})
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
