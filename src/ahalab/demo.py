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


def _summary(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(RECIPE), help="the demo recipe (default recipes/demo.yaml)")
    ap.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. zero.steps=10")
    a = ap.parse_args(argv)

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
    print(f"demo took {(time.perf_counter() - start) / 60:.1f} min; run directory: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
