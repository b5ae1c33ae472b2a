"""A ``@tool`` is still the function it decorates: calling it runs the function (sync or async as
declared), so tools unit-test like functions; the agent still calls it with validated JSON."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from omni_agent import Tool, ToolContext, ToolOutput, tool


@tool
def save_note(text: str, tag: str = "misc") -> str:
    """Save a note."""
    return f"saved {text!r} under {tag}"


@tool(name="fetch", timeout=5)
async def fetch_page(url: str) -> dict[str, str]:
    """Fetch a page."""
    await asyncio.sleep(0)
    return {"url": url, "status": "ok"}


@tool
def where(ctx: ToolContext, name: str) -> str:
    """Where the run works."""
    return f"{name} in {ctx.workspace.name or '/'} at step {ctx.step}"


def test_calling_a_sync_tool_runs_the_function() -> None:
    assert isinstance(save_note, Tool)
    assert save_note("x") == "saved 'x' under misc"
    assert save_note("y", tag="work") == save_note.fn("y", tag="work") == "saved 'y' under work"


def test_calling_an_async_tool_returns_its_coroutine() -> None:
    pending = fetch_page("http://example.test/")
    assert inspect.iscoroutine(pending)
    assert asyncio.run(pending) == {"url": "http://example.test/", "status": "ok"}
    assert fetch_page.name == "fetch"


def test_a_context_parameter_may_be_left_out_or_given() -> None:
    assert where("a").startswith("a in ") and where("a").endswith("at step 0")
    assert where(ToolContext(step=4), "b").endswith("at step 4")
    assert where(name="c", ctx=ToolContext(step=2)).endswith("at step 2")


def test_the_agent_side_call_is_unchanged() -> None:
    out = asyncio.run(save_note.call({"text": "z"}))
    assert isinstance(out, ToolOutput) and out.text == "saved 'z' under misc"
    out = asyncio.run(fetch_page.call({"url": "u"}))
    assert out.data == {"url": "u", "status": "ok"}


def test_a_tool_s_preflight_runs_once_per_run_before_the_model() -> None:
    from omni_agent import Agent, ScriptedModel, UserError

    checks: list[str] = []

    def need_device() -> None:
        checks.append("checked")
        if len(checks) > 1:
            raise UserError("the device went away")

    @tool(preflight=need_device)
    def beep() -> str:
        """Beep."""
        return "beep"

    model = ScriptedModel(["fine", "never"])
    assert Agent(model, [beep], trajectory_dir=None).run("x").answer == "fine"
    with pytest.raises(UserError, match="the device went away"):
        Agent(model, [beep], trajectory_dir=None).run("x")
    assert checks == ["checked", "checked"] and len(model.requests) == 1
