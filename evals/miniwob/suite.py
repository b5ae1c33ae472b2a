"""MiniWoB++ as a suite: ``omni-agent eval miniwob --model ...`` (or evals/miniwob/suite.py:tasks).

The default set is ``DEFAULT_TASKS`` (39 tasks) with seed 0; ``OMNI_MINIWOB_TASKS`` (comma
list) and ``OMNI_MINIWOB_SEEDS`` (comma list of integers) override them. The summary reports the
success rate (reward > 0) and ``mean_reward`` / ``mean_raw_reward``.
"""

from __future__ import annotations

import os

from omni_agent.eval.miniwob import DEFAULT_TASKS, miniwob_tasks


def tasks(names: str | None = None, seeds: str | None = None) -> list:
    chosen = (names or os.environ.get("OMNI_MINIWOB_TASKS") or ",".join(DEFAULT_TASKS)).split(",")
    seed_list = [int(s) for s in (seeds or os.environ.get("OMNI_MINIWOB_SEEDS") or "0").split(",") if s.strip()]
    return miniwob_tasks([n.strip() for n in chosen if n.strip()], seeds=seed_list)
