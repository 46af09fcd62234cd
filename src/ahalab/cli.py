"""`ahalab` command line: one subcommand per method; each lives beside its code in a `commands` module.

A command module exposes ``add_parser(subparsers)``; it must import heavy libraries (torch, vLLM)
only inside the function it runs, so that ``ahalab --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `ahalab --help` lists them.
COMMAND_MODULES = [
    "ahalab.models.commands",
    "ahalab.tasks.commands",
    "ahalab.eval.commands",
    "ahalab.scaling.commands",
    "ahalab.rl.commands",
    "ahalab.data.commands",
    "ahalab.distill",
    "ahalab.sft.commands",
    "ahalab.pipeline",
    "ahalab.report",
    "ahalab.inventory",
    "ahalab.view",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ahalab",
        description="Build and improve reasoning language models: evaluate, scale inference-time compute, "
        "train with RL (R1-Zero), SFT+RL (R1) and distillation. Every run writes a run directory "
        "(config.yaml, metrics.jsonl, samples.jsonl, summary.json, report.md, plots, log.txt); `ahalab runs` "
        "lists them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the engines' and libraries' logs (vLLM, transformers, torch); default: errors only "
                        "(AHALAB_LOG_LEVEL=DEBUG|INFO|WARNING|ERROR sets the level)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may also follow the flags (argparse stops collecting them at the first flag)
        if not (isinstance(getattr(args, "overrides", None), list) and all("=" in e and not e.startswith("-")
                                                                            for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ahalab.errors import UserError
    from ahalab.logs import configure

    try:
        configure(args.verbose)
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"ahalab {args.command}: error: {e}", file=sys.stderr)
        return 2


def entry() -> int:
    """The ``ahalab`` command: ``main`` in a prepared process (tcmalloc where installed, oneDNN's cache bounded:
    ``ahalab.runs.prepare_process``)."""
    from ahalab.runs import prepare_process

    prepare_process()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
