"""loads_lenient: stdlib JSON first, named repairs for almost-JSON, ValueError for prose."""

from __future__ import annotations

import pytest

from omni_agent.parsing import loads_lenient


@pytest.mark.parametrize(
    ("text", "value", "repairs"),
    [
        ('{"a": [1, 2.5, "x"], "b": null}', {"a": [1, 2.5, "x"], "b": None}, []),
        ("  42 ", 42, []),
        ('{"a": 1}}', {"a": 1}, ["extra_closing_brace"]),
        ('{"a": {"b": 1}}]}', {"a": {"b": 1}}, ["extra_closing_brace"]),
        ("{'a': 'it is'}", {"a": "it is"}, ["single_quotes"]),
        ('{"a": [1, 2,],}', {"a": [1, 2]}, ["trailing_comma"]),
        ('{"a": True, "b": None, "c": False}', {"a": True, "b": None, "c": False}, ["python_literals"]),
        ("{a: 1}", {"a": 1}, ["unquoted_keys"]),
        ('{"a": "x', {"a": "x"}, ["truncated"]),
        ('{"a": "line\nbreak"}', {"a": "line\nbreak"}, ["control_characters"]),
        ('```json\n{"a": 1}\n```', {"a": 1}, ["code_fence"]),
        ("```\n{'a': 1,}\n```", {"a": 1}, ["code_fence", "single_quotes", "trailing_comma"]),
        ('{"a": 1}\n{"b": 2}', [{"a": 1}, {"b": 2}], ["several_values"]),
        ('{"a": 1} and that is all', {"a": 1}, ["trailing_text"]),
        ('{"a": "true" "b": 1}', {"a": "true", "b": 1}, ["other"]),
    ],
)
def test_values_and_named_repairs(text: str, value: object, repairs: list[str]) -> None:
    assert loads_lenient(text) == (value, repairs)


@pytest.mark.parametrize("text", ["", "   ", "I cannot do that, sorry.", "hello world", "[" * 5000, "{" * 300_000])
def test_unrecoverable_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        loads_lenient(text)


def test_non_text_raises_value_error() -> None:
    with pytest.raises(ValueError):
        loads_lenient(b"{}")  # type: ignore[arg-type]
