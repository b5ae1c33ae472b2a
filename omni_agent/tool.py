"""Tools: a name, a description, a JSON Schema and an async call.

``@tool`` turns a typed function into a :class:`Tool`; :meth:`Tool.from_schema` wraps a raw
OpenAI-format function schema. A tool returns a :class:`ToolOutput` (or anything convertible:
``str``, a PIL image, a dict, a pydantic model). Raising :class:`ToolExecutionError` gives the
model a clean error; any other exception is reported with its type and message.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, overload

from pydantic import BaseModel, ValidationError

from .exceptions import ToolDefinitionError
from .messages import ContentPart, ImagePart, TextPart
from .schema import first_param_is_context, model_schema, signature_model

if TYPE_CHECKING:
    from .events import EventBus

__all__ = ["LOOP_BOUND_STATE", "Tool", "ToolContext", "ToolMethod", "ToolOutput", "tool", "TOOL_NAME_RE"]

TOOL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")

Risk = Literal["safe", "dangerous"]


@dataclass(frozen=True, kw_only=True)
class ToolOutput:
    """What a tool returns: text, images, an error flag, and optional control signals."""

    text: str = ""
    images: list[ImagePart] = field(default_factory=list)
    is_error: bool = False
    data: Any = None
    """Structured value for programs (not shown to the model beyond ``text``)."""
    finish: bool = False
    """True when the run should stop after this call (a finishing tool, e.g. ``answer``)."""
    answer: str | None = None
    """The final answer, when ``finish`` is set."""
    untrusted: bool = False
    """True when the output carries outside content (web pages, downloaded files)."""
    needs_confirmation: str | None = None
    """Set by a tool that refuses to act until the user confirms; the reason shown to the user."""

    def parts(self) -> list[ContentPart]:
        out: list[ContentPart] = []
        if self.text or not self.images:
            out.append(TextPart(text=self.text))
        out.extend(self.images)
        return out

    @classmethod
    def error(cls, text: str) -> "ToolOutput":
        return cls(text=text, is_error=True)


@dataclass(kw_only=True)
class ToolContext:
    """Passed to tools whose first parameter is annotated ``ToolContext``."""

    workspace: Path = field(default_factory=Path.cwd)
    run_id: str = ""
    step: int = 0
    call_id: str = ""
    events: "EventBus | None" = None
    state: dict[str, Any] = field(default_factory=dict)
    """Run-wide scratch space shared by all tools of one run (e.g. the browser session)."""
    untrusted_content_seen: bool = False


LOOP_BOUND_STATE = "omni_agent.loop_bound:"
"""Prefix of ``ToolContext.state`` keys for the caller's own objects bound to the run's event loop
(a browser session passed in): a run leaves them open, unless it is a blocking ``Agent.run()``,
whose loop ends with it; then their ``loop_ending()`` is awaited."""

ToolFn = Callable[..., Any]


@dataclass(eq=False)
class Tool:
    """A callable the model may use. Build with ``@tool`` or ``Tool.from_schema``."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: ToolFn
    args_model: type[BaseModel] | None = None
    context_param: str | None = None
    timeout: float | None = 60.0
    risk: Risk = "safe"
    """"dangerous" tools ask the user before running under the default policy."""
    parallel_safe: bool = True
    """False for tools that act on shared state (GUI input): their calls run one at a time."""
    finishing: bool = False
    """True for tools that end the run (``answer``, ``terminate``)."""
    kind: str = "generic"
    """Category used by policies: "shell", "file_write", "javascript", "browser", "desktop"..."""
    assess: Callable[[dict[str, Any]], str | None] | None = None
    """Per-call risk check: returns a reason when *these arguments* need the user's confirmation
    (e.g. ``rm -rf /`` for the shell tool), else None. Called by the policy before execution."""
    reads_untrusted: bool = False
    """True for tools whose output carries outside content (web pages, downloaded files)."""
    preflight: Callable[[], Any] | None = None
    """Checked when a run starts, before the model is called: raises a clear error when something
    the tool needs (a display, a browser) is missing, rather than failing on every call."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not TOOL_NAME_RE.fullmatch(self.name):
            raise ToolDefinitionError(
                f"invalid tool name {self.name!r}: use letters, digits, _ . - (max 64), starting with a letter or _"
            )
        if not callable(self.fn):
            raise ToolDefinitionError(f"tool {self.name}: fn must be callable, got {type(self.fn).__name__}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ToolDefinitionError(f"tool {self.name}: timeout must be a number of seconds > 0 or None, got {self.timeout!r}")
        if self.risk not in ("safe", "dangerous"):
            raise ToolDefinitionError(f"tool {self.name}: risk must be 'safe' or 'dangerous', got {self.risk!r}")
        if not isinstance(self.parameters, dict):
            raise ToolDefinitionError(
                f"tool {self.name}: parameters must be a JSON Schema object (a dict), got {type(self.parameters).__name__}"
            )
        if self.parameters.get("type", "object") != "object":
            raise ToolDefinitionError(f"tool {self.name}: parameters must be a JSON object schema")
        from jsonschema import Draft202012Validator, SchemaError

        try:
            Draft202012Validator.check_schema(self.parameters)
        except SchemaError as exc:
            raise ToolDefinitionError(f"tool {self.name}: invalid JSON Schema: {exc.message}") from exc

    # -- direct calls (unit tests, scripts) ---------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped function as written: ``save_note("x")`` returns what the function
        returns (an async tool returns its coroutine: ``await fetch(url)``). No validation and no
        ``ToolOutput`` conversion; a :class:`ToolContext` parameter left out gets a fresh one."""
        if self.context_param and self.context_param not in kwargs and not _context_given(args):
            args = (ToolContext(), *args)  # the context is always the first parameter
        return self.fn(*args, **kwargs)

    # -- schema views -------------------------------------------------------------------------
    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI function format (also what Qwen's ``<tools>`` block lists)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    # -- execution ----------------------------------------------------------------------------
    async def call(self, arguments: dict[str, Any], context: ToolContext | None = None) -> ToolOutput:
        """Run the tool with already-validated JSON arguments; returns a ToolOutput, never raises
        for the tool's own failures (they become error outputs)."""
        kwargs = self._python_arguments(arguments)
        if self.context_param:
            kwargs[self.context_param] = context or ToolContext()
        if inspect.iscoroutinefunction(self.fn):
            value = await self.fn(**kwargs)
        else:
            # Sync tools run in a daemon thread so a slow one never blocks the loop, a timeout, or
            # interpreter exit (asyncio.to_thread's pool is joined at exit: a hung tool would hang it).
            value = await run_in_daemon_thread(functools.partial(self.fn, **kwargs))
            if inspect.isawaitable(value):
                value = await value
        return to_tool_output(value)

    def _python_arguments(self, arguments: dict[str, Any]) -> dict[str, Any]:
        if self.args_model is None:
            return dict(arguments)
        try:
            parsed = self.args_model.model_validate(arguments)
        except ValidationError as exc:  # jsonschema accepted it: only exotic pydantic types land here
            raise TypeError(f"arguments do not fit {self.name}: {exc.errors()[0]['msg']}") from exc
        # Keep nested models and enums as objects; only pass what the model set or defaulted.
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    @classmethod
    def from_schema(
        cls,
        schema: dict[str, Any],
        fn: ToolFn,
        **options: Any,
    ) -> "Tool":
        """Wrap ``fn(**arguments)`` with a raw schema: OpenAI ``{"type": "function", "function":
        {...}}``, a bare ``{"name", "description", "parameters"}``, or the same without ``type``."""
        if not isinstance(schema, dict) or not isinstance(schema.get("function", schema), dict):
            raise ToolDefinitionError(f"a tool schema must be a dict in the OpenAI function format, got {type(schema).__name__}")
        spec = schema.get("function", schema)
        if "name" not in spec:
            raise ToolDefinitionError("a tool schema needs a 'name'")
        params = spec.get("parameters") or {"type": "object", "properties": {}}
        return cls(
            name=spec["name"],
            description=spec.get("description", ""),
            parameters=params,
            fn=fn,
            context_param=first_param_is_context(fn, ToolContext),
            **options,
        )


def _context_given(args: tuple[Any, ...]) -> bool:
    return bool(args) and isinstance(args[0], ToolContext)


async def run_in_daemon_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh daemon thread and await its result (cancellation abandons the thread)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # delivered to the awaiting coroutine
            ok, result = False, exc
        else:
            ok = True
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:  # the loop closed while the tool ran (it was abandoned)
            pass

    threading.Thread(target=target, name=f"tool-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return await future


def to_tool_output(value: Any) -> ToolOutput:
    """Normalise what a tool function returned."""
    if isinstance(value, ToolOutput):
        return value
    if value is None:
        return ToolOutput(text="ok")
    if isinstance(value, str):
        return ToolOutput(text=value)
    if isinstance(value, ImagePart):
        return ToolOutput(images=[value])
    if _is_pil(value):
        return ToolOutput(images=[ImagePart.from_pil(value)])
    if isinstance(value, BaseModel):
        return ToolOutput(text=value.model_dump_json(), data=value)
    if isinstance(value, enum.Enum):
        return ToolOutput(text=str(value.value), data=value)
    try:
        return ToolOutput(text=json.dumps(value, ensure_ascii=False, default=str), data=value)
    except (TypeError, ValueError):
        return ToolOutput(text=str(value), data=value)


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save") and hasattr(value, "size")


@overload
def tool(fn: ToolFn, /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = 60.0,
    risk: Risk = "safe",
    parallel_safe: bool = True,
    finishing: bool = False,
    kind: str = "generic",
    assess: Callable[[dict[str, Any]], str | None] | None = None,
    reads_untrusted: bool = False,
    preflight: Callable[[], Any] | None = None,
) -> Callable[[ToolFn], Tool]: ...


def tool(
    fn: ToolFn | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = 60.0,
    risk: Risk = "safe",
    parallel_safe: bool = True,
    finishing: bool = False,
    kind: str = "generic",
    assess: Callable[[dict[str, Any]], str | None] | None = None,
    reads_untrusted: bool = False,
    preflight: Callable[[], Any] | None = None,
) -> Tool | Callable[[ToolFn], Tool]:
    """Turn a typed function (sync or async) into a :class:`Tool`.

    The JSON Schema comes from the type hints (str, int, float, bool, lists, dicts, Literal,
    enums, Optional, defaults, pydantic models); descriptions come from the docstring. A first
    parameter annotated :class:`ToolContext` is injected by the agent and hidden from the model.
    ``preflight`` is checked when a run starts (raise when what the tool needs is missing).
    """

    def build(f: ToolFn) -> Tool:
        if not callable(f):
            raise ToolDefinitionError(f"@tool needs a function, got {type(f).__name__}")
        if _first_param_name(f) == "self":  # a method of a Toolkit: built per instance
            return ToolMethod(f, options)  # type: ignore[return-value]
        tool_name = name or getattr(f, "__name__", None)
        if not tool_name:
            raise ToolDefinitionError(f"@tool cannot name {f!r}: pass name=...")
        ctx = first_param_is_context(f, ToolContext)
        model, doc = signature_model(f, skip={ctx} if ctx else set())
        return Tool(
            name=tool_name,
            description=(description if description is not None else doc) or f.__name__,
            parameters=model_schema(model),
            fn=f,
            args_model=model,
            context_param=ctx,
            timeout=timeout,
            risk=risk,
            parallel_safe=parallel_safe,
            finishing=finishing,
            kind=kind,
            assess=assess,
            reads_untrusted=reads_untrusted,
            preflight=preflight,
        )

    options: dict[str, Any] = {
        "name": name, "description": description, "timeout": timeout, "risk": risk,
        "parallel_safe": parallel_safe, "finishing": finishing, "kind": kind, "assess": assess,
        "reads_untrusted": reads_untrusted, "preflight": preflight,
    }  # fmt: skip
    if fn is not None:
        return build(fn)
    return build


def _first_param_name(fn: ToolFn) -> str | None:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None
    return params[0] if params else None


_TOOL_DEFAULTS: dict[str, Any] = {
    "name": None, "description": None, "timeout": 60.0, "risk": "safe", "parallel_safe": True,
    "finishing": False, "kind": "generic", "assess": None, "reads_untrusted": False, "preflight": None,
}  # fmt: skip


class ToolMethod:
    """``@tool`` on a method (first parameter ``self``): a tool per instance of its
    :class:`~omni_agent.toolkit.Toolkit`, built by :meth:`bind` so the method shares the instance's
    state. Options left at their defaults give way to the toolkit's ``tool_defaults()``."""

    def __init__(self, fn: ToolFn, options: dict[str, Any]) -> None:
        self.fn = fn
        self.name: str = options.get("name") or fn.__name__
        self.explicit = {k: v for k, v in options.items() if v != _TOOL_DEFAULTS[k] and k != "name"}
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        # On an instance the attribute is the plain bound method: kit code calls it directly.
        return self if instance is None else self.fn.__get__(instance, owner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Called through the class (``Kit.add(kit, 3)``): runs the method as written."""
        return self.fn(*args, **kwargs)

    def bind(self, instance: Any, defaults: dict[str, Any] | None = None) -> Tool:
        """The tool for ``instance``: the bound method, with kit defaults under explicit options."""
        options = {**(defaults or {}), **self.explicit}
        return tool(name=self.name, **options)(self.fn.__get__(instance, type(instance)))

