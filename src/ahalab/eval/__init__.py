"""Evaluation: sample, grade, and summarise (accuracy, pass@k, maj@k, tokens, time)."""
from ahalab.eval.evaluate import EvalResult, evaluate, summarize
from ahalab.eval.metrics import majority_vote, pass_at_k

__all__ = ["EvalResult", "evaluate", "majority_vote", "pass_at_k", "summarize"]
