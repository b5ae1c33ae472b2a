"""The ``omni-agent`` command line (typer + rich).

Errors print as one clear line (exit 2 for usage/configuration errors, 1 otherwise); pass
``--debug`` (or set OMNI_AGENT_DEBUG=1) for the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .exceptions import DisplayError, MissingDependencyError, OmniAgentError, UserError
from .flags import DebugAnywhereGroup

app = typer.Typer(
    cls=DebugAnywhereGroup,
    name="omni-agent",
    help="Tool-calling multimodal agents on Qwen-Omni: run, watch, serve, evaluate, replay.\n\n"
    "Exit codes: 0 success; 1 failure (see each command); 2 bad usage or configuration; 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)
_DEBUG = {"on": os.environ.get("OMNI_AGENT_DEBUG") == "1"}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors (anywhere on the line).")) -> None:
    if debug:
        _DEBUG["on"] = True
        os.environ["OMNI_AGENT_DEBUG"] = "1"  # sub-apps (eval) and their workers read it


# ------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------
TOOLS_HELP = "Comma-separated toolsets: shell, files, browser, desktop, mcp:stdio:CMD / mcp:URL, or module:attr / file.py"


@app.command("tools")
def tools_cmd(
    tools: str = typer.Option("shell,files", "--tools", "-t", help=TOOLS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the OpenAI-format schemas as JSON."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Workspace for file/shell tools."),
) -> None:
    """List tools and their JSON Schemas.

    Exit codes: 0 listed; 2 a tool set cannot be loaded."""
    from .toolsets import load_toolsets

    loaded = load_toolsets(tools, workspace=workspace)
    if as_json:
        print(json.dumps([t.openai_schema() for t in loaded], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{len(loaded)} tools", show_lines=True)
    table.add_column("name", style="bold magenta")
    table.add_column("description")
    table.add_column("arguments")
    for t in loaded:
        props = t.parameters.get("properties", {})
        required = set(t.parameters.get("required", []))
        args = ", ".join(f"{k}{'' if k in required else '?'}: {_type_of(v)}" for k, v in props.items())
        flags = [t.kind] + (["dangerous"] if t.risk == "dangerous" else [])
        table.add_row(t.name, escape(t.description.split("\n")[0]) + f"\n[dim]{', '.join(flags)}[/]", escape(args))
    out.print(table)


def _type_of(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(map(str, schema["enum"][:6])) + ("|…" if len(schema["enum"]) > 6 else "")
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    t = schema.get("type", "any")
    if t == "array":
        return f"list[{_type_of(schema.get('items', {}))}]"
    return str(t)


# ------------------------------------------------------------------------------------------
# parse
# ------------------------------------------------------------------------------------------
@app.command("parse")
def parse_cmd(
    source: str = typer.Argument("-", help="File with raw model text, or - for stdin."),
    tools: str = typer.Option("", "--tools", "-t", help=TOOLS_HELP + " (validate calls against them)"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w"),
) -> None:
    """Parse raw model output into visible text, thinking, calls and problems.

    Exit codes: 0 every call readable (and valid, with --tools); 1 a call unreadable or invalid; 2 bad input."""
    from .parsing import parse_output
    from .registry import ToolRegistry
    from .toolsets import load_toolsets
    from .validation import validate_call

    if source == "-":
        text = sys.stdin.read()
    else:
        path = Path(source)
        if not path.is_file():
            raise UserError(f"no such file: {source}")
        text = path.read_text(encoding="utf-8", errors="replace")
    parsed = parse_output(text)
    registry = ToolRegistry(load_toolsets(tools, workspace=workspace)) if tools else None
    checks = [validate_call(c, registry) for c in parsed.calls] if registry is not None else []
    if as_json:
        doc: dict[str, Any] = parsed.model_dump(mode="json")
        if registry is not None:
            doc["validation"] = [
                {"call_id": v.call.id, "ok": v.ok, "message": v.message, "arguments": v.call.arguments}
                for v in checks
            ]
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        if parsed.thinking:
            out.print(f"[dim italic]thinking: {escape(parsed.thinking.strip()[:800])}[/]")
        if parsed.visible_text.strip():
            out.print(f"[bold]text:[/] {escape(parsed.visible_text.strip())}")
        for i, call in enumerate(parsed.calls):
            line = f"[bold magenta]call {i + 1}:[/] {escape(call.name)} {escape(json.dumps(call.arguments, ensure_ascii=False))}"
            if checks:
                v = checks[i]
                line += "  [green]valid[/]" if v.ok else f"\n    [red]invalid:[/] {escape(v.message)}"
                if v.ok and v.call.arguments != call.arguments:
                    line += f"\n    [dim]runs as (after coercion): {escape(json.dumps(v.call.arguments, ensure_ascii=False))}[/]"
            out.print(line)
        for p in parsed.problems:
            style = "red" if p.fatal else "yellow"
            out.print(f"[{style}]{'problem' if p.fatal else 'note'} ({p.kind}):[/] {escape(p.message)}")
        if not parsed.calls:
            out.print("[dim]no tool calls[/]")
    bad = any(p.fatal for p in parsed.problems) or any(not v.ok for v in checks)
    raise typer.Exit(1 if bad else 0)


# ------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------
@app.command("run")
def run_cmd(
    instruction: str = typer.Argument("", help="What the agent should do (may be empty with --audio)."),
    model: str = typer.Option(..., "--model", "-m", help="qwen-omni:/path | openai:URL#name | scripted:FILE"),
    tools: str = typer.Option("shell,files", "--tools", "-t", help=TOOLS_HELP),
    audio: Optional[Path] = typer.Option(None, "--audio", help="A spoken command (wav/flac/ogg/mp3)."),
    image: List[Path] = typer.Option([], "--image", help="Images to attach (repeatable)."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Working directory for tools."),
    trajectory: Optional[Path] = typer.Option(None, "--trajectory", help="Trajectory directory (default runs/<time>)."),
    max_steps: int = typer.Option(20, "--max-steps"),
    max_seconds: Optional[float] = typer.Option(None, "--max-seconds"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every call that needs confirmation."),
    speak: bool = typer.Option(False, "--speak", help="Speak progress and the final answer."),
    speak_to: Optional[str] = typer.Option(None, "--speak-to", help="Sound device (default), 'none', or a WAV directory."),
    speech_engine: str = typer.Option("auto", "--speech-engine", help="auto | talker | espeak | silent"),
    voice: Optional[str] = typer.Option(None, "--voice", help="Talker voice (e.g. Ethan, Chelsie, Aiden)."),
    language: Optional[str] = typer.Option(None, "--language", help="Language of spoken progress (en, zh, ...)."),
    system: Optional[str] = typer.Option(None, "--system", help="System prompt."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show thinking text."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
    observe: str = typer.Option(
        "", "--observe", help="Show the model a screenshot after each step: browser, desktop (comma-separated)."
    ),
    sandbox: Optional[str] = typer.Option(
        None, "--sandbox", help="Shell sandbox: none | bubblewrap (read-only system, no network, only the workspace writable)."
    ),
    max_new_tokens: int = typer.Option(1024, "--max-new-tokens", min=1, help="Tokens the model may write per step."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="Sampling temperature (0 = greedy)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed (where the backend supports it)."),
    ui: bool = typer.Option(False, "--ui", help="Watch and steer the run in the live web console (omni-agent console)."),
) -> None:
    """Run an agent on one instruction with a live step display.

    Exit codes: 0 answered (or a finishing tool ended the run); 3 stopped without an answer (step
    or time limit, repeated failures, a loop, a model error, output cut off at the token limit);
    2 bad usage or configuration (missing display, browser, sound device); 1 other errors; 130
    interrupted (the trajectory is kept)."""
    if ui:
        from .console.cli import run_with_ui

        # The console runs with its own settings (approvals, speech and voice in the page): an
        # option it would not honour is refused, never silently dropped.
        unsupported = [flag for flag, given in (
            ("--audio", audio is not None), ("--image", bool(image)), ("--max-seconds", max_seconds is not None),
            ("--yes", yes), ("--speak-to", speak_to is not None), ("--voice", voice is not None),
            ("--language", language is not None), ("--system", system is not None), ("--json", as_json),
            ("--sandbox", sandbox is not None), ("--max-new-tokens", max_new_tokens != 1024),
            ("--temperature", temperature != 0.0), ("--seed", seed is not None),
        ) if given]  # fmt: skip
        if unsupported:
            raise UserError(f"--ui does not take {', '.join(unsupported)}: the console runs with its own settings")
        runs = trajectory or Path("runs")
        return run_with_ui(instruction, model=model, tools=tools, workspace=workspace, runs=runs, max_steps=max_steps,
                           observe=observe, speech_engine=speech_engine)  # fmt: skip
    from .display import LiveDisplay
    from .loop import Agent, StopReason
    from .messages import AudioPart, ImagePart
    from .models.base import GenerationSettings
    from .models.spec import load_model
    from .policy import allow_all, console_approver, deny_all
    from .toolsets import split_toolset_names

    _stop_on_sigterm()
    speak = speak or speak_to is not None  # --speak-to DIR alone means "speak, to DIR"
    if not instruction and audio is None:
        raise UserError("give an instruction, --audio, or both")
    if audio is not None and not audio.is_file():
        raise UserError(f"audio file not found: {audio}")
    for p in image:
        if not p.is_file():
            raise UserError(f"image file not found: {p}")
    traj = trajectory or Path("runs")
    loaded = _tools_for_run(tools, workspace=workspace, observe=observe, sandbox=sandbox)  # fail before a slow load
    the_model = load_model(model)
    if _GUI_TOOLSETS & set(split_toolset_names(tools)) or observe:
        # Rebuilt (cheap: nothing launched yet) so clicks are read in the model's coordinates.
        loaded = _tools_for_run(tools, workspace=workspace, observe=observe, sandbox=sandbox, model=the_model)
    approver = allow_all if yes else (console_approver(err) if sys.stdin.isatty() else deny_all)
    agent_kwargs: dict[str, Any] = dict(
        max_steps=max_steps,
        max_seconds=max_seconds,
        approver=approver,
        trajectory_dir=traj,
        workspace=workspace,
        system_prompt=system,
        settings=GenerationSettings(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed),
        metadata={"toolsets": split_toolset_names(tools), "workspace": str(workspace.resolve()), "sandbox": sandbox or "none"},
    )
    agent = Agent(the_model, loaded.tools, observers=loaded.observers, **agent_kwargs)
    agent.events.subscribe(LiveDisplay(err, verbose=verbose))
    started: dict[str, str] = {}
    agent.events.subscribe(lambda e: started.update(dir=e.trajectory_dir or "") if e.type == "run_started" else None)
    voice_out = None
    if speak:
        from .voice.cli import speech_for_run

        voice_out = speech_for_run(
            agent, speak_to=speak_to, engine=speech_engine, voice=voice, language=language, console=err
        )
    try:
        result = agent.run(
            instruction,
            audio=AudioPart.from_path(audio) if audio else None,
            images=[ImagePart.from_path(p) for p in image] or None,
        )
    except KeyboardInterrupt:
        # Ctrl-C (or kill) cancelled the run, which closed its trajectory as "cancelled".
        kept = started.get("dir")
        if kept:
            _html_report(kept)
        where = f"; trajectory kept in {kept}" if kept else ""
        err.print(f"[bold red]interrupted:[/] the run was stopped{escape(where)}", soft_wrap=True)
        raise typer.Exit(130) from None
    finally:
        if voice_out is not None:
            voice_out.close()
    report = result.report  # the Agent wrote the page when the run ended
    if as_json:
        doc = {k: v for k, v in result.model_dump(mode="json").items() if k != "messages"}
        doc["report"] = str(report) if report else None
        print(json.dumps(doc, indent=2))
    else:
        err.print(f"[dim]trajectory: {escape(str(result.trajectory_dir))}[/]", soft_wrap=True)
        if report:
            err.print(f"[dim]report: {escape(str(report))}[/]", soft_wrap=True)
        if result.answer:
            print(result.answer)
    raise typer.Exit(0 if result.stop_reason in (StopReason.ANSWER, StopReason.FINISHING_TOOL) else 3)


def _html_report(trajectory_dir: str | Path) -> Path | None:
    """Write the run's index.html (screenshots, calls, results); a failure is a note, not an error."""
    from .html_report import render_trajectory_html

    try:
        return render_trajectory_html(trajectory_dir)
    except Exception as exc:  # the run itself is done; the page is a convenience
        err.print(f"[yellow]note:[/] no HTML report for {escape(str(trajectory_dir))}: {escape(str(exc))}")
        return None


def _stop_on_sigterm() -> None:
    """``kill PID`` stops a run the way Ctrl-C does: the loop is cancelled, so running commands'
    process trees are killed and the trajectory is closed. (Python's default SIGTERM action ends
    the process at once and leaves a command's background children running.)"""
    import signal
    import threading

    def on_sigterm(_signum: int, frame: Any) -> None:
        on_sigint = signal.getsignal(signal.SIGINT)  # asyncio's: cancel the run (a 2nd: stop now)
        if callable(on_sigint):
            on_sigint(signal.SIGINT, frame)
        else:  # SIGINT ignored (started in the background by a shell): stop anyway
            raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_sigterm)


_GUI_TOOLSETS = {"browser", "desktop"}


def _coordinate_options(info: Any) -> dict[str, Any]:
    """Options that make the browser / desktop tools read x/y the way the model writes them
    (Qwen3: the 0..1000 grid; Qwen2.5: pixels of the screenshot as its processor resized it)."""
    from .coords import QWEN3_SPEC, QWEN25_SPEC

    space = info.coordinate_space
    spec = QWEN25_SPEC if space == "absolute_resized" else QWEN3_SPEC
    sizes = (info.extra or {}).get("image_spec") or {}
    sizes = {k: v for k, v in sizes.items() if k in ("factor", "min_pixels", "max_pixels")}
    return {"coordinate_space": space, "spec": spec.model_copy(update=sizes) if sizes else spec}


def _tools_for_run(
    tools: str, *, workspace: Path, observe: str, sandbox: Optional[str], model: Any = None
) -> Any:
    """The run's tools and observers; a missing display or sandbox fails here, in one line."""
    from .toolsets import load_toolsets_with_observers, split_toolset_names

    names = split_toolset_names(tools)
    options: dict[str, Any] = _coordinate_options(model.info) if model is not None else {}
    if sandbox is not None:
        if sandbox not in ("none", "bubblewrap"):
            raise UserError(f"--sandbox must be none or bubblewrap, not {sandbox!r}")
        if "shell" not in names:
            raise UserError("--sandbox applies to the shell toolset: add shell to --tools")
        options["sandbox"] = sandbox
    loaded = load_toolsets_with_observers(names, workspace=workspace, options=options, observe=observe)
    if "desktop" in names:
        from .screen import resolve_display

        resolve_display(None)  # DisplayError now rather than a failed action per step
    return loaded


# ------------------------------------------------------------------------------------------
# replay
# ------------------------------------------------------------------------------------------
@app.command("replay")
def replay_cmd(
    directory: Path = typer.Argument(..., help="A trajectory directory written by a run."),
    tools: Optional[str] = typer.Option(None, "--tools", "-t", help=TOOLS_HELP + " (default: the run's)"),
    workspace: Optional[Path] = typer.Option(None, "--workspace", "-w", help="Default: the run's recorded workspace."),
    sandbox: Optional[str] = typer.Option(None, "--sandbox", help="Shell sandbox: none or bubblewrap (default: the run's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Re-execute a trajectory's recorded calls without a model; report where the world diverged.

    Shell commands run only in the recorded (or given) workspace and sandbox, under the run's policy.

    Exit codes: 0 every call gave the recorded result; 1 the replay diverged; 2 bad input."""
    from .replay_setup import replay_tools
    from .replay import replay

    setup = replay_tools(directory, tools=tools, workspace=workspace, sandbox=sandbox)
    report = replay(directory, setup.tools, workspace=setup.workspace, refused_tools=setup.refused)
    if as_json:
        print(report.model_dump_json(indent=2))
    else:
        # Tool output may look like rich markup ("[/bold]", "list[int]"): print it as plain text.
        out.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if report.ok else 1)


def _mount_subcommands() -> None:
    """Sub-apps live beside their features; importing them is light (heavy work is lazy)."""
    from .console.cli import console_cmd
    from .eval.cli import eval_app
    from .mcp.cli import mcp_server_cmd
    from .serve.cli import serve_cmd
    from .voice.cli import listen_cmd

    app.add_typer(eval_app, name="eval")
    app.command("listen")(listen_cmd)
    app.command("console")(console_cmd)
    app.command("mcp-server")(mcp_server_cmd)
    app.command("serve")(serve_cmd)


_mount_subcommands()


def main() -> None:
    """Console entry point: one clear line per error unless --debug."""
    if "--debug" in sys.argv[1:]:  # the group accepts it anywhere; errors before parsing need it too
        _DEBUG["on"] = True
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        sys.exit(130)
    except Exception as exc:  # the one place errors are turned into a line for the user
        if _DEBUG["on"]:
            raise
        code = 2 if isinstance(exc, (UserError, DisplayError, MissingDependencyError)) else 1  # fix the setup
        name = "" if isinstance(exc, OmniAgentError) else f"{type(exc).__name__}: "
        err.print(f"[bold red]error:[/] {escape(name + str(exc))}  [dim](--debug for details)[/]", soft_wrap=True)
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
