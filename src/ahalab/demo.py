"""`make demo`: a tour of ahalab on the default model.

1. Evaluation: 200 arithmetic problems, direct answer vs chain of thought (greedy).
2. Inference-time scaling: one pass of 8 CoT samples per problem, then greedy vs majority vote,
   best-of-n, weighted vote and adaptive consistency at budgets 1..8, with a PNG plot.
"""
from __future__ import annotations

import argparse
import os

from ahalab.eval.commands import EvalConfig, run_eval


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--engine", default=None)
    a = ap.parse_args(argv)

    from ahalab.engines import make_engine
    from ahalab.models import resolve_model
    from ahalab.report import text_table
    from ahalab.scaling.commands import ScaleConfig, run_scale

    engine = make_engine(a.engine, resolve_model(a.model), seed=0)
    rows = []
    for fmt in ("direct", "cot"):
        cfg = EvalConfig(model=a.model, task="arithmetic", limit=a.limit, format=fmt, max_tokens=256,
                         out=os.path.join(a.out, f"eval-{fmt}"))
        s, run_dir = run_eval(cfg, engine=engine)
        rows.append({"format": fmt, "greedy accuracy": s["accuracy"], "mean tokens": s["mean_tokens"],
                     "wall s": s["wall_s"], "run directory": str(run_dir.path)})
    print(f"\n1. Evaluation: {a.model} on {a.limit} arithmetic problems (level 1)")
    print(text_table(rows))

    scale = ScaleConfig(model=a.model, limit=a.limit, max_samples=8, max_tokens=256, seeds=5,
                        out=os.path.join(a.out, "scale"))
    run_dir, tables = run_scale(scale, engine=engine)
    print("2. Inference-time scaling: accuracy (95% interval over seeds) vs budget, one generation pass")
    print(tables)
    print(f"plot: {run_dir.file('accuracy_vs_tokens.png')}\nreport: {run_dir.file('report.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
