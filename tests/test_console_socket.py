"""The console's WebSocket protocol with a real client (no browser): what a late page is told,
stop while a call waits for approval, and take-over refused while a step runs."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.sync.client import connect

from omni_agent.tool import tool
from tests.fixtures.core import tool_call


@tool(risk="dangerous")
def risky(note: str) -> str:
    """A call that needs approval.

    Args:
        note: Anything.
    """
    return f"ran with {note}"


def _socket(console: Any) -> Any:
    url = console.base.replace("http://", "ws://") + f"/ws?token={console.token}"
    return connect(url, additional_headers={"Origin": console.base})


def _until(ws: Any, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(raw, str):
            message = json.loads(raw)
            if predicate(message):
                return message
    raise AssertionError("the expected message never came")


def _event(kind: str) -> Any:
    return lambda m: m["type"] == "event" and m["event"]["type"] == kind


def test_a_late_page_gets_the_run_so_far_and_the_open_question_then_stop_cancels_it(start_console):
    console = start_console([tool_call("risky", note="x"), "unreachable"], tools=[risky])
    with _socket(console) as first:
        first.send(json.dumps({"type": "start", "instruction": "do the risky thing"}))
        asked = _until(first, lambda m: m["type"] == "approval")
        assert asked["call"]["name"] == "risky" and asked["schema"]["required"] == ["note"]
        with _socket(console) as late:  # joins while the call waits
            state = _until(late, lambda m: m["type"] == "state")
            assert state["state"] == "running"
            assert _until(late, _event("run_started"))["event"]["instruction"] == "do the risky thing"
            assert _until(late, lambda m: m["type"] == "approval")["call"]["id"] == asked["call"]["id"]
            late.send(json.dumps({"type": "stop"}))
            finished = _until(late, _event("run_finished"))
            assert finished["event"]["reason"] == "cancelled"
            assert _until(late, lambda m: m["type"] == "state")["state"] == "idle"
        assert _until(first, lambda m: m["type"] == "approval_closed")["call_id"] == asked["call"]["id"]
    assert console.model.remaining == 1  # the model was never asked again


def test_take_over_is_refused_while_a_step_runs_and_a_second_start_is_refused(start_console):
    console = start_console([tool_call("risky", note="x"), "done"], tools=[risky])
    with _socket(console) as ws:
        ws.send(json.dumps({"type": "start", "instruction": "go"}))
        _until(ws, lambda m: m["type"] == "approval")
        ws.send(json.dumps({"type": "click", "fx": 0.5, "fy": 0.5}))
        assert "pause the run" in _until(ws, lambda m: m["type"] == "error")["message"]
        ws.send(json.dumps({"type": "start", "instruction": "again"}))
        assert "a run is in progress" in _until(ws, lambda m: m["type"] == "error")["message"]
        ws.send(json.dumps({"type": "pause"}))
        assert _until(ws, lambda m: m["type"] == "state")["state"] == "paused"
        ws.send(json.dumps({"type": "click", "fx": 0.5, "fy": 0.5}))  # paused, but the step is not over
        assert "wait for its step to end" in _until(ws, lambda m: m["type"] == "error")["message"]
        ws.send(json.dumps({"type": "approve", "call_id": console.server.session.pending_call_ids()[0], "approve": True}))
        gate = _until(ws, lambda m: m["type"] == "state" and m["at_gate"])
        assert gate["state"] == "paused" and gate["step"] == 1
        ws.send(json.dumps({"type": "click", "fx": 0.5, "fy": 0.5}))  # no desktop tool in this run
        assert "needs the desktop toolset" in _until(ws, lambda m: m["type"] == "error")["message"]
        ws.send(json.dumps({"type": "resume"}))
        assert _until(ws, _event("run_finished"))["event"]["answer"] == "done"


def test_the_page_is_told_when_the_screen_goes_away(start_console):
    from omni_agent.xvfb import VirtualDisplay

    display = VirtualDisplay(width=640, height=400).start()
    try:
        console = start_console(["hi"], display=display.display)
        with _socket(console) as ws:
            deadline = time.monotonic() + 10
            frame = None
            while frame is None and time.monotonic() < deadline:
                raw = ws.recv(timeout=5)
                frame = raw if isinstance(raw, bytes) else None
            assert frame is not None and frame[0] == 1 and frame[9:11] == b"\xff\xd8"  # a JPEG frame
            display.stop()
            error = _until(ws, lambda m: m["type"] == "error", timeout=15)
            assert error["message"].startswith("live screen:") and "display" in error["message"]
    finally:
        display.stop()
