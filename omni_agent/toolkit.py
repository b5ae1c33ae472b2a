"""Toolkit classes: stateful tool groups whose ``@tool`` methods share one instance's state.

A browser session, a database connection or a desktop display belongs to one object; each
action is one method; ``start()`` / ``stop()`` open and close what they share, also as an async
context manager::

    class Counter(Toolkit):
        def __init__(self, start: int = 0) -> None:
            self.value = start

        @tool
        def add(self, amount: int) -> str:
            \"\"\"Add to the counter.

            Args:
                amount: How much to add.
            \"\"\"
            self.value += amount
            return str(self.value)

    kit = Counter()
    agent = Agent(model, tools=[kit])        # registered as an instance (or kit.tools())

Why classes and not closures: the state is visible (attributes), each tool is a short method
that can be read, tested and overridden on its own, and subclasses add or change actions.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, ClassVar

from .tool import Tool, ToolMethod

__all__ = ["Toolkit"]


class Toolkit:
    """Base class of stateful tool groups. Subclasses decorate methods with ``@tool``.

    Hooks (all optional):
        tool_defaults: options for every tool of the kit (``timeout``, ``kind``, ...); a
            method's own ``@tool(...)`` options win over them.
        include_tool: leave a tool out for this instance's configuration.
        describe_tool: adjust a tool after it is built (e.g. add the coordinate space to its
            description).
        start / stop: open and release the shared state; ``async with kit:`` calls both.
    """

    _tool_methods: ClassVar[tuple[ToolMethod, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, ToolMethod] = {}
        for klass in reversed(cls.__mro__):  # base-class tools first; an override keeps its place
            for attr, value in vars(klass).items():
                if isinstance(value, ToolMethod):
                    found[attr] = value
                elif attr in found:  # overridden by a plain method or attribute: no longer a tool
                    del found[attr]
        cls._tool_methods = tuple(found.values())

    def tool_defaults(self) -> dict[str, Any]:
        return {}

    def include_tool(self, name: str) -> bool:
        return True

    def describe_tool(self, tool: Tool) -> Tool:
        return tool

    def tools(self) -> list[Tool]:
        """This instance's tools, in the order the methods are defined (built once, then reused)."""
        cached: list[Tool] | None = self.__dict__.get("_toolkit_tools")
        if cached is None:
            defaults = self.tool_defaults()
            cached = [
                self.describe_tool(method.bind(self, defaults))
                for method in self._tool_methods
                if self.include_tool(method.name)
            ]
            self.__dict__["_toolkit_tools"] = cached
        return list(cached)

    async def start(self) -> None:
        """Open what the tools share (default: nothing; most kits open lazily on first use)."""

    async def stop(self) -> None:
        """Release what the tools share. Called by ``async with`` even when the body failed."""

    async def __aenter__(self) -> "Toolkit":
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
