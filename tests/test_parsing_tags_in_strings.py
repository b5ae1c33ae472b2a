"""Tag text inside a JSON string value is data, not a tag; a code block closed just before a call
keeps its closing fence. Checked on the whole-text parser and on the stream parser at every
split point (the stream must give the same result for any chunking)."""

from __future__ import annotations

import json

import pytest

from omni_agent.parsing import CallReady, StreamParser, TextDelta, parse_output


def stream(text: str, *, split: int | None = None, size: int | None = None) -> tuple[str, list[tuple[str, dict]]]:
    parser = StreamParser()
    if split is not None:
        chunks = [text[:split], text[split:]]
    elif size is not None:
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
    else:
        chunks = [text]
    events = [e for c in chunks for e in parser.feed(c)] + parser.close()
    visible = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "visible")
    return visible, [(e.call.name, e.call.arguments) for e in events if isinstance(e, CallReady)]


def block(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


DOC = "Wrap each call as <tool_call>{...}</tool_call>; never nest </tool_call> tags."


@pytest.mark.parametrize(
    "arguments",
    [
        {"path": "notes.md", "content": DOC},
        {"content": "</tool_call>"},
        {"content": "<tool_call>"},
        {"html": '<a title="x">see </tool_call> and <tool_call></a>', "n": 2},
        {"nested": {"list": ["</tool_call>", {"deep": "<tool_call>x</tool_call>"}]}},
    ],
)
def test_a_tag_inside_a_string_value_does_not_end_or_start_a_call(arguments: dict) -> None:
    text = "Writing it.\n" + block("write_file", arguments) + "\n" + block("done", {})
    whole = parse_output(text)
    assert [(c.name, c.arguments) for c in whole.calls] == [("write_file", arguments), ("done", {})]
    assert not [p for p in whole.problems if p.fatal]
    assert whole.visible_text == "Writing it."
    for split in range(len(text) + 1):
        assert stream(text, split=split) == ("Writing it.", [("write_file", arguments), ("done", {})]), split
    for size in (1, 2, 3, 7):
        assert stream(text, size=size) == ("Writing it.", [("write_file", arguments), ("done", {})])


def test_an_escaped_quote_does_not_end_the_string_early() -> None:
    arguments = {"command": 'echo "</tool_call>" > out.txt'}
    text = block("shell", arguments)
    assert [(c.name, c.arguments) for c in parse_output(text).calls] == [("shell", arguments)]
    assert stream(text, size=1)[1] == [("shell", arguments)]


def test_a_closing_tag_outside_strings_still_ends_the_call() -> None:
    text = '<tool_call>{"name": "a", "arguments": {"x": "1"}}</tool_call>Then text.'
    whole = parse_output(text)
    assert [(c.name, c.arguments) for c in whole.calls] == [("a", {"x": "1"})]
    assert whole.visible_text == "Then text."


CODE_THEN_CALL = "Here is the script:\n```python\nprint('hi')\n```\n" + block("run", {"cmd": "python s.py"})


def test_a_code_block_closed_just_before_a_call_keeps_its_closing_fence() -> None:
    whole = parse_output(CODE_THEN_CALL)
    assert whole.visible_text == "Here is the script:\n```python\nprint('hi')\n```"
    assert [(c.name, c.arguments) for c in whole.calls] == [("run", {"cmd": "python s.py"})]
    assert not any("code fence" in p.message for p in whole.problems)
    for split in range(len(CODE_THEN_CALL) + 1):
        assert stream(CODE_THEN_CALL, split=split)[0] == whole.visible_text, split


def test_a_fence_opened_around_a_call_after_a_closed_code_block_is_still_removed() -> None:
    text = "Code:\n```sh\nls\n```\nNow:\n```json\n" + block("run", {"cmd": "ls"}) + "\n```\nDone."
    whole = parse_output(text)
    assert whole.visible_text == "Code:\n```sh\nls\n```\nNow:\nDone."
    assert [(c.name, c.arguments) for c in whole.calls] == [("run", {"cmd": "ls"})]
    assert stream(text, size=2)[0] == whole.visible_text
