"""The tools ``omni-agent replay`` re-runs a trajectory with: the run's own toolsets, workspace
and shell sandbox, as recorded in its meta.json (``toolsets``, ``workspace``, ``sandbox``).

What the trajectory does not record and the command line does not give is not guessed: without
a workspace or a sandbox the shell is left out and its calls are reported as refused, never run
in the directory replay happens to start from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .exceptions import UserError
from .tool import Tool
from .toolsets import load_toolsets, split_toolset_names
from .trajectory import load_trajectory

__all__ = ["ReplaySetup", "SANDBOXES", "replay_tools"]

SANDBOXES = ("none", "bubblewrap")


@dataclass
class ReplaySetup:
    tools: list[Tool]
    workspace: Path | None
    refused: dict[str, str] = field(default_factory=dict)
    """Tool name -> why its calls are not re-run."""


def replay_tools(
    directory: str | os.PathLike[str],
    *,
    tools: str | None = None,
    workspace: str | os.PathLike[str] | None = None,
    sandbox: str | None = None,
) -> ReplaySetup:
    """Load the toolsets for replaying ``directory`` (command-line values win over recorded ones)."""
    meta = load_trajectory(directory).meta.model_extra or {}
    names = split_toolset_names(tools) or split_toolset_names(meta.get("toolsets"))
    if not names:
        raise UserError("this trajectory does not record its toolsets: pass --tools")
    chosen_ws = workspace if workspace is not None else meta.get("workspace")
    chosen_sandbox = sandbox if sandbox is not None else meta.get("sandbox")
    if chosen_sandbox is not None and chosen_sandbox not in SANDBOXES:
        raise UserError(f"--sandbox must be none or bubblewrap, not {chosen_sandbox!r}")
    refused: dict[str, str] = {}
    if "shell" in names and (chosen_ws is None or chosen_sandbox is None):
        missing = " and ".join(w for w, v in (("workspace", chosen_ws), ("sandbox", chosen_sandbox)) if v is None)
        names = [n for n in names if n != "shell"]
        refused["shell"] = (
            f"the trajectory does not record the shell's {missing}: pass --workspace and --sandbox to re-run "
            "its commands (they are never run in the current directory)"
        )
    if chosen_ws is not None and not Path(chosen_ws).is_dir():
        raise UserError(f"the workspace {chosen_ws} does not exist: pass --workspace")
    ws = Path(chosen_ws) if chosen_ws is not None else None
    options = {"sandbox": chosen_sandbox} if chosen_sandbox is not None else {}
    # Toolsets other than the shell keep their own paths; a temporary folder stands in when no
    # workspace is known (the file tools refuse paths outside it).
    loaded = load_toolsets(names, workspace=ws or Path(_empty_dir()), options=options) if names else []
    return ReplaySetup(tools=loaded, workspace=ws, refused=refused)


def _empty_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="omni-replay-")
