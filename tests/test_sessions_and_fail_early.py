"""Sessions the caller owns stay open after a run (one the tools made is closed), and a missing
display or browser stops a run before the model is called, the same in Python and the CLI."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from omni_agent import (
    Agent,
    BrowserConfig,
    BrowserSession,
    DesktopConfig,
    DesktopController,
    DisplayError,
    ScriptedModel,
    UserError,
    VirtualDisplay,
    browser_tools,
    desktop_tools,
    load_toolsets,
    load_toolsets_with_observers,
)
from tests.fixtures.core import tool_call

# -- sessions the user owns stay open --------------------------------------------------------


def test_a_browser_session_passed_in_stays_open_with_the_page_the_agent_left(browser_site) -> None:  # noqa: ANN001
    url = browser_site.url("/")

    async def go() -> None:
        async with BrowserSession() as session:
            model = ScriptedModel([tool_call("browser_goto", url=url), "opened"])
            result = await Agent(model, browser_tools(session=session), trajectory_dir=None).arun("open it")
            assert result.answer == "opened"
            assert session.running, "the run closed the caller's browser"
            page = await session.page()
            assert page.url == url and session.launches == 1  # the same browser, not a fresh blank one
            shared = load_toolsets("browser", options={"browser_session": session})  # the loader's path too
            model = ScriptedModel([tool_call("browser_navigate", action="reload"), "reloaded"])
            await Agent(model, shared, trajectory_dir=None).arun("reload")
            assert session.running and (await session.page()).url == url
        assert not session.running  # closed by its owner

    asyncio.run(go())


def test_after_a_blocking_run_reading_the_page_says_why_it_cannot(browser_site) -> None:  # noqa: ANN001
    session = BrowserSession()
    tools = browser_tools(session=session)
    for _ in range(2):  # each blocking run may use it again
        model = ScriptedModel([tool_call("browser_goto", url=browser_site.url("/")), "opened"])
        assert Agent(model, tools, trajectory_dir=None).run("open it").answer == "opened"
        assert not session.running and session.pid is None  # its event loop ended with the run
    with pytest.raises(UserError, match=r"closed when Agent.run\(\) ended.*await agent.arun"):
        asyncio.run(session.page())  # not a fresh blank browser read as "the page"
    assert session.launches == 2


def test_a_browser_session_the_tools_made_is_closed_when_the_run_ends(browser_site) -> None:  # noqa: ANN001
    url = browser_site.url("/")

    async def go() -> None:
        for tools in (browser_tools(), load_toolsets_with_observers("browser", observe="browser").tools):
            session = tools[0].preflight.__self__  # the session the tools created
            assert isinstance(session, BrowserSession)
            model = ScriptedModel([tool_call("browser_goto", url=url), "opened"])
            await Agent(model, tools, trajectory_dir=None).arun("open it")
            assert session.launches == 1 and not session.running

    asyncio.run(go())


def test_a_browser_kit_stops_only_the_session_it_made() -> None:
    from omni_agent.tools.browser import BrowserKit

    async def go() -> None:
        async with BrowserSession() as session:
            await session.page()
            async with BrowserKit(session=session) as kit:
                assert kit.tools()[0].preflight.__self__ is session
            assert session.running, "the kit closed the caller's browser"
        kit = BrowserKit()
        async with kit:
            await kit.session.page()
            assert kit.session.running
        assert not kit.session.running  # the kit's own session ends with it

    asyncio.run(go())


def test_a_desktop_controller_passed_in_stays_open(virtual_display: VirtualDisplay) -> None:
    controller = DesktopController(DesktopConfig(display=virtual_display.display, screenshot_after_action=False))
    capture = controller.capture
    model = ScriptedModel([tool_call("computer_use", action="mouse_move", coordinate=[500, 500]), "moved"])
    result = Agent(model, desktop_tools(controller=controller), trajectory_dir=None).run("move the mouse")
    assert result.answer == "moved"
    assert controller.capture is capture  # not closed and reopened
    assert capture.grab().size == virtual_display.size  # and still works
    controller.close()


def test_a_desktop_controller_the_tools_made_is_closed_when_the_run_ends(virtual_display: VirtualDisplay) -> None:
    tools = desktop_tools(DesktopConfig(display=virtual_display.display, screenshot_after_action=False))
    controller = tools[0].preflight.__self__  # the one the tools made
    assert isinstance(controller, DesktopController)
    model = ScriptedModel([tool_call("computer_use", action="mouse_move", coordinate=[10, 10]), "moved"])
    assert Agent(model, tools, trajectory_dir=None).run("move the mouse").answer == "moved"
    assert controller._capture is None  # its X connections were closed with the run


# -- fail early --------------------------------------------------------------------------------


def test_desktop_without_a_display_fails_before_the_model_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    model = ScriptedModel([tool_call("computer_use", action="left_click", coordinate=[1, 1]), "done"])
    with pytest.raises(DisplayError, match="DISPLAY"):
        Agent(model, load_toolsets("desktop"), trajectory_dir=tmp_path / "runs").run("click")
    assert model.requests == [] and not (tmp_path / "runs").exists()

    tools = load_toolsets("desktop", options={"display": ":987"})  # a number where no X server runs
    with pytest.raises(DisplayError, match=":987 is not running"):
        Agent(model, tools, trajectory_dir=None).run("click")
    assert model.requests == []


def test_a_browser_that_cannot_start_fails_before_the_model_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = ScriptedModel(["never asked"])
    tools = browser_tools(BrowserConfig(executable_path=str(tmp_path / "no-chromium")))
    with pytest.raises(Exception, match="is not an executable file"):
        Agent(model, tools, trajectory_dir=None).run("open a page")
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="DISPLAY"):
        Agent(model, browser_tools(BrowserConfig(headless=False)), trajectory_dir=None).run("open a page")
    assert model.requests == []


def test_the_cli_stops_the_same_way_in_one_line(tmp_path: Path) -> None:
    script = tmp_path / "policy.yaml"
    script.write_text("- done\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no DISPLAY
    proc = subprocess.run(
        [sys.executable, "-m", "omni_agent.cli", "run", "click", "--tools", "desktop", "--model", f"scripted:{script}",
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("error:") and "DISPLAY" in line
    assert not (tmp_path / "runs").exists()



def test_speaking_without_a_sound_device_fails_before_the_model_is_called(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from omni_agent import attach_voice_output
    from omni_agent.voice.microphone import AudioDeviceError

    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path}/no-sound-server")  # no device, whatever runs here
    model = ScriptedModel(["hello"])
    agent = Agent(model, trajectory_dir=None)
    with pytest.raises(AudioDeviceError, match="no audio output device"):
        attach_voice_output(agent, engine="silent")
    assert model.requests == []

    script = tmp_path / "policy.yaml"
    script.write_text("- hello\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PULSE_SERVER": f"unix:{tmp_path}/no-sound-server"}
    proc = subprocess.run(
        [sys.executable, "-m", "omni_agent.cli", "run", "hi", "--tools", "", "--speak", "--model", f"scripted:{script}",
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.strip()]
    assert line.startswith("error:") and "no audio output device" in line and "--speak-to DIR" in line
    assert not (tmp_path / "runs").exists()
