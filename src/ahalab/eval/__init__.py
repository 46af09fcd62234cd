"""Evaluation: sample, grade, and summarise (accuracy, pass@k, maj@k, tokens, time): ``evaluate``, ``metrics``."""
