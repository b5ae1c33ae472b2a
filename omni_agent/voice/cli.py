"""Voice commands for the ``omni-agent`` CLI: ``listen``, and the speech wiring of ``run --speak``.

Mounted on the main app by ``omni_agent/cli.py`` (``app.command("listen")(listen_cmd)``);
``speech_for_run`` is what ``run --speak`` calls to speak progress and the answer.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..exceptions import UserError

__all__ = ["app", "listen_cmd", "speech_for_run"]

app = typer.Typer(name="voice", help="Voice commands.", no_args_is_help=True, pretty_exceptions_enable=False)
_err = Console(stderr=True)


@app.callback()
def _voice() -> None:
    """Voice commands (kept a group so ``listen`` is named even as the only command)."""

_STYLES = {
    "listening": "dim", "speech": "cyan", "heard": "bold cyan", "doing": "magenta", "done": "green",
    "said": "yellow", "answer": "bold", "error": "red",
}  # fmt: skip
_LABELS = {
    "listening": "🎤", "speech": "…", "heard": "heard", "doing": "doing", "done": "  ->",
    "said": "said", "answer": "answer", "error": "error",
}  # fmt: skip


def console_display(console: Console) -> Any:
    """``display(kind, text)`` printing one line per event (what was heard, done and said)."""
    lock = threading.Lock()

    def show(kind: str, text: str) -> None:
        with lock:
            style = _STYLES.get(kind, "")
            console.print(f"[{style}]{_LABELS.get(kind, kind)}[/] {escape(text)}" if style else f"{kind} {escape(text)}")

    return show


def speech_for_run(
    agent: Any,
    *,
    speak_to: str | None = None,
    engine: str = "auto",
    voice: str | None = None,
    language: str | None = None,
    console: Console | None = None,
) -> Any:
    """For ``run --speak``: a :class:`VoiceOutput` on ``agent`` (call ``.close()`` after the run).

    ``speak_to``: None = the sound device, ``none`` = nowhere, else a directory of WAV files.
    """
    from .output import attach_voice_output

    show = console_display(console or _err)

    def on_record(record: Any) -> None:
        if record.status == "speaking" or (record.status == "done" and record.samples_total == 0):
            show("said", record.text)
        elif record.status == "failed":
            show("error", f"could not say {record.text!r}: {record.error}")

    return attach_voice_output(agent, engine=engine, voice=voice, sink=speak_to, language=language, on_record=on_record)


def _press_enter(console: Console) -> Any:
    """Push-to-talk on a terminal: Enter starts the take, Enter again ends it."""

    def press() -> threading.Event:
        console.print("[dim]press Enter to talk[/]")
        if not sys.stdin.readline():
            raise UserError("stdin closed: push-to-talk needs a terminal")
        release = threading.Event()

        def wait_release() -> None:
            sys.stdin.readline()
            release.set()

        threading.Thread(target=wait_release, name="ptt-release", daemon=True).start()
        return release

    return press


@app.command("listen")
def listen_cmd(
    model: str = typer.Option(..., "--model", "-m", help="qwen-omni:/path | openai:URL#name | scripted:FILE"),
    tools: str = typer.Option("shell,files", "--tools", "-t", help="Comma-separated toolsets."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Working directory for tools."),
    device: Optional[str] = typer.Option(None, "--device", help="Input device (index or name; default: the system's)."),
    audio: Optional[Path] = typer.Option(None, "--audio", help="Listen to this recording instead of the microphone."),
    push_to_talk: bool = typer.Option(False, "--push-to-talk", help="Enter starts and ends each command."),
    speak: bool = typer.Option(True, "--speak/--no-speak", help="Speak progress and answers."),
    speak_to: Optional[str] = typer.Option(None, "--speak-to", help="Sound device (default), 'none', or a WAV directory."),
    engine: str = typer.Option("auto", "--speech-engine", help="auto | talker | espeak | silent"),
    voice: Optional[str] = typer.Option(None, "--voice", help="Talker voice (e.g. Ethan, Chelsie)."),
    language: Optional[str] = typer.Option(None, "--language", help="Language of spoken progress (en, zh, de, ...)."),
    instruction: str = typer.Option("", "--instruction", help="Text sent with every spoken command."),
    max_commands: Optional[int] = typer.Option(None, "--max-commands", help="Stop after this many commands."),
    idle_timeout: Optional[float] = typer.Option(None, "--idle-timeout", help="Stop after this many seconds of silence."),
    max_steps: int = typer.Option(10, "--max-steps"),
    barge_in: bool = typer.Option(True, "--barge-in/--no-barge-in", help="New speech stops the speaker."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Approve every call that needs confirmation."),
    trajectory: Optional[Path] = typer.Option(None, "--trajectory", help="Trajectory directory (default runs/)."),
) -> None:
    """Continuous voice loop: speak a command, watch it run, hear the progress and the answer.

    Exit codes: 0 the loop ended (source ended, --max-commands, --idle-timeout); 2 bad usage or a
    missing microphone / sound device; 1 other errors; 130 interrupted."""
    from ..loop import Agent, run_blocking
    from ..models.spec import load_model
    from ..policy import allow_all, deny_all
    from ..toolsets import load_toolsets, split_toolset_names
    from .audio_io import decode_audio
    from .listen import VoiceLoop
    from .microphone import ArraySource, Microphone

    if push_to_talk and audio is not None:
        raise UserError("--push-to-talk needs the microphone; drop --audio")
    source: Any
    if audio is not None:
        source = ArraySource(decode_audio(audio), realtime=False)
    else:
        source = Microphone(device=int(device) if device and device.isdigit() else device).open()
        _err.print(f"[dim]microphone: {source.device_name}[/]")
    the_model = load_model(model)
    agent = Agent(
        the_model,
        load_toolsets(tools, workspace=workspace),
        max_steps=max_steps,
        approver=allow_all if yes else deny_all,
        trajectory_dir=trajectory or Path("runs"),
        workspace=workspace,
        metadata={"toolsets": split_toolset_names(tools), "workspace": str(workspace.resolve())},
    )
    show = console_display(_err)
    output = speech_for_run(agent, speak_to=speak_to, engine=engine, voice=voice, language=language) if speak else None
    loop = VoiceLoop(
        agent,
        source,
        output=output,
        display=show,
        mode="push_to_talk" if push_to_talk else "continuous",
        press=_press_enter(_err) if push_to_talk else None,
        instruction=instruction,
        max_commands=max_commands,
        idle_timeout_s=idle_timeout,
        barge_in=barge_in,
    )
    try:
        commands = run_blocking(loop.run(), what="omni-agent listen")
    finally:
        if output is not None:
            output.close()
        source.close()
    _err.print(f"[dim]{len(commands)} command(s); stopped: {loop.stop_reason}[/]")
    if not commands:
        _err.print("[red]error:[/] no spoken command was heard")
        raise typer.Exit(3)
