"""``omni-agent console`` and ``omni-agent run ... --ui``: build the agent, start the console.

Mounted by ``omni_agent/cli.py``; the browser toolset runs headful on the console's display so
its tab is part of the live screen; without ``--display`` (and no $DISPLAY) the console starts
its own 1280x800 Xvfb display for the GUI tools and stops it on exit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..exceptions import UserError

__all__ = ["build_console", "console_cmd", "run_with_ui"]

_err = Console(stderr=True)
_GUI = {"browser", "desktop"}


def _display_for(tools: list[str], display: Optional[str], stack: list[Any]) -> Optional[str]:
    if display:
        return display
    if os.environ.get("DISPLAY"):
        return os.environ["DISPLAY"]
    if not _GUI & set(tools):
        return None
    from ..xvfb import VirtualDisplay

    virtual = VirtualDisplay(width=1280, height=800).start()
    stack.append(virtual)
    return virtual.display


def build_console(
    *,
    model: str,
    tools: str,
    workspace: Path,
    runs_dir: Path,
    display: Optional[str],
    max_steps: int,
    speak: bool,
    speech_engine: str,
    stack: list[Any],
    observe: str = "",
) -> Any:
    """The agent (with the CLI's tool sets) inside a :class:`ConsoleServer`."""
    from ..loop import Agent
    from ..models.spec import load_model
    from ..toolsets import load_toolsets_with_observers, split_toolset_names
    from .server import ConsoleServer
    from .session import spec_for_model

    names = split_toolset_names(tools)
    the_model = load_model(model)
    screen = _display_for(names + split_toolset_names(observe), display, stack)
    options: dict[str, Any] = {"spec": spec_for_model(the_model)}
    space = getattr(the_model.info, "coordinate_space", None)
    if space:
        options["coordinate_space"] = space
    if screen:
        options.update(display=screen, headless=False)
    loaded = load_toolsets_with_observers(names, workspace=workspace, options=options, observe=observe)
    agent = Agent(
        the_model,
        loaded.tools,
        observers=loaded.observers,
        max_steps=max_steps,
        trajectory_dir=runs_dir,
        workspace=workspace,
        metadata={"toolsets": names, "workspace": str(workspace.resolve())},
    )
    return ConsoleServer(agent, display=screen, runs_dir=runs_dir, speak=speak, speech_engine=speech_engine)


def console_cmd(
    model: str = typer.Option(..., "--model", "-m", help="qwen-omni:/path | openai:URL#name | scripted:FILE"),
    tools: str = typer.Option("shell,files", "--tools", "-t", help="Comma-separated toolsets."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (keep 127.0.0.1 unless you know why)."),
    port: int = typer.Option(7860, "--port", min=0, max=65535, help="Port (0: any free one)."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Working directory for tools."),
    runs: Path = typer.Option(Path("runs"), "--runs", help="Runs folder: trajectories are written and listed here."),
    display: Optional[str] = typer.Option(None, "--display", help="X display to show and act on (default $DISPLAY, else a new Xvfb)."),
    max_steps: int = typer.Option(20, "--max-steps"),
    speak: bool = typer.Option(True, "--speak/--no-speak", help="Speak progress and answers in the page."),
    speech_engine: str = typer.Option("auto", "--speech-engine", help="auto | talker | espeak | silent"),
    observe: str = typer.Option("", "--observe", help="Show the model a screenshot after each step: browser, desktop."),
) -> None:
    """Live web console: type or speak an instruction, watch the screen and the steps, approve, take over.

    Exit codes: 0 the console stopped normally; 2 bad usage or configuration (a model spec, tool set
    or display that cannot be used); 130 interrupted (Ctrl-C)."""
    _serve(model=model, tools=tools, host=host, port=port, workspace=workspace, runs=runs, display=display,
           max_steps=max_steps, speak=speak, speech_engine=speech_engine, observe=observe, instruction=None)  # fmt: skip


def run_with_ui(
    instruction: str, *, model: str, tools: str, workspace: Path, runs: Path, max_steps: int,
    observe: str = "", speech_engine: str = "auto",
) -> None:  # fmt: skip
    """``omni-agent run INSTRUCTION --ui``: the console, with this run started at once.

    Listens on 127.0.0.1, port $OMNI_CONSOLE_PORT (default 7860; 0 = any free port)."""
    if not instruction:
        raise UserError("--ui needs a typed instruction (speak later commands in the page)")
    port = int(os.environ.get("OMNI_CONSOLE_PORT", "7860"))
    _serve(model=model, tools=tools, host="127.0.0.1", port=port, workspace=workspace, runs=runs, display=None,
           max_steps=max_steps, speak=True, speech_engine=speech_engine, observe=observe, instruction=instruction)  # fmt: skip


def _serve(*, host: str, port: int, instruction: Optional[str], **build: Any) -> None:
    stack: list[Any] = []
    try:
        console = build_console(
            model=build["model"], tools=build["tools"], workspace=build["workspace"], runs_dir=build["runs"],
            display=build["display"], max_steps=build["max_steps"], speak=build["speak"],
            speech_engine=build["speech_engine"], stack=stack, observe=build["observe"],
        )  # fmt: skip
        if instruction:
            console.initial_instruction = instruction

        def announce(url: str) -> None:
            _err.print(f"[bold]omni-agent console[/] model {escape(console.agent.model.info.label)}")
            _err.print(f"  open: [link]{escape(url)}[/]  (the token is required; keep the URL private)", soft_wrap=True)
            print(url, flush=True)

        console.serve(host=host, port=port, announce=announce)
    finally:
        for item in reversed(stack):
            item.stop()
