"""validate_call: every issue kind with a precise message, the documented coercions (and only
those), all issues at once, cached validators, and no exception on absurd input."""

from __future__ import annotations

import enum
from typing import Annotated, Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field

from omni_agent.messages import ToolCall
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, tool
from omni_agent.validation import CallValidation, validate_call


class Unit(enum.Enum):
    CELSIUS = "c"
    FAHRENHEIT = "f"


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str
    limit: int = 10


@tool
def get_weather(
    city: str,
    days: Annotated[int, Field(ge=1, le=10)] = 1,
    unit: Unit = Unit.CELSIUS,
    detailed: bool = False,
    ratio: float = 1.0,
    mode: Literal["fast", "slow"] = "fast",
    postcode: Annotated[str, Field(pattern=r"^\d{5}$", min_length=5, max_length=5)] = "75001",
    filters: list[Filter] = [],
    extra: Optional[Filter] = None,
    hours: Optional[int] = None,
    label: int | str = 0,
) -> str:
    """Weather forecast."""
    return city


def _raw(name: str, parameters: dict) -> Tool:
    return Tool.from_schema({"name": name, "description": name, "parameters": parameters}, lambda **kw: "ok")


schema_tool = _raw(
    "schema_tool",
    {
        "type": "object",
        "properties": {
            "scale": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "step": {"type": "integer", "multipleOf": 5},
            "version": {"const": "v2"},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
            "when": {"type": "string", "format": "date"},
            "config": {"type": "object", "properties": {"depth": {"type": "integer"}}, "additionalProperties": False},
            "unique": {"type": "array", "uniqueItems": True},
        },
        "additionalProperties": False,
    },
)


@tool
def screenshot() -> str:
    """Take a screenshot."""
    return "ok"


REGISTRY = ToolRegistry([get_weather, schema_tool, screenshot])


def check(name: str, **arguments: object) -> CallValidation:
    return validate_call(ToolCall(name=name, arguments=arguments), REGISTRY)


def only_issue(result: CallValidation) -> tuple[str, str, str]:
    assert not result.ok
    [issue] = result.issues
    assert issue.message in result.message
    return issue.kind, issue.path, issue.message


def test_valid_call_passes_unchanged() -> None:
    call = ToolCall(name="get_weather", arguments={"city": "Paris", "days": 3, "unit": "f", "filters": [{"field": "wind"}]})
    result = validate_call(call, REGISTRY)
    assert result.ok and result.issues == [] and result.message == "" and result.coercions == []
    assert result.call == call


def test_unknown_tool_suggests_close_names() -> None:
    result = check("get_wether", city="Paris")
    kind, path, message = only_issue(result)
    assert kind == "unknown_tool" and path == ""
    assert 'Unknown tool "get_wether". Did you mean "get_weather"?' in message
    assert "Available tools: get_weather, schema_tool, screenshot." in message
    assert result.issues[0].expected == "get_weather"
    assert 'Did you mean "screenshot"' in check("Screenshot").message


def test_missing_argument_names_it_and_its_type() -> None:
    assert only_issue(check("get_weather")) == ("missing_argument", "city", 'missing required argument "city" (string)')


def test_unexpected_argument_with_suggestion() -> None:
    kind, path, message = only_issue(check("get_weather", city="Paris", dayz=2))
    assert (kind, path) == ("unexpected_argument", "dayz")
    assert message == 'unexpected argument "dayz"; did you mean "days"?'
    assert only_issue(check("screenshot", region="all"))[2] == 'unexpected argument "region"; this takes no arguments'


def test_wrong_type_message_shows_expected_and_got() -> None:
    assert only_issue(check("get_weather", city="Paris", days="five")) == (
        "wrong_type", "days", 'argument "days": expected integer, got "five" (string)'
    )
    assert only_issue(check("get_weather", city=["Paris"]))[2] == 'argument "city": expected string, got ["Paris"] (array)'
    assert only_issue(check("get_weather", city="Paris", ratio=True))[2] == 'argument "ratio": expected number, got true (boolean)'
    assert only_issue(check("get_weather", city="Paris", hours=[1]))[2] == 'argument "hours": expected integer or null, got [1] (array)'


def test_enum_and_const() -> None:
    assert only_issue(check("get_weather", city="Paris", unit="kelvin")) == (
        "enum", "unit", 'argument "unit": expected one of "c", "f", got "kelvin" (string)'
    )
    assert only_issue(check("get_weather", city="Paris", mode="medium"))[0] == "enum"
    assert only_issue(check("schema_tool", version="v1")) == ("enum", "version", 'argument "version": expected "v2", got "v1" (string)')


@pytest.mark.parametrize(
    ("tool_name", "arguments", "message"),
    [
        ("get_weather", {"city": "P", "days": 0}, 'argument "days": expected at least 1, got 0 (integer)'),
        ("get_weather", {"city": "P", "days": 11}, 'argument "days": expected at most 10, got 11 (integer)'),
        ("schema_tool", {"scale": 0}, 'argument "scale": expected greater than 0, got 0 (integer)'),
        ("schema_tool", {"scale": 1.0}, 'argument "scale": expected less than 1, got 1.0 (number)'),
        ("schema_tool", {"step": 7}, 'argument "step": expected a multiple of 5, got 7 (integer)'),
        ("schema_tool", {"tags": []}, 'argument "tags": expected at least 1 items, got [] (array)'),
        ("schema_tool", {"tags": ["a", "b", "c"]}, 'argument "tags": expected at most 2 items, got ["a", "b", "c"] (array)'),
        ("get_weather", {"city": "P", "postcode": "750011"}, None),
    ],
)
def test_range_limits(tool_name: str, arguments: dict, message: str | None) -> None:
    result = validate_call(ToolCall(name=tool_name, arguments=arguments), REGISTRY)
    kinds = [i.kind for i in result.issues]
    assert "range" in kinds and not result.ok
    if message:
        assert only_issue(result)[2] == message
    else:
        assert 'argument "postcode": expected a string of at most 5 characters, got "750011" (string)' in result.message


def test_pattern_and_format() -> None:
    result = check("get_weather", city="P", postcode="7500A")
    assert only_issue(result) == (
        "pattern", "postcode", 'argument "postcode": expected a string matching the pattern ^\\d{5}$, got "7500A" (string)'
    )
    assert only_issue(check("schema_tool", when="next tuesday")) == (
        "pattern", "when", 'argument "when": expected a string in the date format, got "next tuesday" (string)'
    )


def test_nested_objects_and_array_items_name_the_full_path() -> None:
    result = check("get_weather", city="P", filters=[{"field": "wind"}, {"limit": "x"}, {"field": 3, "lim": 1}], extra={"limit": 2})
    found = {(i.kind, i.path) for i in result.issues}
    assert found == {
        ("missing_argument", "filters[1].field"),
        ("wrong_type", "filters[1].limit"),
        ("wrong_type", "filters[2].field"),
        ("unexpected_argument", "filters[2].lim"),
        ("missing_argument", "extra.field"),
    }
    assert 'unexpected argument "filters[2].lim"; did you mean "limit"?' in result.message
    assert 'argument "config.depth": expected integer' in check("schema_tool", config={"depth": "deep"}).message


def test_other_kind_for_uncommon_keywords() -> None:
    kind, path, message = only_issue(check("schema_tool", unique=[1, 1]))
    assert (kind, path) == ("other", "unique") and message.startswith('argument "unique": ')


def test_all_issues_reported_at_once_most_useful_first() -> None:
    result = check("get_weather", days="many", unit="k", town="Paris")
    assert [i.kind for i in result.issues] == ["missing_argument", "unexpected_argument", "wrong_type", "enum"]
    lines = result.message.splitlines()
    assert lines[0] == 'Invalid arguments for tool "get_weather":'
    assert lines[1:5] == [f"- {i.message}" for i in result.issues]
    assert lines[-1] == "Fix the arguments and call the tool again."


def test_documented_coercions_are_applied_and_listed() -> None:
    result = check(
        "get_weather", city="Paris", days="3", detailed="TRUE", ratio="2.5", hours="4.0",
        filters='[{"field": "wind", "limit": 2.0}]', extra='{"field": "rain"}',
    )
    assert result.ok, result.message
    assert result.call.arguments == {
        "city": "Paris", "days": 3, "detailed": True, "ratio": 2.5, "hours": 4,
        "filters": [{"field": "wind", "limit": 2}], "extra": {"field": "rain"},
    }
    assert 'argument "days": "3" -> 3' in result.coercions
    assert 'argument "filters[0].limit": 2.0 -> 2' in result.coercions
    assert len(result.coercions) == 7
    assert check("get_weather", city="Paris", days=4.0).call.arguments["days"] == 4


@pytest.mark.parametrize(
    "arguments",
    [
        {"city": 5},  # no number -> string
        {"city": "P", "days": 2.5},  # non-integral float stays a float
        {"city": "P", "days": "2.5"},
        {"city": "P", "days": "nan"},
        {"city": "P", "ratio": "inf"},
        {"city": "P", "days": True},  # booleans are not numbers
        {"city": "P", "detailed": "yes"},
        {"city": "P", "detailed": 1},
        {"city": "P", "filters": "[{'field': 'x'}]"},  # only strict JSON strings are decoded
        {"city": "P", "filters": "{}"},  # decodes to the wrong type
    ],
)
def test_nothing_else_is_coerced(arguments: dict) -> None:
    result = validate_call(ToolCall(name="get_weather", arguments=arguments), REGISTRY)
    assert not result.ok
    assert result.coercions == []
    assert result.call.arguments == arguments


def test_no_coercion_where_the_schema_also_admits_a_string() -> None:
    result = check("get_weather", city="Paris", label="7")
    assert result.ok and result.call.arguments["label"] == "7" and result.coercions == []


def test_validators_are_compiled_once_per_tool() -> None:
    from omni_agent.validation import _validator_for

    fresh = _raw("fresh_tool", {"type": "object", "properties": {"n": {"type": "integer"}}})
    registry = ToolRegistry([fresh])
    first = _validator_for(fresh)
    for n in range(5):
        assert validate_call(ToolCall(name="fresh_tool", arguments={"n": n}), registry).ok
    assert _validator_for(fresh) is first
    fresh.parameters = {"type": "object", "properties": {"n": {"type": "string"}}}  # replaced schema: recompiled
    assert not validate_call(ToolCall(name="fresh_tool", arguments={"n": 1}), registry).ok


@pytest.mark.parametrize(
    "call",
    [
        None,
        42,
        {"name": 5},
        {"name": "get_weather", "arguments": {"city": object()}},
        {"name": "get_weather", "arguments": {"city": "P", "filters": [[[[[]]]]] * 3}},
        ToolCall(name="get_weather", arguments={"city": "x" * 100_000, "days": 10**400}),
        ToolCall(name="", arguments={}),
        ToolCall(name="get_weather", arguments={"city": {"a": {"b": {"c": None}}}, "\x00": "\ud800"}),
    ],
)
def test_never_raises_on_absurd_input(call: object) -> None:
    result = validate_call(call, REGISTRY)
    assert isinstance(result, CallValidation) and not result.ok and result.message


def test_deeply_nested_arguments_and_odd_registries_are_data() -> None:
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["a"] = {}
        node = node["a"]
    result = validate_call(ToolCall(name="get_weather", arguments={"city": "P", "extra": deep}), REGISTRY)
    assert not result.ok and result.issues
    assert validate_call(ToolCall(name="x", arguments={}), None).issues[0].kind == "unknown_tool"
    assert validate_call(ToolCall(name="x", arguments={}), {"x": "not a tool"}).issues[0].kind == "unknown_tool"
    assert validate_call(ToolCall(name="get_weather", arguments={"city": "P"}), {"get_weather": get_weather}).ok
