"""Schema generation, property-tested: for tools made with @tool from typed functions, values
valid for the Python types validate against the generated JSON Schema (and reach the function
as the right Python objects), values of the wrong type are rejected by both the schema and the
pydantic model, and values generated from the schema are accepted by the pydantic model."""

from __future__ import annotations

import enum
import functools
import json
import re
import types
import typing
from typing import Annotated, Any, Literal, Optional, Union

import annotated_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from omni_agent.messages import ToolCall
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, tool
from omni_agent.validation import _schema_types, validate_call
from pydantic import Field


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.Enum):
    LOW = 1
    HIGH = 2


class Point(BaseModel):
    x: int
    y: float = 0.0


class Shape(BaseModel):
    name: str
    points: list[Point]
    color: Optional[Color] = None
    tags: dict[str, bool] = {}


@tool
def primitives(text: str, count: int, ratio: float, flag: bool) -> str:
    """Primitive types."""
    return ""


@tool
def containers(
    numbers: list[int], words: list[str], scores: dict[str, float], nested: dict[str, list[int]], grid: list[list[bool]]
) -> str:
    """Lists and dicts."""
    return ""


@tool
def choices(mode: Literal["fast", "slow", 3], color: Color, level: Level = Level.LOW, maybe: Optional[int] = None) -> str:
    """Literal, enums, Optional."""
    return ""


@tool
def defaults_and_unions(
    name: str = "x",
    limit: Annotated[int, Field(ge=0, le=100)] = 10,
    short: Annotated[str, Field(min_length=1, max_length=8)] = "ok",
    either: Union[int, str] = 0,
    when: Optional[str] = None,
) -> str:
    """Defaults, constrained types, unions."""
    return ""


@tool
def models(shape: Shape, origin: Optional[Point] = None, many: list[Point] = []) -> str:
    """Nested pydantic models."""
    return ""


TOOLS = [primitives, containers, choices, defaults_and_unions, models]
REGISTRY = ToolRegistry(TOOLS)
finite_floats = st.floats(allow_nan=False, allow_infinity=False, width=64)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a Python type (hypothesis' from_type, with floats kept finite: JSON has no NaN)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        base, *meta = args
        bounds: dict[str, Any] = {}
        for item in meta:
            for constraint in getattr(item, "metadata", [item]):
                if isinstance(constraint, annotated_types.Ge):
                    bounds["min_value"] = constraint.ge
                elif isinstance(constraint, annotated_types.Le):
                    bounds["max_value"] = constraint.le
                elif isinstance(constraint, annotated_types.MinLen):
                    bounds["min_size"] = constraint.min_length
                elif isinstance(constraint, annotated_types.MaxLen):
                    bounds["max_size"] = constraint.max_length
        return st.integers(**bounds) if base is int else st.text(**bounds)
    if annotation is float:
        return finite_floats
    if origin in (Union, types.UnionType):
        return st.one_of([strategy_for(a) for a in args])
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy_for(args[1]), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = {name: strategy_for(f.annotation) for name, f in annotation.model_fields.items()}
        return st.fixed_dictionaries(fields).map(lambda kw: annotation(**kw))
    return st.from_type(annotation)


def arguments_for(t: Tool) -> st.SearchStrategy[dict[str, Any]]:
    assert t.args_model is not None
    fields = t.args_model.model_fields
    required = {n: strategy_for(f.annotation if not f.metadata else Annotated[(f.annotation, *f.metadata)]) for n, f in fields.items() if f.is_required()}
    optional = {n: strategy_for(f.annotation if not f.metadata else Annotated[(f.annotation, *f.metadata)]) for n, f in fields.items() if not f.is_required()}
    return st.fixed_dictionaries(required, optional=optional)


def to_json(t: Tool, python_values: dict[str, Any]) -> dict[str, Any]:
    """What a model would write for these Python values: pydantic's JSON form."""
    assert t.args_model is not None
    return json.loads(t.args_model(**python_values).model_dump_json(exclude_unset=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_valid_for_the_python_types_validate_against_the_schema(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(TOOLS))
    python_values = data.draw(arguments_for(t))
    arguments = to_json(t, python_values)
    result = validate_call(ToolCall(name=t.name, arguments=arguments), REGISTRY)
    assert result.ok, result.message
    assert result.coercions == [] and result.call.arguments == arguments
    # ...and the function receives the Python objects back (enums, nested models).
    passed = t._python_arguments(result.call.arguments)
    for name, value in python_values.items():
        assert passed[name] == value


WRONG_VALUES: list[tuple[str, Any]] = [
    ("string", "not-a-number-xyz"),
    ("number", 2.5),
    ("integer", 7),
    ("boolean", True),
    ("array", [1, "x"]),
    ("object", {"k": [1]}),
    ("null", None),
]


def wrong_values_for(schema: dict[str, Any]) -> list[Any]:
    admitted = _schema_types(schema) or set()
    out = []
    for kind, value in WRONG_VALUES:
        if kind in admitted or (kind == "integer" and "number" in admitted):
            continue
        if kind == "boolean" and admitted & {"integer", "number"}:
            continue  # pydantic's lax mode reads true as 1: that case is the schema's job alone
        out.append(value)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_of_the_wrong_type_are_rejected_by_schema_and_model(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(TOOLS))
    arguments = to_json(t, data.draw(arguments_for(t)))
    name = data.draw(st.sampled_from(sorted(t.parameters["properties"])))
    candidates = wrong_values_for(t.parameters["properties"][name])
    wrong = data.draw(st.sampled_from(candidates))
    arguments[name] = wrong
    result = validate_call(ToolCall(name=t.name, arguments=arguments), REGISTRY)
    assert not result.ok
    assert any(issue.path == name or issue.path.startswith((f"{name}.", f"{name}[")) for issue in result.issues)
    assert t.args_model is not None
    try:
        t.args_model.model_validate(arguments)
    except ValidationError:
        pass
    else:
        raise AssertionError(f"pydantic accepted {name}={wrong!r} that the schema rejects")


def test_nested_wrong_values_are_rejected_by_both() -> None:
    cases = [
        (models, {"shape": {"name": "s", "points": [{"x": "left"}]}}, "shape.points[0].x"),
        (models, {"shape": {"name": "s", "points": [{"y": 1.0}]}}, "shape.points[0].x"),
        (models, {"shape": {"name": "s", "points": [], "color": "blue"}}, "shape.color"),
        (containers, {"numbers": [1, "two"], "words": [], "scores": {}, "nested": {}, "grid": []}, "numbers[1]"),
        (containers, {"numbers": [], "words": [], "scores": {"a": "high"}, "nested": {"k": [1, [2]]}, "grid": [[1.5]]}, "scores.a"),
    ]
    for t, arguments, path in cases:
        result = validate_call(ToolCall(name=t.name, arguments=arguments), REGISTRY)
        assert not result.ok and path in [i.path for i in result.issues], result.message
        try:
            t.args_model.model_validate(arguments)  # type: ignore[union-attr]
        except ValidationError:
            continue
        raise AssertionError(f"pydantic accepted {arguments}")


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """JSON values that satisfy a schema, for the keywords pydantic emits. Written here because
    hypothesis-jsonschema no longer works with current hypothesis releases."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(branch) for branch in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength"))
    if kind == "integer":
        return st.integers(min_value=schema.get("minimum"), max_value=schema.get("maximum"))
    if kind == "number":
        return st.one_of(st.integers(), finite_floats)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {})), max_size=4)
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = st.fixed_dictionaries(
            {k: from_schema(v) for k, v in props.items() if k in required},
            optional={k: from_schema(v) for k, v in props.items() if k not in required},
        )
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            keys = st.text(max_size=5).filter(lambda k: k not in props)
            return st.tuples(fixed, st.dictionaries(keys, from_schema(extra), max_size=3)).map(lambda t: {**t[1], **t[0]})
        return fixed
    if not schema:
        return st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    raise AssertionError(f"schema keyword not covered by the test generator: {schema}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_values_generated_from_the_schema_are_accepted_by_the_model(data: st.DataObject) -> None:
    t = data.draw(st.sampled_from(TOOLS))
    arguments = data.draw(from_schema(t.parameters))
    result = validate_call(ToolCall(name=t.name, arguments=arguments), REGISTRY)
    assert result.ok, result.message
    assert t.args_model is not None
    t.args_model.model_validate(arguments)


# -- bad tool definitions: clear UserErrors when the tool is defined, not when it is called ----


def _no_annotations(a, b):  # noqa: ANN001, ANN202
    return a


def _star_args(*numbers: int) -> int:
    return sum(numbers)


def _positional_only(a: int, /) -> int:
    return a


class _Opaque:
    pass


def _opaque_param(thing: _Opaque) -> str:
    return "x"


def _ok(a: int) -> int:
    return a


@pytest.mark.parametrize(
    ("define", "message"),
    [
        (lambda: tool(_no_annotations), "parameter 'a' has no type annotation"),
        (lambda: tool(_star_args), "*args/**kwargs"),
        (lambda: tool(_positional_only), "parameter 'a' is positional-only"),
        (lambda: tool(_opaque_param), "parameter 'thing' (_Opaque) cannot be described as JSON Schema"),
        (lambda: tool(name="my tool")(_ok), "invalid tool name 'my tool'"),
        (lambda: tool(name="add\n")(_ok), "invalid tool name 'add"),  # a trailing newline slipped past $
        (lambda: tool(name="9lives")(_ok), "invalid tool name"),
        (lambda: ToolRegistry([tool(_ok), tool(_ok)]), "duplicate tool name '_ok'"),
        (lambda: tool(timeout=-1)(_ok), "timeout must be a number of seconds > 0"),
        (lambda: tool(risk="meh")(_ok), "risk must be 'safe' or 'dangerous'"),  # type: ignore[arg-type]
        (lambda: tool(functools.partial(_ok, a=1)), "pass name="),
        (lambda: Tool.from_schema({"name": "x", "parameters": "nope"}, _ok), "parameters must be a JSON Schema object"),
        (lambda: Tool.from_schema(["x"], _ok), "must be a dict"),  # type: ignore[arg-type]
    ],
)
def test_bad_tool_definitions_are_clear_user_errors(define: Any, message: str) -> None:
    from omni_agent.exceptions import UserError

    with pytest.raises(UserError, match=re.escape(message)):
        define()
