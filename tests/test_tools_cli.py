"""The real tools through `omni-agent run`, as a user drives them: screenshot observers sharing
the tools' browser / display (--observe), the bubblewrap sandbox (--sandbox), confirmation of
dangerous commands (--yes), one-line errors, and `kill` stopping a run without leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from omni_agent.loop import Agent
from omni_agent.messages import ImagePart, ToolMessage
from omni_agent.models.scripted import ScriptedModel
from omni_agent.screen import ScreenCapture
from omni_agent.tools.desktop_observer import DesktopScreenshotObserver
from omni_agent.tools.shell import shell_tools
from omni_agent.xvfb import VirtualDisplay
from tests.fixtures.browser import LocalSite
from tests.fixtures.core import tool_call
from tests.fixtures.openai_server import chat_chunk
from tests.fixtures.display import EventLoggerApp
from tests.fixtures.shell import process_alive, wait_until_gone

EXE = str(Path(sys.executable).parent / "omni-agent")
BASE_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "200", "NO_COLOR": "1"}


def script(path: Path, *outputs: str) -> str:
    path.write_text(json.dumps(list(outputs)))
    return f"scripted:{path}"


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=120, cwd=cwd,
        env={**BASE_ENV, **(env or {})}, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def steps(trajectory_parent: Path) -> list[dict[str, Any]]:
    (run_dir,) = [p for p in trajectory_parent.iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r["complete"]]  # a step is written early too (complete: false)


def observation_images(records: list[dict[str, Any]]) -> int:
    """Images in user turns (observations), not in tool results."""
    return sum(
        1
        for r in records
        for m in r["new_messages"]
        if m.get("role") == "user"
        for part in m.get("content", [])
        if part.get("kind") == "image"
    )


def result_images(records: list[dict[str, Any]]) -> int:
    return sum(part.get("kind") == "image" for r in records for res in r["results"] for part in res["content"])


def test_run_observe_browser_shows_the_tools_page_after_each_step(browser_site: LocalSite, tmp_path: Path) -> None:
    before = len(browser_site.submissions)
    model = script(
        tmp_path / "s.json",
        tool_call("browser_goto", url=browser_site.url("/form")),
        tool_call("browser_fill", selector="#name", value="Zoë 東京"),
        tool_call("browser_click", text="Send"),
        "submitted",
    )
    proc = cli("run", "sign up", "-m", model, "-t", "browser", "--observe", "browser",
               "-w", str(tmp_path / "ws"), "--trajectory", str(tmp_path / "runs"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert browser_site.submissions[before:] and browser_site.submissions[-1]["name"] == ["Zoë 東京"]
    records = steps(tmp_path / "runs")
    # One screenshot after each of the three browser steps: the observer watched the tools' own
    # session (an observer with a session of its own would see no browser and add nothing).
    assert observation_images(records) == 3
    assert result_images(records) == 0


def test_run_reads_clicks_in_the_models_coordinate_space(openai_server: Any, browser_site: LocalSite, tmp_path: Path) -> None:
    # A Qwen2.5-style model answers in pixels of its resized screenshot (1280x800 -> 1288x812):
    # (644, 406) is the viewport centre, not a point on the 0..1000 grid.
    for call in (tool_call("browser_goto", url=browser_site.url("/grid")), tool_call("browser_click", x=644, y=406)):
        openai_server.reply_stream([chat_chunk(content=call, finish_reason="stop")])
    openai_server.reply_stream([chat_chunk(content="clicked", finish_reason="stop")])
    model = f"openai:{openai_server.base_url}#qwen2.5-vl?retries=0&coordinate_space=absolute_resized"
    proc = cli("run", "click the middle", "-m", model, "-t", "browser",
               "-w", str(tmp_path / "ws"), "--trajectory", str(tmp_path / "runs"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (result,) = steps(tmp_path / "runs")[1]["results"]
    assert "= viewport pixel (640, 400)" in result["content"][0]["text"], result


def test_run_observe_desktop_on_a_virtual_display(
    virtual_display: VirtualDisplay, event_logger: EventLoggerApp, tmp_path: Path
) -> None:
    x, y = event_logger.entry_center
    w, h = virtual_display.size
    model = script(
        tmp_path / "s.json",
        tool_call("computer_use", action="left_click", coordinate=[round(x * 1000 / w), round(y * 1000 / h)]),
        tool_call("computer_use", action="type", text="café <ü> 東京"),
        "typed",
    )
    proc = cli("run", "type", "-m", model, "-t", "desktop", "--observe", "desktop",
               "-w", str(tmp_path / "ws"), "--trajectory", str(tmp_path / "runs"),
               env={"DISPLAY": virtual_display.display})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    event_logger.wait_for(lambda _: event_logger.text() == "café <ü> 東京", what="the typed text")
    records = steps(tmp_path / "runs")
    # First look + one after each desktop step; no second copy inside the action results.
    assert observation_images(records) == 3
    assert result_images(records) == 0


def test_run_setup_errors_are_one_line(tmp_path: Path) -> None:
    model = script(tmp_path / "s.json", "done")
    ws = str(tmp_path / "ws")
    cases = [
        (["-t", "desktop"], 2, "no X display"),  # a setup to fix, like a usage error (issue 12)
        (["-t", "shell", "--observe", "desktop"], 2, "no X display"),
        (["-t", "shell", "--observe", "browser"], 2, "needs the browser toolset"),
        (["-t", "shell", "--observe", "screen"], 2, "cannot observe 'screen'"),
        (["-t", "shell", "--sandbox", "docker"], 2, "none or bubblewrap"),
    ]
    for extra, code, message in cases:
        proc = cli("run", "x", "-m", model, "-w", ws, "--trajectory", str(tmp_path / "runs"), *extra)
        assert proc.returncode == code, (extra, proc.stderr)
        assert message in proc.stderr and "Traceback" not in proc.stderr, (extra, proc.stderr)
    assert not (tmp_path / "runs").exists()  # refused before any run started


def test_run_sandbox_option_and_confirmation(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    command = "echo in > inside.txt; echo out > /usr/omni-agent-probe; echo done"
    model = script(tmp_path / "s.json", tool_call("shell", command=command), "finished")
    args = ["run", "x", "-m", model, "-t", "shell", "--sandbox", "bubblewrap", "-w", str(ws)]
    # Not interactive, no --yes: the write to a system path is held and denied, nothing runs.
    held = cli(*args, "--trajectory", str(tmp_path / "held"), "--json")
    assert held.returncode == 0, held.stderr
    (result,) = steps(tmp_path / "held")[0]["results"]
    assert result["is_error"] and "denied" in result["content"][0]["text"]
    assert "system path" in result["content"][0]["text"]
    assert not (ws / "inside.txt").exists()
    # --yes approves it, and the sandbox still keeps the system read-only.
    approved = cli(*args, "--trajectory", str(tmp_path / "approved"), "--yes")
    assert approved.returncode == 0, approved.stderr
    (result,) = steps(tmp_path / "approved")[0]["results"]
    assert "Read-only file system" in result["content"][0]["text"]
    assert (ws / "inside.txt").read_text() == "in\n"
    assert not Path("/usr/omni-agent-probe").exists()


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["plain", "started-in-background"])
def test_kill_stops_a_run_and_its_background_processes(tmp_path: Path, sigint_ignored: bool, kill_leftovers: list[int]) -> None:
    marker = f"{os.getpid() % 1000 + 1000}.{int(sigint_ignored)}17"  # a unique sleep length
    command = f"(sleep {marker} &); sleep {marker}"
    model = script(tmp_path / "s.json", tool_call("shell", command=command, timeout_s=120), "never")

    def ignore_sigint() -> None:  # what a non-interactive shell does for `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        [EXE, "run", "x", "-m", model, "-t", "shell", "-w", str(tmp_path / "ws"), "--trajectory", str(tmp_path / "runs")],
        env=BASE_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=ignore_sigint if sigint_ignored else None,
    )  # fmt: skip
    kill_leftovers.append(proc.pid)
    deadline = time.monotonic() + 60
    sleepers: list[int] = []
    while len(sleepers) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        sleepers = [int(p) for p in subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True).stdout.split()]
    kill_leftovers.extend(sleepers)
    assert len(sleepers) == 2, "the command did not start"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert not [p for p in wait_until_gone(sleepers) if process_alive(p)], "kill left the command's processes running"
    assert "Traceback" not in err.decode()


def test_observer_screenshots_count_as_untrusted_content(virtual_display: VirtualDisplay, tmp_path: Path) -> None:
    # The model sees the screen through the observer only (no browser / desktop tool): what the
    # screen shows may be a prompt injection, so a shell call afterwards needs confirmation.
    [shell] = shell_tools(workspace=tmp_path)
    observer = DesktopScreenshotObserver(ScreenCapture(virtual_display.display), settle_s=0)
    model = ScriptedModel([tool_call("shell", command="echo ran > ran.txt"), "ok"])
    result = Agent(model, [shell], observers=[observer], workspace=tmp_path).run("do what the screen says")
    assert isinstance(model.requests[0].messages[-1].content[-1], ImagePart)
    (outcome,) = [m.result for m in result.messages if isinstance(m, ToolMessage)]
    assert outcome.is_error and "denied" in outcome.text and "untrusted" in outcome.text
    assert not (tmp_path / "ran.txt").exists()
