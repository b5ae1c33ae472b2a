"""Past runs from the runs folder: a list for the page, and one trajectory as JSON.

A run directory holds ``meta.json`` + ``steps.jsonl`` (:mod:`omni_agent.trajectory`); an eval
suite directory holds ``summary.json`` and an ``index.html`` report, which the page links.
Paths from the page are resolved inside the runs folder only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..exceptions import UserError
from ..trajectory import load_trajectory

__all__ = ["RunEntry", "list_runs", "resolve_inside", "trajectory_json"]


class RunEntry(BaseModel):
    """One line of the history list."""

    name: str
    """The directory name under the runs folder (the id the page uses)."""
    kind: str
    """"run" (a trajectory) or "eval" (a suite with a report)."""
    instruction: str = ""
    model: str = ""
    started_at: str = ""
    status: str = ""
    stop_reason: str | None = None
    steps: int = 0
    report: str | None = None
    """Path of the HTML report, relative to the runs folder, when there is one."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def list_runs(root: Path, *, limit: int = 200) -> list[RunEntry]:
    """Newest first; unreadable directories are left out, never an error."""
    if not root.is_dir():
        return []
    entries: list[RunEntry] = []
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True):
        report = f"{d.name}/index.html" if (d / "index.html").is_file() else None
        if (d / "meta.json").is_file():
            m = _read_json(d / "meta.json")
            entries.append(
                RunEntry(
                    name=d.name, kind="run", instruction=str(m.get("instruction", "")), model=str(m.get("model", "")),
                    started_at=str(m.get("started_at", "")), status=str(m.get("status", "")),
                    stop_reason=m.get("stop_reason"), steps=int(m.get("steps") or 0), report=report,
                )
            )  # fmt: skip
        elif (d / "summary.json").is_file():
            s = _read_json(d / "summary.json")
            entries.append(RunEntry(name=d.name, kind="eval", instruction=str(s.get("suite", d.name)), report=report))
        if len(entries) >= limit:
            break
    return entries


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that leaves ``root`` (``..``, absolute paths, links out)."""
    base = root.resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise UserError(f"{relative!r} is outside the runs folder")
    return target


def trajectory_json(root: Path, name: str) -> dict[str, Any]:
    """A run's meta and steps; media paths become URLs under ``/api/runs/<name>/files/``."""
    directory = resolve_inside(root, name)
    if not (directory / "meta.json").is_file():
        raise UserError(f"no run {name!r} in {root}")
    traj = load_trajectory(directory)
    return {
        "name": name,
        "meta": traj.meta.model_dump(mode="json"),
        "steps": [s.model_dump(mode="json") for s in traj.steps],
        "files": f"api/runs/{name}/files/",
        "warnings": traj.warnings,
    }
