"""Evaluation: task files, the suite runner, reports, and the MiniWoB++ / BFCL adapters.

    from omni_agent.eval import load_suite, run_suite
    summary = run_suite(load_suite("smoke"), model="reference", out="runs/smoke", workers=2)

Command line: ``omni-agent eval SUITE --model ...`` and ``omni-agent eval compare A B``.
"""

from __future__ import annotations

from .compare import compare_runs
from .loading import TaskFileError, load_suite, load_task
from .report import write_report
from .results import EpisodeResult, Summary
from .runner import run_suite
from .task import Task, task_json_schema

__all__ = [
    "EpisodeResult",
    "Summary",
    "Task",
    "TaskFileError",
    "compare_runs",
    "load_suite",
    "load_task",
    "run_suite",
    "task_json_schema",
    "write_report",
]
