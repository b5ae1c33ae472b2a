"""A name -> tool map that refuses duplicates and invalid names (at definition time)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from .exceptions import ToolDefinitionError
from .tool import TOOL_NAME_RE, Tool

__all__ = ["ToolRegistry"]


class ToolRegistry:
    """Ordered collection of tools; the order is the order the model sees them in."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

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
        return tool

    def extend(self, tools: Iterable[Tool]) -> None:
        for t in tools:
            self.add(t)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI-format function schemas, in registry order."""
        return [t.openai_schema() for t in self._tools.values()]
