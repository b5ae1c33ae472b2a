"""The Realtime layer's pieces without a server: event validation, session settings (GA and beta
spellings), PCM16 both ways, server VAD on real speech, the conversation -> messages mapping and
transcript truncation."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from omni_agent.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from omni_agent.serve.realtime_audio import InputAudioBuffer, ServerVAD, SpeechBegan, SpeechEnded, decode_pcm16
from omni_agent.serve.realtime_audio import encode_pcm16
from omni_agent.serve.realtime_config import SessionConfig
from omni_agent.serve.realtime_conversation import Conversation, Item, SpokenSegment, truncate_transcript
from omni_agent.serve.realtime_events import (
    ConversationItemCreate,
    FunctionCallOutputItem,
    ProtocolError,
    ResponseCreate,
    SessionPatch,
    TurnDetection,
    parse_client_event,
)
from omni_agent.serve.realtime_response import split_sentences
from tests.fixtures.realtime import pcm16_24k


def test_client_events_parse_into_their_models():
    event = parse_client_event({"type": "conversation.item.create", "event_id": "e1", "item": {
        "type": "function_call_output", "call_id": "call_1", "output": "{}"}, "unknown_field": 1})  # fmt: skip
    assert isinstance(event, ConversationItemCreate) and isinstance(event.item, FunctionCallOutputItem)
    assert event.event_id == "e1"
    assert isinstance(parse_client_event({"type": "response.create"}), ResponseCreate)


@pytest.mark.parametrize(
    ("data", "code", "param"),
    [
        ("text", "invalid_event", None),
        ({"type": 5}, "invalid_event", "type"),
        ({"type": "response.explode"}, "unknown_event_type", "type"),
        ({"type": "input_audio_buffer.append"}, "invalid_value", "audio"),
        ({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}},
         "invalid_value", "item.message.content"),
        ({"type": "conversation.item.truncate", "item_id": "x", "audio_end_ms": -1}, "invalid_value", "audio_end_ms"),
    ],
)  # fmt: skip
def test_malformed_client_events_name_what_is_wrong(data, code, param):
    with pytest.raises(ProtocolError) as caught:
        parse_client_event(data)
    assert caught.value.code == code and caught.value.param == param
    if param:
        assert param in caught.value.message


def test_session_update_reads_ga_and_beta_spellings_and_changes_only_what_it_names():
    base = SessionConfig(instructions="Be brief.")
    ga = base.updated(SessionPatch.model_validate({
        "type": "realtime", "output_modalities": ["text"],
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
                  "output": {"voice": "Ethan"}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
    }))  # fmt: skip
    assert ga.instructions == "Be brief." and ga.output_modalities == ["text"] and ga.voice == "Ethan"
    assert ga.turn_detection == TurnDetection(silence_duration_ms=300)
    assert [t.name for t in ga.tools] == ["f"]
    beta = ga.updated(SessionPatch.model_validate({"modalities": ["text", "audio"], "turn_detection": None,
                                                   "voice": "Chelsie", "input_audio_format": "pcm16"}))  # fmt: skip
    assert beta.output_modalities == ["audio"] and beta.turn_detection is None and beta.voice == "Chelsie"
    assert beta.tools == ga.tools, "fields the update does not name keep their values"
    wire = beta.wire(session_id="s", model="m")
    assert wire["audio"]["input"]["turn_detection"] is None and wire["audio"]["output"]["voice"] == "Chelsie"


@pytest.mark.parametrize(
    ("session", "code"),
    [
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "bogus"}}]}, "invalid_tool_schema"),
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}, "invalid_tool_schema"),
        ({"tools": [{"type": "function", "name": "f"}, {"type": "function", "name": "f"}]}, "invalid_value"),
        ({"input_audio_format": "g711_ulaw"}, "unsupported_audio_format"),
        ({"audio": {"output": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "invalid_value"),
    ],
)
def test_session_update_refuses_what_it_cannot_serve(session, code):
    with pytest.raises(ProtocolError) as caught:
        SessionConfig().updated(SessionPatch.model_validate(session))
    assert caught.value.code == code


def test_tool_choice_none_hides_tools_and_a_named_one_narrows_them():
    config = SessionConfig().updated(SessionPatch.model_validate({"tools": [
        {"type": "function", "name": "a"}, {"type": "function", "name": "b"}]}))  # fmt: skip
    assert [t["function"]["name"] for t in config.model_tools()] == ["a", "b"]
    assert config.model_copy(update={"tool_choice": "none"}).model_tools() == []
    named = config.model_copy(update={"tool_choice": {"type": "function", "name": "b"}})
    assert [t["function"]["name"] for t in named.model_tools()] == ["b"]
    with pytest.raises(ProtocolError):
        config.model_copy(update={"tool_choice": {"type": "function", "name": "zzz"}}).model_tools()


def test_pcm16_round_trip_and_bad_audio():
    samples = np.sin(np.linspace(0, 200, 24_000)).astype(np.float32) * 0.5
    data, count = encode_pcm16(samples, 24_000)
    assert count == 24_000
    back = decode_pcm16(data)
    assert np.abs(back - samples).max() < 1e-3
    data16, count16 = encode_pcm16(samples[:16_000], 16_000)  # resampled to 24 kHz on the way out
    assert count16 == 24_000 and len(base64.b64decode(data16)) == 48_000
    for bad in ("@@@", "AA=="):
        with pytest.raises(ProtocolError):
            decode_pcm16(bad)


def test_input_buffer_resamples_once_for_the_thinker():
    buffer = InputAudioBuffer()
    buffer.append(np.ones(12_000, dtype=np.float32))
    buffer.append(np.ones(12_000, dtype=np.float32))
    assert buffer.duration_ms == 1000 and buffer.received == 24_000
    out = buffer.take_16k()
    assert out.size == 16_000 and buffer.duration_ms == 0 and buffer.received == 24_000


def test_server_vad_cuts_real_speech_into_one_turn(synth):
    vad = ServerVAD(TurnDetection(silence_duration_ms=400))
    vad.start_at(5000)  # the session had already received 5 s of audio
    events = []
    for chunk in pcm16_24k(synth("turn on the kitchen lights", rate=24_000), chunk_ms=40, silence_s=1.0):
        events += vad.feed(decode_pcm16(chunk))
    assert [type(e) for e in events] == [SpeechBegan, SpeechEnded]
    began, ended = events
    assert 5300 < began.audio_start_ms < ended.audio_end_ms < 5000 + 3500
    assert ended.samples is not None and 0.8 < ended.samples.size / 16_000 < 3.0


def test_server_vad_ignores_silence():
    vad = ServerVAD(TurnDetection())
    assert vad.feed(np.zeros(48_000, dtype=np.float32)) == []


def test_conversation_becomes_the_messages_the_agent_loop_would_build():
    conv = Conversation()
    conv.add(Item(type="message", role="user", text="Weather?", audio=np.zeros(1600, dtype=np.float32)))
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    conv.add(Item(type="message", role="assistant", text="Checking.", response_id="r1"))
    conv.add(Item(type="function_call", call=call, response_id="r1"))
    conv.add(Item(type="function_call_output", call_id="call_1", output="sunny"))
    conv.add(Item(type="message", role="assistant", text="", spoken=True, response_id="r2"))  # nothing heard
    messages = conv.messages("Be brief.")
    assert [type(m) for m in messages] == [SystemMessage, UserMessage, AssistantMessage, ToolMessage]
    assert len(messages[1].audios) == 1 and messages[1].text == "Weather?"
    assert messages[2].text == "Checking." and messages[2].tool_calls == [call]
    assert messages[3].result.name == "get_weather" and messages[3].result.text == "sunny"


def test_conversation_edits_check_their_references():
    conv = Conversation()
    first = Item(type="message", role="user", text="one")
    conv.add(first)
    assert conv.add(Item(type="message", role="user", text="zero", id="z"), previous_item_id="root") is None
    assert conv.add(Item(type="message", role="user", text="two"), previous_item_id=first.id) == first.id
    assert [i.text for i in conv.items] == ["zero", "one", "two"]
    with pytest.raises(ProtocolError, match="no conversation item"):
        conv.add(Item(type="message", role="user", text="x"), previous_item_id="missing")
    with pytest.raises(ProtocolError, match="already exists"):
        conv.add(Item(type="message", role="user", text="x", id="z"))
    with pytest.raises(ProtocolError) as caught:
        conv.add(Item(type="function_call_output", call_id="call_x", output=""))
    assert caught.value.code == "unknown_call_id"


def test_truncation_keeps_what_was_heard_up_to_a_word():
    segments = [SpokenSegment("First part here.", 0, 1000), SpokenSegment(" Second part is longer.", 1000, 3000)]
    assert truncate_transcript(segments, 3000) == "First part here. Second part is longer."
    assert truncate_transcript(segments, 1000) == "First part here."
    assert truncate_transcript(segments, 2000) == "First part here. Second"
    assert truncate_transcript(segments, 400) == "First"
    assert truncate_transcript(segments, 0) == ""


def test_sentences_are_spoken_one_by_one():
    assert split_sentences("Hi there! It is 3.5 degrees. Ok?\nYes") == ["Hi there!", "It is 3.5 degrees.", "Ok?", "Yes"]
    assert split_sentences("   ") == []
