"""`ahalab report`: many runs, one held-out evaluation: the four approaches as numbers, side by side.

Each RUN names a model to compare (``LABEL=RUN`` sets its label):

- a training run directory (``ahalab zero``, ``sft``, ``distill``): its trained model and training time;
- a recipe stage directory (``runs/r1/04-rl_reason``) or a whole recipe run directory (every stage that
  produced a model): training time of the stage, and of the stages it was built from ("pipeline s");
- a checkpoint of a training run (``runs/zero/checkpoints/step-000010``): the model as of that step, and the
  training time of the steps up to it;
- an ``eval`` or ``scale`` run directory, an alias, a local HF directory or a hub id: an untrained model.

Every model is evaluated with the same settings (task, problems, format, max tokens, seed): greedy
accuracy and, with ``--samples K``, maj@K (self-consistency: the inference-time scaling column) from K
samples, and each model's greedy accuracy minus the baseline run's (``--baseline LABEL``, default the
first) on the same problems, with a paired 95% interval. The report directory gets summary.json,
report.md, accuracy.png (greedy and maj@K bars), accuracy_vs_tokens.png, and each run's own training plots
side by side; the evaluations' run directories sit under evals/ and are reused when a report is re-run with
the same settings (a recipe's report stage with changed settings starts afresh).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ahalab.config import Config
from ahalab.engines import EngineName
from ahalab.errors import UserError
from ahalab.stages import register_stage

# What each kind of run or stage is, in the essay's terms.
METHODS = {"zero": "RL (GRPO)", "sft": "SFT", "distill": "distillation", "eval": "base model",
           "scale": "base model", "model": "base model"}
TRAINING_PLOTS = ("accuracy.png", "reward.png", "length.png", "loss.png")


@dataclass
class Entry:
    """One model in a comparison: where it came from and what it cost to train."""

    label: str
    model: str
    method: str
    source: str
    train_s: float = 0.0  # training wall time of this run or stage
    pipeline_s: float = 0.0  # with the recipe stages it was built from
    plots: list[str] = field(default_factory=list)


@dataclass
class CompareConfig(Config):
    runs: list[str] = field(default_factory=list)  # RUN or LABEL=RUN each
    task: str = "arithmetic"
    task_options: dict[str, Any] | None = None
    data: str | None = None
    limit: int | None = 200
    format: str = "r1"
    max_tokens: int = 256
    samples: int = 8  # maj@samples next to greedy; 1: greedy only
    temperature: float = 0.8
    engine: EngineName | None = None
    seed: int = 1234  # problem generation and sampling; away from training seeds
    baseline: str | None = None  # label of the run the others are compared against (default: the first)
    pairs: list[list[str]] = field(default_factory=list)  # more paired differences: [[A, B], ...] is A - B
    out: str | None = None

    def validate(self) -> None:
        from ahalab.prompts import get_format

        if self.samples < 1:
            raise UserError(f"samples must be >= 1 (got {self.samples})")
        get_format(self.format)


def _read(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        return json.loads(path.read_text())
    return yaml.safe_load(path.read_text()) or {}


def _plots(run_dir: Path) -> list[str]:
    return [str(run_dir / p) for p in TRAINING_PLOTS if (run_dir / p).exists()]


def _stage_entry(stage_dir: Path, label: str | None, stages: dict[str, dict[str, Any]]) -> Entry | None:
    """The model a finished recipe stage produced (None for stages that produce none)."""
    meta = _read(stage_dir / "stage.json")
    if meta.get("status") != "done":
        raise UserError(f"{stage_dir}: stage '{meta.get('name')}' has not finished (re-run its recipe first)")
    model = meta.get("outputs", {}).get("model")
    if model is None:
        return None

    def upstream(name: str, seen: set[str]) -> float:
        if name in seen or name not in stages:
            return 0.0
        seen.add(name)
        return stages[name].get("wall_s", 0.0) + sum(upstream(r, seen) for r in stages[name].get("reads", []))

    own = meta.get("wall_s", 0.0)
    pipeline = upstream(meta["name"], set()) if meta["name"] in stages else own
    return Entry(label or meta["name"], model, METHODS.get(meta["kind"], meta["kind"]), str(stage_dir), own,
                 pipeline, _plots(stage_dir))


def _recipe_stages(run_dir: Path) -> dict[str, dict[str, Any]]:
    from ahalab.pipeline import stage_dirs

    metas = [_read(d / "stage.json") for d in stage_dirs(run_dir)]
    return {m["name"]: m for m in metas}


def _checkpoint_entry(ckpt: Path, label: str | None) -> Entry:
    """A training run's checkpoint (``<run>/checkpoints/step-N``): its model, and the run's step times up to N."""
    run_dir = ckpt.parent.parent
    config = _read(ckpt / "config.json")
    suffix = ckpt.name.rsplit("-", 1)[-1]
    step = int(suffix) if suffix.isdigit() else None
    from ahalab.runs import RunDir

    rows = RunDir(run_dir).metrics()  # a run killed mid-append leaves a torn last line: tolerated there
    train_s = sum(r.get("time_step_s", 0.0) for r in rows if step is None or r.get("step", 0) <= step)
    kind = "zero" if "rewards" in config else "sft"
    return Entry(label or f"{run_dir.name}/{ckpt.name}", str(ckpt / "model"), METHODS[kind], str(ckpt), train_s,
                 train_s)


def _training_entry(run_dir: Path, label: str) -> Entry:
    """A run directory of ``ahalab zero`` / ``sft`` / ``distill``, or of ``eval`` / ``scale`` (untrained)."""
    config = _read(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else {}
    summary = _read(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    if "rounds" in summary:  # ahalab distill: the last round's SFT run holds the model and its time
        sft_dirs = [Path(r["trained_model"]).parent for r in summary["rounds"]]
        train_s = sum(_read(d / "summary.json").get("train_time_s", 0.0) for d in sft_dirs)
        return Entry(label, summary["rounds"][-1]["trained_model"], METHODS["distill"], str(run_dir), train_s,
                     train_s, _plots(sft_dirs[-1]))
    if "trained_model" in summary:
        kind = "zero" if "rewards" in config else "sft"
        train_s = float(summary.get("train_time_s") or 0.0)
        return Entry(label, summary["trained_model"], METHODS[kind], str(run_dir), train_s, train_s, _plots(run_dir))
    if "model" in config:
        return Entry(label, str(config["model"]), METHODS["eval"], str(run_dir))
    raise UserError(f"{run_dir}: not a run directory ahalab report knows (no trained model in summary.json and no "
                    "model in config.yaml); has the run finished?")


def discover(spec: str) -> list[Entry]:
    """The entries one RUN argument names (see the module doc)."""
    label, path = (spec.split("=", 1) if "=" in spec and not os.path.exists(spec) else (None, spec))
    p = Path(path)
    if (p / "state.pt").is_file() and (p / "model" / "config.json").is_file():
        return [_checkpoint_entry(p, label)]
    if (p / "config.json").is_file() and (p.parent / "stage.json").is_file():  # ${stage.model} in a recipe
        p = p.parent
    elif (p / "config.json").is_file() and (p.parent / "summary.json").is_file():  # <run>/model
        p = p.parent
    if (p / "stage.json").is_file():
        entry = _stage_entry(p, label, _recipe_stages(p.parent))
        if entry is None:
            raise UserError(f"{p}: this stage produced no model to compare")
        return [entry]
    if p.is_dir() and any((d / "stage.json").is_file() for d in p.iterdir()):
        from ahalab.pipeline import stage_dirs

        stages = _recipe_stages(p)
        entries = [e for d in stage_dirs(p) for e in [_stage_entry(d, None, stages)] if e is not None]
        if not entries:
            raise UserError(f"{p}: no stage of this recipe run produced a model")
        return [Entry(f"{label}/{e.label}" if label else e.label, **{k: v for k, v in asdict(e).items()
                                                                      if k != "label"}) for e in entries]
    if p.is_dir() and ((p / "summary.json").exists() or (p / "config.yaml").exists()):
        return [_training_entry(p, label or p.name)]
    return [Entry(label or path, path, METHODS["model"], path)]  # an alias, HF directory or hub id


def greedy_correct(eval_dir: Path) -> dict[str, float]:
    """problem id -> 1.0/0.0: whether the greedy answer of an evaluation run is right."""
    rows = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    return {r["problem_id"]: float(r["correct"]) for r in rows if r["sample"] == 0}


def add_paired_differences(rows: list[dict[str, Any]], correct: dict[str, dict[str, float]], baseline: str) -> None:
    """Add each row's greedy accuracy minus ``baseline``'s on the same problems, with a paired 95% interval."""
    from ahalab.stats import ci_text, paired_difference

    base = correct[baseline]
    for i, row in enumerate(rows):
        diff, ci = paired_difference([correct[row["run"]][pid] for pid in base], list(base.values()))
        items = list(row.items())
        at = list(row).index("greedy") + 1  # the column goes next to greedy accuracy
        rows[i] = dict(items[:at] + [(f"greedy vs {baseline}", f"{diff:+.3f} {ci_text(*ci)}")] + items[at:])


def _eval(cfg: CompareConfig, model_dir: str, out: Path, samples: int, engine: Any) -> dict[str, Any]:
    """One evaluation of ``model_dir``; a finished one with the same settings in ``out`` is reused."""
    from ahalab.config import to_dict
    from ahalab.eval.evaluate import EvalConfig, run_eval

    ecfg = EvalConfig(model=model_dir, task=cfg.task, task_options=cfg.task_options, data=cfg.data, limit=cfg.limit,
                      samples=samples, temperature=0.0 if samples == 1 else cfg.temperature, format=cfg.format,
                      max_tokens=cfg.max_tokens, engine=cfg.engine, seed=cfg.seed, out=str(out))
    wanted = {k: v for k, v in to_dict(ecfg).items() if k != "engine"}
    if (out / "summary.json").exists() and (out / "config.yaml").exists():
        done = {k: v for k, v in _read(out / "config.yaml").items() if k != "engine"}
        if done == wanted:
            return _read(out / "summary.json")
    summary, _ = run_eval(ecfg, engine=engine())
    return summary


def compare(cfg: CompareConfig) -> tuple[list[dict[str, Any]], Path]:
    """Evaluate every model ``cfg.runs`` names; write the report directory. Returns (table rows, directory)."""
    from ahalab.config import to_dict
    from ahalab.runs import RunDir

    cfg.validate()
    if not cfg.runs:
        raise UserError("report needs at least one RUN (a run directory, recipe stage, or model)")
    entries = [e for spec in cfg.runs for e in discover(spec)]
    labels = [e.label for e in entries]
    if len(set(labels)) != len(labels):
        raise UserError(f"two runs share a label ({', '.join(labels)}); name them with LABEL=RUN")
    baseline = cfg.baseline or labels[0]
    if baseline not in labels:
        raise UserError(f"baseline '{baseline}' is none of the runs' labels ({', '.join(labels)})")
    for pair in cfg.pairs:
        if len(pair) != 2 or any(label not in labels for label in pair):
            raise UserError(f"pairs: {pair} is not two of the runs' labels ({', '.join(labels)})")
    run = RunDir.create(cfg.out, "report", to_dict(cfg))
    rows: list[dict[str, Any]] = []
    correct: dict[str, dict[str, float]] = {}
    made: list[Any] = []  # the engine, kept from model to model while each is a fine-tune of the last (weights reloaded)
    try:
        for e in entries:
            rows.append(_compare_one(cfg, e, run, made, correct))
    finally:
        for engine_made in made:
            engine_made.close()
    add_paired_differences(rows, correct, baseline)
    write_report(run, cfg, rows, entries, baseline, pair_differences(cfg.pairs, correct))
    return rows, run.path


def _compare_one(cfg: CompareConfig, e: Entry, run: Any, made: list[Any],
                 correct: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The table row of one model (its greedy answers' correctness into ``correct``); ``made`` holds the engine."""
    from ahalab.engines import make_engine
    from ahalab.models import resolve_model

    model_dir = str(resolve_model(e.model))

    def engine() -> Any:  # built, or switched to this model, only if some evaluation is not cached
        if made and made[0].model_dir != model_dir and not made[0].load_model(model_dir):
            made.pop().close()  # another architecture or tokenizer: freed before the next engine starts
        if not made:
            made.append(make_engine(cfg.engine, model_dir, seed=cfg.seed))
        return made[0]

    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in e.label)
    greedy = _eval(cfg, model_dir, run.file(f"evals/{slug}-greedy"), 1, engine)
    correct[e.label] = greedy_correct(run.file(f"evals/{slug}-greedy"))
    row: dict[str, Any] = {"run": e.label, "method": e.method, "greedy": greedy["accuracy"]}
    if cfg.samples > 1:
        sampled = _eval(cfg, model_dir, run.file(f"evals/{slug}-sampled"), cfg.samples, engine)
        row[f"maj@{cfg.samples}"] = sampled[f"maj@{cfg.samples}"]
        row[f"sampled tokens@{cfg.samples}"] = sampled["mean_tokens"] * cfg.samples
    row.update({"mean tokens": greedy["mean_tokens"], "train s": round(e.train_s, 1),
                "pipeline s": round(e.pipeline_s, 1), "model": e.model, "source": e.source})
    return row


def pair_differences(pairs: list[list[str]], correct: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """``a - b`` in greedy accuracy for each pair of labels, on the same problems, with a paired 95% interval."""
    from ahalab.stats import paired_difference

    out = []
    for a, b in pairs:
        diff, (lo, hi) = paired_difference([correct[a][pid] for pid in correct[b]], list(correct[b].values()))
        out.append({"a": a, "b": b, "difference": diff, "low": lo, "high": hi})
    return out


def write_report(run: Any, cfg: CompareConfig, rows: list[dict[str, Any]], entries: list[Entry],
                 baseline: str, pairs: list[dict[str, Any]]) -> None:
    from ahalab.plots import bar_plot, line_plot, markdown_table
    from ahalab.stats import ci_text

    k = cfg.samples
    bars = {"greedy": [r["greedy"] for r in rows]}
    if k > 1:
        bars[f"maj@{k}"] = [r[f"maj@{k}"] for r in rows]
    bar_plot(run.file("accuracy.png"), [r["run"] for r in rows], bars, ylabel="accuracy",
             title=f"{cfg.task}: held-out accuracy")
    series = {r["run"]: ([r["mean tokens"]] + ([r[f"sampled tokens@{k}"]] if k > 1 else []),
                         [r["greedy"]] + ([r[f"maj@{k}"]] if k > 1 else [])) for r in rows}
    line_plot(run.file("accuracy_vs_tokens.png"), series, xlabel="generated tokens per problem", logx=True,
              ylabel="accuracy", title=f"greedy (left) and maj@{k} (right) per model" if k > 1 else "greedy")
    run.write_summary({"settings": {k_: v for k_, v in asdict(cfg).items() if k_ != "runs"},
                                    "rows": rows, "pairs": pairs})
    where = cfg.data or f"generated (seed {cfg.seed})"
    lines = ["# Comparison", "",
             f"Every model evaluated on the same {cfg.limit or 'all'} `{cfg.task}` problems ({where}), format "
             f"`{cfg.format}`, max {cfg.max_tokens} new tokens: greedy accuracy"
             + (f", and maj@{k} (majority vote over {k} samples at T={cfg.temperature}: inference-time scaling)"
                if k > 1 else "") + ". Mean tokens: greedy answers. Train s: the run's or stage's own training "
             "wall time; pipeline s: with the recipe stages it was built from. Greedy vs "
             f"{baseline}: the difference in greedy accuracy on the same problems, with a 95% "
             "interval over problems (paired): an interval that contains 0 means the two are not distinguishable "
             "on this set.", "",
             markdown_table(rows, [c for c in rows[0] if c not in ("model", "source")]),
             *([markdown_table([{"greedy accuracy": f"{p['a']} - {p['b']}", "difference": f"{p['difference']:+.3f}",
                                 "95% interval (paired)": ci_text(p["low"], p["high"])} for p in pairs])] if pairs else []),
             "![accuracy](accuracy.png) ![accuracy vs tokens](accuracy_vs_tokens.png)", ""]
    with_plots = [e for e in entries if e.plots]
    if with_plots:
        names = sorted({Path(p).name for e in with_plots for p in e.plots}, key=TRAINING_PLOTS.index)
        lines += ["## Training curves", "", "| plot | " + " | ".join(e.label for e in with_plots) + " |",
                  "|---|" + "---|" * len(with_plots)]
        for name in names:
            cells = [next((f"![{e.label}]({os.path.relpath(p, run.path)})" for p in e.plots
                           if Path(p).name == name), "") for e in with_plots]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Sources", "", markdown_table([{"run": r["run"], "model": r["model"], "source": r["source"]}
                                                 for r in rows])]
    run.write_text("report.md", "\n".join(lines))


def add_parser(sub: Any) -> None:
    import argparse

    p = sub.add_parser("report", help="compare runs: one held-out evaluation of every model (greedy, maj@k, tokens, "
                       "training time) with plots", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  ahalab report smollm2-135m runs/zero-quick runs/r1 --samples 8\n"
                       "  ahalab report base=smollm2-135m zero=runs/r1/01-zero final=runs/r1/09-rl_final "
                       "--task countdown --data ../shared/data/countdown_cd3_test.jsonl --out runs/compare-cd")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run or stage directory, recipe run, or model "
                   "(LABEL=RUN names it)")
    p.add_argument("--task", help="task of the held-out set (default arithmetic)")
    p.add_argument("--data", help="held-out file for file-based tasks")
    p.add_argument("--limit", type=int, help="held-out problems (default 200)")
    p.add_argument("--format", help="prompt format for every model (default r1)")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="max new tokens (default 256)")
    p.add_argument("--samples", type=int, help="K for maj@K (default 8; 1: greedy only)")
    p.add_argument("--temperature", type=float, help="sampling temperature for maj@K (default 0.8)")
    p.add_argument("--engine", help="vllm (default when installed) | hf")
    p.add_argument("--seed", type=int, help="seed of the held-out problems and the sampling (default 1234)")
    p.add_argument("--baseline", help="label of the run the others are compared against, paired over problems "
                   "(default: the first)")
    p.add_argument("--pair", dest="pairs", action="append", type=lambda s: s.split(","), metavar="A,B",
                   help="also report A - B (two labels), paired over problems (repeatable)")
    p.add_argument("--out", help="report directory (default runs/report-<time>)")
    p.add_argument("--config", help="YAML with these settings; flags and key=value overrides win")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="key=value",
                   help="dotted override, e.g. --set task_options.level=2 (repeatable)")
    p.set_defaults(func=_run)


def _run(args: Any) -> int:
    from ahalab.args import explicit_flags
    from ahalab.config import load_config
    from ahalab.plots import text_table

    cfg = load_config(CompareConfig, args.config, args.sets, explicit_flags(args, skip=("sets",)))
    rows, out = compare(cfg)
    print(text_table(rows, [c for c in rows[0] if c not in ("model", "source")]))
    print(f"report: {out / 'report.md'} (accuracy.png, accuracy_vs_tokens.png, summary.json)")
    return 0


@register_stage("report", outputs=("summary", "report"), about="compare models (runs: [LABEL=${stage.model}, ...]) "
                "on one held-out set: greedy, maj@k, tokens, training time", config="ahalab.report:CompareConfig")
def report_stage(cfg: CompareConfig, stage_dir: Path, resume: bool) -> dict[str, Any]:
    _, out = compare(cfg)  # evaluations finished before an interruption are reused
    return {"summary": str(out / "summary.json"), "report": str(out / "report.md")}
