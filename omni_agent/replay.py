"""Replay a trajectory without a model: re-run the recorded calls and see where the world diverged.

Every call that ran in the recorded run (valid and allowed) is executed again, in recorded
order, against the tools given, with the arguments the tool got then. Each new result is
compared with the recorded one: error status, text, and images (pixel by pixel, with a small
tolerance). Observers, when given, are compared with the recorded observations the same way.
A call whose step never finished (the process died while it ran) is listed but not re-run:
it may be what killed the process.

Replay runs calls where and as the recorded run did: the workspace is the one recorded in
meta.json unless one is given, and a call runs only if the run's policy lets it now (a call it
would deny, or ask about without the recorded run's approval of that very call, is "refused").
Without a recorded or given workspace, shell-kind tools are refused: re-running recorded
commands in whatever directory replay was started from could touch anything. The CLI also
refuses the shell when the trajectory does not say which sandbox the run used.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from .exceptions import ToolExecutionError
from .execution import cap_output
from .messages import ImagePart, TextPart
from .observers import Observer
from .policy import DefaultPolicy, Policy, PolicyState
from .registry import ToolRegistry
from .tool import Tool, ToolContext, ToolOutput
from .trajectory import StepRecord, Trajectory, load_trajectory

__all__ = ["ReplayReport", "ReplayedCall", "ReplayedObservation", "areplay", "image_difference", "recorded_setting", "replay"]

PIXEL_TOLERANCE = 16
"""A pixel counts as changed when a channel differs by more than this (JPEG noise, anti-aliasing)."""

Status = Literal["same", "diverged", "missing_tool", "not_run", "refused"]
"""refused: not re-run because it could not run as recorded (no workspace, policy says no)."""
SHELL_KINDS = frozenset({"shell"})


class ReplayedCall(BaseModel):
    step: int
    call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    status: Status
    differences: list[str] = Field(default_factory=list)
    recorded_text: str = ""
    replayed_text: str = ""
    recorded_error: bool | None = None
    replayed_error: bool | None = None
    pixel_difference: float | None = None
    """Largest fraction of changed pixels over the call's images (None without images)."""
    replayed_untrusted: bool = False
    """The replayed output carried outside content (the policy grows stricter after it)."""


class ReplayedObservation(BaseModel):
    step: int
    status: Literal["same", "diverged"]
    differences: list[str] = Field(default_factory=list)
    pixel_difference: float | None = None


class ReplayReport(BaseModel):
    trajectory_dir: Path
    calls: list[ReplayedCall] = Field(default_factory=list)
    observations: list[ReplayedObservation] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """True when every call that could be re-run gave the recorded result."""
        return all(c.status in ("same", "not_run") for c in self.calls) and all(
            o.status == "same" for o in self.observations
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def diverged(self) -> list[ReplayedCall]:
        return [c for c in self.calls if c.status in ("diverged", "missing_tool")]

    @property
    def first_divergence(self) -> ReplayedCall | None:
        bad = self.diverged
        return bad[0] if bad else None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.calls:
            counts[c.status] = counts.get(c.status, 0) + 1
        head = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no calls"
        lines = [f"replay of {self.trajectory_dir}: {head}" + ("" if self.ok else " -> DIVERGED")]
        for c in self.calls:
            if c.status != "same":
                lines.append(f"  step {c.step} {c.name} ({c.status}): " + "; ".join(c.differences))
        for o in self.observations:
            if o.status != "same":
                lines.append(f"  step {o.step} observation (diverged): " + "; ".join(o.differences))
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def replay(
    trajectory_dir: str | os.PathLike[str],
    tools: Iterable[Tool] | ToolRegistry,
    *,
    compare_screenshots: bool = True,
    observers: Sequence[Observer] = (),
    pixel_threshold: float = 0.01,
    workspace: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
    refused_tools: dict[str, str] | None = None,
) -> ReplayReport:
    """Blocking twin of :func:`areplay`."""
    from .loop import run_blocking

    return run_blocking(
        areplay(
            trajectory_dir,
            tools,
            compare_screenshots=compare_screenshots,
            observers=observers,
            pixel_threshold=pixel_threshold,
            workspace=workspace,
            policy=policy,
            refused_tools=refused_tools,
        ),
        what="replay()",
    )


async def areplay(
    trajectory_dir: str | os.PathLike[str],
    tools: Iterable[Tool] | ToolRegistry,
    *,
    compare_screenshots: bool = True,
    observers: Sequence[Observer] = (),
    pixel_threshold: float = 0.01,
    workspace: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
    refused_tools: dict[str, str] | None = None,
) -> ReplayReport:
    """Re-execute the recorded calls of ``trajectory_dir`` against ``tools`` and compare.

    ``pixel_threshold``: the fraction of changed pixels above which two images differ.
    ``workspace``: default the one meta.json records; with neither, shell tools are refused.
    ``policy``: judges each call again (default :class:`DefaultPolicy`); an "ask" runs only
    if the recorded run approved that call. ``refused_tools``: tool name -> why it is not re-run.
    """
    traj = load_trajectory(trajectory_dir)
    registry = tools if isinstance(tools, ToolRegistry) else ToolRegistry(tools)
    report = ReplayReport(trajectory_dir=traj.dir, notes=list(traj.warnings))
    state: dict[str, Any] = {}
    recorded_ws = recorded_setting(traj, "workspace")
    chosen = workspace if workspace is not None else recorded_ws
    ws = Path(chosen) if chosen is not None else Path.cwd()
    refused = dict(refused_tools or {})
    if chosen is None:
        no_ws = "the trajectory records no workspace and none was given, so shell commands are not re-run"
        refused.update({t.name: no_ws for t in registry if t.kind in SHELL_KINDS and t.name not in refused})
    gate = _PolicyGate(policy or DefaultPolicy(), refused)
    try:
        for record in traj.steps:
            for call_id in record.executed:
                why_not = gate.refusal(record, call_id, registry)
                if why_not is not None:
                    report.calls.append(_refused(record, call_id, why_not))
                    continue
                entry = await _replay_call(traj, record, call_id, registry, state, ws, compare_screenshots, pixel_threshold)
                gate.note(entry, registry)
                report.calls.append(entry)
            if observers and record.complete and record.observation:
                report.observations.append(
                    await _replay_observation(traj, record, observers, state, ws, compare_screenshots, pixel_threshold)
                )
    finally:
        await _close_state(state)
    return report


def recorded_setting(traj: Trajectory, key: str) -> Any:
    """A run setting meta.json records beside its fields (``workspace``, ``sandbox``, ``toolsets``)."""
    return (traj.meta.model_extra or {}).get(key)


class _PolicyGate:
    """Decides, call by call, whether replay may run it: the policy is asked again with the
    replay's own untrusted-content state; "ask" passes only with the recorded approval."""

    def __init__(self, policy: Policy, refused: dict[str, str]) -> None:
        self.policy = policy
        self.refused = refused
        self.untrusted_seen = False

    def refusal(self, record: StepRecord, call_id: str, registry: ToolRegistry) -> str | None:
        call = next((c for c in record.calls if c.id == call_id), None)
        if call is None:
            return None
        if call.name in self.refused:
            return self.refused[call.name]
        tool = registry.get(call.name)
        if tool is None:
            return None  # reported as missing_tool
        validated = next((v for v in record.validations if v.call_id == call_id), None)
        checked = call.model_copy(update={"arguments": validated.arguments}) if validated is not None else call
        state = PolicyState(run_id="replay", step=record.step, untrusted_content_seen=self.untrusted_seen)
        try:
            decision = self.policy.decide(checked, tool, state)
        except Exception as exc:  # fail closed, as the loop does
            return f"the policy failed ({type(exc).__name__}: {exc})"
        if decision.action == "allow":
            return None
        if decision.action == "ask":
            recorded = next((d for d in record.decisions if d.call_id == call_id), None)
            if recorded is not None and recorded.approved is True:
                return None
            return f"the policy asks ({decision.reason}) and the recorded run did not approve this call"
        return f"the policy denies it: {decision.reason}"

    def note(self, entry: "ReplayedCall", registry: ToolRegistry) -> None:
        tool = registry.get(entry.name)
        if entry.replayed_untrusted or (tool is not None and tool.reads_untrusted):
            self.untrusted_seen = True


def _refused(record: StepRecord, call_id: str, reason: str) -> "ReplayedCall":
    call = next((c for c in record.calls if c.id == call_id), None)
    return ReplayedCall(
        step=record.step, call_id=call_id, name=call.name if call else "?",
        arguments=call.arguments if call else {}, status="refused", differences=[reason],
    )  # fmt: skip


async def _replay_call(
    traj: Trajectory,
    record: StepRecord,
    call_id: str,
    registry: ToolRegistry,
    state: dict[str, Any],
    workspace: Path,
    compare_screenshots: bool,
    pixel_threshold: float,
) -> ReplayedCall:
    call = next((c for c in record.calls if c.id == call_id), None)
    name = call.name if call else "?"
    validated = next((v for v in record.validations if v.call_id == call_id), None)
    arguments = validated.arguments if validated is not None else (call.arguments if call else {})
    entry = ReplayedCall(step=record.step, call_id=call_id, name=name, arguments=arguments, status="same")
    recorded = next((r for r in record.results if r.call_id == call_id), None)
    if not record.complete or recorded is None:
        entry.status = "not_run"
        entry.differences.append("the recorded run died while this step ran: no recorded result to compare")
        return entry
    entry.recorded_text, entry.recorded_error = recorded.text, recorded.is_error
    tool = registry.get(name)
    if tool is None:
        entry.status = "missing_tool"
        entry.differences.append(f"no tool named {name!r} was given to replay")
        return entry
    context = ToolContext(
        workspace=workspace, run_id=f"replay-{traj.meta.run_id}", step=record.step, call_id=call_id, state=state
    )
    output = cap_output(await _invoke(tool, arguments, context))  # as the recorded run stored it
    entry.replayed_text, entry.replayed_error = output.text, output.is_error
    entry.replayed_untrusted = output.untrusted
    if output.is_error != recorded.is_error:
        entry.differences.append(
            f"error status: recorded {'error' if recorded.is_error else 'success'}, now {'error' if output.is_error else 'success'}"
        )
    if output.text != recorded.text:
        entry.differences.append(f"text: recorded {_short(recorded.text)}, now {_short(output.text)}")
    if compare_screenshots:
        diffs, worst = _compare_images(traj, recorded.images, output.images, pixel_threshold)
        entry.differences.extend(diffs)
        entry.pixel_difference = worst
    if entry.differences:
        entry.status = "diverged"
    return entry


async def _replay_observation(
    traj: Trajectory,
    record: StepRecord,
    observers: Sequence[Observer],
    state: dict[str, Any],
    workspace: Path,
    compare_screenshots: bool,
    pixel_threshold: float,
) -> ReplayedObservation:
    context = ToolContext(workspace=workspace, run_id=f"replay-{traj.meta.run_id}", step=record.step, state=state)
    settle = max((float(getattr(o, "settle_s", 0.0) or 0.0) for o in observers), default=0.0)
    if settle:
        await asyncio.sleep(settle)
    parts: list[Any] = []
    differences: list[str] = []
    for o in observers:
        try:
            parts.extend(await o.observe(context))
        except Exception as exc:  # reported as a divergence, like the loop reports it to the model
            differences.append(f"observation failed: {type(exc).__name__}: {exc}")
    old_text = [p.text for p in record.observation if isinstance(p, TextPart)]
    new_text = [p.text for p in parts if isinstance(p, TextPart)]
    if old_text != new_text:
        differences.append(f"text: recorded {_short(' | '.join(old_text))}, now {_short(' | '.join(new_text))}")
    worst = None
    if compare_screenshots:
        old_images = [p for p in record.observation if isinstance(p, ImagePart)]
        new_images = [p for p in parts if isinstance(p, ImagePart)]
        diffs, worst = _compare_images(traj, old_images, new_images, pixel_threshold)
        differences.extend(diffs)
    return ReplayedObservation(
        step=record.step, status="diverged" if differences else "same", differences=differences, pixel_difference=worst
    )


async def _invoke(tool: Tool, arguments: dict[str, Any], context: ToolContext) -> ToolOutput:
    try:
        return await asyncio.wait_for(tool.call(arguments, context), timeout=tool.timeout)
    except asyncio.TimeoutError:
        return ToolOutput.error(f"{tool.name} timed out after {tool.timeout:g} s and was abandoned")
    except ToolExecutionError as exc:
        return ToolOutput.error(exc.message)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # same wording as the loop, so text comparisons line up
        return ToolOutput.error(f"{tool.name} raised {type(exc).__name__}: {exc}")


def _compare_images(
    traj: Trajectory, recorded: list[ImagePart], replayed: list[ImagePart], threshold: float
) -> tuple[list[str], float | None]:
    if len(recorded) != len(replayed):
        return [f"images: recorded {len(recorded)}, now {len(replayed)}"], None
    differences: list[str] = []
    worst: float | None = None
    for i, (old, new) in enumerate(zip(recorded, replayed)):
        try:
            old_image = old.load(base_dir=traj.dir)
        except (OSError, ValueError) as exc:
            differences.append(f"image {i}: recorded file unreadable ({exc})")
            continue
        new_image = new.load()
        if old_image.size != new_image.size:
            differences.append(f"image {i}: size {old_image.size[0]}x{old_image.size[1]} is now {new_image.size[0]}x{new_image.size[1]}")
            worst = 1.0
            continue
        diff = image_difference(old_image, new_image)
        worst = diff if worst is None else max(worst, diff)
        if diff > threshold:
            differences.append(f"image {i}: {diff:.1%} of pixels changed")
    return differences, worst


def image_difference(a: Any, b: Any) -> float:
    """Fraction of pixels (0..1) whose colour changed by more than :data:`PIXEL_TOLERANCE`; 1.0 when sizes differ."""
    import numpy as np

    if a.size != b.size:
        return 1.0
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    changed = (np.abs(x - y).max(axis=-1) > PIXEL_TOLERANCE).mean()
    return float(changed)


def _short(text: str, limit: int = 120) -> str:
    flat = text.replace("\n", " ⏎ ")
    return repr(flat if len(flat) <= limit else flat[: limit - 1] + "…")


async def _close_state(state: dict[str, Any]) -> None:
    for value in list(state.values()):
        closer = getattr(value, "aclose", None) or getattr(value, "close", None)
        if callable(closer):
            try:
                out = closer()
                if asyncio.iscoroutine(out):
                    await out
            except Exception:  # best effort: replay results matter more than cleanup errors
                pass
