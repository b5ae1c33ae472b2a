"""Virtual X displays (Xvfb) for tests, evals and headless servers.

    with VirtualDisplay(width=1280, height=800) as vd:
        subprocess.run(["xterm"], env=vd.env())
        capture = ScreenCapture(display=vd.display)

Needs the apt package ``xvfb`` (``scripts/setup.sh`` installs it). No window manager is started:
input works without one (use click / ``xdotool windowfocus``, not ``windowactivate``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Mapping

from .exceptions import DisplayError

__all__ = ["DisplayError", "VirtualDisplay", "display_is_reachable"]

X11_SOCKET_DIR = Path("/tmp/.X11-unix")
_FIRST_DISPLAY = 99  # low numbers belong to real desktops and remote sessions
_LAST_DISPLAY = 1099


def _socket_path(number: int) -> Path:
    return X11_SOCKET_DIR / f"X{number}"


def _lock_path(number: int) -> Path:
    return Path(f"/tmp/.X{number}-lock")


def _parse_display(display: str) -> int | None:
    """The local display number of ':N' or ':N.S'; None for remote displays ('host:N')."""
    host, _, rest = display.partition(":")
    if host not in ("", "unix") or not rest:
        return None
    number = rest.split(".", 1)[0]
    return int(number) if number.isdigit() else None


def display_is_reachable(display: str, *, timeout_s: float = 1.0) -> bool:
    """True when a local X server accepts connections on ``display`` (':N'). Remote displays are
    assumed reachable (the X client will say otherwise)."""
    number = _parse_display(display)
    if number is None:
        return bool(display)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(_socket_path(number)))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def _number_is_free(number: int) -> bool:
    return not _lock_path(number).exists() and not _socket_path(number).exists()


class VirtualDisplay:
    """An Xvfb server on a free display number; a context manager.

    A free number is one with neither a lock file (``/tmp/.X<n>-lock``) nor a socket
    (``/tmp/.X11-unix/X<n>``). Two processes may still pick the same number at once: Xvfb then
    refuses to start and the next free number is tried. Ready means the server holds the lock and
    accepts connections on its socket (checked every few ms up to ``start_timeout_s``).
    """

    def __init__(
        self,
        *,
        width: int = 1280,
        height: int = 800,
        depth: int = 24,
        number: int | None = None,
        start_timeout_s: float = 10.0,
        xvfb: str = "Xvfb",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"display size must be positive, got {width}x{height}")
        if depth not in (8, 16, 24, 32):
            raise ValueError(f"depth must be 8, 16, 24 or 32, got {depth}")
        self.width, self.height, self.depth = width, height, depth
        self._requested_number = number
        self.start_timeout_s = start_timeout_s
        self._xvfb = xvfb
        self._extra_args = tuple(extra_args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._number: int | None = None
        self._lock = threading.Lock()

    # -- properties ---------------------------------------------------------------------------
    @property
    def number(self) -> int:
        if self._number is None:
            raise DisplayError("the virtual display is not started")
        return self._number

    @property
    def display(self) -> str:
        """The DISPLAY value, e.g. ':99'."""
        return f":{self.number}"

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A copy of ``base`` (default ``os.environ``) with DISPLAY set to this display."""
        env = dict(os.environ if base is None else base)
        env["DISPLAY"] = self.display
        env.pop("WAYLAND_DISPLAY", None)  # so toolkits do not pick a real Wayland session instead
        return env

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "VirtualDisplay":
        """Start Xvfb and return once it accepts connections. Raises DisplayError otherwise."""
        with self._lock:
            if self.is_running():
                return self
            binary = shutil.which(self._xvfb)
            if binary is None:
                raise DisplayError(
                    f"{self._xvfb} not found: install the apt package 'xvfb' (scripts/setup.sh does)"
                )
            candidates = [self._requested_number] if self._requested_number is not None else self._candidates()
            last_error = "no free display number"
            for number in candidates:
                started, last_error = self._try_start(binary, number)
                if started:
                    _LIVE.add(self)
                    return self
            raise DisplayError(f"could not start Xvfb: {last_error}")

    def _candidates(self) -> list[int]:
        # Offset by pid so parallel test workers rarely race for the same number.
        start = _FIRST_DISPLAY + os.getpid() % 400
        order = list(range(start, _LAST_DISPLAY)) + list(range(_FIRST_DISPLAY, start))
        free = [n for n in order if _number_is_free(n)]
        return free[:20]

    def _try_start(self, binary: str, number: int) -> tuple[bool, str]:
        log = tempfile.TemporaryFile(prefix=f"xvfb-{number}-")
        cmd = [
            binary, f":{number}",
            "-screen", "0", f"{self.width}x{self.height}x{self.depth}",
            "-nolisten", "tcp",
            *self._extra_args,
        ]  # fmt: skip
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as exc:
            log.close()
            return False, f"{binary}: {exc}"
        if self._wait_ready(proc, number):
            self._proc, self._log, self._number = proc, log, number
            return True, ""
        timed_out = proc.poll() is None
        _terminate(proc)
        message = f"display :{number}: " + (
            f"no connection within {self.start_timeout_s:g} s" if timed_out else _tail(log)
        )
        log.close()
        return False, message

    def _wait_ready(self, proc: subprocess.Popen[bytes], number: int) -> bool:
        """Ready = our process is alive, holds the lock file, and its socket accepts connections.

        Checking the lock's pid matters: in a race the socket may belong to the winner, and our
        Xvfb would exit a moment later. (``-displayfd`` would report readiness directly, but then
        Xvfb writes no lock file and other tools could not see the number is taken.)
        """
        deadline = time.monotonic() + self.start_timeout_s
        delay = 0.005
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if _lock_owner(number) == proc.pid and display_is_reachable(f":{number}", timeout_s=0.5):
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        return False

    def stop(self) -> None:
        """Stop Xvfb (SIGTERM, then SIGKILL) and remove its lock file and socket if it left them."""
        with self._lock:
            proc, number = self._proc, self._number
            self._proc = None
            if proc is not None:
                _terminate(proc)
                if number is not None:
                    _remove_leftovers(number, proc.pid)
            if self._log is not None:
                self._log.close()
                self._log = None
            _LIVE.discard(self)

    def log_tail(self) -> str:
        """The end of Xvfb's own output (for error messages)."""
        return _tail(self._log) if self._log else ""

    def __enter__(self) -> "VirtualDisplay":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f":{self._number}" if self._number is not None else "not started"
        return f"VirtualDisplay({where}, {self.width}x{self.height}x{self.depth})"


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _lock_owner(number: int) -> int | None:
    try:
        return int(_lock_path(number).read_text().strip())
    except (OSError, ValueError):
        return None


def _remove_leftovers(number: int, pid: int) -> None:
    """After a SIGKILL Xvfb cannot clean up; remove its files, but only if they are its own."""
    if _lock_owner(number) == pid:
        _lock_path(number).unlink(missing_ok=True)
        _socket_path(number).unlink(missing_ok=True)


def _tail(log: IO[bytes] | None, limit: int = 600) -> str:
    if log is None:
        return ""
    try:
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""
    lines = [line for line in text.splitlines() if line.strip() and line.strip() != "(EE)"]
    return " | ".join(lines)[-limit:] or "Xvfb exited without a message"


# Displays still running at interpreter exit are stopped, so a crashed test run leaves no Xvfb.
# Strong references: a display dropped without stop() keeps running until exit, then stops.
_LIVE: set[VirtualDisplay] = set()


@atexit.register
def _stop_all() -> None:
    for vd in list(_LIVE):
        vd.stop()
