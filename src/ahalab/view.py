"""`ahalab view RUN [RUN_B]`: a run's samples as one self-contained HTML page, or two runs side by side.

Each sample shows its verdict in colour, the extracted answer beside the gold, the question, the prompt and
the ``<think>`` part folded, and the rest of the completion. Verdicts, first that applies: correct;
truncated (the generation hit its token limit, finish_reason "length"); unparsed (no answer extracted);
ungraded (the row does not say whether it is right); wrong. Filters: source file (a recipe run has one per
stage), problem id, step (RL runs), verdict. With two runs the rows pair the samples of the same problem,
sample index and step, A beside B, with a filter "only where the verdicts differ".

RUN is a run directory holding samples.jsonl, a samples.jsonl file, or a directory above several (a recipe
run such as runs/demo: every samples.jsonl below it, each labelled by its relative path). Two recipe runs
are compared stage by stage (the stages of the same name). The page needs no network (CSS, script and data
inline) and shows model text as text, never as HTML: the data sits in a JSON block, rendered with
textContent, under a Content-Security-Policy that runs only the page's own script.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ahalab.errors import UserError

VERDICTS = ("correct", "wrong", "unparsed", "truncated", "ungraded")
DEFAULT_LIMIT = 5000  # samples read per file (--limit)
PAGE_SIZE = 200  # rows the page renders at a time ("show more" renders the next ones)
# RL rows carry their rewards as reward_<name>; these say whether the sample solved its problem (first present)
CORRECTNESS_REWARDS = ("reward_accuracy", "reward_code_all_pass")
# Row keys the common record takes over, per format (the rest go to "extra", shown as key: value)
USED = {
    "eval": {"problem_id", "sample", "prompt", "completion", "answer", "gold", "correct", "tokens", "finish_reason"},
    "zero": {"step", "problem_id", "question", "answer", "prompt", "completion", "tokens", "finish_reason"},
    "scale": {"problem_id", "sample", "gold", "answer", "correct", "tokens", "gen_tokens", "finish_reason", "text",
              "strategy", "budget"},
}

Extractor = Callable[[str], "str | None"]


def sample_format(row: dict[str, Any]) -> str | None:
    """Which writer made a samples.jsonl row: "eval" (ahalab eval), "zero" (GRPO training), "scale", or None."""
    if "problem_id" not in row:
        return None
    if "completion" in row and "step" in row:
        return "zero"
    if "completion" in row and "gold" in row:
        return "eval"
    if "text" in row and "gold" in row:
        return "scale"
    return None


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else json.dumps(value)


def _flag(value: Any) -> bool | None:
    """A correctness field as True/False, or None when it says nothing (missing, null, not a number)."""
    return bool(value) if isinstance(value, (bool, int, float)) and not (isinstance(value, float) and
                                                                          math.isnan(value)) else None


def verdict_of(correct: bool | None, answer: str | None, finish_reason: Any) -> str:
    if correct:
        return "correct"
    if finish_reason == "length":
        return "truncated"
    if answer is None:
        return "unparsed"
    return "ungraded" if correct is None else "wrong"


def default_extractor(text: str) -> str | None:
    from ahalab.tasks.answers import extract_answer
    from ahalab.tasks.base import Task

    return extract_answer(text, Task.extractors)


def normalise(row: dict[str, Any], where: str, extract: Extractor | None = None) -> dict[str, Any]:
    """One samples.jsonl row (any format ahalab writes) as the viewer's common record.

    Keys: problem_id, sample (None: number it by order), step (RL rows, else None), prompt, question, completion,
    answer (extracted), gold, correct (True/False/None), verdict, tokens, finish_reason, extra (the row's other
    fields). RL rows keep the gold in "answer" and no extracted answer: ``extract`` (default: the generic
    extractors) takes it from the completion. ``where`` (file:line) names the row in errors.
    """
    kind = sample_format(row)
    if kind is None:
        raise UserError(f"{where}: not a samples row of a known format (eval: problem_id, completion, gold; zero: "
                        f"problem_id, step, completion; scale: problem_id, text, gold); its keys: "
                        f"{', '.join(sorted(row)[:15])}")
    text = row["completion" if kind != "scale" else "text"]
    if not isinstance(text, str):
        raise UserError(f"{where}: field {'text' if kind == 'scale' else 'completion'} is "
                        f"{type(text).__name__}, expected a string")
    if kind == "zero":
        try:
            answer = (extract or default_extractor)(text)
        except Exception:  # an extractor must never stop the viewer on model output
            answer = None
        graded = next((k for k in CORRECTNESS_REWARDS if _flag(row.get(k)) is not None), None)
        correct = None if graded is None else row[graded] >= 1.0
        gold, sample = row.get("answer"), None
    else:
        answer, gold, correct = row.get("answer"), row.get("gold"), _flag(row.get("correct"))
        sample = row.get("sample")
        if kind == "scale" and "strategy" in row:  # a strategy's chosen response: one per problem and budget
            sample = f"{row['strategy']}@{row.get('budget')}" if row.get("budget") not in (None, "") \
                else str(row["strategy"])
    answer = _text(answer)
    tokens = row.get("tokens", row.get("gen_tokens"))
    return {"problem_id": str(row["problem_id"]), "sample": sample, "step": row.get("step"),
            "prompt": _text(row.get("prompt")), "question": _text(row.get("question")), "completion": text,
            "answer": answer, "gold": _text(gold), "correct": correct,
            "verdict": verdict_of(correct, answer, row.get("finish_reason")), "tokens": tokens,
            "finish_reason": row.get("finish_reason"), "extra": {k: v for k, v in row.items() if k not in USED[kind]}}


def split_think(text: str) -> tuple[str, str | None, str]:
    """(text before, the thinking or None, text after) of a completion's ``<think>...</think>`` part.

    A completion with only ``</think>`` thought from its start (the prompt opened the block); one with only
    ``<think>`` never closed it (its thinking runs to the end).
    """
    start, end = text.find("<think>"), text.find("</think>")
    if end >= 0:
        if 0 <= start < end:
            return text[:start], text[start + len("<think>"):end], text[end + len("</think>"):]
        return "", text[:end], text[end + len("</think>"):]
    if start >= 0:
        return text[:start], text[start + len("<think>"):], ""
    return text, None, ""


def answer_extractor(run_dir: Path) -> Extractor:
    """The extraction of the task that ``run_dir``'s config.yaml names, else the generic extractors."""
    import yaml

    from ahalab.tasks import get_task

    try:
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        return get_task(config["task"], **(config.get("task_options") or {})).extract
    except (OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError, UserError):
        return default_extractor


@dataclass
class Source:
    """One samples.jsonl: its label (relative path in a recipe run), records read, and rows it holds."""

    label: str
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def sample_files(run: Path) -> list[tuple[str, Path]]:
    """(label, path) of the samples files of RUN: a file, a run directory, or every samples.jsonl below it."""
    if run.is_file():
        return [(run.parent.name or run.name, run)]
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory or samples file")
    if (run / "samples.jsonl").is_file():
        return [(run.resolve().name, run / "samples.jsonl")]
    found = sorted(p for p in run.rglob("samples.jsonl") if p.is_file())
    if not found:
        raise UserError(f"{run}: no samples.jsonl in it or below it (eval, zero and scale runs write one)")
    return [(p.parent.relative_to(run).as_posix(), p) for p in found]


def load_source(label: str, path: Path, limit: int | None) -> Source:
    """The first ``limit`` rows (None: all) of a samples file, normalised; samples numbered where rows are not."""
    from ahalab.runs import iter_jsonl

    src, extract, seen = Source(label, path), None, {}
    for number, row in iter_jsonl(path, tolerate_torn_tail=True):
        src.total += 1
        if limit is not None and len(src.records) >= limit:
            continue
        if extract is None and sample_format(row) == "zero":
            extract = answer_extractor(path.parent)
        rec = normalise(row, f"{path}:{number}", extract)
        if rec["sample"] is None:  # RL rows: the i-th generation for this problem at this step
            key = (rec["step"], rec["problem_id"])
            rec["sample"] = seen[key] = seen.get(key, -1) + 1
        src.records.append(rec)
    return src


def _jsonable(value: Any) -> Any:
    """``value`` with non-finite floats as strings (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def page_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as the page shows it: the completion split around its thinking."""
    pre, think, post = split_think(rec["completion"])
    return {**{k: rec[k] for k in ("prompt", "question", "answer", "gold", "verdict", "tokens", "finish_reason")},
            "pre": pre, "think": think, "post": post, "extra": rec["extra"]}


def _key(rec: dict[str, Any]) -> tuple:
    return rec["problem_id"], str(rec["sample"]), rec["step"]


def _row(src: int, rec: dict[str, Any]) -> dict[str, Any]:
    return {"src": src, "problem_id": rec["problem_id"], "sample": rec["sample"], "step": rec["step"]}


def _cap_notes(sources: list[Source], limit: int | None, side: str = "") -> list[str]:
    return [f"{side}{s.label}: showing the first {len(s.records)} of {s.total} samples (--limit {limit}; "
            f"--limit 0 shows all)" for s in sources if len(s.records) < s.total]


def single_page_data(run: str, sources: list[Source], limit: int | None) -> dict[str, Any]:
    rows = [{**_row(i, rec), "a": page_record(rec)} for i, s in enumerate(sources) for rec in s.records]
    return {"mode": "single", "title": f"ahalab view: {run}", "runs": [run], "sources": [s.label for s in sources],
            "notes": _cap_notes(sources, limit), "rows": rows}


def pair_sources(a: list[Source], b: list[Source]) -> tuple[list[tuple[str, Source, Source]], list[str]]:
    """The (label, A, B) files compared: the one file of each run, else the files of the same label in both."""
    if len(a) == 1 and len(b) == 1:
        label = a[0].label if a[0].label == b[0].label else f"{a[0].label} | {b[0].label}"
        return [(label, a[0], b[0])], []
    by_label = {s.label: s for s in b}
    pairs = [(s.label, s, by_label[s.label]) for s in a if s.label in by_label]
    if not pairs:
        raise UserError(f"the runs have no samples file in common (A: {', '.join(s.label for s in a)}; "
                        f"B: {', '.join(s.label for s in b)}): name the two stage or run directories to compare")
    paired = {label for label, _, _ in pairs}
    notes = [f"only in {side}: {s.label}" for side, group in (("A", a), ("B", b)) for s in group
             if s.label not in paired]
    return pairs, notes


def compare_page_data(run_a: str, run_b: str, a: list[Source], b: list[Source],
                      limit: int | None) -> dict[str, Any]:
    pairs, notes = pair_sources(a, b)
    rows = []
    for i, (_, sa, sb) in enumerate(pairs):
        in_b = {_key(rec): rec for rec in sb.records}
        in_a = {_key(rec) for rec in sa.records}
        for rec in sa.records:
            other = in_b.get(_key(rec))
            rows.append({**_row(i, rec), "a": page_record(rec), "b": page_record(other) if other else None})
        rows += [{**_row(i, rec), "a": None, "b": page_record(rec)} for rec in sb.records if _key(rec) not in in_a]
    caps = _cap_notes([s for _, s, _ in pairs], limit, "A ") + _cap_notes([s for _, _, s in pairs], limit, "B ")
    return {"mode": "compare", "title": f"ahalab view: {run_a} vs {run_b}", "runs": [run_a, run_b],
            "sources": [label for label, _, _ in pairs], "notes": caps + notes, "rows": rows}


def data_json(data: dict[str, Any]) -> str:
    """``data`` as JSON safe inside a <script> element: no "<", ">" or "&" (written as \\u escapes)."""
    text = json.dumps(_jsonable(data), ensure_ascii=True, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_html(data: dict[str, Any], page_size: int = PAGE_SIZE) -> str:
    """The self-contained page: inline CSS and script, the data as a JSON block."""
    nonce = secrets.token_urlsafe(16)
    csp = f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:"
    values = {"CSP": csp, "NONCE": nonce, "TITLE": html.escape(data["title"]),
              "DATA": data_json({**data, "page_size": page_size, "verdicts": VERDICTS})}
    return re.sub(r"%(CSP|NONCE|TITLE|DATA)%", lambda m: values[m.group(1)], PAGE)  # one pass: no value re-read


def default_out(run_a: Path, run_b: Path | None) -> Path:
    base = run_a.parent if run_a.is_file() else run_a
    if run_b is None:
        return base / "view.html"
    name_b = (run_b.parent if run_b.is_file() else run_b).resolve().name
    return base / f"compare-{re.sub(r'[^A-Za-z0-9._-]+', '_', name_b) or 'b'}.html"


def write_view(run_a: str, run_b: str | None = None, out: str | None = None, limit: int | None = DEFAULT_LIMIT,
               page_size: int = PAGE_SIZE) -> Path:
    """Write the viewer page of one run (or the comparison of two) and return its path."""
    if limit is not None and limit < 0:
        raise UserError(f"--limit {limit}: give a positive number of samples per file, or 0 for all")
    limit = limit or None
    a = [load_source(label, path, limit) for label, path in sample_files(Path(run_a))]
    if run_b is None:
        data = single_page_data(run_a, a, limit)
    else:
        b = [load_source(label, path, limit) for label, path in sample_files(Path(run_b))]
        data = compare_page_data(run_a, run_b, a, b, limit)
    path = Path(out) if out else default_out(Path(run_a), Path(run_b) if run_b else None)
    from ahalab.runs import atomic_write_text

    atomic_write_text(path, render_html(data, page_size))
    return path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="look at a run's samples in the browser: one HTML page (or two runs side by side)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ahalab view runs/demo/03-zero\n  ahalab view runs/demo   "
                       "# every stage's samples, with a stage selector\n  ahalab view "
                       "runs/demo/07-report/evals/base-greedy runs/demo/07-report/evals/pure_rl-greedy")
    p.add_argument("run", metavar="RUN", help="run directory, samples.jsonl file, or recipe run directory")
    p.add_argument("run_b", metavar="RUN_B", nargs="?", help="a second run, shown beside the first, paired by "
                   "problem, sample index and step")
    p.add_argument("-o", "--out", help="the page to write (default RUN/view.html; with RUN_B: "
                   "RUN/compare-<name of RUN_B>.html)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=f"samples read per file (default "
                   f"{DEFAULT_LIMIT}; 0: all); the page says when a file had more")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(write_view(args.run, args.run_b, args.out, args.limit))
    return 0


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="%CSP%">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>%TITLE%</title>
<style nonce="%NONCE%">
:root { --correct: #1a7f37; --wrong: #cf222e; --unparsed: #7d6f5a; --truncated: #e36209; --ungraded: #6e7781; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1f2328; background: #f6f8fa; }
header { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid #d0d7de;
  padding: 8px 16px; }
h1 { font-size: 16px; margin: 0 0 6px; word-break: break-all; }
.filters { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center; }
.filters label { white-space: nowrap; }
#verdict-box { display: flex; gap: 14px; }
#legend { color: #57606a; margin-bottom: 4px; word-break: break-all; }
.notes { color: #9a6700; margin: 4px 0 0; padding-left: 18px; }
#stats { color: #57606a; margin-top: 4px; }
main { padding: 8px 16px 40px; }
.row { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; margin: 8px 0; padding: 8px 10px; }
.rowhead { color: #57606a; font-size: 12px; margin-bottom: 4px; }
.rowhead b { color: #1f2328; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 10px; }
.card { border-left: 4px solid var(--ungraded); padding-left: 8px; min-width: 0; }
.side { font-weight: 600; font-size: 12px; color: #57606a; }
.missing { color: #8c959f; font-style: italic; }
.head { display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: baseline; }
.badge { color: #fff; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600;
  background: var(--ungraded); }
.v-correct { border-color: var(--correct); } .badge.v-correct { background: var(--correct); }
.v-wrong { border-color: var(--wrong); } .badge.v-wrong { background: var(--wrong); }
.v-unparsed { border-color: var(--unparsed); } .badge.v-unparsed { background: var(--unparsed); }
.v-truncated { border-color: var(--truncated); } .badge.v-truncated { background: var(--truncated); }
.ans { font-family: ui-monospace, monospace; }
.meta { color: #57606a; font-size: 12px; }
.question { margin: 4px 0; }
details { margin: 4px 0; }
summary { cursor: pointer; color: #0969da; font-size: 12px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px 8px; background: #f6f8fa;
  border-radius: 4px; font: 12px/1.4 ui-monospace, monospace; }
details.think pre { background: #fff8c5; }
#more { margin: 8px 0; }
</style></head>
<body>
<header>
<h1 id="title"></h1>
<div id="legend"></div>
<div class="filters">
<label id="src-box">source <select id="src"></select></label>
<label>problem <input id="problem" list="problems" placeholder="problem id contains..." size="24"></label>
<datalist id="problems"></datalist>
<label id="step-box">step <select id="step"></select></label>
<span id="verdict-box"></span>
<label id="differ-box"><input type="checkbox" id="differ"> only where verdicts differ</label>
</div>
<ul class="notes" id="notes"></ul>
<div id="stats"></div>
</header>
<main><div id="rows"></div><button id="more" type="button"></button></main>
<script type="application/json" id="data">%DATA%</script>
<script nonce="%NONCE%">
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const compare = D.mode === "compare";
  const sides = compare ? ["a", "b"] : ["a"];
  let matched = [], shown = 0;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function option(select, value, label) {
    const o = el("option", null, label);
    o.value = value;
    select.append(o);
  }
  function fold(label, text, cls) {
    const d = el("details", cls);
    d.append(el("summary", null, label), el("pre", null, text));
    return d;
  }
  function show(text) { return text === null || text === undefined ? "\\u2014" : String(text); }

  document.title = D.title;
  $("title").textContent = D.title;
  for (const n of D.notes) $("notes").append(el("li", null, n));
  if (compare) $("legend").textContent = "A: " + D.runs[0] + "  \\u00b7  B: " + D.runs[1];
  else $("legend").hidden = true;

  if (D.sources.length > 1) {
    option($("src"), "", "all (" + D.sources.length + ")");
    D.sources.forEach((s, i) => option($("src"), String(i), s));
  } else { $("src-box").hidden = true; }

  const ids = [...new Set(D.rows.map((r) => r.problem_id))], idSet = new Set(ids);
  for (const id of ids.slice(0, 5000)) { const o = el("option"); o.value = id; $("problems").append(o); }

  const steps = [...new Set(D.rows.filter((r) => r.step !== null && r.step !== undefined).map((r) => r.step))];
  steps.sort((x, y) => x - y);
  if (steps.length) {
    option($("step"), "", "all");
    for (const s of steps) option($("step"), String(s), String(s));
  } else { $("step-box").hidden = true; }

  for (const side of sides) {
    const label = el("label", null, compare ? "verdict " + side.toUpperCase() + " " : "verdict ");
    const select = el("select");
    select.id = compare ? "verdict-" + side : "verdict";
    option(select, "", "any");
    for (const v of D.verdicts) option(select, v, v);
    label.append(select);
    $("verdict-box").append(label);
  }
  if (!compare) $("differ-box").hidden = true;

  function verdict(row, side) { return row[side] ? row[side].verdict : null; }
  function passes(row, f) {
    if (f.src !== "" && String(row.src) !== f.src) return false;
    if (f.problem && (idSet.has(f.exact) ? row.problem_id !== f.exact
                                          : !row.problem_id.toLowerCase().includes(f.problem))) return false;
    if (f.step !== "" && String(row.step) !== f.step) return false;
    for (const side of sides) if (f.verdict[side] && verdict(row, side) !== f.verdict[side]) return false;
    if (f.differ && verdict(row, "a") === verdict(row, "b")) return false;
    return true;
  }

  function card(rec, side) {
    const c = el("div", "card");
    if (compare) c.append(el("div", "side", side.toUpperCase()));
    if (!rec) { c.append(el("div", "missing", "no such sample in this run")); return c; }
    c.classList.add("v-" + rec.verdict);
    c.dataset.verdict = rec.verdict;
    const head = el("div", "head");
    head.append(el("span", "badge v-" + rec.verdict, rec.verdict), el("span", "ans", "answer: " + show(rec.answer)),
                el("span", "ans", "gold: " + show(rec.gold)));
    const meta = [];
    if (rec.tokens !== null && rec.tokens !== undefined) meta.push(rec.tokens + " tokens");
    if (rec.finish_reason) meta.push("finish: " + rec.finish_reason);
    for (const [k, v] of Object.entries(rec.extra || {}))
      meta.push(k + ": " + (typeof v === "number" ? +v.toPrecision(4) : JSON.stringify(v)));
    head.append(el("span", "meta", meta.join(" \\u00b7 ")));
    c.append(head);
    if (rec.question) c.append(el("div", "question", rec.question));
    if (rec.prompt) c.append(fold("prompt", rec.prompt, "prompt"));
    if (rec.pre) c.append(el("pre", "pre", rec.pre));
    if (rec.think !== null) {
      const line = rec.think.trim().split("\\n")[0];
      const preview = line.length > 80 ? line.slice(0, 80) + "\\u2026" : line;
      c.append(fold("think (" + rec.think.length + " chars): " + preview, rec.think, "think"));
    }
    if (rec.post) c.append(el("pre", "post", rec.post));
    return c;
  }

  function renderRow(row) {
    const r = el("div", "row");
    const head = el("div", "rowhead");
    head.append(el("b", null, row.problem_id), " \\u00b7 sample " + row.sample);
    if (row.step !== null && row.step !== undefined) head.append(" \\u00b7 step " + row.step);
    if (D.sources.length > 1) head.append(" \\u00b7 " + D.sources[row.src]);
    r.append(head);
    if (compare) {
      const cols = el("div", "cols");
      cols.append(card(row.a, "a"), card(row.b, "b"));
      r.append(cols);
    } else { r.append(card(row.a, "a")); }
    return r;
  }

  function renderMore() {
    const box = $("rows");
    const end = Math.min(matched.length, shown + D.page_size);
    for (; shown < end; shown++) box.append(renderRow(matched[shown]));
    const left = matched.length - shown;
    $("more").hidden = left <= 0;
    $("more").textContent = "show " + Math.min(left, D.page_size) + " more (" + left + " left)";
  }

  function apply() {
    const exact = $("problem").value.trim();
    const f = { src: $("src").value, exact: exact, problem: exact.toLowerCase(), step: $("step").value,
                differ: compare && $("differ").checked, verdict: {} };
    for (const side of sides) f.verdict[side] = $(compare ? "verdict-" + side : "verdict").value;
    matched = D.rows.filter((row) => passes(row, f));
    shown = 0;
    $("rows").replaceChildren();
    renderMore();
    const parts = [matched.length + " of " + D.rows.length + " rows"];
    for (const side of sides) {
      const counts = {};
      for (const row of matched) { const v = verdict(row, side); if (v) counts[v] = (counts[v] || 0) + 1; }
      const n = Object.values(counts).reduce((x, y) => x + y, 0);
      const text = D.verdicts.filter((v) => counts[v]).map((v) => v + " " + counts[v]).join(", ");
      parts.push((compare ? side.toUpperCase() + ": " : "") + (text || "none") +
                 (n ? " (accuracy " + ((counts.correct || 0) / n).toFixed(3) + ")" : ""));
    }
    $("stats").textContent = parts.join(" \\u2014 ");
  }

  for (const id of ["src", "step", "verdict", "verdict-a", "verdict-b", "differ"])
    if ($(id)) $(id).addEventListener("change", apply);
  $("problem").addEventListener("input", apply);
  $("more").addEventListener("click", renderMore);
  apply();
})();
</script>
</body></html>
"""
