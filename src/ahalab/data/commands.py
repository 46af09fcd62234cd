"""`ahalab data`: build a distillation dataset (teacher traces, filters, decontamination)."""
from __future__ import annotations

import argparse
from typing import Any

from ahalab.args import add_hub_args

DATA_EPILOG = """examples:
  ahalab data --task countdown --journey search --limit 3000 examples=800 match_tokens=true --out runs/cd-data
  ahalab data --task arithmetic --teacher program --limit 500 --out runs/arith-data
  ahalab data --task gsm8k --data ../shared/data/gsm8k_train.jsonl --teacher openai \\
      --base-url http://127.0.0.1:8000/v1 --teacher-model deepseek-r1 --samples 4 filters.format=1.0

Keys: ahalab/data/build.py: DataConfig. Teachers: program (arithmetic, countdown, codegen), openai (any
OpenAI-compatible endpoint; key from $OPENAI_API_KEY), engine (a local model; default: the student).
The teacher cache traces.jsonl makes a killed job resume where it stopped. --workers N (with Ray) makes the
traces on N workers, the driver writing the same cache: `ahalab data --teacher engine --workers 4
'worker_options={num_gpus: 1}' ...` on a GPU node, ray_address=auto to join a running cluster.
"""

def add_data_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", help="a task name; `ahalab tasks` lists them")
    p.add_argument("--teacher", choices=["program", "openai", "engine"])
    p.add_argument("--teacher-model", dest="teacher_model", help="openai: served model name; engine: model")
    p.add_argument("--base-url", dest="base_url", help="openai teacher endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--samples", type=int, help="teacher samples per problem")
    p.add_argument("--journey", choices=["samples", "search"], help="also build journey traces with their shortcuts")
    p.add_argument("--limit", type=int, help="problems drawn (before decontamination)")
    p.add_argument("--workers", type=int, help="run the teacher (program, engine) as a Ray job on N workers, into "
                   "the same resumable cache (needs ray: pip install 'ahalab[ray]'); default: one process")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="build a distillation dataset (teacher traces, filters, decontamination)",
                       description="Ask a teacher for traces, keep the verified ones that pass the filters (or build "
                       "journey/shortcut pairs), drop problems overlapping eval sets, and write chat JSONL with a "
                       "dataset card.", epilog=DATA_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML with DataConfig keys")
    add_data_flags(p)
    p.add_argument("--data", help="problems file (default: generated for synthetic tasks)")
    p.add_argument("--model", help="the student: tokenizer for token counts, default engine teacher")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="dataset directory (default runs/data-<time>)")
    add_hub_args(p, "hub_dataset_id", "the dataset directory (with its card; not log.txt)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=run_data)


def nested_flags(args: argparse.Namespace, nest: tuple[str, ...]) -> dict[str, Any]:
    """Explicit flags, those named in ``nest`` moved under ``data``."""
    from ahalab.args import explicit_flags

    flags = explicit_flags(args)
    data = {k: flags.pop(k) for k in nest if k in flags}
    return {**flags, **({"data": data} if data else {})}


def run_data(args: argparse.Namespace) -> int:
    from ahalab.config import load_config
    from ahalab.data.build import DataConfig, build_dataset

    cfg = load_config(DataConfig, args.config, args.overrides, nested_flags(args, ()))
    out = build_dataset(cfg)
    files = ", ".join(f"{k} {v}" for k, v in out["summary"]["files"].items())
    print(f"{files}; {out['summary']['decontaminated_away']} problems removed by decontamination; "
          f"dataset directory: {out['dir']}")
    return 0
