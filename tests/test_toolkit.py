"""Toolkit classes: @tool methods that share one instance's state, start/stop, registration."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

from omni_agent import Agent, ScriptedModel, Tool, ToolContext, ToolRegistry, Toolkit, tool
from omni_agent.exceptions import ToolDefinitionError, UserError
from omni_agent.toolsets import load_toolsets
from tests.fixtures.core import tool_call

README = Path(__file__).resolve().parents[1] / "README.md"


class Counter(Toolkit):
    """Two tools over one counter; the context one sees the run's workspace."""

    def __init__(self, start: int = 0) -> None:
        self.value = start
        self.events: list[str] = []

    def tool_defaults(self) -> dict[str, object]:
        return {"kind": "counter", "timeout": 7.0}

    @tool
    def bump(self, amount: int = 1) -> str:
        """Add to the counter.

        Args:
            amount: How much to add.
        """
        self.value += amount
        return str(self.value)

    @tool(name="counter_where", kind="inspect")
    async def where(self, ctx: ToolContext) -> str:
        """Say where the run works."""
        return f"{self.value} in {ctx.workspace.name}"

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


def test_methods_become_tools_bound_to_the_instance() -> None:
    a, b = Counter(), Counter(10)
    names = [t.name for t in a.tools()]
    assert names == ["bump", "counter_where"]
    bump_a, bump_b = a.tools()[0], b.tools()[0]
    assert isinstance(bump_a, Tool) and bump_a is not bump_b
    assert set(bump_a.parameters["properties"]) == {"amount"}  # no self
    assert bump_a.parameters["properties"]["amount"]["description"] == "How much to add."
    asyncio.run(bump_a.call({"amount": 3}))
    asyncio.run(bump_b.call({}))
    assert (a.value, b.value) == (3, 11)
    assert a.tools()[0] is bump_a  # built once per instance


def test_kit_defaults_and_method_options() -> None:
    bump, where = Counter().tools()
    assert (bump.kind, bump.timeout) == ("counter", 7.0)
    assert (where.kind, where.timeout) == ("inspect", 7.0)  # the method's own kind wins
    assert where.context_param == "ctx" and where.parameters["properties"] == {}


def test_context_is_injected_into_methods(tmp_path: Path) -> None:
    kit = Counter(5)
    out = asyncio.run(kit.tools()[1].call({}, ToolContext(workspace=tmp_path / "ws")))
    assert out.text == "5 in ws"


def test_async_with_starts_and_stops_even_on_error() -> None:
    kit = Counter()

    async def use() -> None:
        async with kit as entered:
            assert entered is kit and kit.events == ["start"]
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        asyncio.run(use())
    assert kit.events == ["start", "stop"]


def test_subclass_overrides_keep_order_and_can_drop_tools() -> None:
    class Louder(Counter):
        @tool
        def bump(self, amount: int = 1) -> str:
            """Add twice as much."""
            self.value += 2 * amount
            return str(self.value)

        def include_tool(self, name: str) -> bool:
            return name != "counter_where"

    class Silent(Counter):
        def bump(self, amount: int = 1) -> str:  # a plain method now: no longer a tool
            return "no"

    kit = Louder()
    (bump,) = kit.tools()
    asyncio.run(bump.call({"amount": 2}))
    assert kit.value == 4 and bump.description == "Add twice as much."
    assert [t.name for t in Silent().tools()] == ["counter_where"]


def test_methods_stay_callable_directly() -> None:
    kit = Counter()
    assert kit.bump(2) == "2" and kit.value == 2


def test_bad_method_signature_fails_at_definition_time() -> None:
    class Bad(Toolkit):
        @tool
        def untyped(self, x) -> str:  # type: ignore[no-untyped-def]
            return str(x)

    with pytest.raises(ToolDefinitionError, match="no type annotation"):
        Bad().tools()


def test_registered_as_an_instance_in_the_agent_and_the_registry() -> None:
    kit = Counter()
    registry = ToolRegistry([kit])
    assert registry.names == ["bump", "counter_where"]
    model = ScriptedModel([tool_call("bump", amount=4), tool_call("bump", amount=1), "done"])
    result = Agent(model, [kit]).run("count")
    assert result.answer == "done" and kit.value == 5


def test_load_toolsets_takes_a_toolkit_class_or_instance(tmp_path: Path) -> None:
    module = tmp_path / "my_kit.py"
    module.write_text(
        "from omni_agent import Toolkit, tool\n"
        "class Kit(Toolkit):\n"
        "    @tool\n"
        "    def ping(self) -> str:\n"
        "        '''Answer pong.'''\n"
        "        return 'pong'\n"
        "kit = Kit()\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        for target in ("Kit", "kit"):
            (ping,) = load_toolsets(f"my_kit:{target}", workspace=tmp_path)
            assert ping.name == "ping" and asyncio.run(ping.call({})).text == "pong"
    finally:
        sys.path.remove(str(tmp_path))


class _Changing:
    """A real dynamic tool source: its list changes when told to."""

    def __init__(self) -> None:
        self.tools_version = 0
        self._tools: list[Tool] = []
        self.set("a")

    def set(self, *names: str) -> None:
        made = []
        for n in names:
            t = Tool.from_schema({"name": n, "parameters": {"type": "object", "properties": {}}}, lambda: n)
            t.source = self  # type: ignore[attr-defined]
            made.append(t)
        self._tools = made
        self.tools_version += 1

    def tools(self) -> list[Tool]:
        return list(self._tools)


def test_registry_follows_a_dynamic_source() -> None:
    source = _Changing()

    @tool
    def fixed() -> str:
        """Stays."""
        return "x"

    registry = ToolRegistry([fixed, *source.tools()])
    assert registry.names == ["fixed", "a"]
    source.set("b", "c")
    assert registry.names == ["fixed", "b", "c"] and "a" not in registry
    source.set("fixed")  # a clash keeps the other tool
    assert registry.names == ["fixed"] and registry["fixed"] is fixed


def test_the_readme_toolkit_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    (code,) = [b for b in blocks if "(Toolkit)" in b]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README toolkit example", "exec"), {"__name__": "readme_example"})
    assert out.getvalue() == "Noted. ['buy milk']\n"


class _NeedsAWidget(Toolkit):
    """A kit whose tools share one preflight check (as the browser kit's share its session's)."""

    def __init__(self, plugged: bool) -> None:
        self.plugged = plugged
        self.checks = 0

    def tool_defaults(self) -> dict[str, object]:
        return {"preflight": self.check}

    def check(self) -> None:
        self.checks += 1
        if not self.plugged:
            raise UserError("the widget is unplugged: plug it in")

    @tool
    def poke(self, ctx: ToolContext, times: int) -> str:
        """Poke the widget."""
        return f"poked {times}x at step {ctx.step}"

    @tool
    def peek(self) -> str:
        """Look at the widget."""
        return "fine"


def test_kit_tools_are_callable_like_their_methods() -> None:
    kit = _NeedsAWidget(plugged=True)
    poke, peek = kit.tools()
    assert poke(times=2) == "poked 2x at step 0"  # a fresh ToolContext for the left-out context
    assert poke(ToolContext(step=3), 1) == "poked 1x at step 3" and peek() == "fine"
    assert _NeedsAWidget.poke(kit, ToolContext(step=4), 5) == "poked 5x at step 4"  # through the class


def test_a_kit_preflight_stops_the_run_before_the_model_once_for_all_its_tools() -> None:
    kit = _NeedsAWidget(plugged=False)
    model = ScriptedModel([tool_call("peek"), "done"])
    with pytest.raises(UserError, match="unplugged"):
        Agent(model, [kit], trajectory_dir=None).run("look")
    assert model.requests == [] and kit.checks == 1
    kit.plugged = True
    assert Agent(model, [kit], trajectory_dir=None).run("look").answer == "done"
