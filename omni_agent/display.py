"""Live step display for the terminal (rich): subscribe ``LiveDisplay(console)`` to an agent.

Model text streams into a live panel while it is generated; calls, validation, policy decisions
and results print as they happen, so a user can watch a run and stop it when it goes astray.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from . import events as ev
from .wording import plural

__all__ = ["LiveDisplay"]


def _short(value: Any, limit: int = 240) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 20] + f"… (+{len(text) - limit + 20} chars)"


class LiveDisplay:
    """Renders agent events; pass ``verbose=True`` to show thinking text too.

    On a terminal the model's text streams into a transient panel (calls appear in it as soon as
    they are parsed). What stays on screen reads in order: the model's text, its calls, each
    call's result (named, since parallel calls finish in any order), the final answer.
    """

    def __init__(self, console: Console | None = None, *, verbose: bool = False) -> None:
        self.console = console or Console(stderr=True)
        self.verbose = verbose
        self._live: Live | None = None
        self._text = ""
        self._thinking = ""
        self._calls: list[str] = []
        self._in_model = False

    # -- live model panel ---------------------------------------------------------------------
    def _panel(self) -> Panel:
        parts: list[Any] = []
        if self._thinking and self.verbose:
            parts.append(Text(self._thinking[-600:], style="dim italic"))
        parts.append(Text(self._text[-2000:] or "…"))
        parts.extend(Text.from_markup(line) for line in self._calls[-8:])
        return Panel(Group(*parts), title="model", border_style="cyan", title_align="left")

    def _start_live(self, renderable: Any) -> None:
        self._stop_live()
        if self.console.is_terminal:
            self._live = Live(renderable, console=self.console, refresh_per_second=8, transient=True)
            self._live.start()

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _call_line(self, call: Any) -> str:
        return f"[bold magenta]→ {escape(call.name)}[/] {escape(_short(call.arguments))}"

    def __call__(self, event: ev.AgentEvent) -> None:
        c = self.console
        if isinstance(event, ev.RunStarted):
            c.rule(f"[bold]omni-agent[/] · {escape(event.model)}")
            c.print(f"[bold]task:[/] {escape(event.instruction)}")
            if event.tools:
                c.print(f"[dim]tools: {escape(', '.join(event.tools))}[/]")
            if event.trajectory_dir:
                c.print(f"[dim]trajectory: {escape(event.trajectory_dir)}[/]")
        elif isinstance(event, ev.StepStarted):
            self._stop_live()
            c.rule(f"step {event.step}", style="dim")
            self._text, self._thinking, self._calls = "", "", []
            self._in_model = True
            self._start_live(self._panel())
        elif isinstance(event, ev.ModelTextDelta):
            if event.channel == "thinking":
                self._thinking += event.text
            else:
                self._text += event.text
            if self._live is not None:
                self._live.update(self._panel())
        elif isinstance(event, ev.CallParsed) and event.call is not None:
            if not self._in_model:  # a call announced outside the model phase: print it now
                c.print(self._call_line(event.call))
                return
            self._calls.append(self._call_line(event.call))
            if self._live is not None:
                self._live.update(self._panel())
        elif isinstance(event, ev.ModelFinished):
            self._stop_live()
            self._in_model = False
            if self._thinking and self.verbose:
                c.print(Text(self._thinking.strip(), style="dim italic"))
            if self._text.strip():
                c.print(Panel(Text(self._text.strip()), border_style="cyan"))
            c.print(
                f"[dim]model {event.seconds:.2f}s · {event.prompt_tokens} prompt + "
                f"{event.completion_tokens} completion tokens[/]"
            )
            for line in self._calls:
                c.print(line)
        elif isinstance(event, ev.CallValidated) and not event.ok:
            name = escape(event.call.name) if event.call is not None else "call"
            c.print(f"  [red]✗ {name} invalid:[/] {escape(_indent('; '.join(event.errors)))}")
        elif isinstance(event, ev.PolicyDecided) and event.decision != "allow":
            self._stop_live()  # an approver may prompt on this console
            verdict = {True: "[green]approved[/]", False: "[red]refused[/]", None: ""}[event.approved]
            c.print(f"  [yellow]policy: {escape(event.decision)}[/] {escape(event.reason)} {verdict}")
        elif isinstance(event, ev.ToolFinished) and event.result is not None:
            r = event.result
            style = "red" if r.is_error else "green"
            extra = f" [+{len(r.images)} image(s)]" if r.images else ""
            text = f" {escape(_short(r.text))}" if r.text else ""
            c.print(
                f"  [{style}]{'✗' if r.is_error else '✓'}[/] {escape(r.name)}:{text}{extra} [dim]{event.seconds:.2f}s[/]"
            )
        elif isinstance(event, ev.ErrorEvent):
            if event.kind == "tool":  # the failed call's result line says the same
                return
            self._stop_live()
            if self._in_model and event.kind != "parse":  # the model stopped mid-answer: keep what it wrote
                self._in_model = False
                if self._text.strip():
                    c.print(Panel(Text(self._text.strip()), title="model (stopped mid-answer)", border_style="red", title_align="left"))
                for line in self._calls:
                    c.print(line)
            c.print(f"[bold red]error ({escape(event.kind)}):[/] {escape(event.message)}")
        elif isinstance(event, ev.RunFinished):
            self._stop_live()
            c.rule(f"done: {escape(event.reason)} · {plural(event.steps, 'step')} · {event.seconds:.1f}s")
            if event.answer:
                c.print(Panel(Text(event.answer), title="answer", border_style="green", title_align="left"))


def _indent(text: str) -> str:
    """Continuation lines of a multi-line message line up under the first."""
    return text.replace("\n", "\n    ")
