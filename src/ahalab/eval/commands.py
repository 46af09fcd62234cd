"""`ahalab eval`: accuracy of a model on a task, written to a run directory."""
from __future__ import annotations

import argparse

from ahalab.args import add_common_model_args, explicit_flags


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a task (accuracy, pass@k, maj@k, tokens)",
                       description="Sample N completions per problem, grade them with the task's verifier and "
                       "report greedy accuracy (N=1) or pass@1 (mean over N), unbiased pass@k and maj@k for "
                       "k = 1, 2, 4, ... <= N, mean generated tokens and wall time. Writes config.yaml, "
                       "samples.jsonl, summary.json and report.md to the run directory.")
    add_common_model_args(p)
    p.add_argument("--samples", type=int, help="completions per problem (default 1: greedy)")
    p.add_argument("--temperature", type=float, help="default 0 for 1 sample, 0.8 for several")
    p.add_argument("--top-p", dest="top_p", type=float)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ahalab.config import load_config
    from ahalab.eval.evaluate import EvalConfig, run_eval

    cfg = load_config(EvalConfig, args.config, args.overrides, explicit_flags(args))
    summary, run_dir = run_eval(cfg)
    print(f"accuracy {summary['accuracy']:.3f} on {summary['problems']} problems; run directory: {run_dir.path}")
    return 0
