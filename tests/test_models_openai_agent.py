"""The agent loop driving OpenAICompatModel against the real 127.0.0.1 test server: native
``tool_calls`` (server with a tool parser) and ``<tool_call>`` text (server without one) both
run the tool, and the results go back as ``role: tool`` messages with the matching ids."""

from __future__ import annotations

from omni_agent.loop import Agent, StopReason
from omni_agent.models.spec import load_model
from omni_agent.tool import tool
from tests.fixtures.openai_server import chat_chunk


def _click_tool(clicks: list[tuple[int, int]]):
    @tool
    def click(x: int, y: int) -> str:
        """Click a point on the screen.

        Args:
            x: Horizontal position on the 0..1000 grid.
            y: Vertical position on the 0..1000 grid.
        """
        clicks.append((x, y))
        return f"clicked at ({x}, {y})"

    return click


def test_agent_runs_native_and_text_tool_calls_over_http(openai_server, tmp_path):
    openai_server.reply_stream(
        [
            chat_chunk(content="Clicking the button."),
            chat_chunk(tool_calls=[{"index": 0, "id": "call_native_1", "type": "function", "function": {"name": "click", "arguments": '{"x": 1'}}]),
            chat_chunk(tool_calls=[{"index": 0, "function": {"arguments": ', "y": 2}'}}], finish_reason="tool_calls"),
            chat_chunk(usage={"prompt_tokens": 40, "completion_tokens": 9}),
        ]
    )
    text_call = '<tool_call>\n{"name": "click", "arguments": {"x": 3, "y": 4}}\n</tool_call>'
    openai_server.reply_stream([chat_chunk(content=text_call[:20]), chat_chunk(content=text_call[20:], finish_reason="stop")])
    openai_server.reply_stream([chat_chunk(reasoning="Both clicks done."), chat_chunk(content="Done.", finish_reason="stop")])

    clicks: list[tuple[int, int]] = []
    model = load_model(f"openai:{openai_server.base_url}#qwen-omni-test?retries=0")
    agent = Agent(model, [_click_tool(clicks)], max_steps=5, workspace=tmp_path)
    result = agent.run("Click the two buttons.")

    assert result.stop_reason == StopReason.ANSWER, result.error
    assert result.answer == "Done."
    assert clicks == [(1, 2), (3, 4)]
    assert result.model == "openai:qwen-omni-test"

    bodies = [r.json for r in openai_server.chat_requests()]
    assert len(bodies) == 3
    assert [t["function"]["name"] for t in bodies[0]["tools"]] == ["click"]
    # Step 2 sees the native call and its result, matched by the server's id.
    assistant, result_msg = bodies[1]["messages"][-2:]
    assert assistant["tool_calls"][0]["id"] == "call_native_1"
    assert result_msg == {"role": "tool", "tool_call_id": "call_native_1", "content": "clicked at (1, 2)"}
    # Step 3 sees the call parsed from <tool_call> text under the id the parser gave it.
    assistant, result_msg = bodies[2]["messages"][-2:]
    [sent_call] = assistant["tool_calls"]
    assert sent_call["function"]["name"] == "click" and sent_call["id"].startswith("call_")
    assert result_msg["role"] == "tool" and result_msg["tool_call_id"] == sent_call["id"]
    assert result_msg["content"] == "clicked at (3, 4)"


def test_agent_reports_a_down_server_in_one_line(refused_base_url, tmp_path):
    model = load_model(f"openai:{refused_base_url}#m?retries=1&backoff=0.001")
    result = Agent(model, [_click_tool([])], max_steps=2, workspace=tmp_path).run("Click.")
    assert result.stop_reason == StopReason.MODEL_ERROR
    assert f"cannot reach {refused_base_url}: connection refused (2 attempts)" in (result.error or "")
    assert "Traceback" not in (result.error or "")


def test_server_variants_dict_arguments_null_content_and_unknown_fields(openai_server, tmp_path):
    """Servers differ: arguments as an already-parsed object, ``content: null`` deltas, fields
    the protocol does not name, a server that answers a stream request with one JSON body."""
    from tests.fixtures.openai_server import chat_completion

    def chunk(delta, finish=None):
        return {"id": "x", "object": "chat.completion.chunk", "model": "m", "system_fingerprint": "fp",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "stop_reason": None}]}  # fmt: skip

    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "click", "arguments": {"x": 5, "y": 6}}}
    openai_server.reply_stream([chunk({"role": "assistant", "content": None}),
                                chunk({"content": None, "tool_calls": [call]}), chunk({}, "tool_calls")])  # fmt: skip
    native = {"id": "c2", "type": "function", "function": {"name": "click", "arguments": {"x": 7, "y": 8}}, "extra": 1}
    whole = chat_completion(None, tool_calls=[native])
    whole["choices"][0]["message"].update(refusal=None, audio=None)
    openai_server.reply_json(whole)  # a server that ignored "stream": true
    openai_server.reply_stream([chunk({"content": "Done."}, "stop")])
    clicks: list[tuple[int, int]] = []
    agent = Agent(load_model(f"openai:{openai_server.base_url}#m?retries=0"), [_click_tool(clicks)], workspace=tmp_path)
    result = agent.run("Click twice.")
    assert result.stop_reason == StopReason.ANSWER and result.answer == "Done.", result.error
    assert clicks == [(5, 6), (7, 8)]
    sent = openai_server.chat_requests()[1].json["messages"][-2]["tool_calls"][0]
    assert sent["id"] == "c1" and sent["function"]["arguments"] == '{"x": 5, "y": 6}'  # sent back as a JSON string
