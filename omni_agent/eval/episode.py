"""Run one episode, start to end, inside a worker process: set up, run the agent, check, tear down.

This is the code every worker runs (a local worker subprocess, or a Ray task on another node),
so an episode behaves the same wherever it runs. Each episode gets its own workspace, its own
virtual display (when the task needs one; the worker process's ``DISPLAY`` points at it) and its
own browser (a fresh :class:`BrowserSession`, so nothing is shared between episodes).

Failures are sorted here: setup failures and a browser that crashed are infrastructure errors
(``infra_error=True``: the runner retries them); mistakes in the task file itself (a tool module
that does not load, bad tool options) are task errors (``error_stage="task"``, never retried); a model that answers wrongly, runs out of
steps or time, or calls tools badly is a failed episode (never retried); a check that raises is a
failed check.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..exceptions import UserError
from ..messages import AssistantMessage, ToolCall
from ..models.base import Model, ModelChunk, ModelRequest, ModelResponse
from ..tool import Tool, ToolOutput
from ..trajectory import utc_now
from .checks import CheckContext, run_checks
from .policy import is_reference, reference_model
from .results import TASK_STAGE, EpisodeResult
from .safety import EpisodeApprover, HostMode, HostSafetyError, episode_tool_options, sandbox_refusals
from .setup import EpisodeEnvironment, SetupError
from .task import BrowserSetup, Task, substitute

__all__ = ["EpisodeJob", "run_episode", "run_episode_async"]


class EpisodeJob(BaseModel):
    """Everything a worker needs for one attempt of one episode."""

    task: Task
    model: str
    episode_id: str
    episode_dir: str
    run_dir: str
    attempt: int = 1
    worker: str = ""
    host_mode: HostMode = "sandboxed"
    """sandboxed (default): shell in the sandbox, "ask" denied unless approved by the task;
    host: ``--unsafe-host``."""


def run_episode(job: EpisodeJob) -> EpisodeResult:
    return asyncio.run(run_episode_async(job))


def _function_tool(schema: dict[str, Any]) -> Tool:
    """A schema-only function: the call is validated and recorded; the result says so."""

    def recorded(**arguments: Any) -> ToolOutput:
        return ToolOutput(text=json.dumps({"status": "recorded", "arguments": arguments}, default=str))

    return Tool.from_schema(schema, recorded)


async def _prepare_browser(session: Any, setup: BrowserSetup, values: dict[str, Any]) -> None:
    page = await session.page()
    if setup.viewport:
        await page.set_viewport_size({"width": setup.viewport[0], "height": setup.viewport[1]})
    await page.goto(substitute(setup.url, values), wait_until="load")
    if setup.wait_for:
        await page.wait_for_selector(setup.wait_for, state="attached", timeout=15000)
    for expr in setup.init_js:
        await page.evaluate(substitute(expr, values))
    if setup.wait_js:
        await page.wait_for_function(substitute(setup.wait_js, values), timeout=15000)
    for name, expr in setup.values.items():
        values[name] = await page.evaluate(substitute(expr, values))


def _first_output(messages: list[Any]) -> str | None:
    """The first assistant turn as the model wrote it (native calls rendered as Qwen blocks)."""
    from ..prompting import render_tool_call

    first = next((m for m in messages if isinstance(m, AssistantMessage)), None)
    if first is None:
        return None
    if first.raw_text and "<tool_call>" in first.raw_text or not first.tool_calls:
        return first.raw_text or first.text
    return "\n".join(render_tool_call(c.name, c.arguments) for c in first.tool_calls)


def _calls_by_step(messages: list[Any]) -> list[list[ToolCall]]:
    return [list(m.tool_calls) for m in messages if isinstance(m, AssistantMessage)]


async def run_episode_async(job: EpisodeJob) -> EpisodeResult:  # noqa: C901 - one linear story
    task = job.task
    if "tau2" in task.metadata:  # a conversation with a simulated user, scored by tau2 (tau2_episode.py)
        from .tau2_episode import run_tau2_episode

        return await run_tau2_episode(job)
    ep_dir = Path(job.episode_dir)
    run_dir = Path(job.run_dir)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    base = dict(
        episode_id=job.episode_id,
        task_id=task.id,
        category=task.category,
        attempts=job.attempt,
        worker=job.worker,
        scripted=is_reference(job.model) or job.model.startswith("scripted:"),
        host_mode=job.host_mode,
    )

    def done(**fields: Any) -> EpisodeResult:
        fields.setdefault("total_seconds", round(time.perf_counter() - t0, 4))
        fields.setdefault("timings", {k: round(v, 4) for k, v in timings.items()})
        fields.setdefault("finished_at", utc_now())
        return EpisodeResult(**{**base, **fields})

    env = EpisodeEnvironment(task, workspace=ep_dir / "workspace", scratch=ep_dir / "scratch")
    session: Any = None
    label = "reference solution (scripted policy, not a model)" if is_reference(job.model) else job.model
    try:
        # -- setup ------------------------------------------------------------------------------
        t = time.perf_counter()
        try:
            env.start()
            _record_pids(env)
            if env.display is not None:
                os.environ["DISPLAY"] = env.display.display
            tools = _build_tools(task, env, host_mode=job.host_mode)
            if task.needs_browser:
                session = tools.session
            if task.setup.browser is not None:
                await _prepare_browser(session, task.setup.browser, env.values)
        except SetupError as exc:
            return done(status="error", error=exc.message, error_stage="setup", infra_error=True, model=label)
        except (HostSafetyError, UserError, ValidationError) as exc:  # the task file's own mistake (or a
            # demand only --unsafe-host allows): retrying cannot help
            return done(status="error", error=f"task file: {_first_line(exc)}", error_stage=TASK_STAGE,
                        infra_error=False, model=label)  # fmt: skip
        except Exception as exc:
            return done(status="error", error=f"setup failed: {type(exc).__name__}: {_first_line(exc)}",
                        error_stage="setup", infra_error=True, model=label)  # fmt: skip
        timings["setup"] = time.perf_counter() - t

        # -- model -----------------------------------------------------------------------------
        from ..exceptions import ModelUnavailableError, OmniAgentError

        try:
            model = _build_model(task, job.model, env.values)
        except ModelUnavailableError as exc:
            return done(status="error", error=exc.message, error_stage="model", infra_error=True, model=label)
        except OmniAgentError as exc:
            return done(status="error", error=exc.message, error_stage="model", infra_error=False, model=label)
        label = model.info.label
        model = _UnavailabilityWatch(model)

        # -- run -------------------------------------------------------------------------------
        from ..loop import Agent
        from ..policy import allow_all

        observers = []
        if session is not None:
            from ..tools.browser_observer import BrowserScreenshotObserver

            observers.append(BrowserScreenshotObserver(session))
        if "desktop" in task.tools and env.display is not None:
            from ..screen import ScreenCapture
            from ..tools.desktop_observer import DesktopScreenshotObserver

            observers.append(DesktopScreenshotObserver(ScreenCapture(display=env.display.display)))
        traj_dir = ep_dir / "trajectory"
        approver = None if job.host_mode == "host" else EpisodeApprover(task.approve_tools)
        agent = Agent(
            model,
            tools.tools,
            system_prompt=task.system,
            max_steps=task.limits.steps,
            max_seconds=task.limits.seconds,
            observers=observers,
            # Sandboxed (default): every "ask" is denied unless the task approves the tool, and
            # recorded; --unsafe-host approves them all.
            approver=allow_all if approver is None else approver,
            trajectory_dir=traj_dir,
            html_report=False,  # the suite report renders each episode's page
            workspace=env.workspace,
            # What replay needs to re-run the calls where and as they ran (omni_agent.replay).
            metadata={"toolsets": list(task.tools), "workspace": str(env.workspace.resolve()), "host_mode": job.host_mode,
                      "sandbox": "none" if job.host_mode == "host" else str(tools.options.get("sandbox", "none")),
                      "approve_tools": list(task.approve_tools)},  # fmt: skip
        )
        instruction = substitute(task.instruction_text, env.values)
        audio = task.instruction_audio
        t = time.perf_counter()
        try:
            result = await agent.arun(instruction, audio=str(task.base_dir / audio) if audio else None)
        except OmniAgentError as exc:  # a check at run start: the display or browser set up for it is gone
            return done(status="error", error=exc.message, error_stage="setup", infra_error=True, model=label)
        timings["agent"] = time.perf_counter() - t
        await model.aclose()

        if model.unavailable is not None and result.stop_reason.value == "model_error":
            # The server went away or the checkpoint cannot load: the harness's problem, not a
            # wrong answer (retried, and reported as an error rather than as the model failing).
            return done(status="error", error=f"model unavailable: {model.unavailable}", error_stage="model",
                        infra_error=True, model=label, steps=result.steps, seconds=round(result.seconds, 4),
                        stop_reason=result.stop_reason.value,
                        trajectory=os.path.relpath(result.trajectory_dir, run_dir) if result.trajectory_dir else None)  # fmt: skip
        crashed = session is not None and session.launches > 1
        # -- checks ----------------------------------------------------------------------------
        t = time.perf_counter()
        page_getter = None
        if session is not None and session.running:
            page_getter = session.page
        ctx = CheckContext(
            workspace=env.workspace,
            env=env.env,
            values=env.values,
            answer=result.answer,
            calls_by_step=_calls_by_step(result.messages),
            page=page_getter,
            first_output=_first_output(result.messages),
        )
        checks = await run_checks(task.checks, ctx)
        timings["checks"] = time.perf_counter() - t
        shells = {tool.name for tool in tools.tools if tool.kind == "shell"}
        denials = (approver.denials if approver is not None else []) + (
            sandbox_refusals(result.messages, shell_tools=shells) if job.host_mode == "sandboxed" else []
        )
        passed = all(c.passed for c in checks)
        fields: dict[str, Any] = dict(
            checks=checks,
            answer=result.answer,
            stop_reason=result.stop_reason.value,
            steps=result.steps,
            seconds=round(result.seconds, 4),
            prompt_tokens=result.usage.prompt_tokens,
            completion_tokens=result.usage.completion_tokens,
            model=label,
            error=result.error,
            error_stage="run" if result.error else None,
            metrics=ctx.metrics,
            denials=denials,
            trajectory=os.path.relpath(result.trajectory_dir, run_dir) if result.trajectory_dir else None,
        )
        if crashed and not passed:
            fields.update(status="error", infra_error=True, error_stage="run",
                          error="the browser crashed during the episode")  # fmt: skip
            return done(**fields)
        return done(status="passed" if passed else "failed", **fields)
    finally:
        t = time.perf_counter()
        problems = env.run_teardown() if env.workspace.exists() else []
        if session is not None:
            try:
                await session.close()
            except Exception as exc:  # teardown must never hide the episode's result
                problems.append(f"closing the browser: {exc}")
        env.close()
        timings["teardown"] = time.perf_counter() - t
        if problems:
            (ep_dir / "scratch").mkdir(parents=True, exist_ok=True)
            (ep_dir / "scratch" / "teardown-problems.txt").write_text("\n".join(problems) + "\n")


class _UnavailabilityWatch(Model):
    """Passes every call to the episode's model and notes a :class:`ModelUnavailableError`
    (server down, checkpoint missing): the agent loop turns any model error into a stopped run,
    and only the episode can tell "the model could not be reached" (infrastructure, retried)
    from "the model answered badly" (a failed episode)."""

    def __init__(self, inner: Model) -> None:
        self.inner = inner
        self.info = inner.info
        self.unavailable: str | None = None

    def _note(self, exc: BaseException) -> None:
        from ..exceptions import ModelUnavailableError

        if isinstance(exc, ModelUnavailableError):
            self.unavailable = exc.message

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            return await self.inner.complete(request)
        except Exception as exc:
            self._note(exc)
            raise

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        try:
            async for chunk in self.inner.stream(request):
                yield chunk
        except Exception as exc:
            self._note(exc)
            raise

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # anything else a backend offers
        return getattr(self.inner, name)


class _Tools:
    def __init__(self, tools: list[Tool], session: Any, options: dict[str, Any]) -> None:
        self.tools = tools
        self.session = session
        self.options = options


def _build_tools(task: Task, env: EpisodeEnvironment, *, host_mode: HostMode = "sandboxed") -> _Tools:
    from ..toolsets import load_toolsets

    names = [n for n in task.tools if n != "browser"]
    # The episode's own web app (setup.web) stays reachable from the sandbox; nothing else does.
    ports = (int(env.values["port"]),) if "port" in env.values else ()
    options = episode_tool_options(task.tool_options, host_mode=host_mode, local_ports=ports)
    if "desktop" in task.tools:
        # The desktop observer shows the screen after every step; a second copy in each
        # action's result would only cost tokens.
        options.setdefault("screenshot_after_action", False)
        if env.display is not None:
            options.setdefault("display", env.display.display)
    tools = load_toolsets(names, workspace=env.workspace, options=options) if names else []
    session = None
    if task.needs_browser:
        from ..tools.browser import BrowserConfig, BrowserSession, browser_tools

        cfg = {k: v for k, v in options.items() if k in BrowserConfig.model_fields}
        cfg.setdefault("workspace", env.workspace)
        if "close_after_run" in BrowserConfig.model_fields:
            cfg["close_after_run"] = False  # the checks read the page after the run; closed in teardown
        if task.setup.browser and task.setup.browser.url.startswith("file:"):
            cfg.setdefault("allow_file_urls", True)
        if env.display is not None and not cfg.get("headless", True):
            cfg.setdefault("display", env.display.display)
        session = BrowserSession(BrowserConfig(**cfg))
        tools.extend(browser_tools(session.config, session=session))
    tools.extend(_function_tool(f) for f in task.functions)
    return _Tools(tools, session, options)


def _build_model(task: Task, model: str, values: dict[str, Any]) -> Any:
    if is_reference(model):
        return reference_model(task, values)
    from ..models.spec import load_model

    # A task file's own spec is relative to the task's folder; the --model given on the command
    # line is relative to where the command ran (the worker inherits that directory).
    return load_model(task.model, base_dir=task.base_dir) if task.model else load_model(model)


def _record_pids(env: EpisodeEnvironment) -> None:
    """Note the process groups this episode started, so the runner can clean up after a worker
    that died (a killed worker cannot stop its own Xvfb or web app)."""
    pids = env.started_pids()
    if pids:
        (env.scratch / "pids.txt").write_text("\n".join(map(str, pids)) + "\n")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
