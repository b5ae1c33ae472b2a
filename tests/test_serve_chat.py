"""Chat Completions over real HTTP on 127.0.0.1 with the official ``openai`` SDK as the client.

The tiny Qwen3-Omni (batched engine) answers text, image, audio-in and audio-out requests; the
tool-call wire format (``tool_calls``, streamed deltas, ``finish_reason``) is driven by a
scripted policy served the same way, because a random tiny model never writes a valid call.
"""

from __future__ import annotations

import base64
import io
import json
import wave

import numpy as np
import pytest

from tests.fixtures.serve import API_KEY, serve_backend

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _png_data_url(size: tuple[int, int] = (64, 48)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav_base64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode()


def _wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == 24_000
        return w.getnframes() / w.getframerate()


# ------------------------------------------------------------------------------- tiny model


def test_models_health_and_auth(served_tiny_omni):
    import httpx
    import openai

    client = served_tiny_omni.client()
    assert [m.id for m in client.models.list()] == ["tiny-omni"]
    assert httpx.get(served_tiny_omni.server.url + "/health").json()["status"] == "ok"
    bad = openai.OpenAI(base_url=served_tiny_omni.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.body["code"] == "invalid_api_key"
    assert httpx.get(served_tiny_omni.server.url + "/metrics").status_code == 401
    metrics = httpx.get(served_tiny_omni.server.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert "omni_batch_size" in metrics.text and "omni_time_to_first_token_seconds" in metrics.text


def test_text_image_and_usage_greedy_is_repeatable(served_tiny_omni):
    client = served_tiny_omni.client()
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": [{"type": "text", "text": "What colour?"},
                                     {"type": "image_url", "image_url": {"url": _png_data_url()}}]},
    ]
    first = client.chat.completions.create(model="tiny-omni", messages=messages, max_tokens=6, temperature=0)
    again = client.chat.completions.create(model="tiny-omni", messages=messages, max_tokens=6, temperature=0)
    text_only = client.chat.completions.create(model="tiny-omni", messages=[messages[0], {"role": "user", "content": "What colour?"}],
                                               max_tokens=6)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.completion_tokens >= 1 and first.model == "tiny-omni"
    assert first.usage.prompt_tokens > text_only.usage.prompt_tokens  # the image's tokens are in the prompt
    assert first.choices[0].finish_reason in ("stop", "length")


def test_audio_in_then_audio_out_streamed_and_whole(served_tiny_omni, spoken_command_wav):
    client = served_tiny_omni.client()
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": _wav_base64(spoken_command_wav), "format": "wav"}}]}]
    heard = client.chat.completions.create(model="tiny-omni", messages=messages, max_tokens=4)
    plain = client.chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert heard.usage.prompt_tokens > plain.usage.prompt_tokens + 10  # the audio's tokens

    def spoken(max_tokens: int):
        return client.chat.completions.create(
            model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=max_tokens,
            modalities=["text", "audio"], audio={"voice": "Ethan", "format": "wav"})

    short, long = spoken(2), spoken(12)
    for answer in (short, long):
        message = answer.choices[0].message
        if not message.content or not message.content.strip():
            pytest.fail(f"the tiny model wrote no visible text: {message}")
        assert message.audio.transcript == message.content.strip()
    short_s = _wav_seconds(base64.b64decode(short.choices[0].message.audio.data))
    long_s = _wav_seconds(base64.b64decode(long.choices[0].message.audio.data))
    assert 0 < short_s < long_s  # one frame per text token: length follows the text

    stream = client.chat.completions.create(
        model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=12, stream=True,
        modalities=["text", "audio"], audio={"voice": "Ethan", "format": "pcm16"}, stream_options={"include_usage": True})
    text, pcm, transcript, usage = "", b"", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            audio = choice.delta.audio
            if audio:
                audio = audio.model_dump()
                pcm += base64.b64decode(audio["data"])
                transcript = audio.get("transcript") or transcript
    assert text == long.choices[0].message.content  # greedy: the same answer streamed
    assert transcript == text.strip() and len(pcm) // 2 == round(long_s * 24_000)
    assert usage is not None and usage.completion_tokens == long.usage.completion_tokens
    assert served_tiny_omni.metric("omni_time_to_first_audio_seconds_count") >= 3


def test_named_tool_choice_forces_the_call_opening(served_tiny_omni):
    client = served_tiny_omni.client()
    answer = client.chat.completions.create(
        model="tiny-omni", messages=[{"role": "user", "content": "weather in Paris?"}], max_tokens=5,
        tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    message = answer.choices[0].message
    # The random tiny model cannot finish the JSON: the call text never leaks into content and
    # the parser's findings reach the client in the documented field.
    assert "<tool_call>" not in (message.content or "")
    problems = (message.model_extra or {}).get("parse_problems")
    assert problems and problems[0]["kind"] in ("invalid_json", "unclosed_block", "bad_arguments")


# --------------------------------------------------------------- tool-call wire format (scripted)


@pytest.fixture(scope="module")
def served_script():
    from omni_agent.models.scripted import ScriptedModel
    from omni_agent.serve.backend import SerialBackend
    from omni_agent.serve.metrics import ServeMetrics

    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    outputs = [call, call, call, "It is sunny in Paris.", '<think>hmm</think>Broken: <tool_call>\n{"arguments": {"city": "Paris"}}\n</tool_call>']
    model = ScriptedModel(outputs, name="script")
    served = serve_backend(SerialBackend(model), ServeMetrics())
    yield served
    served.server.stop()


def test_tool_calls_whole_streamed_and_unvoiced(served_script):
    client = served_script.client()
    messages = [{"role": "user", "content": "weather in Paris?"}]
    whole = client.chat.completions.create(model="script", messages=messages, tools=[WEATHER_TOOL])
    call = whole.choices[0].message.tool_calls[0]
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    stream = client.chat.completions.create(model="script", messages=messages, tools=[WEATHER_TOOL], stream=True,
                                            stream_options={"include_usage": True})
    deltas = [c for c in stream]
    calls = [tc for c in deltas for ch in c.choices for tc in (ch.delta.tool_calls or [])]
    assert [(tc.index, tc.function.name) for tc in calls] == [(0, "get_weather")]
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}
    assert not "".join(ch.delta.content or "" for c in deltas for ch in c.choices)
    assert [ch.finish_reason for c in deltas for ch in c.choices if ch.finish_reason] == ["tool_calls"]
    assert deltas[-1].usage is not None and deltas[-1].choices == []

    spoken = client.chat.completions.create(model="script", messages=messages, tools=[WEATHER_TOOL],
                                            modalities=["text", "audio"], audio={"voice": "x", "format": "wav"})
    assert spoken.choices[0].message.tool_calls and spoken.choices[0].message.audio is None  # calls are never voiced

    result = client.chat.completions.create(model="script", messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ], tools=[WEATHER_TOOL])
    assert result.choices[0].message.content == "It is sunny in Paris."
    sent = served_script.backend.model.requests[-1].messages
    assert sent[-1].result.name == "get_weather" and sent[-1].result.text == "sunny"

    broken = client.chat.completions.create(model="script", messages=messages, tools=[WEATHER_TOOL])
    message = broken.choices[0].message
    assert message.model_extra["reasoning_content"] == "hmm" and not message.tool_calls
    assert message.model_extra["parse_problems"][0]["kind"] == "missing_name"
