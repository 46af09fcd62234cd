"""`make demo`: a tour of ahalab's four approaches on the default model (recipes/demo.yaml).

Evaluation (direct answer vs chain of thought), inference-time scaling (one sampling pass, every strategy x
budget, a plot), pure RL (GRPO), distillation (SFT on program-written traces), SFT + RL, and the
comparison of all of them on one held-out set. Runs through the recipe runner, so an interrupted demo
re-run resumes where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "demo.yaml"
STAGES = {"pure_rl": "zero", "distilled": "distill", "sft_rl": "sft_rl"}  # report label -> the stage that trained it


def _summary(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def training_note(label: str, out: dict[str, dict[str, Any]]) -> str:
    """What the stage behind report label ``label`` did, from its metrics: the first place to look for a cause."""
    from ahalab.runs import RunDir

    stage = out.get(STAGES.get(label, ""))
    if not stage or "summary" not in stage:
        return ""
    run = RunDir(Path(stage["summary"]).parent)
    rows, cfg = [r for r in run.metrics() if "time_step_s" in r], run.file("config.yaml")  # steps, not evals
    if not rows:
        return ""
    import yaml

    c = yaml.safe_load(cfg.read_text()) if cfg.exists() else {}
    steps = f"{len(rows)} step{'s' * (len(rows) > 1)}"
    lr = f"lr {c.get('lr')}" + (f" (LoRA rank {c['lora_r']})" if c.get("lora_r") else "")
    if "accuracy" in rows[0]:  # GRPO
        flat = sum(r.get("zero_std_groups", 0.0) for r in rows) / len(rows)
        sampled = f"sampled accuracy {rows[0]['accuracy']:.0%}" + (
            f" at the first step, {rows[-1]['accuracy']:.0%} at the last" if len(rows) > 1 else "")
        from ahalab.rl.analytics import STALL_ADVICE, stalled_at

        at = stalled_at(rows)
        return (f"{label}: {steps} of GRPO at {lr}" + (f", KL beta {c['beta']}" if c.get("beta") else "")
                + f"; {sampled}; {flat:.0%} of groups had all-equal rewards (no signal); "
                f"{sum(r['time_step_s'] for r in rows) / len(rows):.0f} s a step here."
                + (f" Collapsed at step {at}: {STALL_ADVICE}." if at else ""))
    return (f"{label}: {steps} of SFT at {lr} over {c.get('epochs')} epoch(s); "
            f"loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}.")


def closing_lines(pairs: list[dict[str, Any]], out: dict[str, dict[str, Any]]) -> list[str]:
    """One line per compared pair (greedy accuracy, paired 95% interval, in points), and for every approach that
    does not beat what it is compared with, what its training did."""
    lines = []
    for p in pairs:
        a, b, span = p["a"], p["b"], f"{_points(p['difference'])} points, 95% interval {_points(p['low'])} to " \
            f"{_points(p['high'])}"
        if p["low"] > 0:
            lines.append(f"{a} beats {b}: {span}.")
            continue
        verdict = "loses to" if p["high"] < 0 else "is not distinguishable from"
        lines.append(f"{a} {verdict} {b} on these problems: {span}.")
        note = training_note(a, out)
        if note:
            lines.append(f"  why to look at: {note}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(RECIPE), help="the demo recipe (default recipes/demo.yaml)")
    ap.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the engines' and libraries' logs")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. zero.steps=10")
    a = ap.parse_args(argv)
    from ahalab.logs import configure

    configure(a.verbose)

    from ahalab.pipeline import run_recipe
    from ahalab.plots import text_table

    start = time.perf_counter()
    out = run_recipe(a.recipe, a.out, a.overrides)
    scale = _summary(out["scale"]["summary"])
    direct = _summary(out["direct"]["summary"])
    top = max(r["budget"] for r in scale["rows"])
    rows = [{"strategy": "greedy, direct answer", "budget": 1, "accuracy": direct["accuracy"],
             "tokens per problem": direct["mean_tokens"]}]
    rows += [{"strategy": f"{r['strategy']}, chain of thought", "budget": r["budget"], "accuracy": r["accuracy"],
              "tokens per problem": r["gen tokens"]} for r in scale["rows"]
             if r["strategy"] == "greedy" or r["budget"] == top]
    print("\nEvaluation and inference-time scaling (arithmetic level 1)")
    print(text_table(rows))
    print(f"accuracy vs budget plot: {Path(out['scale']['report']).parent / 'accuracy_vs_tokens.png'}")
    report = _summary(out["report"]["summary"])
    print("\nThe four approaches on the same held-out problems")
    print(text_table(report["rows"], [c for c in report["rows"][0] if c not in ("model", "source")]))
    print(f"comparison: {out['report']['report']} (accuracy.png, accuracy_vs_tokens.png)")
    if report.get("pairs"):
        print("\nWhat the numbers say (greedy accuracy, paired over the same problems)")
        print("\n".join(closing_lines(report["pairs"], out)))
    print(f"demo took {(time.perf_counter() - start) / 60:.1f} min; run directory: {a.out}")
    return 0


if __name__ == "__main__":
    from ahalab.runs import prepare_process

    prepare_process()
    raise SystemExit(main())
