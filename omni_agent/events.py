"""Events the agent loop emits for every phase; displays, loggers and speakers subscribe.

Subscribers are plain callables (sync or async). A subscriber that raises is reported once on
stderr and never breaks the run.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .messages import ToolCall, ToolResult

__all__ = [
    "AgentEvent",
    "CallParsed",
    "CallValidated",
    "ErrorEvent",
    "EventBus",
    "ModelFinished",
    "ModelTextDelta",
    "PolicyDecided",
    "RunFinished",
    "RunStarted",
    "StepFinished",
    "StepStarted",
    "ToolFinished",
    "ToolStarted",
]


@dataclass(kw_only=True)
class AgentEvent:
    run_id: str = ""
    step: int = 0
    time: float = field(default_factory=time.time)
    type: str = "event"


@dataclass(kw_only=True)
class RunStarted(AgentEvent):
    type: str = "run_started"
    instruction: str = ""
    model: str = ""
    tools: list[str] = field(default_factory=list)
    trajectory_dir: str | None = None


@dataclass(kw_only=True)
class StepStarted(AgentEvent):
    type: str = "step_started"


@dataclass(kw_only=True)
class ModelTextDelta(AgentEvent):
    """Visible model text as it streams (tool-call and thinking text excluded)."""

    type: str = "model_text"
    text: str = ""
    channel: Literal["visible", "thinking"] = "visible"


@dataclass(kw_only=True)
class ModelFinished(AgentEvent):
    type: str = "model_finished"
    raw_text: str = ""
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(kw_only=True)
class CallParsed(AgentEvent):
    type: str = "call_parsed"
    call: ToolCall | None = None


@dataclass(kw_only=True)
class CallValidated(AgentEvent):
    type: str = "call_validated"
    call: ToolCall | None = None
    ok: bool = True
    errors: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class PolicyDecided(AgentEvent):
    type: str = "policy_decided"
    call: ToolCall | None = None
    decision: Literal["allow", "ask", "deny"] = "allow"
    reason: str = ""
    approved: bool | None = None


@dataclass(kw_only=True)
class ToolStarted(AgentEvent):
    type: str = "tool_started"
    call: ToolCall | None = None


@dataclass(kw_only=True)
class ToolFinished(AgentEvent):
    type: str = "tool_finished"
    call: ToolCall | None = None
    result: ToolResult | None = None
    seconds: float = 0.0


@dataclass(kw_only=True)
class ErrorEvent(AgentEvent):
    type: str = "error"
    message: str = ""
    kind: str = "error"


@dataclass(kw_only=True)
class StepFinished(AgentEvent):
    type: str = "step_finished"
    seconds: float = 0.0


@dataclass(kw_only=True)
class RunFinished(AgentEvent):
    type: str = "run_finished"
    reason: str = ""
    answer: str | None = None
    steps: int = 0
    seconds: float = 0.0


Subscriber = Callable[[AgentEvent], Any]


class EventBus:
    """Fan-out of events to subscribers, in subscription order."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []
        self._warned: set[int] = set()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)
        return lambda: self._subs.remove(fn) if fn in self._subs else None

    async def emit(self, event: AgentEvent) -> None:
        for fn in list(self._subs):
            try:
                out = fn(event)
                if inspect.isawaitable(out):
                    await out
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken display must not break the run
                if id(fn) not in self._warned:
                    self._warned.add(id(fn))
                    print(f"omni-agent: event subscriber {fn!r} failed: {exc!r}", file=sys.stderr)
