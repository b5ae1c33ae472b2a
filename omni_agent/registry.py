"""A name -> tool map that refuses duplicates and invalid names (at definition time).

Besides tools it takes tool groups: a :class:`~omni_agent.toolkit.Toolkit` instance (anything
with a ``tools()`` method) adds its tools. A group whose tool list can change while it runs
(an MCP server announcing ``tools/list_changed``) also has an integer ``tools_version``; its
tools carry it as ``tool.source``, and the registry swaps them in when the version moves.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Protocol, runtime_checkable

from .exceptions import ToolDefinitionError
from .tool import TOOL_NAME_RE, Tool

__all__ = ["DynamicToolSource", "ToolGroup", "ToolRegistry"]


@runtime_checkable
class ToolGroup(Protocol):
    """Something that hands out tools, e.g. a Toolkit instance."""

    def tools(self) -> list[Tool]: ...


@runtime_checkable
class DynamicToolSource(Protocol):
    """A group whose tools change at run time; ``tools_version`` grows with every change."""

    tools_version: int

    def tools(self) -> list[Tool]: ...


class ToolRegistry:
    """Ordered collection of tools; the order is the order the model sees them in."""

    def __init__(self, tools: Iterable[Tool | ToolGroup] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._sources: dict[int, tuple[DynamicToolSource, int]] = {}  # id -> (source, version seen)
        for t in tools:
            if not isinstance(t, Tool) and isinstance(t, ToolGroup):
                self.extend(t.tools())
            else:
                self.add(t)

    def _watch(self, tool: Tool) -> None:
        source = getattr(tool, "source", None)
        if isinstance(source, DynamicToolSource) and id(source) not in self._sources:
            self._sources[id(source)] = (source, source.tools_version)

    def _refresh(self) -> None:
        """Swap in the current tools of sources that changed (keeps other tools' order)."""
        for key, (source, seen) in list(self._sources.items()):
            if source.tools_version == seen:
                continue
            self._sources[key] = (source, source.tools_version)
            kept = {n: t for n, t in self._tools.items() if getattr(t, "source", None) is not source}
            for t in source.tools():
                kept.setdefault(t.name, t)  # a clash with another tool keeps the other tool
            self._tools = kept

    def add(self, tool: Tool) -> Tool:
        if not isinstance(tool, Tool):
            raise ToolDefinitionError(
                f"expected a Tool (decorate the function with @tool), got {type(tool).__name__}"
            )
        if not TOOL_NAME_RE.fullmatch(tool.name):
            raise ToolDefinitionError(f"invalid tool name {tool.name!r}")
        if tool.name in self._tools:
            raise ToolDefinitionError(f"duplicate tool name {tool.name!r}")
        self._tools[tool.name] = tool
        self._watch(tool)
        return tool

    def extend(self, tools: Iterable[Tool]) -> None:
        for t in tools:
            self.add(t)

    def get(self, name: str) -> Tool | None:
        self._refresh()
        return self._tools.get(name)

    def __getitem__(self, name: str) -> Tool:
        self._refresh()
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        self._refresh()
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        self._refresh()
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        self._refresh()
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        self._refresh()
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI-format function schemas, in registry order."""
        self._refresh()
        return [t.openai_schema() for t in self._tools.values()]
