"""Trajectories: written incrementally, media as files, loadable after the process is killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from omni_agent.exceptions import TrajectoryError
from omni_agent.loop import Agent, StopReason
from omni_agent.messages import ImagePart
from omni_agent.models.scripted import ScriptedModel
from omni_agent.observers import observer
from omni_agent.replay import replay
from omni_agent.tool import ToolContext, ToolOutput, tool
from omni_agent.trajectory import RunMeta, StepRecord, TrajectoryWriter, load_trajectory
from tests.fixtures.core import solid_image, tool_call

REPO = Path(__file__).resolve().parents[1]


@tool
def snap(level: int) -> ToolOutput:
    """Returns a screenshot-like image."""
    return ToolOutput(text=f"level {level}", images=[ImagePart.from_pil(solid_image(level))])


def test_a_run_writes_meta_steps_and_media(trajectory_parent: Path, single_run_dir) -> None:
    @observer
    def screen(ctx: ToolContext):
        return [solid_image(100 + ctx.step)]

    model = ScriptedModel(
        ["<think>plan</think>Snap." + tool_call("snap", level=3) + tool_call("nope"), tool_call("snap", level="4"), "done"]
    )
    result = Agent(model, [snap], observers=[screen], trajectory_dir=trajectory_parent, system_prompt="be brief").run("take shots")
    run = single_run_dir()
    assert result.trajectory_dir == run
    traj = load_trajectory(run)
    meta = traj.meta
    assert (meta.status, meta.stop_reason, meta.answer, meta.steps) == ("finished", "answer", "done", 3)
    assert meta.scripted and "scripted policy" in meta.model
    assert meta.tools[0]["function"]["name"] == "snap" and meta.instruction == "take shots"
    assert traj.warnings == []

    one, two, three = traj.steps
    assert [m.role for m in one.new_messages] == ["system", "user", "user"]  # instruction, first look
    assert [m.role for m in two.new_messages] == ["assistant", "tool", "tool", "user"]  # only what is new
    assert one.thinking == "plan" and one.visible_text == "Snap." and "<tool_call>" in one.raw_text
    assert [v.ok for v in one.validations] == [True, False]
    assert [d.action for d in one.decisions] == ["allow"]
    assert one.executed == [one.calls[0].id]
    assert one.results[0].text == "level 3" and one.results[1].is_error
    assert two.validations[0].arguments == {"level": 4}  # recorded after coercion
    assert {"model", "validate", "policy", "tools", "observe", "step"} <= set(one.timings)
    assert one.prompt_hash and one.prompt_hash != two.prompt_hash

    # media are files under media/, referenced by relative paths; no base64 in the JSON
    raw = (run / "steps.jsonl").read_text()
    assert "base64" not in raw and len(raw) < 60_000
    image = one.results[0].images[0]
    assert image.path.startswith("media/") and (run / image.path).is_file()
    assert image.load(base_dir=run).getpixel((0, 0)) == solid_image(3).getpixel((0, 0))
    assert (run / one.observation[0].path).is_file()


def test_model_error_keeps_the_trajectory(trajectory_parent: Path, single_run_dir) -> None:
    result = Agent(ScriptedModel([tool_call("snap", level=1)]), [snap], trajectory_dir=trajectory_parent).run("x")
    assert result.stop_reason is StopReason.MODEL_ERROR
    traj = load_trajectory(single_run_dir())
    assert traj.meta.stop_reason == "model_error" and "ran out of outputs" in traj.meta.error
    assert [s.outcome for s in traj.steps] == ["tools", "model_error"]


def _meta() -> RunMeta:
    return RunMeta(run_id="r1", model="scripted:x (scripted policy, not a model)")


def test_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path / "run") as w:
        w.write_meta(_meta())
        w.append_step(StepRecord(step=1, raw_text="first"))
        w.append_step(StepRecord(step=2, raw_text="second"))
    path = tmp_path / "run" / "steps.jsonl"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 25])  # killed in the middle of writing line 2
    with pytest.warns(UserWarning, match="torn last line"):
        traj = load_trajectory(tmp_path / "run")
    assert [s.raw_text for s in traj.steps] == ["first"]
    assert any("did not finish" in w for w in traj.warnings)


def test_later_record_of_a_step_replaces_the_earlier_one(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path / "run") as w:
        w.write_meta(_meta())
        w.append_step(StepRecord(step=1, complete=False, outcome="running"))
        w.append_step(StepRecord(step=1, complete=True, outcome="tools"))
    traj = load_trajectory(tmp_path / "run")
    assert len(traj.steps) == 1 and traj.steps[0].complete


def test_unreadable_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TrajectoryError, match="no meta.json"):
        load_trajectory(tmp_path)
    (tmp_path / "meta.json").write_text("{broken")
    with pytest.raises(TrajectoryError, match="unreadable"):
        load_trajectory(tmp_path)
    with TrajectoryWriter(tmp_path / "run") as w:
        w.write_meta(_meta())
    with pytest.raises(TrajectoryError, match="already holds a trajectory"):
        TrajectoryWriter(tmp_path / "run")


CRASHING_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from omni_agent.loop import Agent
    from omni_agent.messages import ImagePart
    from omni_agent.models.scripted import ScriptedModel
    from omni_agent.tool import ToolOutput, tool
    from PIL import Image

    world = Path(sys.argv[2])

    @tool
    def write(name: str, text: str) -> ToolOutput:
        "Writes a file in the world and shows it."
        (world / name).write_text(text)
        shade = len(text) * 20
        return ToolOutput(text=f"wrote {name}", images=[ImagePart.from_pil(Image.new("RGB", (32, 32), (shade, 0, 0)))])

    @tool
    def read(name: str) -> str:
        "Reads a file of the world."
        return (world / name).read_text()

    @tool
    def crash() -> str:
        "Kills this process (a segfaulting driver, an OOM kill...)."
        os.kill(os.getpid(), signal.SIGKILL)

    def call(tool_name, /, **args):
        return "<tool_call>" + json.dumps({"name": tool_name, "arguments": args}) + "</tool_call>"

    model = ScriptedModel([call("write", name="a.txt", text="hello"), call("read", name="a.txt"), call("crash"), "never"])
    Agent(model, [write, read, crash], trajectory_dir=sys.argv[1]).run("write, read, crash")
    """
)


def test_killed_run_loads_and_replays(trajectory_parent: Path, single_run_dir, tmp_path: Path) -> None:
    script = tmp_path / "crashing_run.py"
    script.write_text(CRASHING_RUN)
    world = tmp_path / "world"
    world.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script), str(trajectory_parent), str(world)], env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]

    traj = load_trajectory(single_run_dir())
    assert traj.meta.status == "running" and not traj.finished
    assert [(s.step, s.complete) for s in traj.steps] == [(1, True), (2, True), (3, False)]
    assert traj.steps[2].calls[0].name == "crash"  # the trajectory says what was running when it died

    # Same world: the recorded calls give the recorded results again.
    report = replay(traj.dir, _world_tools(world))
    assert [(c.name, c.status) for c in report.calls] == [("write", "same"), ("read", "same"), ("crash", "not_run")]
    assert report.ok

    # A changed world (the file is now a directory): replay says where it diverged.
    (world / "a.txt").unlink()
    (world / "a.txt").mkdir()
    report = replay(traj.dir, _world_tools(world))
    assert not report.ok and report.first_divergence is not None
    assert report.first_divergence.name == "write" and report.first_divergence.step == 1
    assert report.calls[0].differences[0] == "error status: recorded success, now error"
    assert "IsADirectoryError" in report.calls[1].replayed_text


def _world_tools(world: Path) -> list:
    """The same tools as the crashing script (rebuilt here: replay needs tools, not the process)."""
    from PIL import Image

    @tool
    def write(name: str, text: str) -> ToolOutput:
        """Writes a file in the world and shows it."""
        (world / name).write_text(text)
        shade = len(text) * 20
        return ToolOutput(text=f"wrote {name}", images=[ImagePart.from_pil(Image.new("RGB", (32, 32), (shade, 0, 0)))])

    @tool
    def read(name: str) -> str:
        """Reads a file of the world."""
        return (world / name).read_text()

    @tool
    def crash() -> str:
        """Must never run during replay."""
        raise AssertionError("replay re-ran the call that killed the process")

    return [write, read, crash]


def test_meta_json_is_replaced_atomically(tmp_path: Path) -> None:
    with TrajectoryWriter(tmp_path / "run") as w:
        w.write_meta(_meta())
        w.write_meta(_meta().model_copy(update={"status": "finished", "stop_reason": "answer"}))
    files = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert files == ["media", "meta.json", "steps.jsonl"]  # no temp file left behind
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["stop_reason"] == "answer"


def test_ctrl_c_cancels_the_run_and_closes_its_trajectory(trajectory_parent: Path, single_run_dir) -> None:
    import asyncio
    import signal

    @tool
    async def interrupt() -> str:
        """Presses Ctrl-C on our own process."""
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)
        return "not interrupted"

    with pytest.raises(KeyboardInterrupt):
        Agent(ScriptedModel([tool_call("interrupt"), "no"]), [interrupt], trajectory_dir=trajectory_parent).run("x")
    traj = load_trajectory(single_run_dir())
    assert (traj.meta.status, traj.meta.stop_reason) == ("finished", "cancelled")
    assert traj.steps[0].calls[0].name == "interrupt" and not traj.steps[0].complete


def test_spoken_answer_is_kept_as_a_file(trajectory_parent: Path, single_run_dir) -> None:
    import numpy as np

    from omni_agent.messages import AudioPart
    from omni_agent.models.base import ModelResponse

    speech = AudioPart.from_array(np.sin(np.linspace(0, 200, 2400)).astype(np.float32) * 0.3, 24000)
    model = ScriptedModel([ModelResponse(text="Hello there.", audio=speech)])
    result = Agent(model, [], speak=True, trajectory_dir=trajectory_parent).run("greet me")
    assert model.requests[0].speak is True
    assert result.audio is speech and result.answer == "Hello there."
    traj = load_trajectory(single_run_dir())
    samples, rate = AudioPart.from_path(traj.dir / traj.meta.answer_audio).load()
    assert rate == 24000 and len(samples) == 2400


def test_unwritable_trajectory_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrajectoryError, match="cannot write a trajectory under"):
        Agent(ScriptedModel(["x"]), [], trajectory_dir=blocker).run("x")
