"""``omni-agent console`` and ``omni-agent run ... --ui`` as real processes: they print the URL
with its token, serve the page only with it, run what they are told, and stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.core import tool_call

pytestmark = pytest.mark.slow


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "OMNI_CONSOLE_PORT": "0"}
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "omni_agent.cli", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"no URL printed: {url!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, url


def _stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C: the server shuts down (the run is stopped first) and exits 130, as Ctrl-C does."""
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=20) == 130
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def _script(tmp_path: Path, outputs: list[str]) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(outputs))
    return path


def test_console_command_serves_with_a_token_and_stops_on_ctrl_c(tmp_path):
    script = _script(tmp_path, ["hello"])
    proc, url = _start(["console", "--model", f"scripted:{script}", "--tools", "files", "--port", "0", "--no-speak"], tmp_path)
    try:
        base = url.split("/?token=")[0]
        assert len(url.split("token=")[1]) >= 24
        assert httpx.get(base + "/").status_code == 403
        page = httpx.get(url)
        assert page.status_code == 200 and "omni-agent console" in page.text
        info = httpx.get(base + "/api/info", cookies=page.cookies).json()
        assert "file_create" in info["tools"]
        assert info["screen"] is None  # files only: no display was started
    finally:
        _stop(proc)


def test_run_with_ui_starts_the_run_at_once(tmp_path):
    (tmp_path / "ws").mkdir()
    script = _script(tmp_path, [tool_call("file_create", path="note.txt", content="hi"), "wrote it"])
    proc, url = _start(["run", "write a note", "--model", f"scripted:{script}", "--tools", "files", "-w", "ws", "--ui"], tmp_path)
    try:
        base = url.split("/?token=")[0]
        headers = {"Authorization": f"Bearer {url.split('token=')[1]}"}
        deadline = time.monotonic() + 20
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = httpx.get(base + "/api/runs", headers=headers).json()
            if runs and runs[0]["status"] == "finished":
                break
            time.sleep(0.2)
        assert runs and runs[0]["instruction"] == "write a note" and runs[0]["stop_reason"] == "answer"
        assert (tmp_path / "ws" / "note.txt").read_text() == "hi"
        detail = httpx.get(base + f"/api/runs/{runs[0]['name']}", headers=headers).json()
        assert detail["steps"][0]["calls"][0]["name"] == "file_create"
    finally:
        _stop(proc)


def test_run_with_ui_refuses_options_the_console_would_not_honour(tmp_path):
    script = _script(tmp_path, ["Done."])
    out = subprocess.run(
        [sys.executable, "-m", "omni_agent.cli", "run", "hi", "--model", f"scripted:{script}", "--ui", "--yes", "--seed", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--ui does not take --yes, --seed" in out.stderr
    assert not out.stdout.startswith("http://")  # refused before any server started
