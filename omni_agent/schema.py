"""Python signatures -> JSON Schema (draft 2020-12) through public pydantic APIs.

The generated pydantic model doubles as the argument parser: after ``jsonschema`` has validated
a call, the model turns JSON values into the Python types the function expects (enums, nested
pydantic models). ``$defs`` are inlined because Qwen models read the schema as text and do
better without references.
"""

from __future__ import annotations

import copy
import inspect
import typing
from typing import Any, Callable, get_type_hints

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, create_model

from .exceptions import ToolDefinitionError

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def parse_docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """Return (description, {argument: description}) from a Google/NumPy/reST docstring."""
    doc = inspect.getdoc(fn) or ""
    parsed = docstring_parser.parse(doc)
    parts = [p for p in (parsed.short_description, parsed.long_description) if p]
    return "\n\n".join(parts).strip(), {p.arg_name: (p.description or "").strip() for p in parsed.params}


def signature_model(
    fn: Callable[..., Any], *, skip: set[str] = frozenset(), model_name: str | None = None
) -> tuple[type[BaseModel], str]:
    """Build a pydantic model for ``fn``'s parameters (minus ``skip``) and return it with the
    function description taken from the docstring."""
    label = getattr(fn, "__qualname__", None) or repr(fn)
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:  # NameError for unresolvable forward refs and the like
        raise ToolDefinitionError(f"cannot resolve type hints of {label}: {exc}") from exc
    description, arg_docs = parse_docstring(fn)
    fields: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in skip:
            continue
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolDefinitionError(f"{label}: *args/**kwargs cannot be described to a model")
        if param.kind is param.POSITIONAL_ONLY:  # tools are called with keyword arguments (JSON objects)
            raise ToolDefinitionError(f"{label}: parameter {name!r} is positional-only; tools take keyword arguments")
        if name not in hints:
            raise ToolDefinitionError(f"{label}: parameter {name!r} has no type annotation")
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (hints[name], Field(default, description=arg_docs.get(name) or None))
    try:
        model = create_model(  # type: ignore[call-overload]
            model_name or f"{getattr(fn, '__name__', 'tool')}_args",
            __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False),
            **fields,
        )
    except Exception as exc:  # e.g. a parameter typed with a class pydantic cannot describe
        culprit = next((n for n, f in fields.items() if not _describable(f)), None)
        what = f"parameter {culprit!r} ({_type_name(fields[culprit][0])})" if culprit else "the parameter types"
        raise ToolDefinitionError(
            f"{label}: {what} cannot be described as JSON Schema; "
            "use str/int/float/bool, lists, dicts, Literal, enums, Optional or pydantic models"
        ) from exc
    return model, description


def _describable(field: tuple[Any, Any]) -> bool:
    try:
        create_model("probe", __config__=ConfigDict(arbitrary_types_allowed=False), x=field)  # type: ignore[call-overload]
    except Exception:
        return False
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint)


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of a pydantic model, ``$defs`` inlined and pydantic's titles removed."""
    try:
        schema = model.model_json_schema()
    except Exception as exc:
        raise ToolDefinitionError(f"cannot build a JSON Schema for {model.__name__}: {exc}") from exc
    return clean_schema(schema)


def clean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.pop("$defs", {})
    inlined = _inline_refs(schema, defs, depth=0)
    _strip_titles(inlined)
    inlined.setdefault("type", "object")
    inlined.setdefault("properties", {})
    return inlined


def _inline_refs(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if depth > 32:  # recursive models: keep the reference rather than loop forever
        return node
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = copy.deepcopy(defs[ref.split("/")[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            target.update(rest)
            return _inline_refs(target, defs, depth + 1)
        return {k: _inline_refs(v, defs, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs, depth) for v in node]
    return node


def _strip_titles(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("title"), str):
            node.pop("title")
        props = node.get("properties")
        for key, value in node.items():
            # "title" inside "properties" is an argument name, not a pydantic title.
            if key == "properties" and isinstance(props, dict):
                for v in props.values():
                    _strip_titles(v)
            else:
                _strip_titles(value)
    elif isinstance(node, list):
        for v in node:
            _strip_titles(v)


def first_param_is_context(fn: Callable[..., Any], context_type: type) -> str | None:
    """Name of the first parameter if it is annotated with ``context_type`` (injected, not shown)."""
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        return None
    try:
        hints = get_type_hints(fn)
    except Exception:
        return None
    hint = hints.get(params[0].name)
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, context_type):
        return params[0].name
    return None
