"""`ahalab models list|fetch NAME|path NAME`."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list, fetch and locate models (aliases, GGUF, hub ids)",
                       description="Models are named by alias (smollm2-135m, the default), a local HF directory, "
                       "a .gguf file (converted once to safetensors), or a hub id. Converted models live in "
                       "$AHALAB_CACHE/models (default ~/.cache/ahalab/models).")
    msub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    msub.add_parser("list", help="aliases and cached models").set_defaults(func=_list)
    for action, helptext in (("fetch", "download, verify and convert a model into the cache"),
                             ("path", "print the local directory of a model (fetching it if needed)")):
        a = msub.add_parser(action, help=helptext)
        a.add_argument("name", help="alias, local directory, .gguf file or hub id")
        a.set_defaults(func=_fetch)


def _list(args: argparse.Namespace) -> int:
    from ahalab.models import list_models
    from ahalab.plots import text_table

    print(text_table(list_models(), ["name", "cached", "path", "about"]), end="")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from ahalab.models import resolve_model

    print(resolve_model(args.name))
    return 0
