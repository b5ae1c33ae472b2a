"""The per-call phase of a step: validate each parsed call, ask the policy, run what is allowed.

:func:`execute_calls` is what the agent loop (:mod:`omni_agent.loop`) runs once per step. Every
call ends in exactly one :class:`CallOutcome`, returned in call order: an invalid call, a denied
call, a tool that raises, hangs past its timeout or is refused confirmation each becomes an error
tool result the model can read, never an exception (only cancellation propagates).

Allowed calls run concurrently when there are several and every one of their tools is
``parallel_safe``; otherwise one after another, in call order. A tool that returns
``ToolOutput(needs_confirmation=reason)`` is asked about through the approver; when approved it
is called once more with its call id in ``ToolContext.state["confirmed_calls"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .exceptions import ToolExecutionError
from .messages import TextPart, ToolCall, ToolResult
from .policy import Approver, Policy, PolicyState, authorize, get_approval
from .registry import ToolRegistry
from .tool import Tool, ToolContext, ToolOutput
from .trajectory import DecisionRecord, ValidationRecord
from .validation import validate_call

__all__ = [
    "CallOutcome",
    "CheckedCall",
    "ContextFactory",
    "DaemonThreadExecutor",
    "Emit",
    "MAX_RESULT_CHARS",
    "cap_output",
    "error_result",
    "execute_calls",
]

MAX_RESULT_CHARS = 100_000
"""Longest tool result text the model gets (~25k tokens); longer text keeps its head and tail."""


def cap_output(output: ToolOutput, limit: int = MAX_RESULT_CHARS) -> ToolOutput:
    """Cut the middle out of a huge result (a tool printing a whole log) so one call cannot
    overflow the model's context and end the run; ``data`` keeps the full value for programs."""
    text = output.text
    if len(text) <= limit:
        return output
    head, tail = text[: limit * 3 // 4], text[-(limit // 4) :]
    cut = len(text) - len(head) - len(tail)
    return dataclasses.replace(output, text=f"{head}\n[... {cut} characters cut ...]\n{tail}")


Emit = Callable[[ev.AgentEvent], Awaitable[None]]
"""Publishes one event (the loop's version stamps the run id first)."""
ContextFactory = Callable[[str], ToolContext]
"""Builds the :class:`ToolContext` for one invocation, given the call id."""


@dataclass(frozen=True)
class CheckedCall:
    """One call after validation and policy, before anything ran."""

    call: ToolCall
    """As the model wrote it."""
    validation: ValidationRecord
    tool: Tool | None = None
    """The registered tool; None when validation failed."""
    decision: DecisionRecord | None = None
    """The policy's (and approver's) verdict; None when validation failed (the policy is not asked)."""
    allowed_call: ToolCall | None = None
    """The call with coerced arguments, set only when it may run."""
    refusal: ToolResult | None = None
    """The error result for a call that may not run (invalid or denied)."""

    @property
    def allowed(self) -> bool:
        return self.allowed_call is not None


@dataclass(frozen=True)
class CallOutcome:
    """What became of one call: its result for the model, and the tool's output if it ran."""

    checked: CheckedCall
    result: ToolResult
    output: ToolOutput | None = None
    """None when the call never ran (invalid or denied)."""

    @property
    def call(self) -> ToolCall:
        return self.checked.call

    @property
    def finishes(self) -> bool:
        """The call ran without error and ends the run (``ToolOutput.finish`` or a finishing tool)."""
        out, tool = self.output, self.checked.tool
        return out is not None and not out.is_error and (out.finish or bool(tool is not None and tool.finishing))

    @property
    def brought_untrusted(self) -> bool:
        """The call ran and took in untrusted content (the policy grows stricter from now on)."""
        out, tool = self.output, self.checked.tool
        return out is not None and (out.untrusted or bool(tool is not None and tool.reads_untrusted))


async def execute_calls(
    calls: Sequence[ToolCall],
    *,
    step: int,
    registry: ToolRegistry,
    policy: Policy,
    approver: Approver,
    policy_state: PolicyState,
    context_factory: ContextFactory,
    emit: Emit,
    tool_timeout: float | None = None,
    deadline: float | None = None,
    before_running: Callable[[list[CheckedCall]], Awaitable[None]] | None = None,
    timings: dict[str, float] | None = None,
) -> list[CallOutcome]:
    """Validate, authorize and run ``calls``; one outcome per call, in call order.

    Args:
        tool_timeout: seconds for every call, overriding each tool's own ``timeout``.
        deadline: ``time.monotonic()`` value no call may run past (the run's wall-clock limit).
        before_running: awaited once every call is checked and before any runs (the loop writes
            its crash-safe trajectory record here).
        timings: receives the seconds spent in ``validate``, ``policy`` and ``tools``.
    """
    times = timings if timings is not None else {}
    t = time.monotonic()
    validated: list[tuple[ToolCall, ValidationRecord, ToolCall | None]] = []
    for call in calls:
        v = validate_call(call, registry)
        record = ValidationRecord(
            call_id=call.id,
            name=call.name,
            ok=v.ok,
            message=v.message or "",
            issues=[issue.model_dump(mode="json") for issue in v.issues],
            arguments=v.call.arguments if v.ok else call.arguments,
        )
        validated.append((call, record, v.call if v.ok else None))
        await emit(ev.CallValidated(step=step, call=call, ok=v.ok, errors=[] if v.ok else [v.message or "invalid call"]))
    times["validate"] = time.monotonic() - t

    t = time.monotonic()
    checked: list[CheckedCall] = []
    for call, record, coerced in validated:
        if coerced is None:
            refusal = error_result(call, record.message or f"invalid call to {call.name}")
            checked.append(CheckedCall(call=call, validation=record, refusal=refusal))
            continue
        tool = registry[call.name]
        allowed_call = call.model_copy(update={"arguments": coerced.arguments})
        auth = await authorize(policy, approver, allowed_call, tool, policy_state)
        if auth.allowed and auth.arguments is not None:  # the user edited the call: check it again
            edited = validate_call(call.model_copy(update={"arguments": auth.arguments}), registry)
            if edited.ok:
                allowed_call = call.model_copy(update={"arguments": edited.call.arguments})
                record = record.model_copy(update={"arguments": edited.call.arguments})
                auth = auth.model_copy(update={"reason": f"{auth.reason}; the user edited the arguments"})
            else:
                why = f"{auth.reason}; the user's edited arguments are invalid: {edited.message}"
                auth = auth.model_copy(update={"approved": False, "reason": why})
        decision = DecisionRecord(
            call_id=call.id, name=call.name, action=auth.action, reason=auth.reason, approved=auth.approved
        )
        await emit(ev.PolicyDecided(step=step, call=call, decision=auth.action, reason=auth.reason, approved=auth.approved))
        if auth.allowed:
            checked.append(CheckedCall(call=call, validation=record, tool=tool, decision=decision, allowed_call=allowed_call))
        else:
            refusal = error_result(call, auth.denial())
            checked.append(CheckedCall(call=call, validation=record, tool=tool, decision=decision, refusal=refusal))
    times["policy"] = time.monotonic() - t

    if before_running is not None:
        await before_running(checked)

    t = time.monotonic()
    runner = _Runner(step, approver, context_factory, emit, tool_timeout, deadline)
    runnable = [c for c in checked if c.allowed]
    if len(runnable) > 1 and all(c.tool is not None and c.tool.parallel_safe for c in runnable):
        ran = await asyncio.gather(*(runner.run(c) for c in runnable))
    else:
        ran = [await runner.run(c) for c in runnable]
    times["tools"] = time.monotonic() - t

    ran_in_order = iter(ran)
    return [next(ran_in_order) if c.refusal is None else CallOutcome(checked=c, result=c.refusal) for c in checked]


def error_result(call: ToolCall, message: str) -> ToolResult:
    """The error result the model gets for ``call``."""
    return ToolResult(call_id=call.id, name=call.name, content=[TextPart(text=message)], is_error=True)


@dataclass(frozen=True)
class _Runner:
    """Runs allowed calls of one step with their timeouts; every failure becomes an error output."""

    step: int
    approver: Approver
    context_factory: ContextFactory
    emit: Emit
    tool_timeout: float | None
    deadline: float | None

    async def run(self, checked: CheckedCall) -> CallOutcome:
        call, tool = checked.allowed_call, checked.tool
        assert call is not None and tool is not None
        await self.emit(ev.ToolStarted(step=self.step, call=call))
        t = time.monotonic()
        output = await self._invoke(call, tool)
        if output.needs_confirmation and not output.is_error:
            approval, note = await get_approval(self.approver, call, output.needs_confirmation)
            approved = approval.approved and approval.arguments in (None, call.arguments)
            if approval.approved and not approved:  # the tool asked about these exact arguments
                note = "a call the tool itself asks about cannot be run with edited arguments"
            reason = f"{output.needs_confirmation}; {note}" if note else output.needs_confirmation
            await self.emit(ev.PolicyDecided(step=self.step, call=call, decision="ask", reason=reason, approved=approved))
            if approved:
                context = self.context_factory(call.id)
                context.state.setdefault("confirmed_calls", set()).add(call.id)
                output = await self._invoke(call, tool, context)
            else:
                output = ToolOutput.error(f"denied: {call.name} needs confirmation ({reason}) and the user did not approve")
        output = cap_output(output)
        result = ToolResult(call_id=call.id, name=call.name, content=output.parts(), is_error=output.is_error)
        await self.emit(ev.ToolFinished(step=self.step, call=call, result=result, seconds=time.monotonic() - t))
        return CallOutcome(checked=checked, result=result, output=output)

    async def _invoke(self, call: ToolCall, tool: Tool, context: ToolContext | None = None) -> ToolOutput:
        timeout = self.tool_timeout if self.tool_timeout is not None else tool.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            timeout = max(0.001, left if timeout is None else min(timeout, left))
        if context is None:
            context = self.context_factory(call.id)
        try:
            return await asyncio.wait_for(tool.call(call.arguments, context), timeout=timeout)
        except asyncio.TimeoutError:
            message = f"{call.name} timed out after {timeout:g} s and was abandoned"
        except ToolExecutionError as exc:
            message = exc.message
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the tool's own bug: the model sees the type and message
            message = f"{call.name} raised {type(exc).__name__}: {exc}"
        await self.emit(ev.ErrorEvent(step=self.step, message=message, kind="tool"))
        return ToolOutput.error(message)


class DaemonThreadExecutor(concurrent.futures.ThreadPoolExecutor):
    """One daemon thread per job; ``shutdown`` never waits (abandoned hung tools die with the process).

    A call abandoned at its timeout may leave work in the event loop's default executor (a tool
    that used ``asyncio.to_thread``), and a thread cannot be killed: :func:`omni_agent.loop.run_blocking`
    installs this executor so such a thread never delays the caller's return or the process exit.
    (Sync tool functions themselves run in their own daemon thread, see ``tool.run_in_daemon_thread``.)

    Subclasses ThreadPoolExecutor only because asyncio's ``set_default_executor`` demands one;
    none of its pool machinery (non-daemon workers joined at exit) is used.
    """

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # handed to the awaiting coroutine
                future.set_exception(exc)

        threading.Thread(target=work, name="omni-agent-worker", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None
