"""Observers add what the agent should see next (a fresh screenshot) to the next user turn.

The loop calls every observer once before the first step and again after each step's tools ran,
waiting ``settle_s`` first (the largest of the observers') so pages and windows can redraw.
An observer that fails does not stop the run: the model sees "[observation failed: ...]".
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from .messages import ContentPart, ImagePart, TextPart
from .tool import ToolContext

__all__ = ["FunctionObserver", "Observer", "observer"]


@runtime_checkable
class Observer(Protocol):
    """Anything with ``async observe(context) -> list[ContentPart]``; ``settle_s`` is optional,
    and ``untrusted = True`` makes the policy treat what it returns as untrusted content."""

    async def observe(self, context: ToolContext) -> list[ContentPart]: ...


ObserveFn = Callable[[ToolContext], "list[ContentPart] | Awaitable[list[ContentPart]]"]


class FunctionObserver:
    """Wraps a plain (sync or async) function as an :class:`Observer`.

    A function may return content parts, a PIL image, or a string; they become parts.
    """

    def __init__(self, fn: ObserveFn, *, settle_s: float = 0.0, name: str | None = None) -> None:
        self.fn = fn
        self.settle_s = settle_s
        self.name = name or getattr(fn, "__name__", "observer")

    async def observe(self, context: ToolContext) -> list[ContentPart]:
        value = self.fn(context)
        if inspect.isawaitable(value):
            value = await value
        return _as_parts(value)

    def __repr__(self) -> str:
        return f"FunctionObserver({self.name})"


def observer(fn: ObserveFn | None = None, /, *, settle_s: float = 0.0):  # noqa: ANN201 - decorator
    """Decorator: ``@observer`` or ``@observer(settle_s=0.5)`` turns a function into an observer."""

    def build(f: ObserveFn) -> FunctionObserver:
        return FunctionObserver(f, settle_s=settle_s)

    return build(fn) if fn is not None else build


def _as_parts(value: object) -> list[ContentPart]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _as_parts(v)]
    if isinstance(value, (TextPart, ImagePart)) or getattr(value, "kind", None) in ("audio", "video"):
        return [value]  # type: ignore[list-item]
    if isinstance(value, str):
        return [TextPart(text=value)]
    if hasattr(value, "save") and hasattr(value, "size"):  # a PIL image
        return [ImagePart.from_pil(value)]
    raise TypeError(f"an observer returned {type(value).__name__}; expected content parts, an image or text")
