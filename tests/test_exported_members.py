"""The public surface, pinned (like httpx's tests/test_exported_members.py): a script gets from
``omni_agent`` everything the CLI uses, and every ``Agent`` run records a trajectory with its HTML
page unless told not to."""

from __future__ import annotations

from pathlib import Path

import pytest

import omni_agent
from omni_agent import Agent, ScriptedModel, tool
from tests.fixtures.core import tool_call

EXPORTED = [
    "Agent", "AssistantMessage", "AudioPart", "BrowserConfig", "BrowserSession", "DefaultPolicy",
    "DesktopConfig", "DesktopController", "DisplayError", "GenerationSettings", "ImagePart",
    "LoadedToolsets", "MissingDependencyError", "Model", "ModelError", "ModelInfo", "ModelRequest",
    "ModelResponse", "ModelResponseError", "ModelSpec", "ModelUnavailableError", "OmniAgentError",
    "RunResult", "ScriptedModel", "StopReason", "StreamParser", "SystemMessage", "TextPart", "Tool",
    "ToolCall", "ToolContext", "ToolDefinitionError", "ToolExecutionError", "ToolMessage",
    "ToolOutput", "ToolRegistry", "ToolResult", "Toolkit", "Trajectory", "TrajectoryError", "UserError",
    "UserMessage", "VideoPart", "VirtualDisplay", "VoiceOutput", "__version__", "allow_all",
    "attach_voice_output", "browser_tools", "deny_all", "desktop_tools", "load_model",
    "load_toolsets", "load_toolsets_with_observers", "load_trajectory", "parse_model_spec",
    "parse_output", "render_trajectory_html", "replay", "tool", "validate_call",
]  # fmt: skip


def test_the_exported_members_are_pinned() -> None:
    assert omni_agent.__all__ == EXPORTED, "a change to the public API: update this list on purpose"
    for name in EXPORTED:
        member = getattr(omni_agent, name)
        if name != "__version__":
            assert member.__module__.startswith("omni_agent"), (name, member.__module__)


def test_what_a_script_needs_is_the_cli_s_own_code() -> None:
    from omni_agent import html_report, toolsets, xvfb
    from omni_agent.tools import browser, desktop
    from omni_agent.voice import output

    assert omni_agent.load_toolsets is toolsets.load_toolsets
    assert omni_agent.VirtualDisplay is xvfb.VirtualDisplay
    assert omni_agent.attach_voice_output is output.attach_voice_output
    assert omni_agent.render_trajectory_html is html_report.render_trajectory_html
    assert omni_agent.BrowserSession is browser.BrowserSession and omni_agent.desktop_tools is desktop.desktop_tools


@tool
def echo(text: str) -> str:
    """Say it back."""
    return text


def test_an_agent_records_its_trajectory_and_page_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNI_AGENT_RUNS_DIR")
    monkeypatch.chdir(tmp_path)  # the default is runs/ in the working directory, as for the CLI
    model = ScriptedModel([tool_call("echo", text="hi"), "said hi"])
    result = Agent(model, [echo]).run("Say hi.")
    assert result.trajectory_dir is not None and result.trajectory_dir.parent == Path("runs")
    assert result.report == result.trajectory_dir / "index.html"
    page = result.report.read_text(encoding="utf-8")
    assert "said hi" in page and "echo" in page
    trajectory = omni_agent.load_trajectory(result.trajectory_dir)
    assert [s.outcome for s in trajectory.steps] == ["tools", "answer"]


def test_the_default_follows_the_runs_dir_variable_and_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_AGENT_RUNS_DIR", str(tmp_path / "elsewhere"))
    result = Agent(ScriptedModel(["done"])).run("x")
    assert result.trajectory_dir is not None and result.trajectory_dir.parent == tmp_path / "elsewhere"
    assert result.report is not None and result.report.is_file()

    monkeypatch.chdir(tmp_path)
    result = Agent(ScriptedModel(["done"]), trajectory_dir=None).run("x")
    assert result.trajectory_dir is None and result.report is None
    result = Agent(ScriptedModel(["done"]), trajectory_dir=tmp_path / "t", html_report=False).run("x")
    assert result.trajectory_dir is not None and result.report is None
    assert not (result.trajectory_dir / "index.html").exists() and (result.trajectory_dir / "meta.json").is_file()
    assert not (tmp_path / "runs").exists()
