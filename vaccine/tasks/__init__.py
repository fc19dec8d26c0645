"""Benign fine-tuning tasks: the user's task in a harmful fine-tuning attack, and its accuracy (FA).

Importing this package registers every built-in task; ``get_task("sst2")`` returns one. A new task is a
new module with a ``@TASKS.register()`` class, imported below.
"""

from __future__ import annotations

from vaccine.tasks import agnews, gsm8k, instruct, sst2
from vaccine.tasks.base import SPLITS, TASKS, Task, get_task, split_records

__all__ = [
    "SPLITS",
    "TASKS",
    "Task",
    "agnews",
    "get_task",
    "gsm8k",
    "instruct",
    "split_records",
    "sst2",
]
