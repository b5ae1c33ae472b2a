"""StreamParser: calls as soon as their block closes, no tool-call text ever shown, and for any
chunking the same result as parse_output on the whole text (hypothesis property)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from omni_agent.parsing import CallReady, Problem, StreamParser, TextDelta, parse_output
from omni_agent.parsing.qwen import thinking_opened_by_template

FRAGMENTS = [
    "<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_end|>", "<|im_start|>assistant\n",
    "<|im_start|>", "<|endoftext|>", "<|im_start|>user", "tool  ", " \t ", "```json\n", "```", "``", "`", "\n", "\n\n", " ", "<", "<t",
    "<tool_", "</tool", "<|", "|>", "</", "<th", "assistant", "user\n", "Hello there.", "x < y",
    '{"name": "a", "arguments": {"x": 1}}', '{"name": "b", "arguments": "{\\"y\\": 2}"}',
    "{'name': 'c', 'arguments': {'z': True,}}", '{"function": "d", "parameters": {}}', "}", "{", "]",
    '{"arguments": {}}', "Ünïcödé 🌍", "\t", "not json", '"', "'",
]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=25).map("".join)


def run_stream(text: str, sizes: list[int], *, starts_in_thinking: bool) -> list[object]:
    parser = StreamParser(starts_in_thinking=starts_in_thinking)
    events: list[object] = []
    pos, i = 0, 0
    while pos < len(text):
        size = sizes[i % len(sizes)] if sizes else len(text)
        events += parser.feed(text[pos : pos + size])
        pos += size
        i += 1
    return events + parser.close()


def summary(events: list[object]) -> tuple[str, str, list[tuple[str, dict]], list[tuple[str, str, bool]]]:
    visible = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "visible")
    thinking = "".join(e.text for e in events if isinstance(e, TextDelta) and e.channel == "thinking")
    calls = [(e.call.name, e.call.arguments) for e in events if isinstance(e, CallReady)]
    problems = [(e.problem.kind, e.problem.message, e.problem.fatal) for e in events if isinstance(e, Problem)]
    return visible, thinking, calls, problems


@settings(max_examples=400, deadline=None)
@given(text=texts, sizes=st.lists(st.integers(min_value=1, max_value=12), max_size=8), starts_in_thinking=st.booleans())
def test_any_chunking_equals_parse_output(text: str, sizes: list[int], starts_in_thinking: bool) -> None:
    whole = parse_output(text, starts_in_thinking=starts_in_thinking)
    visible, thinking, calls, problems = summary(run_stream(text, sizes, starts_in_thinking=starts_in_thinking))
    assert visible == whole.visible_text
    assert thinking == (whole.thinking or "")
    assert calls == [(c.name, c.arguments) for c in whole.calls]
    assert problems == [(p.kind, p.message, p.fatal) for p in whole.problems]
    assert not any("internal parser error" in p[1] for p in problems)


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_auto_thinking_mode_is_the_explicit_mode_it_detects(text: str) -> None:
    def without_ids(out: object) -> dict:
        dumped = out.model_dump()  # type: ignore[attr-defined]
        for call in dumped["calls"]:
            call.pop("id")
        return dumped

    explicit = parse_output(text, starts_in_thinking=thinking_opened_by_template(text))
    assert without_ids(parse_output(text)) == without_ids(explicit)


def test_call_is_reported_when_its_closing_tag_arrives_not_at_close() -> None:
    raw = 'Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\nMore text'
    parser = StreamParser()
    close_at = raw.index("</tool_call>") + len("</tool_call>")
    seen: list[object] = []
    for i, ch in enumerate(raw):
        events = parser.feed(ch)
        seen += events
        ready = [e for e in events if isinstance(e, CallReady)]
        if i == close_at - 1:
            assert [(e.call.name, e.call.arguments) for e in ready] == [("get_weather", {"city": "Oslo"})]
        else:
            assert ready == []
    assert summary(seen + parser.close())[0] == "Checking.\nMore text"


def test_partial_tag_at_chunk_boundary_is_never_shown() -> None:
    parser = StreamParser()
    first = parser.feed("Let me look that up. <tool_")
    assert summary(first)[0] == "Let me look that up."
    assert parser.feed("call>\n{") == []
    assert parser.in_tool_call
    rest = parser.feed('"name": "search", "arguments": {"q": "x"}}\n</tool_') + parser.feed("call>")
    assert summary(rest)[2] == [("search", {"q": "x"})]
    assert not parser.in_tool_call


def test_held_back_text_is_released_when_it_turns_out_not_to_be_a_tag() -> None:
    parser = StreamParser()
    assert summary(parser.feed("a <t"))[0] == "a"
    assert summary(parser.feed("able> b"))[0] == " <table> b"


def test_visible_and_thinking_deltas_are_separate_channels() -> None:
    parser = StreamParser()
    events = parser.feed("<think>plan: call") + parser.feed(" nothing</think>\nAnswer: ") + parser.feed("42") + parser.close()
    assert [(e.channel, e.text) for e in events if isinstance(e, TextDelta)] == [
        ("thinking", "plan: call"),
        ("thinking", " nothing"),
        ("visible", "Answer:"),
        ("visible", " 42"),
    ]


def test_thinking_template_mode_streams_thinking_until_close_tag() -> None:
    parser = StreamParser(starts_in_thinking=True)
    events = parser.feed("reasoning ") + parser.feed("here</think>\n\nDone.") + parser.close()
    visible, thinking, _, _ = summary(events)
    assert (visible, thinking) == ("Done.", "reasoning here")


def test_unclosed_final_block_is_parsed_on_close() -> None:
    parser = StreamParser()
    assert parser.feed('<tool_call>\n{"name": "screenshot", "arguments": {}}') == []
    events = parser.close()
    assert summary(events)[2] == [("screenshot", {})]
    assert [e.problem.kind for e in events if isinstance(e, Problem)] == ["unclosed_block"]
    assert parser.close() == []


def test_feeding_after_close_or_non_text_is_reported_not_raised() -> None:
    parser = StreamParser()
    parser.close()
    [event] = parser.feed("late text")
    assert isinstance(event, Problem) and not event.problem.fatal
    [bad] = StreamParser().feed(b"bytes")  # type: ignore[arg-type]
    assert isinstance(bad, Problem) and bad.problem.fatal


def test_fence_around_a_call_is_removed_but_a_real_code_block_stays() -> None:
    call = json.dumps({"name": "run", "arguments": {"cmd": "ls"}})
    parser = StreamParser()
    events = []
    for chunk in ["Running:\n``", "`json\n<tool", f"_call>{call}</tool_call>\n`", "``\nDone. ```py", "\nx = 1\n```"]:
        events += parser.feed(chunk)
    visible, _, calls, _ = summary(events + parser.close())
    assert calls == [("run", {"cmd": "ls"})]
    assert visible == "Running:\nDone. ```py\nx = 1\n```"
