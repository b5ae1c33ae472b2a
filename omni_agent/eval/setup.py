"""Prepare and tear down one episode's world: workspace files, a local web site on 127.0.0.1,
a virtual display with a desktop program, and shell commands.

Everything started here belongs to the episode and is stopped by :meth:`EpisodeEnvironment.close`
(also on errors), so episodes never share a server, a display or a program. A failure while
setting up raises :class:`SetupError`, which the runner treats as an infrastructure failure
(retried), never as the model's fault.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..exceptions import OmniAgentError
from .task import Task, substitute

__all__ = ["EpisodeEnvironment", "SetupError", "free_port", "run_shell"]


class SetupError(OmniAgentError):
    """The episode could not be prepared (an infrastructure failure, retried by the runner)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_shell(command: str, *, cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a shell command (bash) in its own process group; kill the whole group on timeout."""
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise TimeoutError(f"command timed out after {timeout:g} s: {command}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class EpisodeEnvironment:
    """The world of one episode. Use as a context manager, or call ``start()`` / ``close()``."""

    def __init__(self, task: Task, *, workspace: Path, scratch: Path) -> None:
        self.task = task
        self.workspace = Path(workspace)
        self.scratch = Path(scratch)
        self.values: dict[str, Any] = {"workspace": str(self.workspace)}
        self.display: Any = None
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._processes: list[subprocess.Popen[bytes]] = []
        self._closed = False

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> "EpisodeEnvironment":
        try:
            self._make_workspace()
            if self.task.needs_display:
                self._start_display()
            if self.task.setup.web:
                self._start_web()
            for command in self.task.setup.commands:
                self._run_setup_command(command)
            if self.task.setup.desktop:
                self._start_desktop_program()
        except SetupError:
            self.close()
            raise
        except Exception as exc:  # anything else while preparing is still a setup failure
            self.close()
            raise SetupError(f"setup failed: {type(exc).__name__}: {exc}") from exc
        return self

    def __enter__(self) -> "EpisodeEnvironment":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """Environment for setup, check and teardown commands."""
        env = dict(os.environ)
        env["OMNI_WORKSPACE"] = str(self.workspace)
        if "server_url" in self.values:
            env["SERVER_URL"] = str(self.values["server_url"])
        if self.display is not None:
            env["DISPLAY"] = str(self.values["display"])
        return env

    def started_pids(self) -> list[int]:
        """Process-group leaders this episode started (programs, web app, Xvfb)."""
        pids = [p.pid for p in self._processes if p.poll() is None]
        if self.display is not None and self.display.pid:
            pids.append(int(self.display.pid))
        return pids

    def run_teardown(self) -> list[str]:
        """Run the task's teardown commands; returns problems (never raises)."""
        problems = []
        for command in self.task.teardown:
            try:
                proc = run_shell(substitute(command, self.values), cwd=self.workspace, env=self.env, timeout=60)
                if proc.returncode != 0:
                    problems.append(f"teardown command exited {proc.returncode}: {command}")
            except Exception as exc:
                problems.append(f"teardown command failed: {command}: {exc}")
        return problems

    def close(self) -> None:
        """Stop programs, the web server and the display (idempotent, never raises)."""
        if self._closed:
            return
        self._closed = True
        for proc in reversed(self._processes):
            _kill_group(proc)
        self._processes.clear()
        if self._httpd is not None:
            with contextlib.suppress(Exception):
                self._httpd.shutdown()
                self._httpd.server_close()
            self._httpd = None
        if self.display is not None:
            with contextlib.suppress(Exception):
                self.display.stop()
            self.display = None

    # -- pieces -------------------------------------------------------------------------------
    def _make_workspace(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.scratch.mkdir(parents=True, exist_ok=True)
        for name, spec in self.task.setup.files.items():
            target = self.workspace / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(spec, str):
                target.write_text(spec, encoding="utf-8")
                continue
            if spec.source is not None:
                src = self.task.base_dir / spec.source
                if not src.is_file():
                    raise SetupError(f"setup file source not found: {src}")
                shutil.copyfile(src, target)
            else:
                target.write_text(spec.content or "", encoding="utf-8")
            if spec.executable:
                target.chmod(0o755)

    def _start_display(self) -> None:
        from ..xvfb import VirtualDisplay

        try:
            self.display = VirtualDisplay()
            self.display.start()
        except Exception as exc:
            self.display = None
            raise SetupError(f"cannot start a virtual display: {exc}") from exc
        self.values["display"] = self.display.display

    def _start_web(self) -> None:
        web = self.task.setup.web
        assert web is not None
        if web.app:
            port = free_port()
            self.values["port"] = port
            self.values["server_url"] = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                ["bash", "-c", substitute(web.app, self.values)],
                cwd=self.workspace,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=open(self.scratch / "web-app.log", "wb"),  # noqa: SIM115 - closed with the process
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._processes.append(proc)
            self._wait_http(self.values["server_url"] + web.ready_path, proc)
            return
        site = self.scratch / "site"
        if web.dir:
            src = self.task.base_dir / web.dir
            if not src.is_dir():
                raise SetupError(f"web.dir not found: {src}")
            shutil.copytree(src, site, dirs_exist_ok=True)
        site.mkdir(parents=True, exist_ok=True)
        # The port is known only once the server is bound: pages may name {server_url}.
        handler = functools.partial(_QuietHandler, directory=str(site))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        port = self._httpd.server_address[1]
        self.values["port"] = port
        self.values["server_url"] = f"http://127.0.0.1:{port}"
        for name, html in web.pages.items():
            target = site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(substitute(html, self.values), encoding="utf-8")
        threading.Thread(target=self._httpd.serve_forever, name="episode-web", daemon=True).start()

    def _wait_http(self, url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SetupError(f"web app exited with status {proc.returncode} before serving (see web-app.log)")
            try:
                httpx.get(url, timeout=1.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SetupError(f"web app did not answer at {url} within {timeout:g} s")

    def _run_setup_command(self, command: str) -> None:
        cmd = substitute(command, self.values)
        try:
            proc = run_shell(cmd, cwd=self.workspace, env=self.env, timeout=self.task.setup.command_timeout)
        except TimeoutError as exc:
            raise SetupError(f"setup {exc}") from exc
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-500:]
            raise SetupError(f"setup command exited with status {proc.returncode}: {cmd}" + (f"\n{tail}" if tail else ""))

    def _start_desktop_program(self) -> None:
        desk = self.task.setup.desktop
        assert desk is not None
        if self.display is None:
            raise SetupError("setup.desktop needs a display (display: true or desktop tools)")
        proc = subprocess.Popen(
            ["bash", "-c", substitute(desk.program, self.values)],
            cwd=self.workspace,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.scratch / "desktop-program.log", "wb"),  # noqa: SIM115
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._processes.append(proc)
        if desk.wait_window:
            self._wait_window(desk.wait_window, proc, desk.wait_seconds)

    def _wait_window(self, title: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SetupError(f"desktop program exited with status {proc.returncode} (see desktop-program.log)")
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", title],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if found.returncode == 0 and found.stdout.strip():
                return
            time.sleep(0.1)
        raise SetupError(f"no window titled {title!r} appeared within {timeout:g} s")


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            proc.wait(timeout=3)
