"""VirtualDisplay: real Xvfb servers on free display numbers, started and stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from omni_agent.xvfb import DisplayError, VirtualDisplay, display_is_reachable


def _dimensions(vd: VirtualDisplay) -> str:
    out = subprocess.run(["xdpyinfo"], env=vd.env(), capture_output=True, text=True, timeout=10, check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if "dimensions:" in line)


def test_start_accepts_connections_and_stop_cleans_up() -> None:
    with VirtualDisplay(width=800, height=600, depth=24) as vd:
        assert vd.is_running()
        assert vd.display == f":{vd.number}"
        assert display_is_reachable(vd.display)
        assert _dimensions(vd) == "800x600"  # a real X client sees the configured screen
        env = vd.env({"PATH": os.environ["PATH"], "WAYLAND_DISPLAY": "wayland-0"})
        assert env["DISPLAY"] == vd.display and "WAYLAND_DISPLAY" not in env
        number = vd.number
    assert not vd.is_running()
    assert not display_is_reachable(f":{number}")
    assert not Path(f"/tmp/.X{number}-lock").exists()
    assert not Path(f"/tmp/.X11-unix/X{number}").exists()


def test_two_displays_at_once_get_different_numbers() -> None:
    with VirtualDisplay(width=640, height=480) as a, VirtualDisplay(width=1024, height=768) as b:
        assert a.number != b.number
        assert _dimensions(a) == "640x480" and _dimensions(b) == "1024x768"
        a.stop()
        assert display_is_reachable(b.display) and not display_is_reachable(f":{a.number}")


def test_a_number_taken_in_a_race_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process grabbed the first candidate between the free check and the start:
    Xvfb refuses it and the next candidate is used."""
    with VirtualDisplay(width=320, height=240) as taken:
        free = next(n for n in range(taken.number + 1, taken.number + 200) if not Path(f"/tmp/.X{n}-lock").exists())
        monkeypatch.setattr(VirtualDisplay, "_candidates", lambda self: [taken.number, free])
        with VirtualDisplay(width=320, height=240) as vd:
            assert vd.number == free
            assert display_is_reachable(vd.display)


def test_a_busy_requested_number_is_a_clear_error() -> None:
    with VirtualDisplay(width=320, height=240) as taken:
        with pytest.raises(DisplayError, match="already active"):
            VirtualDisplay(number=taken.number, start_timeout_s=5).start()
        assert taken.is_running()


def test_missing_xvfb_is_a_clear_error() -> None:
    with pytest.raises(DisplayError, match="apt package 'xvfb'"):
        VirtualDisplay(xvfb="Xvfb-not-installed").start()


def test_stop_after_xvfb_was_killed_removes_its_files() -> None:
    vd = VirtualDisplay(width=320, height=240).start()
    number, pid = vd.number, vd.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # no chance to clean up after itself
    vd._proc.wait(timeout=5)  # type: ignore[union-attr]
    assert Path(f"/tmp/.X{number}-lock").exists()
    vd.stop()
    assert not Path(f"/tmp/.X{number}-lock").exists()
    assert not Path(f"/tmp/.X11-unix/X{number}").exists()
    vd.stop()  # idempotent


def test_unstarted_display_and_bad_options() -> None:
    vd = VirtualDisplay()
    with pytest.raises(DisplayError, match="not started"):
        _ = vd.display
    with pytest.raises(ValueError, match="depth"):
        VirtualDisplay(depth=12)
    with pytest.raises(ValueError, match="positive"):
        VirtualDisplay(width=0)
