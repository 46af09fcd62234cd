"""Markdown tables, terminal tables and PNG plots for run reports."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    return "" if v is None else str(v)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a GitHub Markdown table (columns default to the first row's keys)."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table for the terminal."""
    if not rows:
        return "(no rows)\n"
    cols = list(columns or rows[0].keys())
    cells = [[c for c in cols]] + [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out) + "\n"


def line_plot(path: str | Path, series: dict[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str,
              ylabel: str, title: str = "", bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
              logx: bool = False) -> Path:
    """One PNG with a line per series (name -> (xs, ys)); optional shaded (lo, hi) bands per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, (xs, ys) in series.items():
        (line,) = ax.plot(xs, ys, marker="o", markersize=3, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Any, path: str | Path) -> Path:
    """Write a figure to ``path`` atomically (a temporary file renamed into place) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def bar_plot(path: str | Path, labels: Sequence[str], series: dict[str, Sequence[float]], *, ylabel: str,
             title: str = "") -> Path:
    """One PNG of grouped bars: a group per label, a bar per series (name -> one value per label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(labels) * max(len(series), 1)), 4.2), dpi=110)
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
