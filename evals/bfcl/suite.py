"""BFCL entries as runner tasks: ``omni-agent eval bfcl --model ...`` (or this file:tasks).

Each entry becomes a task with schema-only functions and a ``tool_calls`` check (BFCL
semantics); the runner gives it a trajectory and a report page like any other task. For the
quick in-process scorer over whole categories, see ``score.py``; for the parser / validator
fidelity check, ``fidelity.py``.
"""

from __future__ import annotations

import os

from omni_agent.eval.bfcl import bfcl_tasks

DEFAULT_CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")


def tasks(categories: str | None = None, limit: int | None = None) -> list:
    """Tasks for BFCL categories (env OMNI_BFCL_CATEGORIES / OMNI_BFCL_LIMIT override; 20 per
    category by default)."""
    cats = (categories or os.environ.get("OMNI_BFCL_CATEGORIES") or ",".join(DEFAULT_CATEGORIES)).split(",")
    n = limit if limit is not None else int(os.environ.get("OMNI_BFCL_LIMIT", "20"))
    return bfcl_tasks([c.strip() for c in cats if c.strip()], limit=n or None)
