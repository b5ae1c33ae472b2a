"""Warm eval workers: a fork server that has already imported the harness forks one fresh
process per episode attempt.

A plain ``python -m omni_agent.eval.worker`` pays interpreter start-up and the harness imports
(~0.4 s) for every episode; forking a process that did that once costs a few milliseconds, and
the episode still gets a process of its own (its own memory, its own ``DISPLAY``, its own crash).

Protocol, one Unix-socket connection per attempt: the runner sends one JSON line
``{"job": PATH, "result": PATH, "log": PATH}``; the server forks and answers ``started PID``;
when that child exits it answers ``exit CODE`` (a negative code: killed by that signal, as in
:mod:`subprocess`). The child is the leader of a new session (so the runner kills its whole
group), has stdin on ``/dev/null`` and stdout/stderr in the log, and dies with the server; the
server dies with the runner (``PR_SET_PDEATHSIG``) and exits when its stdin closes.

The server imports :data:`PRELOAD` and runs one trivial episode (:func:`_warm_up`: the first
episode in a process builds validators and caches, ~3x the cost of a later one), so each child
starts warm. It keeps one *spare* child forked ahead, blocked on a pipe: a request hands the job
to the spare at once and a new spare is forked while that episode runs. The server stays
single-threaded (it must: forking a process with threads is unsafe), so it imports only modules
that start no thread, and the warm-up's threads are joined before the first fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "ForkedWorker", "PRELOAD", "fork_server_supported"]

PRELOAD = (
    "omni_agent.eval.worker",
    "omni_agent.eval.episode",
    "omni_agent.eval.checks",
    "omni_agent.eval.results",
    "omni_agent.eval.safety",
    "omni_agent.loop",
    "omni_agent.toolsets",
    "omni_agent.models.spec",
    "omni_agent.models.scripted",
    "omni_agent.tools.shell",
    "omni_agent.tools.files",
    "httpx",
)
"""What every episode imports anyway; a module that starts a thread at import must not be here."""

READY = b"ready\n"
START_TIMEOUT_S = 60.0


def fork_server_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


# -- the runner's side ---------------------------------------------------------------------------


class _LineReader:
    """Reads ``\\n``-ended lines from a socket with a timeout, without losing partial data."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self, timeout: float | None) -> bytes | None:
        """The next line (without ``\\n``); None on timeout; b"" when the peer closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return None
            if not data:
                return b""
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


class ForkedWorker:
    """One forked worker, with the part of :class:`subprocess.Popen` the runner uses
    (``pid``, ``poll``, ``wait``)."""

    def __init__(self, sock: socket.socket, reader: _LineReader, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._sock = sock
        self._reader = reader
        self._lock = threading.Lock()

    def _read_exit(self, timeout: float | None) -> int | None:
        line = self._reader.line(timeout)
        if line is None:
            return None
        self._sock.close()
        if not line.startswith(b"exit "):  # the server went away: the child died with it
            return -signal.SIGKILL
        return int(line.split()[1])

    def poll(self) -> int | None:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                if self.returncode is None:
                    self.returncode = self._read_exit(0.0)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._lock:
            if self.returncode is None:
                self.returncode = self._read_exit(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0.0)
        return self.returncode


class ForkServer:
    """Starts the server process (:meth:`start`), forks workers (:meth:`spawn`), stops (:meth:`close`)."""

    def __init__(self, *, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._dir = Path(tempfile.mkdtemp(prefix="omni-forkserver-"))
        self.address = str(self._dir / "socket")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout: float = START_TIMEOUT_S) -> "ForkServer":
        """Start the server and wait until it has imported :data:`PRELOAD` and listens."""
        self._proc = subprocess.Popen(
            [self.python, "-m", "omni_agent.eval.forkserver", self.address],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self._dir / "server.log", "wb"),  # noqa: SIM115 - lives as long as the server
            preexec_fn=_die_with_parent,
        )
        assert self._proc.stdout is not None
        ready = _read_ready(self._proc.stdout, timeout)
        if ready != READY:
            log = (self._dir / "server.log").read_text(errors="replace")[-2000:]
            self.close()
            raise RuntimeError(f"the eval fork server did not start: {log or 'no output'}")
        return self

    def spawn(self, job: Path, result: Path, log: Path) -> ForkedWorker:
        """Fork a worker running ``job``; OSError when the server cannot be reached."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.address)
            sock.sendall(json.dumps({"job": str(job), "result": str(result), "log": str(log)}).encode() + b"\n")
            reader = _LineReader(sock)
            line = reader.line(30.0)
        except OSError:
            sock.close()
            raise
        if not line or not line.startswith(b"started "):
            sock.close()
            raise OSError(f"the eval fork server did not start the worker: {line!r}")
        return ForkedWorker(sock, reader, int(line.split()[1]))

    def close(self) -> None:
        """Stop the server (closing its stdin ends it; it kills workers still running)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(OSError):
            for child in self._dir.iterdir():
                child.unlink()
            self._dir.rmdir()

    def __enter__(self) -> "ForkServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _read_ready(stream: Any, timeout: float) -> bytes:
    sel = selectors.DefaultSelector()
    sel.register(stream, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            return b""
        return bytes(stream.readline())
    finally:
        sel.close()


# -- the server's side ---------------------------------------------------------------------------


def _become_spare() -> None:
    """In a freshly forked child: a session of its own, death with the server, default signals."""
    os.setsid()
    _die_with_parent()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def _read_request(fd: int) -> dict[str, str] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return None  # the server is gone or stopping: nothing to run
        data += chunk
    return json.loads(data)


def _run_child(request: dict[str, str]) -> int:
    """In the spare, once it has its job: become an episode worker."""
    random.seed()  # the server's random state must not repeat in every episode
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    from . import worker

    return worker.main([request["job"], request["result"]])


def _spare_main(fd: int, closers: list[Any]) -> None:
    """The life of a spare: wait for a job on ``fd``, run it, exit (never returns)."""
    code = 1
    try:
        for item in closers:
            with contextlib.suppress(Exception):
                item.close()
        _become_spare()
        request = _read_request(fd)
        code = 0 if request is None else _run_child(request)
    except SystemExit as exc:  # SIGTERM ends the episode through SystemExit(128 + signum)
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _warm_up() -> None:
    """Run one trivial episode here, so pydantic validators, regexes and caches are built once
    instead of in every worker (the first episode in a process costs ~3x a later one)."""
    import shutil

    from .episode import EpisodeJob, run_episode
    from .task import Task

    task = Task.model_validate({
        "id": "warm-up", "instruction": "Say ok.", "reference": [{"answer": "ok"}],
        "checks": [{"type": "answer", "equals": "ok"}], "setup": {"files": {"note.txt": "x"}},
    })  # fmt: skip
    tmp = tempfile.mkdtemp(prefix="omni-forkserver-warm-")
    try:
        run_episode(EpisodeJob(task=task, model="reference", episode_id="warm-up", episode_dir=f"{tmp}/e", run_dir=tmp))
    except Exception as exc:  # only slower workers, never a broken server
        print(f"warning: warm-up episode failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Server:
    """The server's state: the listener, running workers (pid -> connection) and one spare."""

    def __init__(self, address: str) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(address)
        self.listener.listen(64)
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_w.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}
        self.spare: tuple[int, int] | None = None
        """(pid, write end of its request pipe): forked ahead, so a request waits for no fork."""

    def fork_spare(self) -> None:
        read_fd, write_fd = os.pipe()
        closers = [self.listener, self.wake_r, self.wake_w, self.sel, *self.children.values()]
        pid = os.fork()
        if pid == 0:
            os.close(write_fd)
            _spare_main(read_fd, closers)
        os.close(read_fd)
        self.spare = (pid, write_fd)

    def start_child(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        try:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    raise ValueError("request cut off")
                data += chunk
            json.loads(data)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(f"error {exc}\n".encode())
            conn.close()
            return
        if self.spare is None:
            self.fork_spare()
        assert self.spare is not None
        pid, write_fd = self.spare
        self.spare = None
        os.write(write_fd, data)
        os.close(write_fd)
        self.children[pid] = conn
        with contextlib.suppress(OSError):
            conn.sendall(f"started {pid}\n".encode())
        self.fork_spare()  # the next request's process, made while this episode runs

    def reap(self, *, block: bool = False) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and pid == self.spare[0]:  # a spare that died unused
                os.close(self.spare[1])
                self.spare = None
                continue
            conn = self.children.pop(pid, None)
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
                conn.close()

    def stop(self) -> None:
        if self.spare is not None:
            os.close(self.spare[1])  # the spare reads end-of-file and exits
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        self.reap(block=True)


def serve(address: str) -> None:
    """The server loop: accept requests, hand each to a spare, report exits; ends when stdin closes."""
    for name in PRELOAD:
        importlib.import_module(name)
    _warm_up()
    # Everything imported so far is shared with every child; a child's garbage collector that
    # walks it would copy those pages (copy-on-write): keep it out of the collector's sight.
    gc.collect()
    gc.freeze()
    if threading.active_count() != 1:
        print(f"warning: {threading.active_count()} threads after the preload imports", file=sys.stderr)
    server = _Server(address)
    signal.set_wakeup_fd(server.wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    server.sel.register(server.listener, selectors.EVENT_READ, "accept")
    server.sel.register(server.wake_r, selectors.EVENT_READ, "child")
    server.sel.register(sys.stdin.buffer, selectors.EVENT_READ, "stdin")
    server.fork_spare()
    sys.stdout.buffer.write(READY)
    sys.stdout.buffer.flush()
    running = True
    while running:
        for key, _ in server.sel.select():
            if key.data == "accept":
                conn, _addr = server.listener.accept()
                server.start_child(conn)
            elif key.data == "child":
                with contextlib.suppress(BlockingIOError):
                    server.wake_r.recv(4096)
                server.reap()
            elif not os.read(sys.stdin.fileno(), 4096):
                running = False
    server.stop()


if __name__ == "__main__":
    serve(sys.argv[1])
