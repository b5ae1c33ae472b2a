"""The per-call phase on its own: validation, policy, execution order, timeouts, confirmation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from omni_agent import events as ev
from omni_agent.execution import CallOutcome, CheckedCall, execute_calls
from omni_agent.messages import ToolCall
from omni_agent.policy import DefaultPolicy, PolicyState, allow_all, deny_all
from omni_agent.registry import ToolRegistry
from omni_agent.tool import ToolContext, ToolOutput, tool


def _call(name: str, /, **args: Any) -> ToolCall:
    return ToolCall(name=name, arguments=args)


async def _execute(
    calls: list[ToolCall], tools: list, *, approver=deny_all, **options: Any
) -> tuple[list[CallOutcome], list[ev.AgentEvent], dict[str, Any]]:
    events: list[ev.AgentEvent] = []
    state: dict[str, Any] = {}

    async def emit(event: ev.AgentEvent) -> None:
        events.append(event)

    outcomes = await execute_calls(
        calls,
        step=1,
        registry=ToolRegistry(tools),
        policy=DefaultPolicy(),
        approver=approver,
        policy_state=PolicyState(step=1),
        context_factory=lambda call_id: ToolContext(step=1, call_id=call_id, state=state),
        emit=emit,
        **options,
    )
    return outcomes, events, state


def test_every_failure_becomes_an_error_result_in_call_order_and_the_hook_runs_before_any_tool() -> None:
    ran: list[str] = []

    @tool
    def add(a: int, b: int) -> str:
        """Adds."""
        ran.append("add")
        return str(a + b)

    @tool(risk="dangerous")
    def wipe() -> str:
        """Dangerous."""
        ran.append("wipe")
        return "wiped"

    @tool
    def broken() -> str:
        """Raises."""
        ran.append("broken")
        raise RuntimeError("disk on fire")

    calls = [_call("nope"), _call("add", a="x", b=1), _call("wipe"), _call("broken"), _call("add", a="2", b=3)]
    seen_by_hook: list[tuple[str, bool]] = []

    async def before_running(checked: list[CheckedCall]) -> None:
        assert ran == []  # nothing ran yet
        seen_by_hook.extend((c.call.name, c.allowed) for c in checked)

    timings: dict[str, float] = {}
    outcomes, events, _ = asyncio.run(
        _execute(calls, [add, wipe, broken], before_running=before_running, timings=timings)
    )

    assert seen_by_hook == [("nope", False), ("add", False), ("wipe", False), ("broken", True), ("add", True)]
    assert [o.call.id for o in outcomes] == [c.id for c in calls]
    assert [o.result.call_id for o in outcomes] == [c.id for c in calls]
    assert [o.result.is_error for o in outcomes] == [True, True, True, True, False]
    assert "nope" in outcomes[0].result.text and outcomes[0].checked.decision is None
    assert "a" in outcomes[1].result.text and outcomes[1].checked.validation.ok is False
    assert outcomes[2].result.text.startswith("denied by policy") and outcomes[2].checked.decision.action == "ask"
    assert outcomes[3].result.text == "broken raised RuntimeError: disk on fire"
    assert outcomes[4].result.text == "5"  # "2" coerced to 2
    assert outcomes[4].checked.validation.arguments == {"a": 2, "b": 3}
    assert [o.output is None for o in outcomes] == [True, True, True, False, False]
    assert ran == ["broken", "add"]  # the denied tool never ran
    assert {"validate", "policy", "tools"} <= set(timings)
    assert [type(e).__name__ for e in events].count("CallValidated") == 5
    assert [type(e).__name__ for e in events].count("PolicyDecided") == 3  # only valid calls are asked about
    assert any(isinstance(e, ev.ErrorEvent) and e.kind == "tool" for e in events)


def test_parallel_safe_calls_overlap_and_others_run_one_after_another() -> None:
    both_started = asyncio.Event()
    running = 0

    @tool
    async def meet(who: str) -> str:
        """Waits until both calls are running at once (impossible if they ran in turn)."""
        nonlocal running
        running += 1
        if running == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), timeout=5)
        return who

    outcomes, _, _ = asyncio.run(_execute([_call("meet", who="a"), _call("meet", who="b")], [meet]))
    assert [o.result.text for o in outcomes] == ["a", "b"]
    assert not any(o.result.is_error for o in outcomes)

    order: list[str] = []

    @tool(parallel_safe=False)
    async def step_(name: str) -> str:
        """Records start and end."""
        order.append(f"{name}+")
        await asyncio.sleep(0.01)
        order.append(f"{name}-")
        return name

    outcomes, _, _ = asyncio.run(_execute([_call("step_", name="x"), _call("step_", name="y")], [step_]))
    assert order == ["x+", "x-", "y+", "y-"]
    assert [o.result.text for o in outcomes] == ["x", "y"]


def test_a_hanging_tool_times_out_into_an_error_result_and_the_deadline_caps_the_timeout() -> None:
    @tool(timeout=30)
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(3600)
        return "never"

    outcomes, events, _ = asyncio.run(_execute([_call("hang")], [hang], tool_timeout=0.05))
    assert outcomes[0].result.is_error
    assert outcomes[0].result.text == "hang timed out after 0.05 s and was abandoned"
    assert [e.message for e in events if isinstance(e, ev.ErrorEvent)] == [outcomes[0].result.text]

    outcomes, _, _ = asyncio.run(_execute([_call("hang")], [hang], deadline=time.monotonic() + 0.05))
    assert outcomes[0].result.is_error and "timed out after 0.0" in outcomes[0].result.text


def test_needs_confirmation_reruns_the_tool_once_approved_and_errors_when_refused() -> None:
    @tool
    def delete(ctx: ToolContext, path: str) -> ToolOutput:
        """Deletes after confirmation."""
        if ctx.call_id not in ctx.state.get("confirmed_calls", set()):
            return ToolOutput(needs_confirmation=f"delete {path}?")
        return ToolOutput(text=f"deleted {path}")

    call = _call("delete", path="/tmp/x")
    outcomes, events, state = asyncio.run(_execute([call], [delete], approver=allow_all))
    assert outcomes[0].result.text == "deleted /tmp/x" and not outcomes[0].result.is_error
    assert state["confirmed_calls"] == {call.id}
    asked = [e for e in events if isinstance(e, ev.PolicyDecided) and e.decision == "ask"]
    assert len(asked) == 1 and asked[0].approved is True and asked[0].reason == "delete /tmp/x?"

    outcomes, _, state = asyncio.run(_execute([call], [delete], approver=deny_all))
    assert outcomes[0].result.is_error and "did not approve" in outcomes[0].result.text
    assert "confirmed_calls" not in state


def test_outcome_flags_for_finishing_and_untrusted_content() -> None:
    @tool(finishing=True)
    def answer(text: str) -> str:
        """Ends the run."""
        return text

    @tool(reads_untrusted=True)
    def fetch(url: str) -> str:
        """Reads a page."""
        return "page"

    @tool
    def page(url: str) -> ToolOutput:
        """Returns flagged content."""
        return ToolOutput(text="<html>", untrusted=True)

    @tool
    def plain() -> str:
        """Nothing special."""
        return "ok"

    outcomes, _, _ = asyncio.run(
        _execute(
            [_call("answer", text="done"), _call("fetch", url="u"), _call("page", url="u"), _call("plain"), _call("nope")],
            [answer, fetch, page, plain],
        )
    )
    assert [o.finishes for o in outcomes] == [True, False, False, False, False]
    assert [o.brought_untrusted for o in outcomes] == [False, True, True, False, False]
