"""The agent loop: model -> parse -> validate -> policy -> execute -> observe, until done.

One async generator drives everything (:meth:`Agent.iter` yields events as they happen);
:meth:`Agent.arun` and :meth:`Agent.run` drain it. Each step ends in one small tagged outcome
(:class:`FinalAnswer`, :class:`Continue`, :class:`Finished`, :class:`Halt`), matched exhaustively.

Failure paths: model mistakes (unparseable calls, unknown tools, wrong arguments) become error
tool results the model can learn from; a tool that raises, hangs past its timeout or is denied
becomes an error result too; the run goes on. The run stops on a final answer, a finishing tool,
``max_steps``, ``max_seconds``, ``max_consecutive_failures`` failed steps in a row, the same
calls on an unchanged observation ``max_repeats`` times, or a model error. Whatever happens,
the trajectory is kept and :class:`RunResult` says why the run stopped.

The per-call phase (validate, policy, execute with timeouts) lives in :mod:`omni_agent.execution`;
this module keeps the step loop around it.

Conventions for tools: ``ToolContext.state`` is shared by the tools of one run; values in it
with an ``aclose()`` or ``close()`` method are closed when the run ends, except the caller's own
objects under ``LOOP_BOUND_STATE`` keys, which only a blocking ``Agent.run()`` ends (its event
loop ends with it). A tool that returns
``ToolOutput(needs_confirmation=reason)`` is asked about through the approver; when approved it
is called once more with its call id in ``state["confirmed_calls"]``.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import hashlib
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import assert_never

from . import events as ev
from .context import MediaHasher, apply_image_budget, render_prompt
from .exceptions import ModelError, UserError
from .execution import CallOutcome, CheckedCall, DaemonThreadExecutor, execute_calls
from .messages import (
    AssistantMessage,
    AudioPart,
    ContentPart,
    ImagePart,
    Message,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
)
from .models.base import GenerationSettings, Model, ModelRequest, ModelResponse, Usage
from .observers import Observer
from .parsing.types import ParseProblem
from .policy import Approver, DefaultPolicy, Policy, PolicyState, deny_all
from .registry import ToolRegistry
from .tool import LOOP_BOUND_STATE, Tool, ToolContext
from .trajectory import RunMeta, RunRecorder, StepRecord, new_run_id
from .wording import plural

__all__ = ["Agent", "AgentRun", "RunResult", "StopReason", "run_blocking"]

AudioInput = Union[AudioPart, str, os.PathLike, tuple[Any, int], None]
"""An AudioPart, a file path, or (samples, sample_rate)."""
ImagesInput = Union[Sequence[Any], None]
"""PIL images, ImageParts or file paths."""
StepGate = Callable[[int], Awaitable[Sequence[Message]]]
"""Awaited before each step with the number of steps done; returns messages to add first."""

OBSERVER_TIMEOUT_S = 60.0
"""Longest wait for one observation when the run has no wall-clock limit left to bound it."""

_BLOCKING = contextvars.ContextVar("omni_agent_blocking_run", default=False)
"""True inside :meth:`Agent.run`, whose event loop ends with the run."""

DEFAULT_TRAJECTORY_DIR = "runs"
"""Where runs are recorded unless ``trajectory_dir`` says otherwise (the CLI's default too);
``$OMNI_AGENT_RUNS_DIR`` moves it."""


class StopReason(str, enum.Enum):
    ANSWER = "answer"
    FINISHING_TOOL = "finishing_tool"
    MAX_STEPS = "max_steps"
    TIME_LIMIT = "time_limit"
    TOO_MANY_FAILURES = "too_many_failures"
    LOOP_DETECTED = "loop_detected"
    MODEL_ERROR = "model_error"
    TOKEN_LIMIT = "token_limit"
    """The reply stopped at ``max_new_tokens`` with no call to run: cut off, not an answer."""
    CANCELLED = "cancelled"


class RunResult(BaseModel):
    """How a run ended, with its full conversation (images in memory) and totals."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    run_id: str
    answer: str | None
    stop_reason: StopReason
    steps: int
    messages: list[Message]
    usage: Usage = Field(default_factory=Usage)
    trajectory_dir: Path | None = None
    seconds: float = 0.0
    model: str = ""
    """The model label ("... (scripted policy, not a model)" for scripted runs)."""
    error: str | None = None
    """Why the run stopped early, in one line (model error, loop, failures, time limit)."""
    audio: AudioPart | None = None
    """The spoken answer, when ``speak=True`` and the model can speak."""
    report: Path | None = None
    """The run's HTML page (``index.html`` in the trajectory directory), when one was written."""


# -- turn outcomes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FinalAnswer:
    """The model answered without calls."""

    text: str


@dataclass(frozen=True)
class Continue:
    """Calls ran (or failed); go on. ``failed``: nothing useful happened this step."""

    failed: bool
    signature: str


@dataclass(frozen=True)
class Finished:
    """A finishing tool ended the run."""

    answer: str | None


@dataclass(frozen=True)
class Halt:
    """The step could not complete (model error, time limit)."""

    reason: StopReason
    message: str


TurnOutcome = Union[FinalAnswer, Continue, Finished, Halt]


# -- the agent -------------------------------------------------------------------------------


class Agent:
    """A model plus tools. ``run()`` / ``await arun()`` do one task; ``iter()`` streams its events.

    Subscribe displays and loggers with ``agent.events.subscribe(fn)``.

    Args:
        tool_timeout: seconds for every call, overriding each tool's own ``timeout``.
        observers: add e.g. a fresh screenshot to the next user turn after every step.
        policy / approver: who may run what (default: :class:`DefaultPolicy`, and "ask" = no).
        trajectory_dir: parent directory; each run writes ``<time>-<run id>/`` in it, with an
            ``index.html`` page (default ``runs/``, as the CLI; None records nothing).
        html_report: write the page when the run ends (False: only the trajectory files).
        max_images / image_evict_chunk: the screenshot budget (see :mod:`omni_agent.context`).
        max_consecutive_failures: failed steps in a row (all calls invalid, denied or errored).
        max_repeats: the same calls on an unchanged observation this many times = a loop.
        metadata: extra fields for meta.json (e.g. the CLI's tool set names).
    """

    def __init__(
        self,
        model: Model,
        tools: Iterable[Tool] | ToolRegistry = (),
        *,
        system_prompt: str | None = None,
        max_steps: int = 30,
        max_seconds: float | None = None,
        tool_timeout: float | None = None,
        observers: Sequence[Observer] = (),
        policy: Policy | None = None,
        approver: Approver | None = None,
        trajectory_dir: str | os.PathLike[str] | None = DEFAULT_TRAJECTORY_DIR,
        html_report: bool = True,
        max_images: int = 3,
        image_evict_chunk: int = 2,
        max_consecutive_failures: int = 3,
        max_repeats: int = 3,
        speak: bool = False,
        voice: str | None = None,
        settings: GenerationSettings | None = None,
        workspace: str | os.PathLike[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, Model):
            raise UserError(f"model must be an omni_agent Model, got {type(model).__name__}")
        if max_steps < 1:
            raise UserError("max_steps must be >= 1")
        if max_seconds is not None and max_seconds <= 0:
            raise UserError("max_seconds must be > 0")
        if tool_timeout is not None and tool_timeout <= 0:
            raise UserError("tool_timeout must be > 0")
        if max_images < 0 or image_evict_chunk < 1:
            raise UserError("max_images must be >= 0 and image_evict_chunk >= 1")
        if max_consecutive_failures < 1 or max_repeats < 2:
            raise UserError("max_consecutive_failures must be >= 1 and max_repeats >= 2")
        for o in observers:
            if not callable(getattr(o, "observe", None)):
                raise UserError(f"observer {o!r} has no observe(context) method")
        self.model = model
        self.tools = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.max_seconds = max_seconds
        self.tool_timeout = tool_timeout
        self.observers = list(observers)
        self.policy: Policy = policy or DefaultPolicy()
        self.approver: Approver = approver or deny_all
        if trajectory_dir is DEFAULT_TRAJECTORY_DIR:
            trajectory_dir = os.environ.get("OMNI_AGENT_RUNS_DIR") or DEFAULT_TRAJECTORY_DIR
        self.trajectory_dir = Path(trajectory_dir) if trajectory_dir is not None else None
        self.html_report = html_report
        self.max_images = max_images
        self.image_evict_chunk = image_evict_chunk
        self.max_consecutive_failures = max_consecutive_failures
        self.max_repeats = max_repeats
        self.speak = speak
        self.voice = voice
        self.settings = settings or GenerationSettings()
        self.workspace = Path(workspace) if workspace is not None else Path.cwd()
        clash = set(metadata or {}) & set(RunMeta.model_fields)
        if clash:
            raise UserError(f"metadata keys {sorted(clash)} are reserved by meta.json")
        self.metadata = dict(metadata or {})
        """Extra fields for meta.json (e.g. the CLI's tool set names, so replay can rebuild them)."""
        self.events = ev.EventBus()
        self.step_gate: StepGate | None = None
        """A console pauses runs here between steps; the messages it returns (what the user did
        meanwhile, e.g. a click on the screen) join the conversation before the next step."""

    def iter(
        self,
        instruction: str,
        *,
        audio: AudioInput = None,
        images: ImagesInput = None,
        history: Sequence[Message] = (),
    ) -> AgentRun:
        """Start a run; iterate it (``async for event in run``) to drive it; ``run.result`` at the end.
        ``history``: earlier turns of the same conversation (no system message), placed before
        this instruction, so a multi-turn dialogue continues where it left off."""
        return AgentRun(self, instruction, audio=audio, images=images, history=history)

    async def arun(
        self,
        instruction: str,
        *,
        audio: AudioInput = None,
        images: ImagesInput = None,
        history: Sequence[Message] = (),
    ) -> RunResult:
        run = self.iter(instruction, audio=audio, images=images, history=history)
        async for _ in run:
            pass
        assert run.result is not None
        return run.result

    def run(
        self,
        instruction: str,
        *,
        audio: AudioInput = None,
        images: ImagesInput = None,
    ) -> RunResult:
        """Blocking twin of :meth:`arun` (not from inside a running event loop).

        The run gets its own event loop, which ends with it: a browser session you passed in is
        closed then (a browser cannot outlive its loop). To use it after the run, ``await
        agent.arun(...)`` in your own loop."""
        return run_blocking(_blocking(self.arun(instruction, audio=audio, images=images)), what="Agent.run()")


async def _blocking(coro: Any) -> Any:
    _BLOCKING.set(True)
    return await coro


def run_blocking(coro: Any, *, what: str) -> Any:
    """Run a coroutine on a fresh event loop whose worker threads never delay the return.

    Sync tools run in threads; one that hangs past its timeout cannot be killed. Daemon threads
    let the caller return (and the process exit) without waiting for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise UserError(f"{what} was called inside a running event loop; await its async twin instead")

    def new_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        loop.set_default_executor(DaemonThreadExecutor())
        return loop

    if hasattr(asyncio, "Runner"):  # 3.11+: Ctrl-C cancels the run, which then closes its trajectory
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(coro)
    loop = new_loop()  # pragma: no cover - Python 3.10
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


_DONE = object()


class AgentRun:
    """One run in progress: an async iterator of events; ``result`` is set once it ends."""

    def __init__(self, agent: Agent, instruction: str, *, audio: Any, images: Any, history: Sequence[Message] = ()) -> None:
        self.run_id = new_run_id()
        self.result: RunResult | None = None
        self._body = _RunBody(agent, self.run_id, instruction, audio=audio, images=images)
        self._body.earlier = list(history)
        self._events = self._drive()

    def __aiter__(self) -> AsyncIterator[ev.AgentEvent]:
        return self._events

    async def _drive(self) -> AsyncIterator[ev.AgentEvent]:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def forward(event: ev.AgentEvent) -> None:
            if event.run_id in (self.run_id, ""):
                queue.put_nowait(event)

        unsubscribe = self._body.agent.events.subscribe(forward)
        task = asyncio.create_task(self._body.run())
        task.add_done_callback(lambda _: queue.put_nowait(_DONE))
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                yield item
            self.result = task.result()
        finally:
            unsubscribe()
            if not task.done():
                task.cancel()
                await asyncio.wait({task})


# -- one run ---------------------------------------------------------------------------------


class _RunBody:
    """State and phases of a single run (created by :class:`AgentRun`)."""

    def __init__(self, agent: Agent, run_id: str, instruction: str, *, audio: Any, images: Any) -> None:
        self.agent = agent
        self.run_id = run_id
        self.instruction = instruction
        self.audio_in = audio
        self.images_in = images
        self.history: list[Any] = []
        self.earlier: list[Any] = []
        """Earlier turns of the conversation (``Agent.arun(history=...)``)."""
        self.recorded_upto = 0
        self.state: dict[str, Any] = {}
        self.untrusted_seen = False
        self.usage = Usage()
        self.hasher = MediaHasher()
        self.recorder: RunRecorder | None = None
        self.started = 0.0
        self.deadline: float | None = None
        self.last_audio: AudioPart | None = None
        self.timings: dict[str, float] = {}
        self.partial_raw = ""
        """What a stream that failed mid-way had sent (kept in the trajectory)."""

    # -- helpers ------------------------------------------------------------------------------
    async def emit(self, event: ev.AgentEvent) -> None:
        event.run_id = self.run_id
        await self.agent.events.emit(event)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def context(self, step: int, call_id: str = "") -> ToolContext:
        return ToolContext(
            workspace=self.agent.workspace,
            run_id=self.run_id,
            step=step,
            call_id=call_id,
            events=self.agent.events,
            state=self.state,
            untrusted_content_seen=self.untrusted_seen,
        )

    def _user_parts(self) -> list[Any]:
        parts: list[Any] = []
        for img in self.images_in or ():
            parts.append(_as_image(img))
        if self.audio_in is not None:
            parts.append(_as_audio(self.audio_in))
        if self.instruction or not parts:
            parts.append(TextPart(text=self.instruction))
        return parts

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> RunResult:
        agent = self.agent
        self.started = time.monotonic()
        if agent.max_seconds is not None:
            self.deadline = self.started + agent.max_seconds
        user_parts = self._user_parts()  # bad inputs raise UserError before anything is written
        await self._preflight()  # a missing display or browser raises now, before the model runs
        if agent.system_prompt:
            self.history.append(SystemMessage(agent.system_prompt))
        self.history.extend(self.earlier)
        self.history.append(UserMessage(user_parts))
        self._open_trajectory()
        await self.emit(
            ev.RunStarted(
                instruction=self.instruction,
                model=agent.model.info.label,
                tools=agent.tools.names,
                trajectory_dir=str(self.recorder.dir) if self.recorder else None,
            )
        )
        answer: str | None = None
        error: str | None = None
        reason = StopReason.MAX_STEPS
        step = 0
        failures = 0
        repeats = 0
        last_signature = ""
        try:
            first_look = await self._observe(0)
            if first_look:
                self.history.append(UserMessage(first_look))
            while True:
                if agent.step_gate is not None:
                    self.history.extend(await agent.step_gate(step))
                if step >= agent.max_steps:
                    reason, error = StopReason.MAX_STEPS, f"stopped after {plural(agent.max_steps, 'step')}"
                    break
                left = self.remaining()
                if left is not None and left <= 0:
                    reason, error = StopReason.TIME_LIMIT, f"the {agent.max_seconds:g} s limit was reached"
                    break
                step += 1
                t_step = time.monotonic()
                outcome = await self._step(step)
                await self.emit(ev.StepFinished(step=step, seconds=time.monotonic() - t_step))
                match outcome:
                    case FinalAnswer(text=text):
                        reason, answer = StopReason.ANSWER, text
                        break
                    case Finished(answer=text):
                        reason, answer = StopReason.FINISHING_TOOL, text
                        break
                    case Halt(reason=why, message=message):
                        reason, error = why, message
                        break
                    case Continue(failed=failed, signature=signature):
                        failures = failures + 1 if failed else 0
                        repeats = repeats + 1 if signature == last_signature else 1
                        last_signature = signature
                        if failures >= agent.max_consecutive_failures:
                            reason = StopReason.TOO_MANY_FAILURES
                            error = f"{plural(failures, 'failed step')} in a row"
                            break
                        if repeats >= agent.max_repeats:
                            reason = StopReason.LOOP_DETECTED
                            error = f"the same calls on an unchanged observation {repeats} times in a row"
                            break
                    case _:
                        assert_never(outcome)
        except asyncio.CancelledError:
            reason, error = StopReason.CANCELLED, "the run was cancelled"
            await self._finish(step, reason, answer, error)
            raise
        except BaseException as exc:  # a bug in the loop itself: keep the trajectory, then raise
            await self._abandon(step, exc)
            raise
        if error and reason not in (StopReason.ANSWER, StopReason.FINISHING_TOOL):
            await self.emit(ev.ErrorEvent(step=step, message=error, kind=reason.value))
        return await self._finish(step, reason, answer, error)

    async def _preflight(self) -> None:
        """Run each tool's ``preflight`` check once (tools of one set share theirs)."""
        seen: set[int] = set()
        for t in self.agent.tools:
            check = t.preflight
            if check is None or id(check) in seen:
                continue
            seen.add(id(check))
            out = check()
            if inspect.isawaitable(out):
                await out

    async def _abandon(self, steps: int, exc: BaseException) -> None:
        if self.recorder is not None:
            error = f"internal error: {type(exc).__name__}: {exc}"
            await self._report(self.recorder.finish(stop_reason="internal_error", error=error, steps=steps))

    async def _finish(self, steps: int, reason: StopReason, answer: str | None, error: str | None) -> RunResult:
        seconds = time.monotonic() - self.started
        await self._close_state()
        if self.recorder is not None:
            failure = self.recorder.finish(
                audio=self.last_audio,
                stop_reason=reason.value,
                answer=answer,
                error=error,
                steps=steps,
                seconds=round(seconds, 3),
                usage=self.usage,
            )
            await self._report(failure)
        report = await self._write_page() if self.recorder is not None and self.agent.html_report else None
        await self.emit(ev.RunFinished(step=steps, reason=reason.value, answer=answer, steps=steps, seconds=seconds))
        return RunResult(
            run_id=self.run_id,
            answer=answer,
            stop_reason=reason,
            steps=steps,
            messages=list(self.history),
            usage=self.usage,
            trajectory_dir=self.recorder.dir if self.recorder else None,
            seconds=seconds,
            model=self.agent.model.info.label,
            error=error,
            audio=self.last_audio,
            report=report,
        )

    async def _write_page(self) -> Path | None:
        """The run's index.html; a failure is reported as an event, never raised (the run is done)."""
        from .html_report import render_trajectory_html

        assert self.recorder is not None
        try:
            return await asyncio.to_thread(render_trajectory_html, self.recorder.dir)
        except Exception as exc:
            await self.emit(ev.ErrorEvent(message=f"no HTML page: {type(exc).__name__}: {exc}", kind="trajectory"))
            return None

    # -- one step -----------------------------------------------------------------------------
    async def _step(self, step: int) -> TurnOutcome:
        agent = self.agent
        t_step = time.monotonic()
        self.timings = {}
        await self.emit(ev.StepStarted(step=step))
        sent, evicted = apply_image_budget(self.history, max_images=agent.max_images, chunk=agent.image_evict_chunk)
        log = StepRecord(step=step, new_messages=self.history[self.recorded_upto :], evicted_images=evicted)
        if self.recorder is not None:  # rendering the whole prompt every step is for the trajectory only
            log.prompt_hash = hashlib.sha256(render_prompt(sent, self.hasher).encode()).hexdigest()[:32]
        self.recorded_upto = len(self.history)
        request = ModelRequest(
            messages=sent, tools=agent.tools.schemas(), settings=agent.settings, speak=agent.speak, voice=agent.voice
        )

        t = time.monotonic()
        try:
            left = self.remaining()
            response, raw_text, visible, thinking, calls, problems = await asyncio.wait_for(
                self._call_model(request, step), timeout=None if left is None else max(left, 0.001)
            )
        except asyncio.TimeoutError:
            message = f"the {agent.max_seconds:g} s limit was reached while the model was generating"
            log.raw_text = self.partial_raw
            return await self._halt(log, t_step, Halt(StopReason.TIME_LIMIT, message), logged=message)
        except ModelError as exc:
            halt = Halt(StopReason.MODEL_ERROR, f"model error: {exc.message}")
            log.raw_text = self.partial_raw  # the text already shown stays in the trajectory
            return await self._halt(log, t_step, halt, logged=exc.message)
        except Exception as exc:  # a backend bug must end the run cleanly, trajectory kept
            message = f"model backend failed: {type(exc).__name__}: {exc}"
            log.raw_text = self.partial_raw
            return await self._halt(log, t_step, Halt(StopReason.MODEL_ERROR, message), logged=message)
        self.timings["model"] = time.monotonic() - t
        self.usage = _add_usage(self.usage, response.usage)
        if response.audio is not None:
            self.last_audio = response.audio
        await self.emit(
            ev.ModelFinished(
                step=step,
                raw_text=raw_text,
                seconds=self.timings["model"],
                prompt_tokens=response.usage.prompt_tokens,
                completion_tokens=response.usage.completion_tokens,
            )
        )
        log.raw_text, log.visible_text, log.thinking = raw_text, visible, thinking
        log.calls, log.parse_problems, log.usage = calls, problems, response.usage
        content: list[Any] = [TextPart(text=visible)] if visible else []
        if response.audio is not None:
            content.append(response.audio)
        self.history.append(AssistantMessage(content, thinking=thinking, tool_calls=calls, raw_text=raw_text))

        fatal = [p for p in problems if p.fatal]
        for p in fatal:
            await self.emit(ev.ErrorEvent(step=step, message=f"{p.kind}: {p.message}", kind="parse"))
        cut_off = response.finish_reason == "length"
        if not calls and not fatal:
            if cut_off:  # a reply that stopped mid-way is not an answer
                limit = agent.settings.max_new_tokens
                message = f"the reply was cut off at the token limit ({limit} new tokens) before it finished"
                return await self._halt(log, t_step, Halt(StopReason.TOKEN_LIMIT, message), logged=message)
            await self._record(log, outcome="answer", t_step=t_step)
            return FinalAnswer(visible)

        outcomes = await self._run_calls(step, calls, log, t_step)
        results = log.results = [o.result for o in outcomes]
        for r in results:
            self.history.append(ToolMessage(result=r))
        if fatal:
            limit = agent.settings.max_new_tokens if cut_off else None  # a call cut off: say why
            self.history.append(UserMessage(_problem_feedback(fatal, token_limit=limit)))

        finishing = next((o.output for o in outcomes if o.finishes), None)
        if finishing is not None:
            await self._record(log, outcome="finish", t_step=t_step)
            return Finished(finishing.answer if finishing.answer is not None else finishing.text)

        t = time.monotonic()
        observation = await self._observe(step)
        self.timings["observe"] = time.monotonic() - t
        if observation:
            self.history.append(UserMessage(observation))
        log.observation = observation
        failed = not results or all(r.is_error for r in results)
        await self._record(log, outcome="failed" if failed else "tools", t_step=t_step)
        return Continue(failed=failed, signature=self._signature(calls, results, observation))

    async def _halt(self, log: StepRecord, t_step: float, halt: Halt, *, logged: str) -> Halt:
        """End the step without a model turn; the trajectory keeps the step and ``logged``."""
        log.error = logged
        await self._record(log, outcome=halt.reason.value, t_step=t_step)
        return halt

    async def _call_model(
        self, request: ModelRequest, step: int
    ) -> tuple[ModelResponse, str, str, str | None, list[ToolCall], list[ParseProblem]]:
        """Stream the model through the incremental parser, emitting text and calls as they arrive."""
        from .parsing import StreamParser, calls_from_openai
        from .parsing.stream import CallReady, Problem, TextDelta

        # Thinking checkpoints whose template opens <think> in the prompt say so in info.extra.
        parser = StreamParser(starts_in_thinking=bool(self.agent.model.info.extra.get("starts_in_thinking", False)))
        visible: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        problems: list[ParseProblem] = []
        fed: list[str] = []
        response: ModelResponse | None = None

        async def handle(items: list[Any]) -> None:
            for item in items:
                if isinstance(item, TextDelta):
                    (thinking if item.channel == "thinking" else visible).append(item.text)
                    await self.emit(ev.ModelTextDelta(step=step, text=item.text, channel=item.channel))
                elif isinstance(item, CallReady):
                    calls.append(item.call)
                    await self.emit(ev.CallParsed(step=step, call=item.call))
                elif isinstance(item, Problem):
                    problems.append(item.problem)

        stream = self.agent.model.stream(request)
        self.partial_raw = ""
        try:
            async for chunk in stream:
                if chunk.text:
                    fed.append(chunk.text)
                    await handle(parser.feed(chunk.text))
                if chunk.response is not None:
                    response = chunk.response
        except BaseException:
            self.partial_raw = "".join(fed)  # shown already: the trajectory keeps it too
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if response is None:
            raise ModelError("the model's stream ended without a final response")
        if not fed and response.text:
            fed.append(response.text)
            await handle(parser.feed(response.text))
        await handle(parser.close())

        native: list[ToolCall] = []
        if response.raw_tool_calls:
            native, native_problems = calls_from_openai(response.raw_tool_calls)
            problems.extend(native_problems)
        elif response.tool_calls:
            native = list(response.tool_calls)
        if native:
            # Some servers parse the calls *and* leave the XML in the content: keep one copy.
            seen = {_call_key(c) for c in native}
            calls[:] = [c for c in calls if _call_key(c) not in seen]
            for c in native:
                await self.emit(ev.CallParsed(step=step, call=c))
            calls[:0] = native
        raw_text = "".join(fed)
        return response, raw_text, "".join(visible).strip(), ("".join(thinking).strip() or None), calls, problems

    async def _run_calls(self, step: int, calls: list[ToolCall], log: StepRecord, t_step: float) -> list[CallOutcome]:
        """The per-call phase (:func:`~omni_agent.execution.execute_calls`), logged in the trajectory."""
        agent = self.agent

        async def record_checked(checked: list[CheckedCall]) -> None:
            # Written before any tool runs: a run that dies inside a tool still shows what it tried.
            log.validations = [c.validation for c in checked]
            log.decisions = [c.decision for c in checked if c.decision is not None]
            log.executed = [c.call.id for c in checked if c.allowed]
            await self._record(log, outcome="running", t_step=t_step, complete=False)

        outcomes = await execute_calls(
            calls,
            step=step,
            registry=agent.tools,
            policy=agent.policy,
            approver=agent.approver,
            policy_state=PolicyState(run_id=self.run_id, step=step, untrusted_content_seen=self.untrusted_seen),
            context_factory=lambda call_id: self.context(step, call_id),
            emit=self.emit,
            tool_timeout=agent.tool_timeout,
            deadline=self.deadline,
            before_running=record_checked,
            timings=self.timings,
        )
        if any(o.brought_untrusted for o in outcomes):
            self.untrusted_seen = True
        return outcomes

    async def _observe(self, step: int) -> list[ContentPart]:
        if not self.agent.observers:
            return []
        settle = max((float(getattr(o, "settle_s", 0.0) or 0.0) for o in self.agent.observers), default=0.0)
        if settle > 0:
            await asyncio.sleep(settle)
        parts: list[ContentPart] = []
        for o in self.agent.observers:
            left = self.remaining()
            timeout = OBSERVER_TIMEOUT_S if left is None else max(0.001, min(left, OBSERVER_TIMEOUT_S))
            try:
                got = await asyncio.wait_for(o.observe(self.context(step)), timeout=timeout)
                parts.extend(got or [])
                if got and getattr(o, "untrusted", False):  # e.g. a screenshot of a web page
                    self.untrusted_seen = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed screenshot must not end the run
                message = f"observation failed: {type(exc).__name__}: {exc}"
                await self.emit(ev.ErrorEvent(step=step, message=message, kind="observer"))
                parts.append(TextPart(text=f"[{message}]"))
        return parts

    def _signature(self, calls: list[ToolCall], results: list[ToolResult], observation: list[Any]) -> str:
        """Same calls, same results, same observation -> same signature (for loop detection)."""
        h = hashlib.sha256()
        for c in calls:
            h.update(json.dumps([c.name, c.arguments], sort_keys=True, default=str).encode())
        for r in results:
            h.update(json.dumps([r.is_error, r.text]).encode())
            for img in r.images:
                h.update(self.hasher(img).encode())
        for p in observation:
            h.update((p.text if isinstance(p, TextPart) else self.hasher(p)).encode())
        return h.hexdigest()

    async def _close_state(self) -> None:
        for key, value in list(self.state.items()):
            closer = getattr(value, "aclose", None) or getattr(value, "close", None)
            if key.startswith(LOOP_BOUND_STATE):  # the caller's: ended only with a blocking run's loop
                closer = getattr(value, "loop_ending", None) if _BLOCKING.get() else None
            if closer is None or not callable(closer):
                continue
            try:
                out = closer()
                if inspect.isawaitable(out):
                    await asyncio.wait_for(out, timeout=30)
            except Exception as exc:  # cleanup failures are reported, never raised
                await self.emit(ev.ErrorEvent(message=f"closing {key!r} failed: {type(exc).__name__}: {exc}", kind="cleanup"))

    # -- trajectory ---------------------------------------------------------------------------
    def _open_trajectory(self) -> None:
        agent = self.agent
        if agent.trajectory_dir is None:
            return
        info = agent.model.info
        meta = RunMeta(
            run_id=self.run_id,
            model=info.label,
            model_name=info.name,
            backend=info.backend,
            scripted=info.is_scripted,
            instruction=self.instruction,
            system_prompt=agent.system_prompt,
            tools=agent.tools.schemas(),
            settings=agent.settings.model_dump(mode="json"),
            limits={
                "max_steps": agent.max_steps,
                "max_seconds": agent.max_seconds,
                "max_images": agent.max_images,
                "image_evict_chunk": agent.image_evict_chunk,
                "max_consecutive_failures": agent.max_consecutive_failures,
                "max_repeats": agent.max_repeats,
            },
            **agent.metadata,
        )
        self.recorder = RunRecorder.start(agent.trajectory_dir, meta)

    async def _record(self, record: StepRecord, *, outcome: str, t_step: float, complete: bool = True) -> None:
        if self.recorder is None:
            return
        record.complete, record.outcome = complete, outcome
        record.timings = {k: round(v, 6) for k, v in self.timings.items()}
        record.timings["step"] = round(time.monotonic() - t_step, 6)
        # PNG encoding and fsync take tens of ms: off the event loop, so other runs and displays go on.
        await self._report(await asyncio.to_thread(self.recorder.step, record))

    async def _report(self, failure: str | None) -> None:
        """Trajectory I/O failures (disk full) are reported once; the run itself goes on."""
        if failure:
            await self.emit(ev.ErrorEvent(message=failure, kind="trajectory"))


# -- small helpers ---------------------------------------------------------------------------


def _call_key(call: ToolCall) -> str:
    return json.dumps([call.name, call.arguments], sort_keys=True, default=str)


def _problem_feedback(problems: list[ParseProblem], *, token_limit: int | None = None) -> list[ContentPart]:
    lines = ["[tool-call error] Some of your tool calls could not be read and did not run:"]
    for p in problems:
        lines.append(f"- {p.message}" + (f" (near: {p.snippet})" if p.snippet else ""))
    if token_limit is not None:
        lines.append(f"Your reply was cut off at the token limit ({token_limit} tokens): write shorter calls, one at a time.")
    lines.append('Write each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call> with valid JSON.')
    return [TextPart(text="\n".join(lines))]


def _add_usage(total: Usage, more: Usage) -> Usage:
    return Usage(
        prompt_tokens=total.prompt_tokens + more.prompt_tokens,
        completion_tokens=total.completion_tokens + more.completion_tokens,
        cached_tokens=total.cached_tokens + more.cached_tokens,
    )


def _as_image(value: Any) -> ImagePart:
    if isinstance(value, ImagePart):
        if value.path and value._image is None and not Path(value.path).is_absolute():
            return ImagePart.from_path(Path(value.path).resolve())
        return value
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise UserError(f"image not found: {path}")
        return ImagePart.from_path(path.resolve())
    if hasattr(value, "save") and hasattr(value, "size"):
        return ImagePart.from_pil(value)
    raise UserError(f"images must be PIL images, ImageParts or paths, got {type(value).__name__}")


def _as_audio(value: Any) -> AudioPart:
    if isinstance(value, AudioPart):
        part = value
    elif isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise UserError(f"audio file not found: {path}")
        part = AudioPart.from_path(path.resolve())
    elif isinstance(value, tuple) and len(value) == 2:
        part = AudioPart.from_array(value[0], int(value[1]))
    else:
        raise UserError(f"audio must be an AudioPart, a path or (samples, rate), got {type(value).__name__}")
    if part._samples is None and part.path:
        try:
            part.load()  # decoded once here so the trajectory stores a copy and errors surface now
        except Exception as exc:
            raise UserError(f"cannot read audio {part.path}: {exc}") from exc
    return part
