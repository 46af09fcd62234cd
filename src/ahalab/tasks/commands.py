"""`ahalab tasks`: the tasks every method can use, with their options and defaults."""
from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list the tasks (problems + verifier) with their options",
                       description="Every task works with every method (eval, scale, zero, data, distill, sft). "
                       "Options go in task_options (e.g. task_options.level=3); file-based tasks read --data.")
    p.add_argument("name", nargs="?", help="show one task in full")
    p.set_defaults(func=run)


def task_rows() -> list[dict[str, str]]:
    """One row per task: name, options with defaults, what its answers look like, its description."""
    from ahalab.tasks import TASKS

    return [{"task": name, "options": ", ".join(f"{k}={v}" for k, v in cls.defaults.items()) or "none",
             "answer": cls.answer_hint, "about": (cls.__doc__ or "").strip().split("\n")[0]}
            for name, cls in TASKS.items()]


def run(args: argparse.Namespace) -> int:
    from ahalab.errors import UserError
    from ahalab.plots import text_table
    from ahalab.tasks import TASKS

    if args.name:
        if args.name not in TASKS:
            raise UserError(f"unknown task '{args.name}'; valid tasks: {', '.join(TASKS)}")
        row = next(r for r in task_rows() if r["task"] == args.name)
        print(f"{row['task']}: options {row['options']}; answers: {row['answer']}\n")
        print((TASKS[args.name].__doc__ or "").strip())
        return 0
    print(text_table(task_rows(), ["task", "options", "answer", "about"]), end="")
    return 0
