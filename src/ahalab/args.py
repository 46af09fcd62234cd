"""Command-line pieces every command shares: the sampling flags, which flags were given, which recipe to load."""
from __future__ import annotations

import argparse
from typing import Any

from ahalab.errors import UserError


def add_common_model_args(p: argparse.ArgumentParser) -> None:
    """Flags every sampling command shares (model, task, data, engine, format, seed)."""
    p.add_argument("--model", help="alias (smollm2-135m, the default), local HF dir, .gguf file, or hub id")
    p.add_argument("--task", help="a task name; `ahalab tasks` lists them with their options")
    p.add_argument("--data", help="local JSONL (or hub id) for file-based tasks; synthetic tasks generate")
    p.add_argument("--limit", type=int, help="number of problems (default 200)")
    p.add_argument("--format", help="prompt format: direct | cot | r1 | path to a template file with {question}")
    p.add_argument("--engine", choices=["vllm", "hf", "auto"], help="vllm (default when installed) | hf")
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="max new tokens per completion")
    p.add_argument("--seed", type=int, help="seed for data generation and sampling (same seed, same result)")
    p.add_argument("--out", help="run directory (default runs/<command>-<time>)")
    p.add_argument("--config", help="YAML recipe; CLI flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides, e.g. task_options.level=3")


def add_resume_args(p: argparse.ArgumentParser) -> None:
    """--resume and --allow-config-change, for the commands that train."""
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint (its config.yaml, plus any flags given)")
    p.add_argument("--allow-config-change", dest="allow_config_change", action="store_true",
                   help="with --resume: continue even though settings that change results differ from the "
                   "checkpoint's")


def add_process_args(p: argparse.ArgumentParser) -> None:
    """--num-processes, for the commands that train (see ahalab.training.distributed)."""
    p.add_argument("--num-processes", dest="num_processes", type=int, metavar="N",
                   help="train on N processes of this machine (data parallel: CPU processes over gloo, one GPU "
                   "each over NCCL), launched through accelerate; or start the command with `accelerate launch "
                   "-m ahalab` / `torchrun -m ahalab` yourself")


def add_hub_args(p: argparse.ArgumentParser, id_key: str = "hub_model_id",
                 what: str = "model/ (with its card)") -> None:
    """--push-to-hub, --hub-model-id (or ``id_key``) and --hub-private-repo (see ahalab.training.hub)."""
    p.add_argument("--push-to-hub", dest="push_to_hub", action="store_true", default=None,
                   help=f"at the end, upload {what} to the Hugging Face hub (token: $HF_TOKEN or `hf auth login`); "
                   "a failed push keeps the run, is recorded in summary.json and exits non-zero")
    p.add_argument(f"--{id_key.replace('_', '-')}", dest=id_key, metavar="REPO_ID",
                   help="hub repo: name (your namespace) or owner/name (default: the run directory's name)")
    p.add_argument("--hub-private-repo", dest="hub_private_repo", action="store_true", default=None,
                   help="create the hub repo private")


def explicit_flags(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The CLI flags the user actually gave (None means not given); global flags like --verbose are not config."""
    ignore = {"func", "command", "verbose", "config", "overrides", "resume", "allow_config_change", *skip}
    return {k: v for k, v in vars(args).items() if v is not None and k not in ignore}


def recipe_path(args: argparse.Namespace) -> str | None:
    """The recipe to load: ``--config``, or with ``--resume`` the run directory's own config.yaml."""
    if not getattr(args, "resume", False):
        return args.config
    if not args.out:
        raise UserError("--resume needs --out, the run directory to continue")
    return f"{args.out}/config.yaml"
