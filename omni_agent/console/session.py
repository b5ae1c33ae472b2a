"""One console's agent: start, stop, pause and resume runs; answer approvals; take over.

:class:`ConsoleSession` plugs into the agent at three documented points: it subscribes to
``agent.events`` (every event goes to the pages), it is the policy's approver (an "ask" waits
for a page's Approve / Deny, optionally with edited arguments, validated here and again by the
loop), and it is the loop's ``step_gate`` (a paused run waits there; what the user did on the
screen meanwhile joins the conversation as a user message, so the trajectory records it).
One run at a time; stop cancels it, which closes its trajectory as "cancelled".
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any, Literal

from .. import events as ev
from ..coords import QWEN3_SPEC, QWEN25_SPEC, ModelImageSpec
from ..exceptions import UserError
from ..messages import ImagePart, Message, TextPart, ToolCall, ToolResult, UserMessage
from ..policy import Approval
from ..tool import ToolContext
from ..validation import validate_call
from .hub import Hub
from .protocol import (
    ApprovalClosed,
    ApprovalRequest,
    ApproveMessage,
    ErrorMessage,
    ObservationMessage,
    StateMessage,
    TargetMessage,
    UserAction,
    event_to_json,
    thumbnail,
)
from .takeover import TakeOverMessage, takeover_call, target_fractions

__all__ = ["ConsoleSession", "spec_for_model"]

RunState = Literal["idle", "running", "paused"]
REPLAY_LIMIT = 2_000
"""Events of the current run kept for pages that connect late."""


def spec_for_model(model: Any) -> ModelImageSpec:
    """The coordinate space the model writes in (Qwen2.5: resized pixels; otherwise the 0..1000 grid)."""
    space = getattr(getattr(model, "info", None), "coordinate_space", None)
    return QWEN25_SPEC if space == "absolute_resized" else QWEN3_SPEC


class ConsoleSession:
    """Run control for ``agent``, reporting to the pages on ``hub``."""

    def __init__(self, agent: Any, hub: Hub, *, screen_size: tuple[int, int] = (1280, 800)) -> None:
        self.agent = agent
        self.hub = hub
        self.screen_size = screen_size
        self.spec = spec_for_model(agent.model)
        self.state: RunState = "idle"
        self.run_id = ""
        self.step = 0
        self.task: asyncio.Task[Any] | None = None
        self.results: list[Any] = []
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._waiting_at_gate = False
        self._user_messages: list[Message] = []
        self._pending: dict[str, tuple[ToolCall, str, asyncio.Future[Approval]]] = {}
        self._replay: collections.deque[str] = collections.deque(maxlen=REPLAY_LIMIT)
        self._takeover_state: dict[str, Any] = {}
        """What tools keep between take-over calls (e.g. a browser session); closed by ``aclose``."""
        agent.approver = self.approve
        agent.step_gate = self.gate
        agent.observers = [ShownObserver(o, self._on_observation) for o in agent.observers]
        agent.events.subscribe(self._on_event)

    # -- what a page sees --------------------------------------------------------------------
    def _on_event(self, event: ev.AgentEvent) -> None:
        if isinstance(event, ev.RunStarted):
            self._replay.clear()
            self.run_id = event.run_id
        if event.step:
            self.step = event.step
        text = event_to_json(event)
        self._replay.append(text)
        self.hub.broadcast(text)
        call = getattr(event, "call", None)
        if isinstance(event, ev.ToolStarted) and isinstance(call, ToolCall):
            where = target_fractions(call, screen_size=self.screen_size, spec=self.spec)
            if where is not None:
                self.hub.broadcast(TargetMessage(action=call.arguments.get("action"), **where).wire())

    def _on_observation(self, step: int, parts: list[Any]) -> None:
        images = [t for t in (thumbnail(p) for p in parts if isinstance(p, ImagePart)) if t]
        if images:
            self.hub.broadcast(ObservationMessage(step=step, images=images).wire())

    def state_message(self) -> str:
        at_gate = self.state == "paused" and self._waiting_at_gate
        return StateMessage(state=self.state, run_id=self.run_id, step=self.step, at_gate=at_gate).wire()

    def _set_state(self, state: RunState) -> None:
        self.state = state
        self.hub.broadcast(self.state_message())

    def greeting(self) -> list[str]:
        """Messages a page that just connected gets: the state, the run so far, open questions."""
        out = [self.state_message(), *self._replay]
        out.extend(self._approval_request(call, reason) for call, reason, _ in self._pending.values())
        return out

    def error(self, message: str) -> None:
        self.hub.broadcast(ErrorMessage(message=message).wire())

    # -- run control ---------------------------------------------------------------------------
    def start(self, instruction: str, *, audio: Any = None) -> None:
        """Start a run (:class:`UserError` while one is going)."""
        if self.task is not None and not self.task.done():
            raise UserError("a run is in progress: stop it or wait for it to end")
        self._resumed.set()
        self._user_messages.clear()
        self.step = 0
        self.task = asyncio.create_task(self._drive(instruction, audio))
        self._set_state("running")

    async def _drive(self, instruction: str, audio: Any) -> None:
        try:
            result = await self.agent.arun(instruction, audio=audio)
            self.results.append(result)
            if result.trajectory_dir is not None:  # the history links each run's HTML report
                await asyncio.to_thread(_write_report, result.trajectory_dir)
        except asyncio.CancelledError:
            pass  # stopped from the page; the loop closed the trajectory as "cancelled"
        except Exception as exc:  # bad input (UserError) or a loop bug: say it, keep serving
            self.error(f"the run failed: {getattr(exc, 'message', None) or exc}")
        finally:
            for _, _, future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._resumed.set()
            self._set_state("idle")

    def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def wait_idle(self) -> None:
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the run and close what take-over calls opened (as the loop does at a run's end)."""
        self.stop()
        await self.wait_idle()
        state, self._takeover_state = self._takeover_state, {}
        for value in state.values():
            closer = getattr(value, "aclose", None) or getattr(value, "close", None)
            if callable(closer):
                try:
                    out = closer()
                    if asyncio.iscoroutine(out):
                        await asyncio.wait_for(out, timeout=30)
                except Exception:  # noqa: BLE001 - shutting down: nothing more to do with it
                    pass

    def pause(self) -> None:
        """The run stops before its next step (a step under way finishes first)."""
        if self.state == "running":
            self._resumed.clear()
            self._set_state("paused")

    def resume(self) -> None:
        if self.state == "paused":
            self._resumed.set()
            self._set_state("running")

    async def gate(self, step: int) -> list[Message]:
        """The loop's ``step_gate``: wait while paused; hand over what the user did meanwhile."""
        if not self._resumed.is_set():
            self._waiting_at_gate = True
            self.hub.broadcast(self.state_message())
            try:
                await self._resumed.wait()
            finally:
                self._waiting_at_gate = False
        added, self._user_messages = self._user_messages, []
        return added

    # -- approvals -------------------------------------------------------------------------
    def _approval_request(self, call: ToolCall, reason: str) -> str:
        tool = self.agent.tools.get(call.name)
        return ApprovalRequest(call=call, reason=reason, schema_=tool.parameters if tool is not None else {}).wire()

    def pending_call_ids(self) -> list[str]:
        """Calls waiting for an answer, oldest first."""
        return list(self._pending)

    async def approve(self, call: ToolCall, reason: str) -> Approval:
        """The approver: ask the pages and wait for an answer (stop cancels the wait)."""
        future: asyncio.Future[Approval] = asyncio.get_running_loop().create_future()
        self._pending[call.id] = (call, reason, future)
        self.hub.broadcast(self._approval_request(call, reason))
        try:
            return await future
        finally:
            self._pending.pop(call.id, None)
            self.hub.broadcast(ApprovalClosed(call_id=call.id).wire())

    def answer(self, message: ApproveMessage) -> None:
        """Resolve a pending "ask"; edited arguments must pass validation (else :class:`UserError`)."""
        pending = self._pending.get(message.call_id)
        if pending is None:
            raise UserError(f"no call {message.call_id!r} is waiting for approval")
        call, _, future = pending
        arguments = None
        if message.approve and message.arguments is not None:
            checked = validate_call(call.model_copy(update={"arguments": message.arguments}), self.agent.tools)
            if not checked.ok:
                raise UserError(f"the edited arguments are invalid: {checked.message}")
            arguments = checked.call.arguments
        if not future.done():
            future.set_result(Approval(approved=message.approve, arguments=arguments))

    # -- take-over -------------------------------------------------------------------------
    async def take_over(self, message: TakeOverMessage) -> ToolResult:
        """Do what the user did on the screen through the run's own tool (only when no step runs)."""
        if self.state == "running" or (self.state == "paused" and not self._waiting_at_gate):
            raise UserError("pause the run and wait for its step to end before acting on the screen")
        call = takeover_call(message, self.agent.tools, screen_size=self.screen_size, spec=self.spec)
        checked = validate_call(call, self.agent.tools)
        if not checked.ok:
            raise UserError(f"cannot do that: {checked.message}")
        tool = self.agent.tools[call.name]
        context = ToolContext(
            workspace=self.agent.workspace, run_id=self.run_id, step=self.step, call_id=call.id,
            events=self.agent.events, state=self._takeover_state,
        )  # fmt: skip
        output = await tool.call(checked.call.arguments, context)
        result = ToolResult(call_id=call.id, name=call.name, content=output.parts(), is_error=output.is_error)
        if self.state == "paused":
            self._user_messages.append(_user_action_message(checked.call, result))
        await self.agent.events.emit(
            UserAction(run_id=self.run_id, step=self.step, tool=call.name, arguments=checked.call.arguments, result=result)
        )
        return result


def _user_action_message(call: ToolCall, result: ToolResult) -> UserMessage:
    """How the model (and the trajectory) learn what the user did while the run was paused."""
    args = json.dumps(call.arguments, ensure_ascii=False)
    outcome = ("failed: " if result.is_error else "") + result.text
    text = f"[The user took over while you were paused and did this themselves: {call.name}({args}) -> {outcome}]"
    images = [p for p in result.content if isinstance(p, ImagePart)]
    return UserMessage([TextPart(text=text), *images])


def _write_report(trajectory_dir: Any) -> None:
    from ..html_report import render_trajectory_html

    try:
        render_trajectory_html(trajectory_dir)
    except Exception:  # noqa: BLE001 - the page is a convenience; the trajectory is what counts
        pass


class ShownObserver:
    """Wraps one of the agent's observers so the page also sees what it showed the model."""

    def __init__(self, inner: Any, shown: Any) -> None:
        self.inner = inner
        self.shown = shown

    def __getattr__(self, name: str) -> Any:  # settle_s, untrusted, ... as the inner observer has them
        return getattr(self.inner, name)

    async def observe(self, context: ToolContext) -> list[Any]:
        parts = await self.inner.observe(context)
        self.shown(context.step, list(parts or []))
        return parts
