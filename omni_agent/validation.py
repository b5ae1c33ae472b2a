"""Check a tool call against its tool's JSON Schema before anything runs.

:func:`validate_call` never raises. It reports every issue at once, each naming the argument
path and what was expected (``argument "count": expected integer, got "five" (string)``), so
the model can correct itself from the tool-result error alone. Issue kinds: ``unknown_tool``,
``missing_argument``, ``unexpected_argument``, ``wrong_type``, ``enum`` (enum and const),
``range`` (minimum/maximum/exclusive*, multipleOf, string length, item and property counts),
``pattern`` (pattern and format), ``other``.

Coercions, applied before validation and listed in ``CallValidation.coercions``; nothing else
is ever changed:

1. a numeric string (``"5"``, ``"2.5"``, finite only) becomes a number where the schema admits
   integer/number but not string (``Optional[int]`` counts; ``int | str`` does not);
2. an integral float (``3.0``, also ``"3.0"``) becomes an integer where the schema admits
   integer but not number;
3. ``"true"`` / ``"false"`` (any case) become booleans where the schema admits boolean but not
   string;
4. a string holding JSON (strict stdlib ``json``) becomes an object/array where the schema
   admits that type but not string.

Coercions follow ``properties``, ``additionalProperties``, ``items``, ``prefixItems`` and the one
``anyOf``/``oneOf`` branch that fits a value (not ``$ref``: tool schemas have ``$defs`` inlined).
A call that is already valid is returned untouched. Schemas are compiled once per tool (``jsonschema`` Draft 2020-12 with format checks) and cached.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from .messages import ToolCall
from .tool import Tool

__all__ = ["CallValidation", "IssueKind", "ValidationIssue", "validate_call"]

IssueKind = Literal[
    "unknown_tool", "missing_argument", "unexpected_argument", "wrong_type", "enum", "range", "pattern", "other"
]


class ValidationIssue(BaseModel):
    """One thing wrong with a call."""

    kind: IssueKind
    path: str = ""
    """Argument path such as ``count`` or ``filters[0].field``; empty for the call itself."""
    message: str
    expected: str = ""
    """What the schema wanted, in words (``integer``, ``one of "c", "f"``)."""


class CallValidation(BaseModel):
    """The verdict on one call; ``call`` carries the arguments after the documented coercions."""

    ok: bool
    call: ToolCall
    issues: list[ValidationIssue] = Field(default_factory=list)
    coercions: list[str] = Field(default_factory=list)
    """What was coerced, e.g. ``argument "count": "5" -> 5``."""
    message: str = ""
    """One text for the model naming every issue (empty when ok)."""


_MAX_LISTED_TOOLS = 30
_KIND_ORDER: tuple[IssueKind, ...] = (
    "unknown_tool", "missing_argument", "unexpected_argument", "wrong_type", "enum", "range", "pattern", "other"
)
_VALUE_CHARS = 60


def validate_call(call: Any, registry: Any) -> CallValidation:
    """Validate ``call`` (a ToolCall) against its tool in ``registry`` (a ToolRegistry, or any
    mapping-like object with ``get(name)``). Never raises."""
    call = _as_call(call)
    if call is None:
        bad = ToolCall(name="invalid", arguments={})
        issue = ValidationIssue(kind="other", message="the call is not a tool call object")
        return CallValidation(ok=False, call=bad, issues=[issue], message=issue.message)
    try:
        return _validate(call, registry)
    except Exception as exc:  # RecursionError on absurd nesting, hostile objects in arguments...
        issue = ValidationIssue(kind="other", message=f'tool "{call.name}": arguments could not be checked ({type(exc).__name__}: {exc})'[:500])
        return CallValidation(ok=False, call=call, issues=[issue], message=issue.message)


def _as_call(call: Any) -> ToolCall | None:
    if isinstance(call, ToolCall):
        return call
    try:
        return ToolCall.model_validate(call)
    except Exception:
        return None


def _validate(call: ToolCall, registry: Any) -> CallValidation:
    tool = registry.get(call.name) if hasattr(registry, "get") else None
    if not isinstance(tool, Tool):
        issue = _unknown_tool(call.name, _tool_names(registry))
        return CallValidation(ok=False, call=call, issues=[issue], message=issue.message)
    validator = _validator_for(tool)
    if validator.is_valid(call.arguments):  # fast path: a valid call needs no coercion
        return CallValidation(ok=True, call=call)
    coercions: list[str] = []
    arguments = _coerce(call.arguments, tool.parameters, (), coercions)
    if coercions:
        call = call.model_copy(update={"arguments": arguments})
    issues: list[ValidationIssue] = []
    seen: set[tuple[str, str, str]] = set()
    for error in validator.iter_errors(arguments):
        for issue in _issues_from_error(error):
            key = (issue.kind, issue.path, issue.message)
            if key not in seen:
                seen.add(key)
                issues.append(issue)
    if not issues:
        return CallValidation(ok=True, call=call, coercions=coercions)
    issues.sort(key=lambda i: _KIND_ORDER.index(i.kind))
    lines = "\n".join(f"- {i.message}" for i in issues)
    message = f'Invalid arguments for tool "{call.name}":\n{lines}\nFix the arguments and call the tool again.'
    return CallValidation(ok=False, call=call, issues=issues, coercions=coercions, message=message)


def _tool_names(registry: Any) -> list[str]:
    names = getattr(registry, "names", None)
    if isinstance(names, list):
        return [n for n in names if isinstance(n, str)]
    try:
        return [n for n in registry if isinstance(n, str)] if isinstance(registry, dict) else []
    except Exception:
        return []


def _unknown_tool(name: str, names: list[str]) -> ValidationIssue:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    close += [n for n in names if n.lower() == name.lower() and n not in close]
    hint = f" Did you mean {' or '.join(json.dumps(c) for c in close)}?" if close else ""
    listed = ", ".join(names[:_MAX_LISTED_TOOLS]) + (", ..." if len(names) > _MAX_LISTED_TOOLS else "")
    available = f" Available tools: {listed}." if names else " No tools are available."
    return ValidationIssue(
        kind="unknown_tool",
        message=f"Unknown tool {json.dumps(name)}.{hint}{available}",
        expected=" or ".join(close),
    )


# -- compiled validators ------------------------------------------------------------------------
_CACHE: "weakref.WeakKeyDictionary[Tool, tuple[int, Any]]" = weakref.WeakKeyDictionary()


def _validator_for(tool: Tool) -> Any:
    cached = _CACHE.get(tool)
    if cached is not None and cached[0] == id(tool.parameters):
        return cached[1]
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(tool.parameters, format_checker=Draft202012Validator.FORMAT_CHECKER)
    _CACHE[tool] = (id(tool.parameters), validator)
    return validator


# -- coercions ----------------------------------------------------------------------------------
_INT_RE = re.compile(r"[+-]?\d{1,300}")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _schema_types(schema: Any) -> set[str] | None:
    """JSON types a schema admits, or None when it does not say (no coercion then)."""
    if not isinstance(schema, dict):
        return None
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    if "const" in schema:
        return {_json_type(schema["const"])}
    if isinstance(schema.get("enum"), list):
        return {_json_type(v) for v in schema["enum"]}
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        types: set[str] = set()
        for branch in branches:
            branch_types = _schema_types(branch)
            if branch_types is None:
                return None
            types |= branch_types
        return types
    return None


def _admits(types: set[str], value: Any) -> bool:
    kind = _json_type(value)
    return kind in types or (kind == "integer" and "number" in types)


def _coerce(value: Any, schema: Any, path: tuple[Any, ...], log: list[str]) -> Any:
    if not isinstance(schema, dict):
        return value
    types = _schema_types(schema)
    if types is not None and not _admits(types, value):
        new = _coerced_scalar(value, types)
        if new is not _NO_CHANGE:
            log.append(f"argument {json.dumps(_format_path(path))}: {_show(value)} -> {_show(new)}")
            value = new
    if isinstance(value, dict):
        target = _branch_for(schema, value)
        props = target.get("properties") if isinstance(target.get("properties"), dict) else {}
        extra = target.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            out[key] = _coerce(item, sub, (*path, key), log) if sub is not None else item
        return out if any(out[k] is not value[k] for k in out) else value
    if isinstance(value, list):
        target = _branch_for(schema, value)
        prefix = target.get("prefixItems") if isinstance(target.get("prefixItems"), list) else []
        items = target.get("items")
        out_list = []
        for index, item in enumerate(value):
            sub = prefix[index] if index < len(prefix) else items
            out_list.append(_coerce(item, sub, (*path, index), log) if isinstance(sub, dict) else item)
        return out_list if any(a is not b for a, b in zip(out_list, value)) else value
    return value


def _branch_for(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    """The one anyOf/oneOf branch that admits ``value``'s JSON type (else the schema itself)."""
    branches = schema.get("anyOf") or schema.get("oneOf")
    if not isinstance(branches, list):
        return schema
    fitting = [b for b in branches if isinstance(b, dict) and (t := _schema_types(b)) is not None and _admits(t, value)]
    return fitting[0] if len(fitting) == 1 else schema


class _NoChange:
    pass


_NO_CHANGE = _NoChange()


def _coerced_scalar(value: Any, types: set[str]) -> Any:
    if "string" in types:
        return _NO_CHANGE
    if isinstance(value, float) and "integer" in types and math.isfinite(value) and value.is_integer():
        return int(value)
    if not isinstance(value, str):
        return _NO_CHANGE
    text = value.strip()
    if types & {"integer", "number"}:
        if _INT_RE.fullmatch(text):
            return int(text)
        if _FLOAT_RE.fullmatch(text):
            number = float(text)
            if math.isfinite(number):
                if "number" in types:
                    return number
                if number.is_integer():
                    return int(number)
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if types & {"object", "array"} and text[:1] in ("{", "["):
        try:
            decoded = json.loads(text)
        except (ValueError, RecursionError):
            return _NO_CHANGE
        if _json_type(decoded) in types:
            return decoded
    return _NO_CHANGE


# -- jsonschema errors -> issues ----------------------------------------------------------------
_RANGE_WORDS = {
    "minimum": "at least {v}",
    "maximum": "at most {v}",
    "exclusiveMinimum": "greater than {v}",
    "exclusiveMaximum": "less than {v}",
    "multipleOf": "a multiple of {v}",
    "minLength": "a string of at least {v} characters",
    "maxLength": "a string of at most {v} characters",
    "minItems": "at least {v} items",
    "maxItems": "at most {v} items",
    "minProperties": "at least {v} properties",
    "maxProperties": "at most {v} properties",
}


def _issues_from_error(error: Any) -> list[ValidationIssue]:
    keyword = error.validator
    path = tuple(error.absolute_path)
    where = _format_path(path)
    instance = error.instance
    expected_value = error.validator_value
    schema = error.schema if isinstance(error.schema, dict) else {}
    if keyword == "required" and isinstance(instance, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        out = []
        for name in expected_value:
            if name in instance:
                continue
            expected = _describe_schema(props.get(name))
            full = _format_path((*path, name))
            detail = f" ({expected})" if expected else ""
            out.append(
                ValidationIssue(
                    kind="missing_argument", path=full, message=f"missing required argument {json.dumps(full)}{detail}", expected=expected
                )
            )
        return out
    if keyword in ("additionalProperties", "unevaluatedProperties") and isinstance(instance, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        patterns = [p for p in schema.get("patternProperties", {}) if isinstance(p, str)]
        allowed = [p for p in props if isinstance(p, str)]
        out = []
        for name in instance:
            if name in props or any(re.search(p, name) for p in patterns):
                continue
            full = _format_path((*path, name))
            close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
            if close:
                hint = f'; did you mean "{close[0]}"?'
            elif allowed:
                hint = f"; allowed: {', '.join(allowed[:_MAX_LISTED_TOOLS])}"
            else:
                hint = "; this takes no arguments" if not path else ""
            out.append(
                ValidationIssue(
                    kind="unexpected_argument",
                    path=full,
                    message=f"unexpected argument {json.dumps(full)}{hint}",
                    expected=", ".join(allowed),
                )
            )
        return out
    if keyword in ("anyOf", "oneOf") and error.context:
        return _union_issues(error, schema, where)
    if keyword == "type":
        expected = _type_words(expected_value)
        return [_issue("wrong_type", where, expected, instance)]
    if keyword == "enum":
        choices = list(expected_value) if isinstance(expected_value, Sequence) else []
        shown = ", ".join(json.dumps(v, default=str) for v in choices[:20]) + (", ..." if len(choices) > 20 else "")
        return [_issue("enum", where, f"one of {shown}", instance)]
    if keyword == "const":
        return [_issue("enum", where, json.dumps(expected_value, default=str), instance)]
    if keyword in _RANGE_WORDS:
        return [_issue("range", where, _RANGE_WORDS[keyword].format(v=expected_value), instance)]
    if keyword == "pattern":
        return [_issue("pattern", where, f"a string matching the pattern {expected_value}", instance)]
    if keyword == "format":
        return [_issue("pattern", where, f"a string in the {expected_value} format", instance)]
    label = f"argument {json.dumps(where)}: " if where else ""
    return [ValidationIssue(kind="other", path=where, message=f"{label}{error.message}"[:500])]


def _union_issues(error: Any, schema: dict[str, Any], where: str) -> list[ValidationIssue]:
    """Optional[X] and unions: report the branch that fits the value's type, else a type error."""
    branches = schema.get(error.validator) or []
    fitting = {
        i for i, b in enumerate(branches) if (t := _schema_types(b)) is not None and _admits(t, error.instance)
    }
    if len(fitting) == 1:
        (index,) = fitting
        out: list[ValidationIssue] = []
        for sub in error.context:
            if sub.relative_schema_path and sub.relative_schema_path[0] == index:
                out.extend(_issues_from_error(sub))
        if out:
            return out
    types = _schema_types(schema)
    if types is not None and not _admits(types, error.instance):
        return [_issue("wrong_type", where, _describe_schema(schema), error.instance)]
    return [_issue("other", where, _describe_schema(schema) or "a value matching one of the allowed forms", error.instance)]


def _issue(kind: IssueKind, where: str, expected: str, instance: Any) -> ValidationIssue:
    label = f"argument {json.dumps(where)}" if where else "arguments"
    return ValidationIssue(kind=kind, path=where, message=f"{label}: expected {expected}, got {_show_typed(instance)}", expected=expected)


# -- wording ------------------------------------------------------------------------------------
def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_words(types: Any) -> str:
    if isinstance(types, str):
        return types
    if isinstance(types, Iterable):
        names = [t for t in types if isinstance(t, str)]
        return " or ".join(names) if names else "a valid value"
    return "a valid value"


def _describe_schema(schema: Any) -> str:
    if not isinstance(schema, dict):
        return ""
    if isinstance(schema.get("enum"), list):
        return "one of " + ", ".join(json.dumps(v, default=str) for v in schema["enum"][:20])
    if "const" in schema:
        return json.dumps(schema["const"], default=str)
    return _type_words(_ordered_types(schema))


def _ordered_types(schema: Any) -> list[str]:
    """The types a schema admits, in the order it lists them (for messages)."""
    if not isinstance(schema, dict):
        return []
    declared = schema.get("type")
    if isinstance(declared, str):
        return [declared]
    if isinstance(declared, list):
        return [t for t in declared if isinstance(t, str)]
    out: list[str] = []
    for branch in schema.get("anyOf") or schema.get("oneOf") or []:
        out += [t for t in _ordered_types(branch) if t not in out]
    return out if out else sorted(_schema_types(schema) or [])


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _show_typed(value: Any) -> str:
    kind = _json_type(value)
    return _show(value) if kind == "null" else f"{_show(value)} ({kind})"


def _format_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
