"""OpenAICompatModel against a real HTTP server on 127.0.0.1 (tests/fixtures/openai_server.py)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from omni_agent.exceptions import ModelError, ModelResponseError, ModelUnavailableError, UserError
from omni_agent.messages import (
    AssistantMessage,
    AudioPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
)
from omni_agent.models.base import GenerationSettings, ModelRequest, ModelResponse
from omni_agent.models.openai_compat import OpenAICompatModel, RetryNotice, _retry_after
from tests.fixtures.openai_server import chat_chunk

CLICK = {
    "type": "function",
    "function": {
        "name": "click",
        "description": "Click a point on the screen.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]},
    },
}


def _request(*messages: Any, tools: list[dict[str, Any]] | None = None, **settings: Any) -> ModelRequest:
    return ModelRequest(
        messages=list(messages) or [UserMessage("hi")],
        tools=tools if tools is not None else [CLICK],
        settings=GenerationSettings(**settings),
    )


def _model(server_or_url: Any, **kw: Any) -> OpenAICompatModel:
    url = server_or_url if isinstance(server_or_url, str) else server_or_url.base_url
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("api_key", "sk-test")
    return OpenAICompatModel(url, kw.pop("model", "qwen-omni-test"), **kw)


def _complete(model: OpenAICompatModel, request: ModelRequest) -> ModelResponse:
    async def go() -> ModelResponse:
        try:
            return await model.complete(request)
        finally:
            await model.aclose()

    return asyncio.run(go())


def _stream(model: OpenAICompatModel, request: ModelRequest) -> tuple[list[str], ModelResponse]:
    async def go() -> tuple[list[str], ModelResponse]:
        texts, final = [], None
        try:
            async for chunk in model.stream(request):
                texts.append(chunk.text)
                if chunk.response is not None:
                    final = chunk.response
        finally:
            await model.aclose()
        assert final is not None
        return texts, final

    return asyncio.run(go())


# ----------------------------------------------------------------------------- request


def test_request_shape_tools_media_tool_messages_and_settings(openai_server):
    openai_server.reply_chat("ok")
    screenshot = Image.new("RGB", (320, 200), (10, 200, 10))
    speech = AudioPart.from_array(np.sin(np.linspace(0, 200, 24_000)).astype(np.float32) * 0.3, 24_000)
    conversation = [
        SystemMessage("You control a desktop."),
        UserMessage([TextPart(text="Click the green box."), ImagePart.from_pil(screenshot), speech]),
        AssistantMessage("", tool_calls=[ToolCall(id="call_1", name="click", arguments={"x": 500, "y": 500})]),
        ToolMessage(result=ToolResult(call_id="call_1", name="click", content=[TextPart(text="clicked at (160, 100)")])),
    ]
    request = _request(*conversation, max_new_tokens=77, temperature=0.3, top_p=0.8, seed=7, stop=["<|im_end|>"])
    response = _complete(_model(openai_server), request)
    assert response.text == "ok"

    [sent] = openai_server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["authorization"] == "Bearer sk-test"
    body = sent.json
    assert body["model"] == "qwen-omni-test" and "stream" not in body
    assert body["tools"] == [CLICK] and "tool_choice" not in body
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"], body["stop"]) == (77, 0.3, 0.8, 7, ["<|im_end|>"])
    system, user, assistant, tool = body["messages"]
    assert system == {"role": "system", "content": "You control a desktop."}
    text, image, audio = user["content"]
    assert text == {"type": "text", "text": "Click the green box."}
    assert image["image_url"]["url"].startswith("data:image/jpeg;base64,")
    jpeg = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
    assert jpeg[:3] == b"\xff\xd8\xff"
    assert audio["type"] == "input_audio" and audio["input_audio"]["format"] == "wav"
    wav = base64.b64decode(audio["input_audio"]["data"])
    assert wav[:4] == b"RIFF" and int.from_bytes(wav[24:28], "little") == 16_000  # sample rate field
    assert assistant["tool_calls"][0]["function"] == {"name": "click", "arguments": '{"x": 500, "y": 500}'}
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "clicked at (160, 100)"}


def test_extra_body_and_explicit_tool_choice_are_sent(openai_server):
    openai_server.reply_chat("ok")
    model = _model(openai_server, extra_body={"top_k": 20, "chat_template_kwargs": {"enable_thinking": False}}, tool_choice="required")
    _complete(model, _request())
    body = openai_server.requests[0].json
    assert body["top_k"] == 20 and body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["tool_choice"] == "required"


def test_no_tools_no_tools_field(openai_server):
    openai_server.reply_chat("plain")
    _complete(_model(openai_server), _request(tools=[]))
    assert "tools" not in openai_server.requests[0].json


# ---------------------------------------------------------------------------- responses


def test_tool_call_text_in_content_is_passed_through(openai_server):
    text = 'Sure.\n<tool_call>\n{"name": "click", "arguments": {"x": 1, "y": 2}}\n</tool_call>'
    openai_server.reply_chat(text, usage={"prompt_tokens": 321, "completion_tokens": 21})
    response = _complete(_model(openai_server), _request())
    assert response.text == text
    assert response.raw_tool_calls is None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (321, 21)
    assert response.finish_reason == "stop" and response.model == "test-model"
    assert response.timings["total"] >= response.timings["request"] > 0


def test_native_tool_calls_are_kept_raw(openai_server):
    native = [
        {"id": "chatcmpl-tool-1", "type": "function", "function": {"name": "click", "arguments": '{"x": 3, "y": 4}'}},
        {"id": "chatcmpl-tool-2", "type": "function", "function": {"name": "click", "arguments": '{"x": 5, "y": 6}'}},
    ]
    openai_server.reply_chat(None, tool_calls=native, reasoning="two clicks", finish_reason="tool_calls")
    response = _complete(_model(openai_server), _request())
    assert response.raw_tool_calls == native
    assert response.text == "<think>two clicks</think>"
    assert response.finish_reason == "tool_calls"


def test_streaming_content_deltas_and_usage(openai_server):
    openai_server.reply_stream(
        [
            chat_chunk(content=""),
            chat_chunk(content="The box "),
            chat_chunk(content="is green."),
            chat_chunk(finish_reason="stop"),
            chat_chunk(usage={"prompt_tokens": 50, "completion_tokens": 4}),
        ]
    )
    texts, response = _stream(_model(openai_server), _request())
    assert [t for t in texts if t] == ["The box ", "is green."]
    assert "".join(texts) == response.text == "The box is green."
    assert response.usage.prompt_tokens == 50 and response.finish_reason == "stop"
    assert "first_token" in response.timings
    body = openai_server.requests[0].json
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_streaming_tool_call_deltas_are_assembled_by_index(openai_server):
    openai_server.reply_stream(
        [
            chat_chunk(reasoning="Need to click."),
            chat_chunk(tool_calls=[{"index": 0, "id": "call_a", "type": "function", "function": {"name": "click", "arguments": ""}}]),
            chat_chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"x": 10, '}}]),
            chat_chunk(tool_calls=[{"index": 1, "id": "call_b", "type": "function", "function": {"name": "click", "arguments": '{"x": 1'}}]),
            chat_chunk(tool_calls=[{"index": 0, "function": {"arguments": '"y": 20}'}}]),
            chat_chunk(tool_calls=[{"index": 1, "function": {"arguments": ', "y": 2}'}}], finish_reason="tool_calls"),
        ],
        event_delay_s=0.01,
    )
    texts, response = _stream(_model(openai_server), _request())
    assert "".join(texts) == response.text == "<think>Need to click.</think>"
    calls = response.raw_tool_calls
    assert [c["id"] for c in calls] == ["call_a", "call_b"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"x": 10, "y": 20}, {"x": 1, "y": 2}]
    assert response.finish_reason == "tool_calls"


def test_streamed_tool_call_text_arrives_in_pieces(openai_server):
    pieces = ["<tool", '_call>\n{"name": "click", ', '"arguments": {"x": 1, "y": 2}}\n</tool_call>']
    openai_server.reply_stream([chat_chunk(content=p) for p in pieces] + [chat_chunk(finish_reason="stop")])
    texts, response = _stream(_model(openai_server), _request())
    assert [t for t in texts if t] == pieces
    assert response.text == "".join(pieces)


def test_server_that_ignores_stream_flag_still_answers(openai_server):
    openai_server.reply_chat("not streamed")
    texts, response = _stream(_model(openai_server), _request())
    assert texts == ["not streamed"] and response.text == "not streamed"


def test_stream_cut_mid_way_is_a_clear_error(openai_server):
    openai_server.reply_stream([chat_chunk(content="Hel"), chat_chunk(content="lo")], drop_after_events=1)
    with pytest.raises(ModelUnavailableError, match=r"dropped the connection mid-stream after 1 chunk"):
        _stream(_model(openai_server), _request())


def test_stream_without_done_or_finish_reason_is_an_error(openai_server):
    openai_server.reply_stream([chat_chunk(content="Hel")], send_done=False)
    with pytest.raises(ModelResponseError, match=r"ended without \[DONE\]"):
        _stream(_model(openai_server), _request())


def test_stream_error_event_and_malformed_event(openai_server):
    openai_server.reply_stream([chat_chunk(content="a"), {"error": {"message": "engine dead", "type": "InternalServerError"}}])
    with pytest.raises(ModelError, match="engine dead"):
        _stream(_model(openai_server), _request())
    openai_server.reply_stream([chat_chunk(content="a"), "{not json"])
    with pytest.raises(ModelResponseError, match=r"malformed JSON in the stream.*'\{not json'"):
        _stream(_model(openai_server), _request())


def test_model_name_is_asked_from_the_server_when_missing(openai_server):
    openai_server.reply_json({"object": "list", "data": [{"id": "/models/Qwen3-Omni", "object": "model"}]})
    openai_server.reply_chat("hi")
    model = OpenAICompatModel(openai_server.base_url, api_key="k")
    _complete(model, _request())
    assert [r.path for r in openai_server.requests] == ["/v1/models", "/v1/chat/completions"]
    assert openai_server.requests[1].json["model"] == "/models/Qwen3-Omni"
    assert model.info.name == "/models/Qwen3-Omni" and model.info.backend == "openai"


def test_client_survives_successive_event_loops(openai_server):
    """Agent.run() may call asyncio.run per run: the pooled client must not be reused across loops."""
    model = _model(openai_server)
    for text in ("one", "two"):
        openai_server.reply_chat(text)
        assert asyncio.run(model.complete(_request())).text == text


# -------------------------------------------------------------------- errors and retries


def test_503_then_200_is_retried(openai_server):
    openai_server.reply_error(503, "warming up", kind="ServiceUnavailable")
    openai_server.reply_chat("ready")
    notices: list[RetryNotice] = []
    response = _complete(_model(openai_server, on_retry=notices.append), _request())
    assert response.text == "ready"
    assert len(openai_server.chat_requests()) == 2
    [notice] = notices
    assert notice.attempt == 1 and notice.max_attempts == 4
    assert "HTTP 503" in notice.reason and "warming up" in notice.reason
    assert 0.005 <= notice.delay_s <= 0.01  # backoff_s with jitter in [0.5, 1]


def test_429_waits_retry_after(openai_server):
    openai_server.reply_error(429, "rate limited", headers={"Retry-After": "0.3"}, kind="RateLimitError")
    openai_server.reply_chat("after wait")
    notices: list[RetryNotice] = []
    response = _complete(_model(openai_server, on_retry=notices.append), _request())
    assert response.text == "after wait"
    assert [n.delay_s for n in notices] == [0.3]


def test_retry_after_header_forms():
    assert _retry_after({"retry-after": "2"}) == 2.0
    assert _retry_after({"retry-after-ms": "1500"}) == 1.5
    assert 58 <= _retry_after({"retry-after": _http_date_in(60)}) <= 60
    assert _retry_after({"retry-after": "soon"}) is None
    assert _retry_after({}) is None


def _http_date_in(seconds: float) -> str:
    import email.utils
    import time

    return email.utils.formatdate(time.time() + seconds, usegmt=True)


def test_persistent_503_gives_up_after_max_retries(openai_server):
    for _ in range(3):
        openai_server.reply_error(503, "boom", kind="ServiceUnavailableError")
    with pytest.raises(ModelUnavailableError, match=r"unavailable \(HTTP 503\) after 3 attempts: boom"):
        _complete(_model(openai_server, max_retries=2), _request())
    assert len(openai_server.requests) == 3


def test_other_5xx_are_named_and_never_retried(openai_server):
    # The server took the request and failed: a retry would regenerate the whole answer (issue 12).
    for status in (500, 502):
        openai_server.reply_error(status, "boom", kind="InternalServerError")
        with pytest.raises(ModelError, match=rf"failed with a server error \(HTTP {status}\): boom") as info:
            _complete(_model(openai_server, max_retries=2), _request())
        assert not isinstance(info.value, ModelUnavailableError)
    assert len(openai_server.requests) == 2


def test_400_is_not_retried_and_shows_the_server_message(openai_server):
    openai_server.reply_error(400, "This model's maximum context length is 32768 tokens.")
    openai_server.reply_chat("never used")
    with pytest.raises(ModelError, match=r"rejected the request \(HTTP 400\): This model's maximum context length is 32768"):
        _complete(_model(openai_server), _request())
    assert len(openai_server.requests) == 1 and openai_server.pending == 1


def test_401_and_404_say_what_to_check(openai_server):
    openai_server.reply_error(401, "invalid api key", kind="AuthenticationError")
    with pytest.raises(ModelUnavailableError, match=r"HTTP 401.*invalid api key.*OPENAI_API_KEY"):
        _complete(_model(openai_server), _request())
    openai_server.reply_json({"detail": "Not Found"}, status=404)
    with pytest.raises(ModelUnavailableError, match=r"HTTP 404: Not Found; check that base_url"):
        _complete(_model(openai_server), _request())


def test_auto_tool_choice_refusal_falls_back_to_none(openai_server):
    """vLLM without --enable-auto-tool-choice: tools stay in the prompt under tool_choice="none"."""
    openai_server.reply_error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    openai_server.reply_chat('<tool_call>\n{"name": "click", "arguments": {"x": 1, "y": 1}}\n</tool_call>')
    openai_server.reply_chat("second step")
    model = _model(openai_server)

    async def two_steps() -> list[str]:
        try:
            return [(await model.complete(_request())).text for _ in range(2)]
        finally:
            await model.aclose()

    texts = asyncio.run(two_steps())
    assert texts[0].startswith("<tool_call>") and texts[1] == "second step"
    sent = [r.json for r in openai_server.requests]
    assert "tool_choice" not in sent[0]
    assert sent[1]["tool_choice"] == "none" and sent[1]["tools"] == [CLICK]
    assert sent[2]["tool_choice"] == "none"  # remembered


def test_explicit_auto_tool_choice_is_not_overridden(openai_server):
    openai_server.reply_error(400, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set')
    with pytest.raises(ModelError, match="enable-auto-tool-choice"):
        _complete(_model(openai_server, tool_choice="auto"), _request())
    assert len(openai_server.requests) == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", r"malformed JSON .*HTTP 200.*'<html><body>502 Bad Gateway"),
        (b'{"id": "x", "choices": [', r"malformed JSON .*'\{\"id\": \"x\", \"choices\": \['"),
        (b'{"id": "x", "object": "chat.completion"}', r"without choices: '\{\"id\": \"x\""),
    ],
)
def test_malformed_bodies_are_clear_errors_with_the_first_bytes(openai_server, body, match):
    openai_server.reply_raw(body)
    with pytest.raises(ModelResponseError, match=match):
        _complete(_model(openai_server), _request())
    assert len(openai_server.requests) == 1


def test_slow_response_times_out_fast_and_is_not_retried(openai_server):
    openai_server.reply_chat("too late", delay_s=5)
    with pytest.raises(ModelUnavailableError, match=r"did not answer within 0.2 s \(timeout_s\)"):
        _complete(_model(openai_server, timeout_s=0.2), _request())
    assert len(openai_server.requests) == 1


def test_stalled_stream_times_out(openai_server):
    openai_server.reply_stream([chat_chunk(content="a"), chat_chunk(content="b", finish_reason="stop")], event_delay_s=5)
    with pytest.raises(ModelUnavailableError, match=r"stopped sending for 0.2 s \(timeout_s\) after 1 chunk"):
        _stream(_model(openai_server, timeout_s=0.2), _request())


def test_dropped_connection_is_retried(openai_server):
    openai_server.reply_drop()
    openai_server.reply_chat("second try")
    notices: list[RetryNotice] = []
    assert _complete(_model(openai_server, on_retry=notices.append), _request()).text == "second try"
    assert len(openai_server.requests) == 2
    assert "closed the connection" in notices[0].reason


def test_server_down_is_a_clear_unavailable_error(refused_base_url):
    notices: list[RetryNotice] = []
    model = _model(refused_base_url, max_retries=2, backoff_s=0.001, on_retry=notices.append)
    with pytest.raises(ModelUnavailableError) as info:
        _complete(model, _request())
    assert str(info.value) == f"cannot reach {refused_base_url}: connection refused (3 attempts)"
    assert len(notices) == 2
    with pytest.raises(ModelUnavailableError, match="connection refused"):
        _stream(_model(refused_base_url, max_retries=0), _request())


def test_bad_constructor_arguments_are_user_errors():
    with pytest.raises(UserError, match="base_url must start with http"):
        OpenAICompatModel("127.0.0.1:8000/v1", "m")
    with pytest.raises(UserError, match="timeout_s must be > 0"):
        OpenAICompatModel("http://127.0.0.1:8000/v1", "m", timeout_s=0)
    with pytest.raises(UserError, match="tool_choice"):
        OpenAICompatModel("http://127.0.0.1:8000/v1", "m", tool_choice="always")  # type: ignore[arg-type]
    model = OpenAICompatModel("http://127.0.0.1:8000/v1/chat/completions/", "m", can_hear=False, coordinate_space="absolute_resized")
    assert model.base_url == "http://127.0.0.1:8000/v1"
    assert (model.info.backend, model.info.can_hear, model.info.coordinate_space) == ("openai", False, "absolute_resized")


def test_api_key_from_environment(openai_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    openai_server.reply_chat("ok")
    _complete(OpenAICompatModel(openai_server.base_url, "m"), _request())
    assert openai_server.requests[0].headers["authorization"] == "Bearer sk-from-env"
    monkeypatch.delenv("OPENAI_API_KEY")
    openai_server.reply_chat("ok")
    _complete(OpenAICompatModel(openai_server.base_url, "m"), _request())
    assert "authorization" not in openai_server.requests[1].headers


def test_audio_to_deaf_model_is_refused_before_sending(openai_server):
    model = _model(openai_server, can_hear=False)
    with pytest.raises(UserError, match="cannot hear"):
        _complete(model, _request(UserMessage([AudioPart.from_array(np.zeros(1600), 16_000)])))
    assert openai_server.requests == []
