"""The HTML report of a trajectory: one section per step, escaped text, relative media links."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from omni_agent.html_report import render_trajectory_html
from omni_agent.loop import Agent
from omni_agent.messages import ImagePart
from omni_agent.models.scripted import ScriptedModel
from omni_agent.observers import observer
from omni_agent.tool import ToolContext, ToolOutput, tool
from tests.fixtures.core import solid_image, tool_call


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@tool
def shot(label: str) -> ToolOutput:
    """Returns a labelled screenshot."""
    return ToolOutput(text=f"<b>{label}</b>", images=[ImagePart.from_pil(solid_image(len(label)))])


def test_report_shows_steps_media_and_escapes_everything(trajectory_parent: Path, single_run_dir) -> None:
    @observer
    def screen(ctx: ToolContext):
        return [solid_image(30 + ctx.step)]

    model = ScriptedModel(
        [
            "<think>secret <plan></think>Taking a shot." + tool_call("shot", label="<img src=x onerror=alert(1)>"),
            tool_call("shot", label=5),
            "All done & dusted.",
        ]
    )
    Agent(model, [shot], trajectory_dir=trajectory_parent, observers=[screen]).run("<script>alert('x')</script>")
    run = single_run_dir()
    path = render_trajectory_html(run)
    assert path == run / "index.html"
    page = path.read_text()

    assert "<script" not in page.lower()  # the instruction is escaped, no JS at all
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "onerror=alert" not in page.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "SCRIPTED POLICY, NOT A MODEL" in page and "stop: answer" in page
    assert page.count('<section class="step"') == 3
    assert "<details><summary>thinking</summary><pre>secret &lt;plan&gt;</pre></details>" in page
    assert 'invalid: ' in page and "expected string" in page  # step 2's label was an int
    assert "All done &amp; dusted." in page

    parser = _Collect()
    parser.feed(page)
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert len(images) >= 4 and all(re.fullmatch(r"media/[0-9a-f]+\.png", s) for s in images)
    assert all((run / s).is_file() for s in images)


def test_report_of_a_run_that_did_not_finish(tmp_path: Path) -> None:
    from omni_agent.trajectory import RunMeta, StepRecord, TrajectoryWriter

    with TrajectoryWriter(tmp_path / "run") as w:
        w.write_meta(RunMeta(run_id="r", model="openai:qwen", instruction="go"))
        w.append_step(StepRecord(step=1, complete=False, outcome="running", raw_text="<tool_call>..."))
    page = render_trajectory_html(tmp_path / "run").read_text()
    assert "unfinished (killed or still running)" in page and "did not finish" in page
    assert "SCRIPTED" not in page
