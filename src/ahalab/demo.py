"""`make demo`: the default model on 200 arithmetic problems, direct vs CoT vs majority vote over 8 samples."""
from __future__ import annotations

import argparse
import os

from ahalab.eval.commands import EvalConfig, run_eval


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--engine", default=None)
    a = ap.parse_args(argv)

    from ahalab.engines import make_engine
    from ahalab.models import resolve_model
    from ahalab.report import text_table

    engine = make_engine(a.engine, resolve_model(a.model), seed=0)
    settings = [("direct, greedy", "direct", 1, "acc"), ("CoT, greedy", "cot", 1, "acc"),
                ("CoT, 8 samples", "cot", 8, "maj@8")]
    rows = []
    for label, fmt, samples, key in settings:
        cfg = EvalConfig(model=a.model, task="arithmetic", limit=a.limit, format=fmt, samples=samples,
                         max_tokens=256, out=os.path.join(a.out, f"eval-{fmt}-{samples}"))
        s, run_dir = run_eval(cfg, engine=engine)
        rows.append({"setting": label, "accuracy": s["accuracy"], "maj@8": s.get("maj@8"),
                     "mean tokens": s["mean_tokens"], "wall s": s["wall_s"], "run directory": str(run_dir.path)})
    print("\nInference-time scaling on arithmetic (level 1), " + a.model)
    print(text_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
