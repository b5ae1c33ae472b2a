"""calls_from_openai: the tool_calls structure of OpenAI-compatible servers, the ways servers
deviate from it, and problems as data."""

from __future__ import annotations

import json

import pytest

from omni_agent.parsing import calls_from_openai


def item(name: object, arguments: object, call_id: object = "call_srv_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_standard_items_keep_the_server_ids_and_order() -> None:
    calls, problems = calls_from_openai(
        [item("get_weather", json.dumps({"city": "Paris"}), "chatcmpl-tool-a1"), item("get_time", "{}", "chatcmpl-tool-b2")]
    )
    assert problems == []
    assert [(c.id, c.name, c.arguments) for c in calls] == [
        ("chatcmpl-tool-a1", "get_weather", {"city": "Paris"}),
        ("chatcmpl-tool-b2", "get_time", {}),
    ]


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, '{"city": "Paris"}', '  {"city": "Paris"}\n'])
def test_arguments_as_object_or_string_without_notes(arguments: object) -> None:
    calls, problems = calls_from_openai([item("get_weather", arguments)])
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert problems == []


@pytest.mark.parametrize("arguments", ["", None, "   "])
def test_empty_arguments_mean_no_arguments(arguments: object) -> None:
    calls, problems = calls_from_openai([item("screenshot", arguments)])
    assert [(c.name, c.arguments) for c in calls] == [("screenshot", {})] and problems == []


def test_almost_json_arguments_are_repaired_with_a_note() -> None:
    calls, problems = calls_from_openai([item("click", "{'x': 10, 'y': 20,}")])
    assert calls[0].arguments == {"x": 10, "y": 20}
    [note] = problems
    assert note.kind == "repaired_json" and not note.fatal
    assert "single_quotes" in note.message and "trailing_comma" in note.message and "arguments_as_string" not in note.message


def test_malformed_items_are_fatal_problems_and_the_others_survive() -> None:
    calls, problems = calls_from_openai(
        [
            item("bad_args", "click the button", "c1"),
            item("", "{}", "c2"),
            "not an object",
            item("array_args", "[1, 2]", "c3"),
            item("number_args", 5, "c4"),
            item("good", '{"q": 1}', "c5"),
        ]
    )
    assert [(c.id, c.name) for c in calls] == [("c5", "good")]
    assert [(p.kind, p.fatal) for p in problems] == [
        ("bad_arguments", True),
        ("missing_name", True),
        ("invalid_json", True),
        ("bad_arguments", True),
        ("bad_arguments", True),
    ]
    assert "'bad_args'" in problems[0].message and problems[0].snippet == "click the button"
    assert "tool_calls[2]" in problems[2].message


def test_missing_or_duplicate_ids_get_fresh_ones() -> None:
    calls, problems = calls_from_openai([item("a", "{}", None), item("b", "{}", "dup"), item("c", "{}", "dup")])
    assert calls[0].id.startswith("call_")
    assert calls[1].id == "dup" and calls[2].id != "dup" and calls[2].id.startswith("call_")
    assert [p.kind for p in problems] == ["repaired_json"] and "duplicate_id" in problems[0].message


def test_flat_items_without_function_wrapper_are_accepted() -> None:
    calls, problems = calls_from_openai([{"id": "x1", "name": "search", "arguments": '{"q": "omni"}'}])
    assert [(c.id, c.name, c.arguments) for c in calls] == [("x1", "search", {"q": "omni"})] and problems == []


@pytest.mark.parametrize("value", [None, [], ()])
def test_no_calls(value: object) -> None:
    assert calls_from_openai(value) == ([], [])


@pytest.mark.parametrize("value", ["text", 5, {"id": "x"}])
def test_non_list_is_one_fatal_problem(value: object) -> None:
    calls, [problem] = calls_from_openai(value)
    assert calls == [] and problem.fatal and problem.kind == "invalid_json"


def test_arguments_cut_off_inside_a_string_never_become_a_call() -> None:
    """A stream that ends at the token limit mid-argument: running ``rm -rf /tmp/bu`` (a prefix
    of what the model meant) would be worse than asking again."""
    calls, problems = calls_from_openai(
        [item("shell", '{"command": "rm -rf /tmp/build/ca'), item("get_time", '{"zone": "UTC"')]
    )
    assert [(c.name, c.arguments) for c in calls] == [("get_time", {"zone": "UTC"})]  # only closers were missing
    bad = [p for p in problems if p.fatal]
    assert len(bad) == 1 and bad[0].kind == "bad_arguments"
    assert "shell" in bad[0].message and "cut off inside a string" in bad[0].message
