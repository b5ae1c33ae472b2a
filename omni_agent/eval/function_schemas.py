"""Checks for the schema-only ``functions`` of a task file, run when the task loads.

A schema the validator cannot use (not JSON Schema 2020-12, ``required`` naming a property that
is not there) would otherwise fail only when an episode runs, where it looks like the harness's
fault. Here it is a task-file error naming the function and what to fix.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import ToolDefinitionError
from ..tool import Tool

__all__ = ["check_function_schema"]


def _accept(**_arguments: Any) -> None:
    return None


def check_function_schema(schema: Any, *, where: str) -> None:
    """Raise ValueError (pydantic reports it with the file and line) for an unusable schema."""
    try:
        tool = Tool.from_schema(schema, _accept)
    except ToolDefinitionError as exc:
        raise ValueError(f"{where}: {exc.message}") from None
    params = tool.parameters
    names = set((params.get("properties") or {}).keys())
    missing = [r for r in params.get("required") or [] if r not in names]
    if missing:
        raise ValueError(
            f"{where} ({tool.name}): required names {', '.join(map(repr, missing))} but properties has "
            f"{', '.join(map(repr, sorted(map(str, names)))) or 'nothing'}"
        )
