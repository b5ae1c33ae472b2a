"""The agent loop with the scripted model against real tools defined here."""

from __future__ import annotations

import asyncio
import threading

import pytest

from omni_agent import events as ev
from omni_agent.exceptions import ToolExecutionError, UserError
from omni_agent.loop import Agent, StopReason
from omni_agent.messages import AssistantMessage, ToolMessage, UserMessage
from omni_agent.models.base import ModelRequest, ModelResponse, Usage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.observers import observer
from omni_agent.tool import ToolContext, ToolOutput, tool
from tests.fixtures.core import solid_image, tool_call


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails."""
    raise KeyError(reason)


@tool
def refuse() -> str:
    """Fails the clean way."""
    raise ToolExecutionError("the file is locked; try again later")


@tool(finishing=True)
def answer(text: str) -> ToolOutput:
    """Give the final answer."""
    return ToolOutput(text="done", finish=True, answer=text)


def tool_messages(request: ModelRequest) -> list[ToolMessage]:
    return [m for m in request.messages if isinstance(m, ToolMessage)]


def test_final_answer_without_calls_streams_text() -> None:
    model = ScriptedModel(["Paris is the capital of France."])
    agent = Agent(model, [add])
    deltas: list[str] = []
    agent.events.subscribe(lambda e: deltas.append(e.text) if isinstance(e, ev.ModelTextDelta) else None)
    result = agent.run("capital of France?")
    assert result.stop_reason is StopReason.ANSWER
    assert result.answer == "Paris is the capital of France."
    assert len(deltas) > 1 and "".join(deltas) == result.answer  # streamed in pieces
    assert result.steps == 1 and result.trajectory_dir is not None  # recorded by default, as the CLI does
    assert "scripted policy" in result.model
    assert isinstance(result.messages[-1], AssistantMessage)


def test_tool_result_reaches_the_model_and_tool_that_raises_becomes_error_result() -> None:
    def check(request: ModelRequest) -> str:
        results = tool_messages(request)
        assert [r.result.text for r in results] == ["5", "explode raised KeyError: 'boom'", "the file is locked; try again later"]
        assert [r.result.is_error for r in results] == [False, True, True]
        return "Sum is 5; the other tools failed."

    model = ScriptedModel(
        [tool_call("add", a=2, b=3) + tool_call("explode", reason="boom") + tool_call("refuse"), check]
    )
    errors: list[ev.ErrorEvent] = []
    agent = Agent(model, [add, explode, refuse])
    agent.events.subscribe(lambda e: errors.append(e) if isinstance(e, ev.ErrorEvent) else None)
    result = agent.run("go")
    assert result.stop_reason is StopReason.ANSWER, result.error
    assert result.answer == "Sum is 5; the other tools failed."
    assert [e.kind for e in errors] == ["tool", "tool"]


@pytest.mark.timeout(30)
def test_sync_tool_hanging_past_its_timeout_does_not_block_the_run() -> None:
    release = threading.Event()

    @tool(timeout=0.2)
    def hang() -> str:
        """Blocks until the test ends."""
        release.wait()
        return "released"

    @tool(timeout=0.2)
    async def hang_async() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "never"

    def check(request: ModelRequest) -> str:
        texts = [m.result.text for m in tool_messages(request)]
        assert texts == ["hang timed out after 0.2 s and was abandoned", "hang_async timed out after 0.2 s and was abandoned"]
        return "gave up"

    model = ScriptedModel([tool_call("hang") + tool_call("hang_async"), check])
    try:
        # If the loop waited for the thread, this would block until the pytest timeout.
        result = Agent(model, [hang, hang_async]).run("wait")
    finally:
        release.set()
    assert result.stop_reason is StopReason.ANSWER and result.answer == "gave up"


def test_agent_tool_timeout_overrides_each_tools_own() -> None:
    @tool(timeout=None)
    async def slow() -> str:
        """Sleeps long."""
        await asyncio.sleep(60)
        return "slept"

    model = ScriptedModel([tool_call("slow"), "ok"])
    result = Agent(model, [slow], tool_timeout=0.05).run("x")
    assert "slow timed out after 0.05 s" in tool_messages(model.requests[1])[0].result.text
    assert result.answer == "ok"


def test_unknown_tool_and_wrong_types_get_the_validators_message_then_the_model_corrects_itself() -> None:
    def correct(request: ModelRequest) -> str:
        results = tool_messages(request)
        assert results[0].result.is_error and 'Unknown tool "multiply"' in results[0].result.text
        assert results[1].result.is_error and 'argument "b": expected integer, got "three"' in results[1].result.text
        return tool_call("add", a=2, b=3)

    ran: list[tuple[int, int]] = []

    @tool(name="add")
    def add_logged(a: int, b: int) -> int:
        """Add and remember."""
        ran.append((a, b))
        return a + b

    model = ScriptedModel([tool_call("multiply", a=2, b=3) + tool_call("add", a=2, b="three"), correct, "5"])
    result = Agent(model, [add_logged]).run("2+3")
    assert ran == [(2, 3)]  # the invalid call never executed
    assert result.stop_reason is StopReason.ANSWER and result.answer == "5"
    assert tool_messages(model.requests[2])[-1].result.text == "5"


def test_async_parallel_safe_calls_run_concurrently() -> None:
    left_in, right_in = asyncio.Event(), asyncio.Event()

    @tool
    async def left() -> str:
        """Waits for right."""
        left_in.set()
        await asyncio.wait_for(right_in.wait(), 5)  # deadlocks (then times out) if run one at a time
        return "left"

    @tool
    async def right() -> str:
        """Waits for left."""
        right_in.set()
        await asyncio.wait_for(left_in.wait(), 5)
        return "right"

    model = ScriptedModel([tool_call("left") + tool_call("right"), "both"])
    result = Agent(model, [left, right]).run("x")
    assert [m.result.text for m in tool_messages(model.requests[1])] == ["left", "right"]
    assert result.answer == "both"


@pytest.mark.timeout(30)
def test_sync_parallel_calls_run_in_threads_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=5)

    @tool
    def one() -> str:
        """Meets two."""
        barrier.wait()  # raises BrokenBarrierError unless both run at the same time
        return "one"

    @tool
    def two() -> str:
        """Meets one."""
        barrier.wait()
        return "two"

    model = ScriptedModel([tool_call("one") + tool_call("two"), "ok"])
    Agent(model, [one, two]).run("x")
    assert [m.result.text for m in tool_messages(model.requests[1])] == ["one", "two"]


def test_calls_run_in_order_when_a_tool_is_not_parallel_safe() -> None:
    log: list[str] = []
    running = {"n": 0}

    def make(name: str, safe: bool):
        @tool(name=name, parallel_safe=safe)
        async def step() -> str:
            """Records overlap."""
            running["n"] += 1
            log.append(f"{name}:start:{running['n']}")
            await asyncio.sleep(0.01)
            running["n"] -= 1
            log.append(f"{name}:end")
            return name

        return step

    model = ScriptedModel([tool_call("click") + tool_call("read") + tool_call("type"), "ok"])
    Agent(model, [make("click", False), make("read", True), make("type", False)]).run("x")
    assert log == ["click:start:1", "click:end", "read:start:1", "read:end", "type:start:1", "type:end"]


def test_finishing_tool_ends_the_run_with_its_answer() -> None:
    model = ScriptedModel([tool_call("answer", text="42"), "never used"])
    result = Agent(model, [answer]).run("x")
    assert result.stop_reason is StopReason.FINISHING_TOOL and result.answer == "42"
    assert model.remaining == 1


def test_tool_output_finish_flag_ends_the_run() -> None:
    @tool
    def submit(value: str) -> ToolOutput:
        """Submits."""
        return ToolOutput(text=f"submitted {value}", finish=True)

    result = Agent(ScriptedModel([tool_call("submit", value="v")]), [submit]).run("x")
    assert result.stop_reason is StopReason.FINISHING_TOOL and result.answer == "submitted v"


def test_max_steps() -> None:
    counter = {"n": 0}

    @tool
    def tick() -> str:
        """Counts."""
        counter["n"] += 1
        return str(counter["n"])  # a changing result: not a loop

    model = ScriptedModel([tool_call("tick")] * 10)
    result = Agent(model, [tick], max_steps=4).run("x")
    assert result.stop_reason is StopReason.MAX_STEPS and result.steps == 4 and counter["n"] == 4


def test_same_calls_on_an_unchanged_screen_is_a_loop() -> None:
    @tool
    def click(x: int, y: int) -> str:
        """Clicks."""
        return "clicked"

    @observer
    def screen(ctx: ToolContext):
        return [solid_image(7)]  # the screen never changes

    model = ScriptedModel([tool_call("click", x=1, y=2)] * 10)
    result = Agent(model, [click], observers=[screen]).run("x")
    assert result.stop_reason is StopReason.LOOP_DETECTED and result.steps == 3
    assert "unchanged observation 3 times" in (result.error or "")


def test_same_calls_on_a_changing_screen_is_not_a_loop() -> None:
    @tool
    def scroll() -> str:
        """Scrolls."""
        return "scrolled"

    @observer
    def screen(ctx: ToolContext):
        return [solid_image(ctx.step)]  # a new screen after every step

    model = ScriptedModel([tool_call("scroll")] * 5 + ["end"])
    result = Agent(model, [scroll], observers=[screen]).run("x")
    assert result.stop_reason is StopReason.ANSWER and result.steps == 6


def test_consecutive_failed_steps_stop_the_run() -> None:
    model = ScriptedModel(
        [tool_call("nope"), "<tool_call>{not json at all</tool_call>", tool_call("explode", reason="x"), "never"]
    )
    result = Agent(model, [explode], max_consecutive_failures=3).run("x")
    assert result.stop_reason is StopReason.TOO_MANY_FAILURES and result.steps == 3


def test_unreadable_call_is_reported_to_the_model_not_taken_as_an_answer() -> None:
    def check(request: ModelRequest) -> str:
        feedback = request.messages[-1]
        assert isinstance(feedback, UserMessage) and "[tool-call error]" in feedback.text
        return "sorry"

    model = ScriptedModel(["Calling: <tool_call>@@@</tool_call>", check])
    result = Agent(model, [add]).run("x")
    assert result.answer == "sorry" and result.steps == 2


def test_native_openai_tool_calls_are_executed() -> None:
    raw = [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 41}'}}]
    responses = [
        ModelResponse(text="", raw_tool_calls=raw, usage=Usage(prompt_tokens=10, completion_tokens=3)),
        ModelResponse(text="42", usage=Usage(prompt_tokens=20, completion_tokens=1)),
    ]
    model = ScriptedModel(responses)
    result = Agent(model, [add]).run("x")
    assert tool_messages(model.requests[1])[0].result.text == "42"
    assert result.answer == "42"
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (30, 4)


def test_native_call_also_left_as_text_runs_once() -> None:
    count = {"n": 0}

    @tool
    def ping() -> str:
        """Pings."""
        count["n"] += 1
        return "pong"

    raw = [{"id": "c1", "type": "function", "function": {"name": "ping", "arguments": "{}"}}]
    model = ScriptedModel([ModelResponse(text=tool_call("ping"), raw_tool_calls=raw), "ok"])
    Agent(model, [ping]).run("x")
    assert count["n"] == 1


def test_model_error_stops_cleanly_with_the_reason() -> None:
    model = ScriptedModel([tool_call("add", a=1, b=1)])  # runs out at step 2
    result = Agent(model, [add]).run("x")
    assert result.stop_reason is StopReason.MODEL_ERROR
    assert "ran out of outputs" in (result.error or "")
    assert result.steps == 2


def test_wall_clock_limit_stops_a_run_stuck_in_a_tool() -> None:
    @tool(timeout=None)
    async def forever() -> str:
        """Never returns."""
        await asyncio.Event().wait()
        return "x"

    model = ScriptedModel([tool_call("forever")] * 3)
    result = Agent(model, [forever], max_seconds=0.3).run("x")
    assert result.stop_reason is StopReason.TIME_LIMIT
    assert result.steps == 1


def test_tools_get_a_context_with_shared_state() -> None:
    seen: list[tuple[str, int, str, bool]] = []

    @tool
    def remember(ctx: ToolContext, value: str) -> str:
        """Stores a value in run state."""
        ctx.state.setdefault("values", []).append(value)
        seen.append((ctx.run_id, ctx.step, ctx.call_id, ctx.events is not None))
        return ",".join(ctx.state["values"])

    model = ScriptedModel([tool_call("remember", value="a"), tool_call("remember", value="b"), "done"])
    agent = Agent(model, [remember])
    result = agent.run("x")
    assert tool_messages(model.requests[2])[-1].result.text == "a,b"
    assert [s[1] for s in seen] == [1, 2] and all(s[0] == result.run_id and s[3] for s in seen)
    assert seen[0][2] == tool_messages(model.requests[1])[0].result.call_id


def test_run_state_values_with_close_are_closed_at_the_end() -> None:
    class Session:
        closed = False

        async def aclose(self) -> None:
            self.closed = True

    session = Session()

    @tool
    def open_session(ctx: ToolContext) -> str:
        """Opens a session."""
        ctx.state["session"] = session
        return "open"

    Agent(ScriptedModel([tool_call("open_session"), "ok"]), [open_session]).run("x")
    assert session.closed


def test_events_are_emitted_in_phase_order() -> None:
    model = ScriptedModel(["Adding." + tool_call("add", a=1, b=2), "3"])
    agent = Agent(model, [add])
    types: list[str] = []
    agent.events.subscribe(lambda e: types.append(e.type))
    agent.run("x")
    collapsed = [t for i, t in enumerate(types) if i == 0 or t != types[i - 1]]  # text deltas repeat
    assert collapsed == [
        "run_started",
        "step_started", "model_text", "call_parsed", "model_finished", "call_validated",
        "policy_decided", "tool_started", "tool_finished", "step_finished",
        "step_started", "model_text", "model_finished", "step_finished",
        "run_finished",
    ]


def test_iter_yields_the_same_events_and_sets_the_result() -> None:
    async def main():
        agent = Agent(ScriptedModel([tool_call("add", a=1, b=2), "3"]), [add])
        bus: list[str] = []
        agent.events.subscribe(lambda e: bus.append(e.type))
        run = agent.iter("x")
        streamed = [e.type async for e in run]
        return streamed, bus, run.result

    streamed, bus, result = asyncio.run(main())
    assert streamed == bus and streamed[-1] == "run_finished"
    assert result is not None and result.answer == "3"


def test_tool_emitted_events_reach_the_iterator() -> None:
    @tool
    async def noisy(ctx: ToolContext) -> str:
        """Emits progress."""
        await ctx.events.emit(ev.ErrorEvent(run_id=ctx.run_id, message="progress", kind="progress"))
        return "ok"

    async def main():
        run = Agent(ScriptedModel([tool_call("noisy"), "done"]), [noisy]).iter("x")
        return [e async for e in run]

    got = asyncio.run(main())
    assert any(isinstance(e, ev.ErrorEvent) and e.message == "progress" for e in got)


def test_run_inside_an_event_loop_is_a_clear_error() -> None:
    async def main():
        Agent(ScriptedModel(["x"]), []).run("x")

    with pytest.raises(UserError, match="await its async twin"):
        asyncio.run(main())


def test_arun_in_a_users_event_loop() -> None:
    result = asyncio.run(Agent(ScriptedModel([tool_call("add", a=1, b=1), "2"]), [add]).arun("x"))
    assert result.answer == "2"


def test_images_and_audio_go_into_the_first_user_turn(tmp_path) -> None:
    import numpy as np

    model = ScriptedModel(["seen"])
    result = Agent(model, []).run("describe", images=[solid_image(1)], audio=(np.zeros(1600, dtype=np.float32), 16000))
    first = model.requests[0].messages[0]
    assert [p.kind for p in first.content] == ["image", "audio", "text"]
    assert result.answer == "seen"


def test_bad_inputs_are_clear_errors(tmp_path) -> None:
    with pytest.raises(UserError, match="image not found"):
        Agent(ScriptedModel(["x"]), []).run("x", images=[tmp_path / "missing.png"])
    with pytest.raises(UserError, match="max_steps"):
        Agent(ScriptedModel(["x"]), [], max_steps=0)
    with pytest.raises(UserError, match="Model"):
        Agent("not a model", [])  # type: ignore[arg-type]
