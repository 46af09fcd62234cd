"""`ahalab eval`: accuracy of a model on a task, written to a run directory."""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ahalab.engines.base import Engine


@dataclass
class EvalConfig:
    model: str = "smollm2-135m"
    task: str = "arithmetic"
    task_options: dict[str, Any] | None = None
    data: str | None = None
    limit: int | None = 200
    samples: int = 1
    temperature: float | None = None  # None: 0 (greedy) for one sample, 0.8 for several
    top_p: float = 1.0
    format: str = "cot"
    max_tokens: int = 512
    engine: str | None = None
    dtype: str | None = None  # None: the engine's default (vLLM: bf16 where native, else float32; HF float32)
    seed: int = 0
    out: str | None = None


def add_common_model_args(p: argparse.ArgumentParser) -> None:
    """Flags every sampling command shares (model, task, data, engine, format, seed)."""
    p.add_argument("--model", help="alias (smollm2-135m, the default), local HF dir, .gguf file, or hub id")
    p.add_argument("--task", help="arithmetic | countdown | gsm8k | math500 | jsonl (see `ahalab tasks`)")
    p.add_argument("--data", help="local JSONL (or hub id) for file-based tasks; synthetic tasks generate")
    p.add_argument("--limit", type=int, help="number of problems (default 200)")
    p.add_argument("--format", help="prompt format: direct | cot | r1 | path to a template file with {question}")
    p.add_argument("--engine", help="vllm (default when installed) | hf")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="max new tokens per completion")
    p.add_argument("--seed", type=int, help="seed for data generation and sampling (same seed, same result)")
    p.add_argument("--out", help="run directory (default runs/<command>-<time>)")
    p.add_argument("--config", help="YAML recipe; CLI flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. task_options.level=3")


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


def explicit_flags(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CLI flags the user actually gave (None means not given)."""
    ignore = {"func", "command", "config", "overrides", *skip}
    return {k: v for k, v in vars(args).items() if v is not None and k not in ignore}


def recipe_path(args: argparse.Namespace) -> str | None:
    """The recipe to load: ``--config``, or with ``--resume`` the run directory's own config.yaml."""
    from ahalab.errors import UserError

    if not getattr(args, "resume", False):
        return args.config
    if not args.out:
        raise UserError("--resume needs --out, the run directory to continue")
    return f"{args.out}/config.yaml"


def run(args: argparse.Namespace) -> int:
    from ahalab.config import load_config

    cfg = load_config(EvalConfig, args.config, args.overrides, explicit_flags(args))
    summary, run_dir = run_eval(cfg)
    print(f"accuracy {summary['accuracy']:.3f} on {summary['problems']} problems; run directory: {run_dir.path}")
    return 0


def config_engine(cfg: Any) -> Engine:
    """A new engine for a config's engine, model, dtype (unset: the engine's default) and seed."""
    from ahalab.engines import make_engine
    from ahalab.models import resolve_model

    options = {"dtype": cfg.dtype} if cfg.dtype else {}
    return make_engine(cfg.engine, resolve_model(cfg.model), seed=cfg.seed, **options)


def run_eval(cfg: EvalConfig, engine=None, tag: str = "eval"):
    """Evaluate per ``cfg``; write the run directory. Returns (summary, RunDir)."""
    from ahalab.config import to_dict
    from ahalab.engines import engine_or_new
    from ahalab.errors import UserError
    from ahalab.eval.evaluate import evaluate
    from ahalab.eval.report import write_eval_report
    from ahalab.runs import RunDir
    from ahalab.tasks import get_task

    if cfg.samples < 1:
        raise UserError(f"--samples must be >= 1 (got {cfg.samples})")
    task = get_task(cfg.task, **(cfg.task_options or {}))
    problems = task.load(cfg.data, limit=cfg.limit, seed=cfg.seed)
    if not problems:
        raise UserError(f"task '{cfg.task}' produced no problems (data: {cfg.data or 'generated'})")
    if cfg.temperature is None:
        cfg.temperature = 0.0 if cfg.samples == 1 else 0.8
    with engine_or_new(engine, partial(config_engine, cfg)) as used:
        cfg.engine = used.name
        run_dir = RunDir.create(cfg.out, tag, to_dict(cfg))
        result = evaluate(used, task, problems, fmt=cfg.format, samples=cfg.samples, temperature=cfg.temperature,
                          top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed)
    run_dir.write_text("samples.jsonl", "".join(json.dumps(r) + "\n" for r in result.records))
    run_dir.write_json("summary.json", result.summary)
    write_eval_report(run_dir, cfg, result)
    return result.summary, run_dir
