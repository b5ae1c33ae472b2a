"""Replay: re-run recorded calls without a model and report where the world diverged."""

from __future__ import annotations

from pathlib import Path

from omni_agent.loop import Agent
from omni_agent.messages import ImagePart
from omni_agent.models.scripted import ScriptedModel
from omni_agent.observers import observer
from omni_agent.replay import image_difference, replay
from omni_agent.tool import ToolContext, ToolOutput, tool
from tests.fixtures.core import solid_image, tool_call


class Screen:
    """A tiny world: a counter and a canvas whose pixels the tools change."""

    def __init__(self) -> None:
        self.count = 0
        self.canvas = solid_image(0, size=(40, 40))

    def tools(self) -> list:
        screen = self

        @tool
        def increment() -> str:
            """Adds one to the counter."""
            screen.count += 1
            return f"count={screen.count}"

        @tool
        def paint(x: int, y: int) -> ToolOutput:
            """Paints a 4x4 square and returns a screenshot."""
            for dx in range(4):
                for dy in range(4):
                    screen.canvas.putpixel((x + dx, y + dy), (255, 255, 255))
            return ToolOutput(text="painted", images=[ImagePart.from_pil(screen.canvas.copy())])

        return [increment, paint]


def _record(trajectory_parent: Path, single_run_dir, observers=()) -> Path:
    world = Screen()
    model = ScriptedModel(
        [tool_call("increment") + tool_call("paint", x=2, y=2), tool_call("increment"), tool_call("unknown_tool"), "done"]
    )
    Agent(model, world.tools(), trajectory_dir=trajectory_parent, observers=observers).run("x")
    return single_run_dir()


def test_replay_in_the_same_world_matches(trajectory_parent: Path, single_run_dir) -> None:
    run = _record(trajectory_parent, single_run_dir)
    report = replay(run, Screen().tools())
    assert report.ok, report.summary()
    assert [(c.step, c.name, c.status) for c in report.calls] == [
        (1, "increment", "same"),
        (1, "paint", "same"),
        (2, "increment", "same"),
    ]  # the invalid call of step 3 never ran, so it is not replayed
    assert report.calls[1].pixel_difference == 0.0


def test_replay_reports_text_and_screenshot_divergence(trajectory_parent: Path, single_run_dir) -> None:
    run = _record(trajectory_parent, single_run_dir)
    world = Screen()
    world.count = 10  # the counter starts elsewhere
    for x in range(0, 40, 2):  # and the canvas is striped
        for y in range(40):
            world.canvas.putpixel((x, y), (0, 200, 0))
    report = replay(run, world.tools())
    assert not report.ok
    first = report.first_divergence
    assert first is not None and (first.step, first.name) == (1, "increment")
    assert first.differences == ["text: recorded 'count=1', now 'count=11'"]
    paint = report.calls[1]
    assert paint.status == "diverged" and paint.differences[0].startswith("image 0: ")
    assert paint.pixel_difference is not None and paint.pixel_difference > 0.4
    assert "DIVERGED" in report.summary()

    # With screenshots ignored, only the text differences remain.
    report = replay(run, _shifted_counter_world().tools(), compare_screenshots=False)
    assert [c.status for c in report.calls] == ["diverged", "same", "diverged"]


def _shifted_counter_world() -> Screen:
    world = Screen()
    world.count = 5
    return world


def test_missing_tool_is_reported(trajectory_parent: Path, single_run_dir) -> None:
    run = _record(trajectory_parent, single_run_dir)
    report = replay(run, Screen().tools()[:1])
    assert [c.status for c in report.calls] == ["same", "missing_tool", "same"]
    assert not report.ok and "no tool named 'paint'" in report.calls[1].differences[0]


def test_observations_are_compared_too(trajectory_parent: Path, single_run_dir) -> None:
    shade = {"value": 50}

    @observer
    def screen(ctx: ToolContext):
        return [solid_image(shade["value"] + ctx.step)]

    run = _record(trajectory_parent, single_run_dir, observers=[screen])
    assert replay(run, Screen().tools(), observers=[screen]).ok
    shade["value"] = 90
    report = replay(run, Screen().tools(), observers=[screen])
    assert [o.status for o in report.observations] == ["diverged", "diverged", "diverged"]


def test_image_difference_tolerates_noise() -> None:
    a = solid_image(100, size=(10, 10))
    b = a.copy()
    b.putpixel((0, 0), (255, 255, 255))  # one pixel of 100 changed
    c = a.point(lambda v: min(255, v + 3))  # faint noise everywhere
    assert image_difference(a, a) == 0.0
    assert image_difference(a, b) == 0.01
    assert image_difference(a, c) == 0.0
    assert image_difference(a, solid_image(1, size=(5, 5))) == 1.0


def test_a_huge_result_is_cut_for_the_model_and_replays_as_recorded(trajectory_parent: Path, single_run_dir) -> None:
    from omni_agent.execution import MAX_RESULT_CHARS
    from omni_agent.messages import ToolMessage

    @tool
    def dump_log() -> ToolOutput:
        """Prints a whole (huge) log."""
        return ToolOutput(text="START " + "x" * 3_000_000 + " END", data={"lines": 1})

    seen: list[str] = []

    def check(request):  # noqa: ANN001, ANN202
        seen.extend(m.result.text for m in request.messages if isinstance(m, ToolMessage))
        return "done"

    Agent(ScriptedModel([tool_call("dump_log"), check]), [dump_log], trajectory_dir=trajectory_parent).run("x")
    (text,) = seen
    assert len(text) <= MAX_RESULT_CHARS + 100
    assert text.startswith("START ") and text.endswith(" END") and "characters cut" in text
    report = replay(single_run_dir(), [dump_log])
    assert report.ok, report.summary()
