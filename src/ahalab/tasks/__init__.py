"""Task registry: ``get_task("countdown", num_numbers=4)``; ``ahalab tasks`` lists them."""
from __future__ import annotations

from typing import Any

from ahalab.tasks.arithmetic import ArithmeticTask
from ahalab.tasks.base import Task, TaskError
from ahalab.tasks.code import CodegenTask, CodeJsonlTask, HumanEvalTask
from ahalab.tasks.countdown import CountdownTask
from ahalab.tasks.jsonl_task import JsonlTask
from ahalab.tasks.math_tasks import Gsm8kTask, Math500Task

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (ArithmeticTask, CountdownTask, Gsm8kTask, Math500Task,
                                                          JsonlTask, HumanEvalTask, CodeJsonlTask, CodegenTask)}


def get_task(name: str, **options: Any) -> Task:
    """A task by name with its options; TaskError listing the valid names (or options) otherwise."""
    if name not in TASKS:
        raise TaskError(f"unknown task '{name}'; valid tasks: {', '.join(TASKS)}")
    return TASKS[name](**options)


__all__ = ["TASKS", "Task", "TaskError", "get_task"]
