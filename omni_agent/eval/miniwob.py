"""MiniWoB++ tasks as runner tasks, driven through the project's own browser tools.

The ``miniwob`` package ships the task pages (``html/miniwob/*.html`` + ``core.js``). Each task
opens its page from ``file://`` in the episode's browser and starts the episode the way the
page's own JavaScript expects: wait for ``#sync-task-cover``, ``Math.seedrandom(seed)``, set the
page's episode timer to the task's time limit, ``core.startEpisodeReal()``, wait for
``WOB_TASK_READY``, read ``core.getUtterance()`` as the instruction. The agent then acts through
the browser tools (screenshots after every step); the reward is read from the page afterwards
(``WOB_REWARD_GLOBAL``, ``WOB_RAW_REWARD_GLOBAL``, ``WOB_DONE_GLOBAL``) and recorded as the
per-episode metrics ``reward`` and ``raw_reward``; an episode succeeds when the reward is > 0.
An episode the agent leaves unfinished scores -1, what the page's own timer gives it when time
runs out (``core.endEpisode(-1)``): giving up never scores better than trying and failing.

Seeds are fixed (``seeds``), so utterances and layouts repeat run after run. A few tasks carry
reference solutions (selectors filled from values the page computes, e.g. the quoted target of
the utterance), so the scripted policy reaches positive rewards on them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable

from ..exceptions import MissingDependencyError, UserError
from .task import Task

__all__ = ["DEFAULT_TASKS", "REFERENCE_SOLUTIONS", "miniwob_html_dir", "miniwob_task", "miniwob_tasks"]

DEFAULT_TASKS = (
    "click-button", "click-button-sequence", "click-checkboxes", "click-collapsible", "click-collapsible-2",
    "click-color", "click-dialog", "click-dialog-2", "click-link", "click-menu", "click-option",
    "click-scroll-list", "click-shades", "click-shape", "click-tab", "click-tab-2", "click-test",
    "click-test-2", "click-widget", "enter-date", "enter-password", "enter-text", "enter-text-2",
    "enter-text-dynamic", "enter-time", "focus-text", "focus-text-2", "grid-coordinate", "guess-number",
    "identify-shape", "login-user", "navigate-tree", "read-table", "search-engine", "simple-algebra",
    "simple-arithmetic", "text-transform", "use-autocomplete", "use-spinner",
)  # fmt: skip
"""The default set (39 tasks): single-page tasks a browser-tool agent can finish in a few steps."""

QUOTED = "(core.getUtterance().match(/\"([^\"]*)\"/) || [null, ''])[1]"
"""JS: the first double-quoted string of the utterance (the target of many tasks)."""

REFERENCE_SOLUTIONS: dict[str, dict[str, Any]] = {
    "click-test": {"steps": [{"calls": [{"name": "browser_click", "arguments": {"selector": "#subbtn"}}]}]},
    "click-test-2": {
        "values": {"target": "(core.getUtterance().match(/button (ONE|TWO)/) || [null, ''])[1]"},
        "steps": [{"calls": [{"name": "browser_click", "arguments": {"selector": "#area button:text-is('{target}')"}}]}],
    },
    "click-button": {
        "values": {"target": QUOTED},
        "steps": [{"calls": [{"name": "browser_click", "arguments": {"selector": "#area button:text-is('{target}') >> nth=0"}}]}],
    },
    "focus-text": {"steps": [{"calls": [{"name": "browser_click", "arguments": {"selector": "#tt"}}]}]},
    "enter-text": {
        "values": {"target": QUOTED},
        "steps": [
            {"calls": [{"name": "browser_fill", "arguments": {"selector": "#tt", "value": "{target}"}}]},
            {"calls": [{"name": "browser_click", "arguments": {"selector": "#subbtn"}}]},
        ],
    },
    "click-link": {
        "values": {"target": QUOTED},
        "steps": [{"calls": [{"name": "browser_click", "arguments": {"selector": "#area span.alink:text-is('{target}') >> nth=0"}}]}],
    },
}
"""Per-task reference solutions: ``values`` (name -> JS read after the episode starts) and the
steps, whose arguments may use ``{name}``."""

UNFINISHED_IS_TIMEOUT = "WOB_DONE_GLOBAL ? WOB_{}REWARD_GLOBAL : -1"
"""JS: the page's reward; -1 (its timeout reward) when the episode is not done."""

GUIDANCE = (
    "You control a web browser showing a small task in the top-left corner of the page. "
    "Do exactly what it asks using the browser tools, then stop. Task: "
)


def miniwob_html_dir() -> Path:
    spec = importlib.util.find_spec("miniwob")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("miniwob", "eval")
    return Path(list(spec.submodule_search_locations)[0]) / "html" / "miniwob"


def miniwob_task(
    name: str,
    *,
    seed: int = 0,
    steps: int = 8,
    seconds: float = 60.0,
    reference: list[dict[str, Any]] | None = None,
    values: dict[str, str] | None = None,
) -> Task:
    """One MiniWoB++ episode as a task (``reference`` overrides the shipped solution)."""
    page = miniwob_html_dir() / f"{name}.html"
    if not page.is_file():
        raise UserError(f"no MiniWoB++ task {name!r} in {page.parent}")
    known = REFERENCE_SOLUTIONS.get(name, {})
    steps_ref = reference if reference is not None else known.get("steps", [])
    page_values = {"utterance": "core.getUtterance()", **known.get("values", {}), **(values or {})}
    ms = int(seconds * 1000)
    return Task.model_validate(
        {
            "id": f"miniwob-{name}-s{seed}",
            "category": "miniwob",
            "instruction": GUIDANCE + "{utterance}",
            "tools": ["browser"],
            "tool_options": {"allow_file_urls": True, "viewport": [480, 480]},
            "setup": {
                "browser": {
                    "url": page.as_uri(),
                    "wait_for": "#sync-task-cover",
                    # The page's own episode timer is the task's time limit, so both end together.
                    "init_js": [f"Math.seedrandom({int(seed)})", f"core.EPISODE_MAX_TIME = {ms}", "core.startEpisodeReal()"],
                    "wait_js": "typeof WOB_TASK_READY === 'undefined' || WOB_TASK_READY === true",
                    "values": page_values,
                }
            },
            "limits": {"steps": steps, "seconds": seconds},
            "reference": [*steps_ref, {"answer": "done"}],
            "checks": [
                {"type": "browser_dom", "name": "raw reward (-1 when unfinished)", "js": UNFINISHED_IS_TIMEOUT.format("RAW_"),
                 "metric": "raw_reward", "min": -1},
                {"type": "browser_dom", "name": "reward > 0", "js": UNFINISHED_IS_TIMEOUT.format(""),
                 "metric": "reward", "min": 1e-9},
            ],  # fmt: skip
            "metadata": {"miniwob_task": name, "seed": seed},
        }
    )


def miniwob_tasks(names: Iterable[str] = DEFAULT_TASKS, *, seeds: Iterable[int] = (0,), **options: Any) -> list[Task]:
    """Tasks for each name and fixed seed."""
    return [miniwob_task(n, seed=s, **options) for n in names for s in seeds]
