"""Console parts without a browser: auth checks, message validation, take-over mapping, targets,
history, the approval edit path through the real loop, the step gate, and push-to-talk through
the real VAD."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from omni_agent.console.auth import origin_allowed, token_from, token_matches
from omni_agent.console.history import list_runs, resolve_inside, trajectory_json
from omni_agent.console.hub import Hub
from omni_agent.console.protocol import KeyMessage, PointerMessage, TypeMessage, parse_client_message
from omni_agent.console.takeover import takeover_call, target_fractions
from omni_agent.console.voice import PageSink, PushToTalk
from omni_agent.coords import QWEN3_SPEC, QWEN25_SPEC
from omni_agent.exceptions import UserError
from omni_agent.loop import Agent
from omni_agent.messages import TextPart, ToolCall, UserMessage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.policy import Approval
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, ToolContext, ToolOutput, tool
from omni_agent.trajectory import load_trajectory
from tests.fixtures.core import tool_call


def test_origin_must_name_the_host_it_connected_to():
    assert origin_allowed("http://127.0.0.1:7860", "127.0.0.1:7860")
    assert not origin_allowed("http://127.0.0.1:7861", "127.0.0.1:7860")
    assert not origin_allowed("http://evil.example", "127.0.0.1:7860")
    assert not origin_allowed("null", "127.0.0.1:7860")
    assert not origin_allowed(None, "127.0.0.1:7860")
    assert not origin_allowed("file://127.0.0.1:7860", "127.0.0.1:7860")


def test_token_checks():
    assert token_matches("abc", "abc") and not token_matches("abc", "abd")
    assert not token_matches("abc", "") and not token_matches("abc", None)
    assert token_from({"token": "q"}, {"omni_console_token": "c"}, {}) == "q"
    assert token_from({}, {"omni_console_token": "c"}, {}) == "c"
    assert token_from({}, {}, {"authorization": "Bearer b"}) == "b"
    assert token_from({}, {}, {}) is None


@pytest.mark.parametrize(
    "text",
    ['{"type": "start"}', '{"type": "start", "instruction": ""}', '{"type": "click", "fx": 1.5, "fy": 0}',
     '{"type": "launch"}', "[]", "not json", '{"type": "ptt", "action": "sideways"}'],
)  # fmt: skip
def test_bad_client_messages_are_refused(text):
    with pytest.raises((ValidationError, ValueError)):
        parse_client_message(text)


def test_good_client_messages_parse():
    assert parse_client_message('{"type": "start", "instruction": "go"}').instruction == "go"
    m = parse_client_message('{"type": "approve", "call_id": "c1", "approve": true, "arguments": {"a": 1}}')
    assert m.arguments == {"a": 1}


def _registry(*names: str) -> ToolRegistry:
    def noop(**kw: Any) -> str:
        return "ok"

    return ToolRegistry([Tool.from_schema({"name": n, "description": n, "parameters": {"type": "object"}}, noop) for n in names])


def test_takeover_maps_page_fractions_to_the_model_space_of_the_desktop_tool():
    reg = _registry("computer_use")
    call = takeover_call(PointerMessage(type="click", fx=0.25, fy=0.5), reg, screen_size=(1280, 800), spec=QWEN3_SPEC)
    assert call.arguments == {"action": "left_click", "coordinate": [250, 500]}
    drag = takeover_call(PointerMessage(type="drag", fx=0.1, fy=0.1, fx2=0.9, fy2=0.2), reg, screen_size=(1280, 800), spec=QWEN3_SPEC)
    assert drag.arguments == {"action": "left_click_drag", "start_coordinate": [100, 100], "coordinate": [900, 200]}
    # Qwen2.5 writes pixels of the resized screenshot: the same point maps into that space.
    px = takeover_call(PointerMessage(type="click", fx=0.5, fy=0.5), reg, screen_size=(1280, 800), spec=QWEN25_SPEC)
    w, h = QWEN25_SPEC.resized_size((1280, 800))
    assert px.arguments["coordinate"] == [round(w / 2), round(h / 2)]
    assert takeover_call(KeyMessage(type="key", keys=["ctrl", "a"]), reg, screen_size=(1280, 800), spec=QWEN3_SPEC).arguments == {
        "action": "key", "keys": ["ctrl", "a"]}  # fmt: skip


def test_takeover_uses_the_browser_tools_without_a_desktop_and_refuses_without_either():
    reg = _registry("browser_type", "browser_press")
    assert takeover_call(TypeMessage(type="type", text="hi"), reg, screen_size=(1280, 800), spec=QWEN3_SPEC).name == "browser_type"
    assert takeover_call(KeyMessage(type="key", keys=["Control", "a"]), reg, screen_size=(1280, 800), spec=QWEN3_SPEC).arguments == {"key": "Control+a"}
    with pytest.raises(UserError, match="desktop toolset"):
        takeover_call(PointerMessage(type="click", fx=0.5, fy=0.5), reg, screen_size=(1280, 800), spec=QWEN3_SPEC)
    with pytest.raises(UserError, match="typing needs"):
        takeover_call(TypeMessage(type="type", text="hi"), _registry("shell"), screen_size=(1280, 800), spec=QWEN3_SPEC)


def test_targets_of_model_calls_as_screen_fractions():
    click = ToolCall(name="computer_use", arguments={"action": "left_click", "coordinate": [500, 250]})
    assert target_fractions(click, screen_size=(1280, 800), spec=QWEN3_SPEC) == {"fx": 0.5, "fy": 0.25}
    drag = ToolCall(name="computer_use", arguments={"action": "left_click_drag", "start_coordinate": [0, 0], "coordinate": [1000, 1000]})
    assert target_fractions(drag, screen_size=(1280, 800), spec=QWEN3_SPEC) == {"fx": 1.0, "fy": 1.0, "fx0": 0.0, "fy0": 0.0}
    assert target_fractions(ToolCall(name="computer_use", arguments={"action": "type", "text": "x"}), screen_size=(1280, 800), spec=QWEN3_SPEC) is None
    assert target_fractions(ToolCall(name="shell", arguments={"coordinate": [1, 2]}), screen_size=(1280, 800), spec=QWEN3_SPEC) is None


@tool(risk="dangerous")
def record_value(value: int) -> str:
    """Record a number.

    Args:
        value: The number.
    """
    return f"recorded {value}"


def _run_with_approver(tmp_path: Path, approver: Any) -> tuple[Any, Any]:
    agent = Agent(ScriptedModel([tool_call("record_value", value=1), "done"]), [record_value], trajectory_dir=tmp_path / "runs", approver=approver)
    result = agent.run("go")
    return result, load_trajectory(result.trajectory_dir)


def test_an_approver_can_edit_the_arguments_and_the_edit_is_validated_again(tmp_path):
    result, traj = _run_with_approver(tmp_path, lambda call, reason: Approval(approved=True, arguments={"value": "7"}))
    step = traj.steps[0]
    assert step.results[0].text == "recorded 7" and not step.results[0].is_error
    assert step.validations[0].arguments == {"value": 7}  # coerced, as the tool got it
    assert step.decisions[0].approved is True and "edited" in step.decisions[0].reason

    result, traj = _run_with_approver(tmp_path / "b", lambda call, reason: Approval(approved=True, arguments={"value": "many"}))
    step = traj.steps[0]
    assert step.results[0].is_error and "edited arguments are invalid" in step.results[0].text
    assert step.executed == []


def test_the_step_gate_adds_user_messages_before_the_next_step(tmp_path):
    model = ScriptedModel([tool_call("record_value", value=1), "done"])
    agent = Agent(model, [record_value], trajectory_dir=tmp_path, approver=lambda c, r: True)
    gates: list[int] = []

    async def gate(step: int) -> list[Any]:
        gates.append(step)
        return [UserMessage([TextPart(text="[user clicked OK]")])] if step == 1 else []

    agent.step_gate = gate
    result = agent.run("go")
    assert gates == [0, 1]
    second = model.requests[1].messages
    assert any(isinstance(m, UserMessage) and m.content[0].text == "[user clicked OK]" for m in second)
    assert "[user clicked OK]" in (result.trajectory_dir / "steps.jsonl").read_text()


def _runs_folder(tmp_path: Path) -> Path:
    agent = Agent(ScriptedModel(["the answer"]), [], trajectory_dir=tmp_path / "runs")
    agent.run("question one")
    suite = tmp_path / "runs" / "smoke-20260101"
    suite.mkdir()
    (suite / "summary.json").write_text(json.dumps({"suite": "smoke"}))
    (suite / "index.html").write_text("<html>report</html>")
    (tmp_path / "runs" / "junk").mkdir()
    return tmp_path / "runs"


def test_history_lists_runs_and_eval_reports_and_loads_a_trajectory(tmp_path):
    root = _runs_folder(tmp_path)
    entries = {e.kind: e for e in list_runs(root)}
    assert set(entries) == {"run", "eval"}
    assert entries["run"].instruction == "question one" and entries["run"].stop_reason == "answer"
    assert entries["eval"].report == "smoke-20260101/index.html"
    detail = trajectory_json(root, entries["run"].name)
    assert detail["meta"]["answer"] == "the answer" and detail["steps"][0]["visible_text"] == "the answer"
    with pytest.raises(UserError):
        trajectory_json(root, "junk")
    with pytest.raises(UserError, match="outside"):
        resolve_inside(root, "../../etc/passwd")


def test_page_sink_sends_speech_and_stops_on_barge_in():
    from omni_agent.voice.speaker import SpeechRecord

    hub = Hub()
    sent: list[Any] = []
    hub.broadcast_threadsafe = sent.append  # type: ignore[method-assign]  # capture what goes out
    sink = PageSink(hub)
    record = SpeechRecord(text="hello", kind="answer", id=1)
    threading.Timer(0.2, record.cancel.set).start()
    sink.play(np.zeros(16_000 * 5, dtype=np.float32), 16_000, record)
    assert json.loads(sent[0])["text"] == "hello"
    assert sent[1][:1] == bytes([3]) and sent[1][1:5] == b"RIFF"
    assert json.loads(sent[2])["type"] == "speech_stop"
    assert record.samples_played < 16_000 * 2


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_push_to_talk_turns_socket_pcm_into_an_utterance(tmp_path):
    from omni_agent.voice.audio_io import decode_audio
    from tests.fixtures.audio import espeak_wav

    speech = decode_audio(espeak_wav(tmp_path / "c.wav", "turn on the lights", rate=16_000))
    utterances: list[Any] = []
    errors: list[str] = []

    async def take(ptt: PushToTalk, samples: np.ndarray) -> None:
        before = len(utterances) + len(errors)
        ptt.down()
        for i in range(0, samples.size, 2048):
            ptt.feed(_pcm16(samples[i : i + 2048]))
        await asyncio.sleep(0.3)
        ptt.up()
        for _ in range(400):
            if len(utterances) + len(errors) > before:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("push-to-talk gave no result")

    async def main() -> None:
        ptt = PushToTalk(on_utterance=utterances.append, on_error=errors.append)
        await take(ptt, speech)
        await take(ptt, np.zeros(16_000, dtype=np.float32))

    asyncio.run(main())
    assert len(utterances) == 1 and 0.6 < utterances[0].duration_s < speech.size / 16_000
    assert len(errors) == 1 and "no speech" in errors[0]


@tool
def guarded(ctx: ToolContext, target: str) -> ToolOutput:
    """A tool that asks for confirmation itself before acting.

    Args:
        target: What to act on.
    """
    if ctx.call_id not in ctx.state.get("confirmed_calls", set()):
        return ToolOutput(text="", needs_confirmation=f"really act on {target}?")
    return ToolOutput(text=f"acted on {target}")


def test_a_tool_that_asks_itself_runs_only_as_asked(tmp_path):
    def run(answer: Any) -> Any:
        agent = Agent(ScriptedModel([tool_call("guarded", target="a"), "done"]), [guarded], approver=lambda c, r: answer)
        return agent.run("go").messages

    def result_text(messages: list[Any]) -> str:
        return next(m.result.text for m in messages if getattr(m, "role", "") == "tool")

    assert result_text(run(Approval(approved=True))) == "acted on a"
    edited = result_text(run(Approval(approved=True, arguments={"target": "b"})))
    assert "cannot be run with edited arguments" in edited and "acted on" not in edited
