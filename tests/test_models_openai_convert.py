"""Conversation -> OpenAI wire format, and OpenAI answers -> ModelResponse (no network)."""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np
import pytest
from PIL import Image

from omni_agent.exceptions import ModelError, ModelResponseError, UserError
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
    VideoPart,
)
from omni_agent.models.base import GenerationSettings
from omni_agent.models.openai_convert import (
    ConversionOptions,
    StreamAssembler,
    messages_to_openai,
    response_from_openai,
    settings_to_openai,
    tools_to_openai,
)

CLICK_SCHEMA = {
    "type": "function",
    "function": {
        "name": "click",
        "description": "Click a point.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]},
    },
}


def _decode_data_url(url: str) -> tuple[str, bytes]:
    header, _, payload = url.partition(",")
    assert header.endswith(";base64"), header
    return header[len("data:") : -len(";base64")], base64.b64decode(payload)


def _decode_wav(b64: str) -> tuple[np.ndarray, int, int]:
    with wave.open(io.BytesIO(base64.b64decode(b64)), "rb") as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32767, rate, channels


def test_text_only_messages_are_plain_strings():
    out = messages_to_openai([SystemMessage("be brief"), UserMessage([TextPart(text="a"), TextPart(text="b")])])
    assert out == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ab"}]


def test_image_becomes_jpeg_data_url_of_same_size(tmp_path):
    image = Image.new("RGB", (64, 40), (200, 30, 30))
    png = tmp_path / "shot.png"
    image.save(png)
    out = messages_to_openai([UserMessage([TextPart(text="look"), ImagePart.from_pil(image), ImagePart.from_path(png)])])
    parts = out[0]["content"]
    assert parts[0] == {"type": "text", "text": "look"}
    for part in parts[1:]:
        assert part["type"] == "image_url"
        media_type, data = _decode_data_url(part["image_url"]["url"])
        assert media_type == "image/jpeg"
        decoded = Image.open(io.BytesIO(data))
        assert decoded.format == "JPEG" and decoded.size == (64, 40)
        r, g, b = decoded.convert("RGB").getpixel((32, 20))
        assert r > 150 and g < 80 and b < 80


def test_relative_media_paths_resolve_against_media_root(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    out = messages_to_openai([UserMessage([ImagePart(path="a.png")])], ConversionOptions(media_root=tmp_path))
    assert out[0]["content"][0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    with pytest.raises(UserError, match="cannot read image 'missing.png'"):
        messages_to_openai([UserMessage([ImagePart(path="missing.png")])], ConversionOptions(media_root=tmp_path))


def test_image_url_is_passed_through():
    out = messages_to_openai([UserMessage([ImagePart(path="https://example.org/cat.png")])])
    assert out[0]["content"][0]["image_url"]["url"] == "https://example.org/cat.png"


def test_audio_becomes_16k_mono_wav_input_audio(tmp_path):
    rate = 44_100
    t = np.arange(rate // 2) / rate  # 0.5 s
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    import soundfile as sf

    sf.write(tmp_path / "cmd.wav", stereo, rate)
    in_memory = AudioPart.from_array(np.full(8000, 0.25, dtype=np.float32), 16_000)
    out = messages_to_openai([UserMessage([AudioPart.from_path(tmp_path / "cmd.wav"), in_memory])])
    first, second = out[0]["content"]
    assert first["type"] == "input_audio" and first["input_audio"]["format"] == "wav"
    samples, out_rate, channels = _decode_wav(first["input_audio"]["data"])
    assert (out_rate, channels) == (16_000, 1)
    assert abs(len(samples) - 8000) <= 2  # 0.5 s at 16 kHz
    assert 0.4 < np.abs(samples).max() <= 0.51  # the tone survived resampling
    samples2, _, _ = _decode_wav(second["input_audio"]["data"])
    assert len(samples2) == 8000 and np.allclose(samples2, 0.25, atol=1e-3)


def test_audio_to_model_that_cannot_hear_is_refused_or_uses_transcript():
    opts = ConversionOptions(can_hear=False, model_name="vl-model")
    with pytest.raises(UserError, match="vl-model cannot hear"):
        messages_to_openai([UserMessage([AudioPart.from_array(np.zeros(160), 16_000)])], opts)
    spoken = AudioPart.from_array(np.zeros(160), 16_000, transcript="open the menu")
    out = messages_to_openai([UserMessage([spoken])], opts)
    assert out[0]["content"] == [{"type": "text", "text": "[spoken] open the menu"}]


def test_image_to_model_that_cannot_see_is_refused():
    with pytest.raises(UserError, match="cannot see"):
        messages_to_openai([UserMessage([ImagePart.from_pil(Image.new("RGB", (4, 4)))])], ConversionOptions(can_see=False))


def test_video_by_url_path_and_file_url(tmp_path):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42fake")
    remote = messages_to_openai([UserMessage([VideoPart(path="https://example.org/v.mp4")])])
    assert remote[0]["content"][0] == {"type": "video_url", "video_url": {"url": "https://example.org/v.mp4"}}
    inline = messages_to_openai([UserMessage([VideoPart(path=str(video))])])
    media_type, data = _decode_data_url(inline[0]["content"][0]["video_url"]["url"])
    assert media_type == "video/mp4" and data == video.read_bytes()
    local = messages_to_openai([UserMessage([VideoPart(path=str(video))])], ConversionOptions(video_as="file_url"))
    assert local[0]["content"][0]["video_url"]["url"] == video.resolve().as_uri()
    with pytest.raises(UserError, match="video file not found"):
        messages_to_openai([UserMessage([VideoPart(path=str(tmp_path / "nope.mp4"))])])


def test_assistant_tool_calls_and_tool_results_in_order():
    calls = [ToolCall(id="call_a", name="click", arguments={"x": 1, "y": 2}), ToolCall(id="call_b", name="type_text", arguments={"text": "héllo"})]
    shot = Image.new("RGB", (16, 16), (0, 0, 255))
    messages = [
        UserMessage("do it"),
        AssistantMessage("", tool_calls=calls, thinking="secret plan"),
        ToolMessage(result=ToolResult(call_id="call_a", name="click", content=[TextPart(text="clicked"), ImagePart.from_pil(shot)])),
        ToolMessage(result=ToolResult(call_id="call_b", name="type_text", content=[TextPart(text="bad key")], is_error=True)),
        UserMessage("next"),
    ]
    out = messages_to_openai(messages)
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "tool", "user", "user"]
    assistant = out[1]
    assert assistant["content"] is None
    assert "secret plan" not in json.dumps(assistant)
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_a", "call_b"]
    assert all(c["type"] == "function" for c in assistant["tool_calls"])
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"text": "héllo"}
    assert out[2]["tool_call_id"] == "call_a" and out[2]["content"].startswith("clicked")
    assert "next user message" in out[2]["content"]
    assert out[3] == {"role": "tool", "tool_call_id": "call_b", "content": "bad key"}
    # Images returned by tools follow the run of tool messages, labelled with their call.
    media = out[4]["content"]
    assert media[0] == {"type": "text", "text": "Media returned by click (call call_a):"}
    assert media[1]["type"] == "image_url" and media[1]["image_url"]["url"].startswith("data:image/jpeg")
    assert out[5] == {"role": "user", "content": "next"}


def test_assistant_text_without_calls():
    out = messages_to_openai([AssistantMessage("Done.", raw_text="<think>x</think>Done.")])
    assert out == [{"role": "assistant", "content": "Done."}]


def test_tools_are_wrapped_as_functions():
    bare = {"name": "scroll", "description": "Scroll.", "parameters": {"type": "object", "properties": {}}}
    out = tools_to_openai([CLICK_SCHEMA, bare, {"name": "noop"}])
    assert out[0] == CLICK_SCHEMA
    assert out[1] == {"type": "function", "function": bare}
    assert out[2]["function"]["parameters"] == {"type": "object", "properties": {}}
    with pytest.raises(UserError, match="no function name"):
        tools_to_openai([{"type": "function", "function": {"description": "x"}}])


def test_settings_map_to_request_fields():
    body = settings_to_openai(GenerationSettings(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=3, stop=["END"], top_k=20))
    assert body == {"max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "seed": 3, "stop": ["END"], "top_k": 20}
    assert settings_to_openai(GenerationSettings()) == {"max_tokens": 1024, "temperature": 0.0, "top_p": 1.0}


def test_response_keeps_tool_call_text_reasoning_and_native_calls():
    native = [{"id": "call_1", "type": "function", "function": {"name": "click", "arguments": '{"x": 5, "y": 6}'}}]
    body = {
        "model": "qwen",
        "choices": [{"message": {"content": '<tool_call>\n{"name": "click", "arguments": {}}\n</tool_call>', "reasoning_content": "think first", "tool_calls": native}, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 64}},
    }
    r = response_from_openai(body)
    assert r.text == '<think>think first</think><tool_call>\n{"name": "click", "arguments": {}}\n</tool_call>'
    assert r.raw_tool_calls == native and r.tool_calls is None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.cached_tokens) == (100, 7, 64)
    assert r.finish_reason == "tool_calls" and r.model == "qwen"


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ({"object": "chat.completion"}, ModelResponseError, "without choices"),
        ({"choices": []}, ModelResponseError, "without choices"),
        ({"choices": [{"text": "legacy"}]}, ModelResponseError, "choices\\[0\\].message"),
        ([1, 2], ModelResponseError, "not an object"),
        ({"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}, ModelError, "CUDA out of memory"),
    ],
)
def test_unusable_bodies_raise_clear_errors(body, error, match):
    with pytest.raises(error, match=match):
        response_from_openai(body, raw=json.dumps(body).encode(), where="http://x/v1/chat/completions")


def test_stream_assembler_joins_content_reasoning_and_interleaved_call_deltas():
    asm = StreamAssembler()
    pieces = [
        asm.feed({"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "plan"}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"reasoning_content": " more"}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"content": "Clicking"}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_x", "type": "function", "function": {"name": "click", "arguments": ""}}]}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "id": "call_y", "function": {"name": "scroll", "arguments": '{"dy": '}}]}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x": 1,'}}]}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "y": 2}'}}, {"index": 1, "function": {"arguments": "-3}"}}]}}]}),
        asm.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        asm.feed({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}}),
    ]
    tail, response = asm.finish()
    assert "".join(pieces) + tail == response.text == "<think>plan more</think>Clicking"
    assert response.raw_tool_calls == [
        {"id": "call_x", "type": "function", "function": {"name": "click", "arguments": '{"x": 1, "y": 2}'}},
        {"id": "call_y", "type": "function", "function": {"name": "scroll", "arguments": '{"dy": -3}'}},
    ]
    assert response.finish_reason == "tool_calls" and response.usage.completion_tokens == 4


def test_stream_assembler_closes_thinking_at_the_end_and_reports_error_chunks():
    asm = StreamAssembler()
    first = asm.feed({"choices": [{"index": 0, "delta": {"reasoning": "only thoughts"}}]})
    tail, response = asm.finish()
    assert first + tail == response.text == "<think>only thoughts</think>"
    with pytest.raises(ModelError, match="mid-stream: overloaded"):
        StreamAssembler().feed({"error": {"message": "overloaded"}})
