"""The continuous voice loop behind ``omni-agent listen``: hear a command, run the agent, speak.

A reader thread turns the audio source into utterances (VAD in continuous mode, or push-to-talk
takes); each utterance becomes the audio part of a new run's user turn. New speech barges in on
the speaker at once, even while the agent is still working on the previous command; commands
heard meanwhile wait their turn. ``display(kind, text)`` gets a live account: what was heard,
what is being done, what is said.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

from .. import events as ev
from .microphone import AudioSource, NoSpeechError, record_push_to_talk, utterances
from .output import VoiceOutput
from .vad import SegmentEvent, SpeechStarted, Utterance, UtteranceSegmenter

__all__ = ["HeardCommand", "VoiceLoop"]

Display = Callable[[str, str], None]
"""``display(kind, text)``; kinds: listening, speech, heard, doing, done, said, answer, error."""


@dataclass
class HeardCommand:
    """One spoken command and what came of it."""

    utterance: Utterance
    heard_at: float
    """``time.monotonic()`` when the VAD closed the utterance (end of speech + the silence wait)."""
    result: Any = None
    """The agent's RunResult (None when the run failed before starting)."""
    error: str | None = None
    first_tool_at: float | None = None
    """When the first tool call was handed to the executor."""
    events: list[ev.AgentEvent] = field(default_factory=list, repr=False)


class VoiceLoop:
    """Listen on ``source`` and run ``agent`` once per command.

    Args:
        mode: ``continuous`` (VAD finds each utterance) or ``push_to_talk`` (``press()`` blocks
            until the key goes down and returns an event set when it is released).
        instruction: text sent with every spoken command (e.g. "Follow the spoken request.").
        max_commands: stop after this many commands (None: until the source ends or ``stop()``).
        idle_timeout_s: stop with a clear message after this long without speech.
        barge_in: new speech stops the speaker (use headphones or echo cancellation, or the
            speaker hears itself).
    """

    def __init__(
        self,
        agent: Any,
        source: AudioSource,
        *,
        segmenter: UtteranceSegmenter | None = None,
        output: VoiceOutput | None = None,
        display: Display | None = None,
        mode: Literal["continuous", "push_to_talk"] = "continuous",
        press: Callable[[], threading.Event] | None = None,
        instruction: str = "",
        max_commands: int | None = None,
        idle_timeout_s: float | None = None,
        barge_in: bool = True,
    ) -> None:
        if mode == "push_to_talk" and press is None:
            from ..exceptions import UserError

            raise UserError("push-to-talk needs press(): a callable that waits for the key")
        self.agent = agent
        self.source = source
        self.segmenter = segmenter or UtteranceSegmenter()
        self.output = output
        self.display = display or (lambda kind, text: None)
        self.mode = mode
        self.press = press
        self.instruction = instruction
        self.max_commands = max_commands
        self.idle_timeout_s = idle_timeout_s
        self.barge_in = barge_in
        self.commands: list[HeardCommand] = []
        self.stop_reason: str = ""
        self._stop = threading.Event()
        self._current: HeardCommand | None = None
        agent.events.subscribe(self._on_agent_event)

    def stop(self) -> None:
        self._stop.set()

    # -- hearing -------------------------------------------------------------------------------
    def _on_segment(self, event: SegmentEvent) -> None:
        if isinstance(event, SpeechStarted):
            self.display("speech", f"speech at {event.at_s:.2f} s")
            if self.barge_in and self.output is not None:
                cut = self.output.speaker.barge_in()
                if cut is not None:
                    self.display("said", f"(interrupted) {cut.text}")

    def _takes(self) -> Iterator[Utterance]:
        if self.mode == "continuous":
            yield from utterances(
                self.source, self.segmenter, idle_timeout_s=self.idle_timeout_s, on_event=self._on_segment, stop=self._stop
            )
            return
        assert self.press is not None
        while not self._stop.is_set():
            release = self.press()
            if self.barge_in and self.output is not None:
                self.output.speaker.barge_in()
            self.display("listening", "recording… (release to send)")
            try:
                yield record_push_to_talk(self.source, self.segmenter, release)
            except NoSpeechError as exc:
                self.display("error", exc.message)

    def _read(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> None:
        try:
            for utterance in self._takes():
                loop.call_soon_threadsafe(queue.put_nowait, ("utterance", utterance, time.monotonic()))
                if self._stop.is_set():
                    break
            loop.call_soon_threadsafe(queue.put_nowait, ("end", "the audio source ended", 0.0))
        except Exception as exc:  # device errors, idle timeout: end the loop with the message
            loop.call_soon_threadsafe(queue.put_nowait, ("end", getattr(exc, "message", None) or str(exc), 0.0))

    # -- doing ---------------------------------------------------------------------------------
    def _on_agent_event(self, event: ev.AgentEvent) -> None:
        command = self._current
        if command is None:
            return
        command.events.append(event)
        if isinstance(event, ev.ToolStarted) and event.call is not None:
            if command.first_tool_at is None:
                command.first_tool_at = time.monotonic()
            args = ", ".join(f"{k}={v!r}" for k, v in event.call.arguments.items())
            self.display("doing", f"{event.call.name}({args})")
        elif isinstance(event, ev.ToolFinished) and event.result is not None:
            self.display("done", f"{event.call.name if event.call else '?'}: {event.result.text[:120]}")
        elif isinstance(event, ev.ErrorEvent):
            self.display("error", event.message)

    async def run(self) -> list[HeardCommand]:
        """Listen until the source ends, ``max_commands`` ran, ``stop()`` or the idle timeout."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self.display("listening", "listening… speak a command" if self.mode == "continuous" else "press to talk")
        reader = threading.Thread(target=self._read, args=(loop, queue), name="voice-listen", daemon=True)
        reader.start()
        try:
            while self.max_commands is None or len(self.commands) < self.max_commands:
                kind, value, at = await queue.get()
                if kind == "end":
                    self.stop_reason = value
                    if value != "the audio source ended":
                        self.display("error", value)
                    break
                await self._handle(value, at)
            else:
                self.stop_reason = f"{self.max_commands} commands done"
        finally:
            self._stop.set()
            reader.join(timeout=1.0)
        return self.commands

    async def _handle(self, utterance: Utterance, heard_at: float) -> None:
        command = HeardCommand(utterance=utterance, heard_at=heard_at)
        self.commands.append(command)
        self._current = command
        self.display("heard", f"{utterance.duration_s:.1f} s of speech ({utterance.start_s:.2f}-{utterance.end_s:.2f} s)")
        try:
            command.result = await self.agent.arun(self.instruction, audio=utterance.part())
        except Exception as exc:  # one bad command must not end the listening loop
            command.error = f"{type(exc).__name__}: {exc}"
            self.display("error", command.error)
        else:
            answer = command.result.answer or command.result.error or ""
            self.display("answer", answer)
        finally:
            self._current = None
