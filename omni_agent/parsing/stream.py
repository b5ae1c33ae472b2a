"""Incremental parsing of streamed Thinker text.

``StreamParser().feed(chunk)`` returns events as soon as they are decided: visible and thinking
text deltas, each tool call the moment its ``</tool_call>`` arrives, and problems. Tool-call
text never appears as visible text, not even a ``<tool_`` split across chunks: such a tail is
held back until the next chunk (or ``close()``) decides it. For any chunking, the concatenated
deltas and the calls equal :func:`~omni_agent.parsing.qwen.parse_output` of the whole text
(called with the same ``starts_in_thinking``), because both run the same scanner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from ..messages import ToolCall
from .qwen import QwenScanner, ScanItem, internal_error
from .types import ParseProblem

__all__ = ["CallReady", "Problem", "StreamEvent", "StreamParser", "TextDelta"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New text for the user (``visible``) or from the model's reasoning (``thinking``)."""

    text: str
    channel: Literal["visible", "thinking"] = "visible"


@dataclass(frozen=True, slots=True)
class CallReady:
    """A complete tool call, ready for validation."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class Problem:
    """Something in the output that was repaired (``problem.fatal`` False) or could not be read."""

    problem: ParseProblem


StreamEvent = Union[TextDelta, CallReady, Problem]


class StreamParser:
    """Feed chunks of model text; get :data:`StreamEvent` lists back. Never raises.

    Args:
        starts_in_thinking: True when the chat template opened ``<think>`` in the prompt, so the
            output begins inside the think block (Qwen "Thinking" models). A stream cannot look
            ahead for a lone ``</think>``, so unlike ``parse_output`` there is no auto mode:
            with False, a lone ``</think>`` is reported as a stray tag.
    """

    def __init__(self, *, starts_in_thinking: bool = False) -> None:
        self._scanner = QwenScanner(starts_in_thinking=starts_in_thinking)
        self._closed = False

    @property
    def in_tool_call(self) -> bool:
        """True while a ``<tool_call>`` block is open (a display may show "calling a tool...")."""
        return self._scanner.mode == "call"

    def feed(self, chunk: str) -> list[StreamEvent]:
        if self._closed:
            return [Problem(ParseProblem(kind="stray_tag", message="text fed after close() was ignored", fatal=False))]
        if not isinstance(chunk, str):
            return [Problem(ParseProblem(kind="invalid_json", message=f"stream chunk is not text ({type(chunk).__name__})"))]
        try:
            return _events(self._scanner.feed(chunk))
        except Exception as exc:  # a scanner bug must not take the agent down: report it as data
            self._closed = True
            return [Problem(internal_error(exc))]

    def close(self) -> list[StreamEvent]:
        """End of the stream: flush held-back text and parse an unclosed final block."""
        if self._closed:
            return []
        self._closed = True
        try:
            return _events(self._scanner.close())
        except Exception as exc:  # see feed()
            return [Problem(internal_error(exc))]


def _events(items: list[ScanItem]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in items:
        if item[0] == "text":
            events.append(TextDelta(item[2], item[1]))
        elif item[0] == "call":
            events.append(CallReady(item[1]))
        else:
            events.append(Problem(item[1]))
    return events
