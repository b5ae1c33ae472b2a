"""The Realtime WebSocket end to end: real uvicorn on 127.0.0.1, the official ``openai`` SDK's
realtime client (raw ``websockets`` for garbage), the tiny Qwen3-Omni with its Talker behind a
``SerialBackend`` (Thinker forced to given replies: random weights understand nothing), real
espeak-ng speech cut into turns by the project's VAD."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest

from omni_agent.serve.realtime_response import split_sentences
from tests.fixtures.realtime import pcm16_24k

pytestmark = pytest.mark.slow

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")


def _client(server: Any, api_key: str = "unused") -> Any:
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=api_key, base_url=server.base_url)


async def _until(conn: Any, last: str, *, timeout: float = 120) -> list[Any]:
    """Server events up to and including the first of type ``last``."""
    events: list[Any] = []
    while True:
        event = await asyncio.wait_for(conn.recv(), timeout)
        events.append(event)
        if event.type == last:
            return events


def _types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def _pcm(events: list[Any], kind: str = "response.output_audio.delta") -> np.ndarray:
    raw = b"".join(base64.b64decode(e.delta) for e in events if e.type == kind)
    return np.frombuffer(raw, dtype="<i2")


def test_spoken_question_function_call_output_then_spoken_answer(realtime_server, synth):
    answer = "It is sunny in Paris. Twenty two degrees."
    server = realtime_server([CALL, answer])
    question = synth("what is the weather in Paris", rate=24_000)
    sent_samples: list[int] = []

    async def scenario() -> None:
        async with _client(server).realtime.connect(model="tiny-qwen3-omni") as conn:
            assert (await conn.recv()).type == "session.created"
            await conn.session.update(session={
                "type": "realtime", "instructions": "You are a weather assistant.", "tools": [WEATHER_TOOL],
                "output_modalities": ["audio"],
                "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 400}}},
            })  # fmt: skip
            updated = (await _until(conn, "session.updated"))[-1]
            assert updated.session.tools[0].name == "get_weather"
            for chunk in pcm16_24k(question, silence_s=1.0):
                await conn.input_audio_buffer.append(audio=chunk)
            first = await _until(conn, "response.done")

            kinds = _types(first)
            order = [kinds.index(k) for k in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                                              "input_audio_buffer.committed", "response.created",
                                              "response.function_call_arguments.delta",
                                              "response.function_call_arguments.done", "response.done")]  # fmt: skip
            assert order == sorted(order)
            assert not any(k in AUDIO_DELTAS for k in kinds), "a tool-call turn is never spoken"
            done_call = next(e for e in first if e.type == "response.function_call_arguments.done")
            assert (done_call.name, json.loads(done_call.arguments)) == ("get_weather", {"city": "Paris"})
            delta = next(e for e in first if e.type == "response.function_call_arguments.delta")
            assert json.loads(delta.delta) == {"city": "Paris"} and delta.call_id == done_call.call_id
            response = first[-1].response
            assert response.status == "completed"
            assert [(o.type, o.call_id) for o in response.output] == [("function_call", done_call.call_id)]

            await conn.conversation.item.create(item={
                "type": "function_call_output", "call_id": done_call.call_id,
                "output": json.dumps({"sky": "sunny", "celsius": 22}),
            })  # fmt: skip
            await conn.response.create()
            second = await _until(conn, "response.done")

            transcript = "".join(e.delta for e in second if e.type == "response.output_audio_transcript.delta")
            assert transcript == answer
            assert "".join(e.delta for e in second if e.type == "response.audio_transcript.delta") == answer
            new, old = _pcm(second), _pcm(second, "response.audio.delta")
            assert new.size > 2400 and np.array_equal(new, old), "both audio event names carry the same PCM16"
            sent_samples.append(new.size)
            done = second[-1].response
            assert done.status == "completed"
            assert done.output[0].content[0].transcript == answer
            assert _types(second).index("response.output_audio.done") < _types(second).index("response.done")

    asyncio.run(scenario())

    heard, answered = server.model.prepared
    assert heard.audio_seconds and 1.0 < heard.audio_seconds[0] < 4.0, "the Thinker got the spoken turn"
    assert "You are a weather assistant." in heard.text and "get_weather" in heard.text
    assert '"celsius": 22' in answered.text and answered.audio_seconds == heard.audio_seconds
    assert server.metrics.started == server.metrics.finished == 2
    assert len(server.metrics.first_audio) == 1 and len(server.metrics.first_token) == 2
    # The audio is the Talker's speech of the answer, sentence by sentence (seeded: the same again).
    # (The tiny random Talker's waveform is ~1e-7 in amplitude: its length is what can be checked.)
    talker = [sum(c.samples.size for c in server.model.speak_stream(s)) for s in split_sentences(answer)]
    assert sent_samples == [sum(talker)] and min(talker) > 0


def test_speech_during_an_answer_cancels_it_and_truncates_the_unheard_part(realtime_server, synth):
    story = " ".join(f"Sentence {i} here." for i in range(12))
    server = realtime_server([story, "Okay, I stopped."])
    interruption = synth("stop please", rate=24_000)

    async def scenario() -> None:
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Tell a story."}]})  # fmt: skip
            await conn.response.create()
            before = await _until(conn, "response.output_audio.delta")
            spoken_id = before[-1].item_id
            for chunk in pcm16_24k(interruption, silence_s=1.0):
                await conn.input_audio_buffer.append(audio=chunk)
            during = await _until(conn, "response.done")
            cancelled = during[-1].response
            assert cancelled.status == "cancelled" and cancelled.status_details.reason == "turn_detected"
            kinds = _types(during)
            assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
            truncated = next(e for e in during if e.type == "conversation.item.truncated")
            sent_ms = _pcm(before + during).size / 24
            assert truncated.item_id == spoken_id and 0 <= truncated.audio_end_ms <= sent_ms
            kept = cancelled.output[0].content[0].transcript
            assert story.startswith(kept) and len(kept) < len(story) / 2
            after = await _until(conn, "response.done")  # the interruption was a turn: it is answered
            assert after[-1].response.status == "completed"
            assert "".join(e.delta for e in after if e.type == "response.output_audio_transcript.delta") == "Okay, I stopped."

            # The client's own truncation, and the item as the server now holds it.
            await conn.conversation.item.truncate(item_id=spoken_id, content_index=0, audio_end_ms=0)
            assert (await _until(conn, "conversation.item.truncated"))[-1].audio_end_ms == 0
            await conn.conversation.item.retrieve(item_id=spoken_id)
            held = (await _until(conn, "conversation.item.retrieved"))[-1].item
            assert held.status == "incomplete" and held.content[0].transcript == ""
            await conn.conversation.item.truncate(item_id=spoken_id, content_index=0, audio_end_ms=60_000)
            assert "past the item" in (await _until(conn, "error"))[-1].error.message
            await conn.conversation.item.delete(item_id=spoken_id)
            assert (await _until(conn, "conversation.item.deleted"))[-1].item_id == spoken_id

    asyncio.run(scenario())
    reply_prompt = server.model.prepared[-1]
    assert "Sentence 11" not in reply_prompt.text, "the unheard part is not in the conversation"
    assert reply_prompt.audio_seconds, "the interruption is the new user turn"
    assert server.metrics.started == server.metrics.finished == 2


def test_text_only_session_streams_visible_text_never_thinking(realtime_server, synth):
    server = realtime_server(["<think>secret plan</think>Hello there, my friend."])
    spoken = synth("hello", rate=24_000)

    async def scenario() -> None:
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"],
                                               "audio": {"input": {"turn_detection": None}}})  # fmt: skip
            updated = (await _until(conn, "session.updated"))[-1]
            assert updated.session.audio.input.turn_detection is None
            for chunk in pcm16_24k(spoken):
                await conn.input_audio_buffer.append(audio=chunk)
            await conn.input_audio_buffer.commit()
            committed = await _until(conn, "input_audio_buffer.committed")
            assert not any(e.type == "input_audio_buffer.speech_started" for e in committed), "VAD is off"
            await conn.response.create()
            events = await _until(conn, "response.done")
            deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
            assert "".join(deltas) == "Hello there, my friend." and len(deltas) > 1
            beta = [e.delta for e in events if e.type == "response.text.delta"]
            assert beta == deltas, "older clients read the beta event name"
            assert not any(e.type in AUDIO_DELTAS for e in events)
            assert all("secret" not in e.to_json() for e in events)
            assert events[-1].response.output[0].content[0].text == "Hello there, my friend."

    asyncio.run(scenario())
    assert server.model.prepared[0].audio_seconds, "the committed buffer reached the Thinker"


def test_a_spoken_turn_that_calls_a_tool_shows_its_preamble_but_never_voices_it(realtime_server):
    preamble = "Let me check that for you. One moment."
    server = realtime_server([preamble + "\n" + CALL])

    async def scenario() -> list[Any]:
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "tools": [WEATHER_TOOL]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Weather?"}]})  # fmt: skip
            await conn.response.create()
            return await _until(conn, "response.done")

    events = asyncio.run(scenario())
    kinds = _types(events)
    assert not any(k in AUDIO_DELTAS or "transcript" in k for k in kinds), "nothing of a tool-call turn is voiced"
    output = events[-1].response.output
    assert [o.type for o in output] == ["function_call", "message"]
    assert output[1].content[0].type == "output_text" and output[1].content[0].text == preamble
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == preamble
    assert server.metrics.in_flight == 0 and server.metrics.first_audio == []


def test_calls_are_validated_against_the_offered_tools(realtime_server):
    timer = {"type": "function", "name": "set_timer", "parameters": {
        "type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}}  # fmt: skip
    reply = ('<tool_call>\n{"name": "set_timer", "arguments": {"minutes": "5"}}\n</tool_call>\n'
             '<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>\n'
             "<tool_call>\n[1, 2]\n</tool_call>")  # fmt: skip
    server = realtime_server([reply])

    async def scenario() -> list[Any]:
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.session.update(session={"type": "realtime", "tools": [timer], "output_modalities": ["text"]})
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Timer!"}]})  # fmt: skip
            await conn.response.create()
            return await _until(conn, "response.done")

    events = asyncio.run(scenario())
    calls = [(e.name, json.loads(e.arguments)) for e in events if e.type == "response.function_call_arguments.done"]
    assert calls == [("set_timer", {"minutes": 5}), ("launch_rocket", {})], "coerced where the schema allows"
    response = events[-1].model_dump()["response"]
    problems = response["parse_problems"]
    rocket = next(o for o in response["output"] if o.get("name") == "launch_rocket")
    assert any(p["kind"] == "invalid_call" and p["call_id"] == rocket["call_id"] and "launch_rocket" in p["message"]
               for p in problems)  # fmt: skip
    assert any(p["kind"] != "invalid_call" for p in problems), "the unreadable block is reported too"
    assert not any(e.type == "response.output_text.delta" for e in events), "call markup is never shown as text"


def test_garbage_gets_errors_and_the_server_goes_on(realtime_server):
    import websockets

    server = realtime_server(["First answer.", "Second answer."])
    garbage: list[tuple[Any, str]] = [
        ("not json at all", "invalid_json"),
        (b"\x00\x01\x02binary", "invalid_event"),
        ("[1, 2, 3]", "invalid_event"),
        ('{"no_type": true}', "invalid_event"),
        ('{"type": "session.explode"}', "unknown_event_type"),
        ('{"type": "input_audio_buffer.append", "audio": "!!not base64!!"}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append", "audio": "AA=="}', "invalid_audio"),
        ('{"type": "input_audio_buffer.append"}', "invalid_value"),
        ('{"type": "session.update", "session": {"tools": [{"type": "function", "name": "f", '
         '"parameters": {"type": "nonsense"}}]}}', "invalid_tool_schema"),
        ('{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}',
         "unsupported_audio_format"),
        ('{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"threshold": 7}}}}}',
         "invalid_value"),
        ('{"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "nope", '
         '"output": "x"}}', "unknown_call_id"),
        ('{"type": "conversation.item.truncate", "item_id": "missing", "audio_end_ms": 5}', "item_not_found"),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": '
         '[{"type": "input_audio", "audio": "AA=="}]}}', "invalid_audio"),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "assistant", "content": '
         '[{"type": "input_audio", "audio": "AAAA"}]}}', "invalid_value"),
        ('{"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": '
         '[{"type": "input_audio", "audio": ""}, {"type": "input_text", "text": " "}]}}', "invalid_value"),
        ('{"type": "response.create", "response": {"tool_choice": {"type": "function", "name": "nope"}}}',
         "invalid_value"),
        ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
        ('{"type": "response.cancel", "event_id": "evt_1"}', "response_cancel_not_active"),
    ]  # fmt: skip

    async def text_turn(ws: Any, text: str) -> str:
        await ws.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}}))  # fmt: skip
        await ws.send(json.dumps({"type": "response.create", "response": {"output_modalities": ["text"]}}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if event["type"] == "response.done":
                return event["response"]["output"][0]["content"][0]["text"]

    async def scenario() -> None:
        async with websockets.connect(server.url) as bad, websockets.connect(server.url) as good:
            assert json.loads(await bad.recv())["type"] == "session.created"
            assert json.loads(await good.recv())["type"] == "session.created"
            for message, code in garbage:
                await bad.send(message)
                event = json.loads(await bad.recv())
                assert event["type"] == "error", message
                assert event["error"]["type"] == "invalid_request_error" and event["error"]["code"] == code, event
                assert event["error"]["message"]
            assert event["error"]["event_id"] == "evt_1"
            assert await text_turn(good, "hi") == "First answer."
            await bad.send(json.dumps({"type": "session.update", "session": {"instructions": "still here"}}))
            updated = json.loads(await bad.recv())
            assert updated["type"] == "session.updated" and updated["session"]["instructions"] == "still here"
            assert updated["session"]["tools"] == [], "a refused update changed nothing"
            await bad.send("x" * (2 << 20))  # over the server's frame limit: the server closes this one
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await bad.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with websockets.connect(server.url) as again:
            await again.recv()
            assert await text_turn(again, "still serving?") == "Second answer."

    asyncio.run(scenario())
    assert server.metrics.in_flight == 0


def test_api_key_from_header_or_browser_subprotocol(realtime_server):
    import websockets

    server = realtime_server([], api_key="sekret")

    async def scenario() -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with _client(server, api_key="wrong").realtime.connect(model="tiny"):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "invalid_api_key"
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(server.url):
                pass
        async with _client(server, api_key="sekret").realtime.connect(model="tiny") as conn:
            created = await conn.recv()
            assert created.type == "session.created" and created.session.model == server.model.info.name
        protocols = ["realtime", "openai-insecure-api-key.sekret", "openai-beta.realtime-v1"]
        async with websockets.connect(server.url + "?model=tiny", subprotocols=protocols) as ws:
            assert ws.subprotocol == "realtime"
            assert json.loads(await ws.recv())["type"] == "session.created"

    asyncio.run(scenario())


def test_client_that_leaves_mid_answer_frees_everything(realtime_server):
    story = " ".join(f"Part {i} here." for i in range(8))
    server = realtime_server([story, "Short one."])

    async def scenario() -> None:
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Talk."}]})  # fmt: skip
            await conn.response.create()
            await _until(conn, "response.output_audio.delta")
        await asyncio.to_thread(server.wait_idle)
        assert server.metrics.in_flight == 0
        async with _client(server).realtime.connect(model="tiny") as conn:
            await _until(conn, "session.created")
            await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                      "content": [{"type": "input_text", "text": "Again."}]})  # fmt: skip
            await conn.response.create()
            done = (await _until(conn, "response.done"))[-1]
            assert done.response.status == "completed"

    asyncio.run(scenario())
    assert server.metrics.started == server.metrics.finished == 2


def test_the_readme_realtime_example_runs(realtime_server, tmp_path):
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "realtime.connect" in b]
    server = realtime_server(["Hello from the served model."], api_key="KEY")
    script = tmp_path / "realtime_example.py"
    script.write_text(code.replace("http://127.0.0.1:8000/v1", server.base_url))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "Hello from the served model."
