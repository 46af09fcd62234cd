"""The "aha" signals of an R1-Zero run (reflection phrases, response length) and its plots and report."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ahalab.plots import line_plot, markdown_table
from ahalab.runs import RunDir

# Phrases of self-reflection (R1's "aha moment") and of backtracking (a search's "Back up." after a dead end,
# as the countdown journey traces write it), matched case-insensitively on word boundaries.
REFLECTION_PHRASES = ("wait", "let me check", "let me verify", "let's check", "let's verify", "verify",
                      "double-check", "double check", "re-check", "recheck", "re-evaluate", "reevaluate",
                      "i made a mistake", "that's not right", "on second thought", "hmm",
                      "back up", "backtrack", "try again", "dead end")
REFLECTION = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in REFLECTION_PHRASES) + r")\b", re.I)


def reflection_rate(texts: list[str]) -> float:
    """Share of texts with at least one reflection phrase."""
    return sum(bool(REFLECTION.search(t)) for t in texts) / len(texts) if texts else 0.0


STALL_STEPS = 3  # steps in a row that no sample was right while (nearly) all had the format


def stalled_at(rows: list[dict[str, Any]], steps: int = STALL_STEPS) -> int | None:
    """The first step that ended ``steps`` steps in a row where no sample was right and at least 95% had the format:
    a policy collapsed into the format with guessed answers. Its groups' rewards are then (nearly) all equal, so
    group-relative advantages are zero and GRPO has nothing to learn from (docs/results.md, "LoRA at 20x the learning
    rate"); None if no step did."""
    run = 0
    for r in (r for r in rows if "time_step_s" in r):
        run = run + 1 if r.get("accuracy") == 0 and r.get("format_rate", 0.0) >= 0.95 else 0
        if run == steps:
            return r["step"]
    return None


STALL_ADVICE = (f"no sample was right for {STALL_STEPS} steps while (nearly) every one had the format: the groups' "
                "rewards are equal, so GRPO has nothing to learn from and the run stays collapsed; a lower lr, a KL "
                "anchor (beta) or a model that already answers some problems right (SFT first) avoid it")


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [x for x, _ in pts], [y for _, y in pts]


PLOTS = {  # file -> (y label, metrics plotted)
    "reward.png": ("reward", ("reward_mean",)),
    "accuracy.png": ("accuracy", ("accuracy", "format_rate", "eval_accuracy", "eval_format_rate")),
    "length.png": ("completion tokens", ("completion_tokens_mean", "eval_mean_tokens")),
    "reflection.png": ("share of completions", ("reflection_rate",)),
}


def write_plots(run: RunDir, rows: list[dict[str, Any]]) -> list[Path]:
    """PNG curves of reward, accuracy and format (train and held-out), length and reflection rate."""
    paths = []
    for name, (ylabel, keys) in PLOTS.items():
        series = {k: _series(rows, k) for k in keys}
        series = {k: v for k, v in series.items() if v[0]}
        if series:
            paths.append(line_plot(run.file(name), series, xlabel="step", ylabel=ylabel, title=ylabel))
    return paths


REPORT_COLUMNS = ("step", "reward_mean", "accuracy", "format_rate", "completion_tokens_mean", "reflection_rate",
                  "zero_std_groups", "kl", "clip_fraction", "grad_norm", "time_step_s", "eval_accuracy")


def write_report(run: RunDir, config: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any]) -> Path:
    """report.md: summary, the metric table (every few steps and every eval), plots, one late sample."""
    every = max(1, len(rows) // 20)
    shown = [r for i, r in enumerate(rows) if i % every == 0 or "eval_accuracy" in r or i == len(rows) - 1]
    lines = [f"# ahalab zero: {config['model']} on {config['task']} ({config['loss']})", "",
             markdown_table([summary]), "## Metrics", "", markdown_table(shown, REPORT_COLUMNS), "## Curves", ""]
    lines += [f"![{name}]({name})" for name in PLOTS if run.file(name).exists()]
    samples = run.file("samples.jsonl")
    if samples.exists():
        from ahalab.runs import read_jsonl

        last = read_jsonl(samples, tolerate_torn_tail=True)[-1:]
        for s in last:
            lines += ["", f"## A completion at step {s['step']} (reward {s['reward']:.3g})", "",
                      f"Question: {s['question']} (answer {s['answer']})", "", "```", s["completion"], "```"]
    return run.write_text("report.md", "\n".join(lines) + "\n")
