"""Result rows and report.md/plot for `ahalab scale` run directories (intervals: ``ahalab.stats``)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ahalab.plots import line_plot, markdown_table, text_table
from ahalab.runs import RunDir
from ahalab.scaling.strategies import Outcome
from ahalab.stats import ci_text, interval, mean


def outcome_row(strategy: str, budget: int | str, outcomes: list[Outcome], **extra: Any) -> dict[str, Any]:
    """Accuracy with a 95% interval over problems, and mean costs per problem, of one strategy run."""
    correct = [float(o.correct) for o in outcomes]
    return {"strategy": strategy, "budget": budget, "accuracy": mean(correct), "95% CI": ci_text(*interval(correct)),
            "gen tokens": mean([o.cost.generated_tokens for o in outcomes]),
            "forward tokens": mean([o.cost.forward_tokens for o in outcomes]),
            "wall s": mean([o.cost.wall_s for o in outcomes]), **extra}


def outcome_records(strategy: str, budget: int | str, problems: Sequence, outcomes: list[Outcome]) -> list[dict]:
    """samples.jsonl rows: one per problem with the chosen response, its verdict and its cost."""
    return [{"strategy": strategy, "budget": budget, "problem_id": p.id, "level": p.meta.get("level"),
             "gold": p.answer, "answer": o.answer, "correct": o.correct, "gen_tokens": o.cost.generated_tokens,
             "forward_tokens": o.cost.forward_tokens, "wall_s": round(o.cost.wall_s, 4), **o.info, "text": o.text}
            for p, o in zip(problems, outcomes)]


def write_report(run_dir: RunDir, title: str, intro: list[str], sections: list[tuple[str, list[dict], list[str]]],
                 plot_rows: list[dict] | None = None, band: str | None = None) -> str:
    """report.md with one table per (heading, rows, columns) section and, from ``plot_rows``, a PNG of
    accuracy vs mean generated tokens per problem with one line per strategy (``band``: the row key of a
    [low, high] interval to shade, where a strategy's rows all have one). Returns the text tables."""
    lines = [f"# {title}", "", *intro, ""]
    printed = []
    for heading, rows, columns in sections:
        lines += [f"## {heading}", "", markdown_table(rows, columns)]
        printed.append(f"{heading}\n{text_table(rows, columns)}")
    if plot_rows:
        series, bands = {}, {}
        for name in dict.fromkeys(r["strategy"] for r in plot_rows):
            rows = sorted((r for r in plot_rows if r["strategy"] == name), key=lambda r: r["gen tokens"])
            series[name] = ([r["gen tokens"] for r in rows], [r["accuracy"] for r in rows])
            if band and all(r.get(band) for r in rows):
                bands[name] = ([r[band][0] for r in rows], [r[band][1] for r in rows])
        line_plot(run_dir.file("accuracy_vs_tokens.png"), series, bands=bands, logx=True, title=title,
                  xlabel="mean generated tokens per problem", ylabel="accuracy")
        lines += ["![accuracy vs generated tokens](accuracy_vs_tokens.png)", ""]
    run_dir.write_text("report.md", "\n".join(lines) + "\n")
    return "\n".join(printed)
