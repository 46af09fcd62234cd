"""report.md (and a pass@k / maj@k plot) for an eval run directory."""
from __future__ import annotations

from typing import Any

from ahalab.plots import line_plot, markdown_table
from ahalab.runs import RunDir


def metric_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ["problems", "samples", "accuracy"] + [k for k in summary if k.startswith(("pass@", "maj@"))]
    keys += ["mean_tokens", "truncated", "extracted", "wall_s", "gen_tokens_per_s"]
    return [{"metric": k, "value": summary[k]} for k in keys if k in summary]


def write_eval_report(run_dir: RunDir, cfg: Any, result: Any, examples: int = 3) -> None:
    s = result.summary
    lines = [f"# Evaluation: {cfg.model} on {cfg.task}", "",
             f"Format `{cfg.format}`, engine `{cfg.engine}`, {s['samples']} sample(s) per problem at temperature "
             f"{cfg.temperature}, max {cfg.max_tokens} new tokens, seed {cfg.seed}.", "",
             markdown_table(metric_rows(s), ["metric", "value"])]
    ks = sorted(int(k[5:]) for k in s if k.startswith("pass@"))
    if ks:
        series = {"pass@k": ([1] + ks, [s["accuracy"]] + [s[f"pass@{k}"] for k in ks]),
                  "maj@k": ([1] + ks, [s["accuracy"]] + [s[f"maj@{k}"] for k in ks])}
        line_plot(run_dir.file("pass_maj_at_k.png"), series, xlabel="k (samples)", ylabel="accuracy",
                  title=f"{cfg.task}: pass@k and maj@k", logx=True)
        lines += ["![pass@k and maj@k](pass_maj_at_k.png)", ""]
    for label, want in (("Correct", True), ("Wrong", False)):
        picked = [r for r in result.records if r["correct"] == want][:examples]
        if picked:
            lines.append(f"## {label} examples")
            for r in picked:
                lines += ["", f"**{r['problem_id']}** (gold `{r['gold']}`, extracted `{r['answer']}`)", "",
                          "```text", r["completion"].strip()[:1500], "```"]
            lines.append("")
    run_dir.write_text("report.md", "\n".join(lines) + "\n")
