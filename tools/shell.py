"""The shell tool: bash commands in a workspace, bounded in time, output and (optionally) reach.

``shell_tools(workspace=..., sandbox="none"|"bubblewrap", ...)`` returns one tool, ``shell``
(kind "shell"). Each call runs ``bash -c COMMAND`` with the working folder inside the workspace,
only the allowlisted environment variables, stdin closed, and a timeout that ends the whole
process tree (SIGTERM, then SIGKILL after a grace period, so children that ignore SIGTERM die
too). stdout and stderr are captured separately with a byte cap each; what is cut from the middle
is stated exactly (``[... 12345 bytes cut ...]``). With ``persistent=True`` one long-lived bash
per run keeps ``cd`` and exported variables between calls.

Dangerous-looking commands are reported by :func:`~omni_agent.tools.shell_policy.assess_command`
through the tool's ``assess`` hook, so the agent's policy asks before running them.

Needs: bash. The bubblewrap sandbox needs ``bwrap`` and ``prlimit`` (apt: bubblewrap,
util-linux) and ``sh``; each command (or persistent session) gets its own pids cgroup where one
can be made, see :mod:`omni_agent.tools.sandbox`. Linux only (process trees are read from /proc).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import shlex
import signal
import time
import uuid
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from omni_agent.exceptions import UserError
from omni_agent.tool import Tool, ToolContext, ToolOutput, tool

from .sandbox import DEFAULT_CGROUP_ROOT, PidsCgroup, SandboxLimits, bwrap_argv, create_pids_cgroup, find_program
from .sandbox_bridge import LoopbackBridge
from .shell_policy import assess_command
from .untrusted import downloaded_files, mentions_downloaded_file, network_reason

__all__ = [
    "DEFAULT_ENV_ALLOWLIST",
    "SandboxLimits",
    "ShellConfig",
    "ShellResult",
    "ShellSession",
    "run_command",
    "shell_tools",
]

DEFAULT_ENV_ALLOWLIST = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "LC_*", "TERM", "TZ")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_READ_CHUNK = 65536
_EOF_GRACE_S = 0.3
"""After bash exits, how long to wait for background processes to close the output pipes."""


class ShellConfig(BaseModel):
    """Options of :func:`shell_tools` (also accepted as keyword arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workspace: Path
    """Folder commands start in (created if missing); the sandbox's only writable place."""
    sandbox: Literal["none", "bubblewrap"] = "none"
    env_allowlist: tuple[str, ...] = DEFAULT_ENV_ALLOWLIST
    """Variables passed through from this process (``fnmatch`` patterns: ``LC_*``)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Variables set for every command (after the allowlist)."""
    timeout: float = Field(default=30.0, gt=0)
    """Default seconds per command; the model may ask for up to ``max_timeout``."""
    max_timeout: float = Field(default=300.0, gt=0)
    max_output_bytes: int = Field(default=16_000, ge=64)
    """Cap for each of stdout and stderr; the middle is cut, head and tail kept."""
    persistent: bool = False
    """One long-lived bash per run: ``cd`` and ``export`` carry over between calls."""
    limits: SandboxLimits = Field(default_factory=SandboxLimits)
    """CPU / memory / process limits, applied inside the bubblewrap sandbox."""
    cgroup_root: Path = DEFAULT_CGROUP_ROOT
    """Where cgroup file systems are mounted: the sandbox's process cap is a per-command pids
    cgroup made under it when possible, else only ``prlimit --nproc`` (which root ignores)."""
    kill_grace_s: float = Field(default=0.5, ge=0)
    """Seconds between SIGTERM and SIGKILL when a command is stopped."""
    bwrap_path: str | None = None
    local_ports: tuple[int, ...] = ()
    """Ports on the host's 127.0.0.1 that sandboxed commands may reach (an eval episode's own
    web app); every other address stays unreachable. Ignored without the sandbox."""
    name: str = "shell"

    @field_validator("workspace")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()


class ShellResult(BaseModel):
    """What one command did (``ToolOutput.data`` of the shell tool)."""

    command: str
    exit_code: int | None
    """None when the command was killed for its timeout."""
    stdout: str
    stderr: str
    stdout_cut_bytes: int = 0
    stderr_cut_bytes: int = 0
    timed_out: bool = False
    timeout_s: float
    """The limit the command ran under."""
    duration_s: float
    cwd: str
    note: str = ""
    """Extra facts for the model (session restarted, background processes stopped...)."""

    def render(self) -> str:
        """The text the model sees: labelled streams, then the exit code or the timeout."""
        parts: list[str] = []
        if self.stdout:
            parts.append("[stdout]\n" + self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("[stderr]\n" + self.stderr.rstrip("\n"))
        if not parts:
            parts.append("(no output)")
        if self.timed_out:
            parts.append(f"[timed out after {self.timeout_s:g} s: {self.note}]")
        else:
            parts.append(f"[exit code {self.exit_code}]" + (f" {self.note}" if self.note else ""))
        return "\n".join(parts)


# -- output capture ------------------------------------------------------------------------------


class HeadTailBuffer:
    """Keeps the first and last ``limit // 2`` bytes of a stream and counts what fell between."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    @property
    def cut(self) -> int:
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", errors="replace")
        tail = self.tail.decode("utf-8", errors="replace")
        if not self.cut:
            return head + tail
        return f"{head}\n[... {self.cut} bytes cut ...]\n{tail}"


async def _drain(stream: asyncio.StreamReader, buffer: HeadTailBuffer) -> None:
    while chunk := await stream.read(_READ_CHUNK):
        buffer.feed(chunk)


# -- process trees -------------------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) for every process, read from /proc (empty off Linux)."""
    table: dict[int, tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # the command name may contain spaces and ")"
        if len(fields) >= 2:
            table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    """All live processes below ``pid``. Needed besides the process group: a child that called
    ``setsid`` (or the sandbox's ``--new-session``) has left the group but is still ours."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _state) in table.items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _process_table()
    return {p for p in pids if p in table and table[p][1] not in ("Z", "X")}


def _signal_all(pgid: int, pids: set[int], sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, sig)
        except (ProcessLookupError, PermissionError):
            pass


async def terminate_tree(pid: int, *, grace: float) -> None:
    """SIGTERM the process group and every descendant, SIGKILL whatever is left after ``grace``,
    and wait (up to 2 s) until they are gone. ``pid`` must lead its own process group."""
    targets = descendants(pid) | {pid}
    _signal_all(pid, targets, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _alive(targets) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    targets |= {d for p in _alive(targets) for d in descendants(p)}  # forked during the grace
    _signal_all(pid, targets, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while _alive(targets) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def _kill_tree_now(pid: int) -> None:
    """Synchronous SIGKILL of a tree, for cancellation and finalizers (no event loop needed)."""
    _signal_all(pid, descendants(pid) | {pid}, signal.SIGKILL)


# -- commands ------------------------------------------------------------------------------------


def build_env(config: ShellConfig) -> dict[str, str]:
    """The environment commands see: allowlisted variables of this process plus ``config.env``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if any(fnmatch.fnmatchcase(key, pattern) for pattern in config.env_allowlist)
    }
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(config.env)
    return env


class _Launcher:
    """Builds argv for plain or sandboxed bash (programs looked up once, at tool creation)."""

    def __init__(self, config: ShellConfig) -> None:
        self.config = config
        self.env = build_env(config)
        self.bash = find_program("bash", purpose="the shell tool")
        self.bwrap = self.prlimit = self.sh = ""
        if config.sandbox == "bubblewrap":
            self.bwrap = find_program("bwrap", configured=config.bwrap_path, purpose="sandbox='bubblewrap'")
            self.prlimit = find_program("prlimit", purpose="sandbox limits")
            self.sh = find_program("sh", purpose="the sandbox's process limit")
        self.bridge = LoopbackBridge(config.local_ports) if config.sandbox == "bubblewrap" and config.local_ports else None

    def argv(self, bash_args: list[str], cwd: Path) -> list[str]:
        argv = [self.bash, "--noprofile", "--norc", *bash_args]
        if self.config.sandbox == "none":
            return argv
        return bwrap_argv(
            argv if self.bridge is None else self.bridge.wrap(argv),
            workspace=self.config.workspace,
            cwd=cwd,
            env=self.env,
            limits=self.config.limits,
            bwrap=self.bwrap,
            prlimit=self.prlimit,
            extra_binds=(self.bridge.folder,) if self.bridge is not None else (),
        )

    async def spawn(self, bash_args: list[str], cwd: Path, *, stdin: int) -> "_Child":
        """Start bash in its own process group (and, sandboxed, its own pids cgroup if possible)."""
        loop = asyncio.get_running_loop()
        argv = self.argv(bash_args, cwd)
        cgroup = None
        if self.config.sandbox != "none" and self.config.limits.nproc is not None:
            cgroup = create_pids_cgroup(self.config.limits.nproc, root=self.config.cgroup_root)
            if cgroup is not None:
                argv = cgroup.wrap(argv, sh=self.sh)
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ExitAwareProtocol(limit=_READ_CHUNK, loop=loop),
                *argv,
                stdin=stdin,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=self.env,
                start_new_session=True,  # own process group: the timeout kills the command's whole tree
            )
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            raise
        return _Child(asyncio.subprocess.Process(transport, protocol, loop), transport, protocol.exited, cgroup)


@dataclass(eq=False)
class _Child:
    """A started bash: the asyncio process, its transport (closed explicitly, so no pipe outlives
    the call), an event set the moment the process exits, and its pids cgroup if it has one."""

    proc: asyncio.subprocess.Process
    transport: asyncio.SubprocessTransport
    exited: asyncio.Event
    cgroup: PidsCgroup | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None

    async def stop(self, *, grace: float) -> None:
        """TERM then KILL the whole tree and wait for bash to be gone."""
        if self.running:
            await terminate_tree(self.pid, grace=grace)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.exited.wait(), 2.0)

    async def kill_and_reap(self) -> None:
        """SIGKILL the tree at once and give the loop a moment to reap bash (used while a
        cancellation is propagating, so a second cancellation just cuts the wait short)."""
        _kill_tree_now(self.pid)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.exited.wait(), 1.0)

    def kill_now(self) -> None:
        """SIGKILL the tree and remove the cgroup without the event loop (finalizers)."""
        _kill_tree_now(self.pid)
        if self.cgroup is not None:
            self.cgroup.remove()

    def release(self) -> None:
        """Close the pipes; kill what is left in the cgroup and delete it."""
        with contextlib.suppress(RuntimeError):  # the event loop is already closed
            self.transport.close()
        if self.cgroup is not None:
            self.cgroup.remove()


class _ExitAwareProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Sets ``exited`` when the process ends. Before Python 3.12, ``Process.wait()`` returns only
    once the pipes are closed too, so a background child holding stdout would hide bash's exit."""

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def _sandbox_failure(launcher: _Launcher, result: ShellResult) -> bool:
    return launcher.config.sandbox != "none" and result.exit_code == 1 and result.stderr.startswith("bwrap: ")


async def _spawn_shielded(launcher: _Launcher, bash_args: list[str], cwd: Path, *, stdin: int) -> _Child:
    """Spawn, and if cancelled meanwhile, finish spawning and kill the tree before re-raising.
    (asyncio's own clean-up of a half-made subprocess waits until every pipe writer is gone,
    which with a background grandchild means waiting for as long as it runs.)"""
    spawning = asyncio.ensure_future(launcher.spawn(bash_args, cwd, stdin=stdin))
    try:
        return await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            child = await spawning
            await child.kill_and_reap()
            child.release()
        raise


async def run_command(launcher: _Launcher, command: str, *, cwd: Path, timeout: float) -> ShellResult:
    """Run one ``bash -c command``: capped output, whole-tree kill on timeout or cancellation."""
    limit = launcher.config.max_output_bytes
    out, err = HeadTailBuffer(limit), HeadTailBuffer(limit)
    started = time.monotonic()
    child = await _spawn_shielded(launcher, ["-c", command], cwd, stdin=asyncio.subprocess.DEVNULL)
    proc = child.proc
    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPE was asked for
    readers = asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
    grace = launcher.config.kill_grace_s
    timed_out = False
    note = ""
    try:
        try:
            await asyncio.wait_for(child.exited.wait(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
            await child.stop(grace=grace)
            note = "the command and all its child processes were killed"
        try:
            await asyncio.wait_for(asyncio.shield(readers), _EOF_GRACE_S)
        except asyncio.TimeoutError:
            # bash is done but something it started in the background still holds the pipes.
            await terminate_tree(child.pid, grace=grace)
            if not timed_out:
                note = "(background processes that kept the output open were stopped)"
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(readers), 1.0)
    finally:
        if child.running:  # cancelled (the agent's own timeout, Ctrl-C): leave nothing behind
            await child.kill_and_reap()
        readers.cancel()
        with contextlib.suppress(BaseException):  # the readers' end is of no interest now
            await readers
        child.release()
    return ShellResult(
        command=command,
        exit_code=None if timed_out else proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        stdout_cut_bytes=out.cut,
        stderr_cut_bytes=err.cut,
        timed_out=timed_out,
        timeout_s=timeout,
        duration_s=time.monotonic() - started,
        cwd=str(cwd),
        note=note,
    )


# -- persistent sessions -------------------------------------------------------------------------


class SessionEnded(Exception):
    """The session's bash exited (``exit`` in a command) or its pipes closed."""


class ShellSession:
    """One long-lived bash. Each command is sent as a quoted string to ``eval`` (so a syntax error
    cannot swallow the protocol), with stdin from /dev/null, followed by unique end markers on
    fds 3 and 4 (copies of stdout / stderr made at start, so ``exec >file`` does not hide them)
    that carry the exit code and the working folder."""

    def __init__(self, launcher: _Launcher) -> None:
        self.launcher = launcher
        self.child: _Child | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.cwd = launcher.config.workspace
        self.lock = asyncio.Lock()
        self._finalizer: weakref.finalize | None = None
        self._guard: asyncio.Task[None] | None = None
        self.replaces_ended = False
        """True when this session takes over from one that ended (its event loop closed)."""

    @property
    def running(self) -> bool:
        return self.child is not None and self.child.running

    async def start(self) -> None:
        workspace = self.launcher.config.workspace
        self.child = await _spawn_shielded(self.launcher, ["-s"], workspace, stdin=asyncio.subprocess.PIPE)
        self.loop = asyncio.get_running_loop()
        self.cwd = workspace
        # Kills the tree if the session is dropped without close() (the run context went away).
        self._finalizer = weakref.finalize(self, self.child.kill_now)
        self._guard = self.loop.create_task(self._stop_with_loop(self.child))
        await self._send("exec 3>&1 4>&2\n")

    async def _stop_with_loop(self, child: _Child) -> None:
        """Waits for ever; ``asyncio.run`` cancels it on the way out, and then the session stops
        while its event loop can still reap the process (no orphan bash, no transport warnings)."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if child.running:
                _kill_tree_now(child.pid)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(child.exited.wait(), 2.0)
            child.release()
            raise

    async def _send(self, text: str) -> None:
        assert self.child is not None and self.child.proc.stdin is not None  # noqa: S101
        try:
            self.child.proc.stdin.write(text.encode())
            await self.child.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise SessionEnded() from exc

    async def run(self, command: str, *, timeout: float) -> ShellResult:
        async with self.lock:
            return await self._run(command, timeout=timeout)

    async def _run(self, command: str, *, timeout: float) -> ShellResult:
        note = ""
        if not self.running:
            if self.child is not None or self.replaces_ended:
                self.replaces_ended = False
                note = "(a new shell session was started: the previous one had ended)"
            await self.start()
        assert self.child is not None  # noqa: S101
        stdout, stderr = self.child.proc.stdout, self.child.proc.stderr
        assert stdout is not None and stderr is not None  # noqa: S101
        marker = f"__omni_agent_end_{uuid.uuid4().hex}__"
        script = (
            f"__oa_cmd={shlex.quote(command)}\n"
            '{ eval "$__oa_cmd"; } </dev/null\n'
            f"printf '\\n%s %d %s\\n' {marker} \"$?\" \"$PWD\" >&3; printf '\\n%s\\n' {marker} >&4\n"
        )
        limit = self.launcher.config.max_output_bytes
        out, err = HeadTailBuffer(limit), HeadTailBuffer(limit)
        started = time.monotonic()
        tail = b""
        try:
            await self._send(script)
            tail, _ = await asyncio.wait_for(
                asyncio.gather(
                    _read_until(stdout, marker.encode(), out),
                    _read_until(stderr, marker.encode(), err),
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            await self.close()
            return self._result(command, out, err, started, None, timeout, timed_out=True,
                                note="the command was killed and the shell session restarted "
                                "(cd and exported variables were reset)")  # fmt: skip
        except SessionEnded:
            code = await self._wait_exit()
            return self._result(command, out, err, started, code, timeout,
                                note="(the shell session ended; the next command starts a new one)")  # fmt: skip
        except BaseException:
            if self.child is not None:
                await self.child.kill_and_reap()
            self.kill_now()
            raise
        code_text, _, cwd = tail.decode(errors="replace").strip().partition(" ")
        self.cwd = Path(cwd) if cwd else self.cwd
        return self._result(command, out, err, started, int(code_text), timeout, note=note)

    def _result(self, command: str, out: HeadTailBuffer, err: HeadTailBuffer, started: float,
                code: int | None, timeout: float, *, timed_out: bool = False, note: str = "") -> ShellResult:  # fmt: skip
        return ShellResult(
            command=command, exit_code=code, stdout=out.text(), stderr=err.text(),
            stdout_cut_bytes=out.cut, stderr_cut_bytes=err.cut, timed_out=timed_out, timeout_s=timeout,
            duration_s=time.monotonic() - started, cwd=str(self.cwd), note=note,
        )  # fmt: skip

    async def _wait_exit(self) -> int | None:
        assert self.child is not None  # noqa: S101
        child = self.child
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(child.exited.wait(), 2.0)
        code = child.proc.returncode
        await self.close()
        self.replaces_ended = True
        return code

    async def close(self) -> None:
        """Stop the session and everything it started (TERM, then KILL)."""
        if self.child is not None:
            await self.child.stop(grace=self.launcher.config.kill_grace_s)
            self.child.release()
        self._forget()

    def kill_now(self) -> None:
        """SIGKILL the session's tree without waiting (cancellation, a stale event loop)."""
        if self._finalizer is not None:
            self._finalizer()
        if self.child is not None:
            self.child.release()
        self._forget()

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
        if self._guard is not None:
            self._guard.cancel()
        self._finalizer = self._guard = None
        self.child = None


async def _read_until(stream: asyncio.StreamReader, marker: bytes, buffer: HeadTailBuffer) -> bytes:
    """Feed ``stream`` into ``buffer`` up to ``\\n`` + marker; return the rest of the marker line."""
    needle = b"\n" + marker
    pending = b""
    while True:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            buffer.feed(pending)
            raise SessionEnded()
        pending += chunk
        at = pending.find(needle)
        if at >= 0:
            buffer.feed(pending[:at])
            rest = pending[at + len(needle) :]
            while b"\n" not in rest:
                more = await stream.read(_READ_CHUNK)
                if not more:
                    raise SessionEnded()
                rest += more
            return rest.partition(b"\n")[0]
        keep = len(needle) - 1  # a marker split across two reads
        if len(pending) > keep:
            buffer.feed(pending[:-keep])
            pending = pending[-keep:]


# -- the tool ------------------------------------------------------------------------------------


def shell_tools(config: ShellConfig | None = None, /, **options: Any) -> list[Tool]:
    """The ``shell`` tool for a workspace.

    Pass a :class:`ShellConfig` or its fields as keyword arguments: ``workspace`` (required),
    ``sandbox="none"|"bubblewrap"``, ``env_allowlist``, ``env``, ``timeout``, ``max_timeout``,
    ``max_output_bytes``, ``persistent``, ``limits=SandboxLimits(cpu_s, memory_mb, nproc)``,
    ``kill_grace_s``, ``bwrap_path``, ``name``. Raises UserError for bad options or when the
    sandbox is asked for and ``bwrap`` is missing.
    """
    try:
        cfg = ShellConfig(**options) if config is None else config.model_copy(update=options)
        cfg = ShellConfig.model_validate(cfg.model_dump())
    except ValidationError as exc:
        raise UserError(f"invalid shell tool options: {exc}") from exc
    cfg.workspace.mkdir(parents=True, exist_ok=True)
    launcher = _Launcher(cfg)
    workspace = cfg.workspace
    downloads = downloaded_files(workspace)

    async def watched(command: str, cwd: Path, run: Any) -> ToolOutput:
        """Run ``run()``; mark the output untrusted when the command reaches the network or
        names a file an earlier network command wrote (see :mod:`.untrusted`)."""
        network = network_reason(command)
        before = downloads.snapshot() if network else {}
        output = _to_output(launcher, await run())
        if network:
            downloads.note_changed(before)
        source = network
        if source is None:
            shown = mentions_downloaded_file(command, cwd, downloads)
            source = f"it reads {shown.name}, a downloaded file" if shown else None
        if source:
            output = replace(output, untrusted=True, text=output.text + f"\n[untrusted content: {source}]")
        return output

    def assess(arguments: dict[str, Any]) -> str | None:
        return assess_command(str(arguments.get("command", "")), workspace)

    reach = (
        "no network except " + ", ".join(f"127.0.0.1:{p}" for p in sorted(cfg.local_ports))
        if cfg.local_ports
        else "no network"
    )
    where = (
        f"inside a bubblewrap sandbox (read-only system, {reach}, only the workspace writable)"
        if cfg.sandbox == "bubblewrap"
        else "on this machine"
    )
    common = dict(kind="shell", assess=assess, name=cfg.name, timeout=cfg.max_timeout + cfg.kill_grace_s + 10)
    limits_doc = (
        f"stdin is closed (no interactive programs), each of stdout/stderr is capped at "
        f"{cfg.max_output_bytes} bytes (the middle is cut), the exit code is reported"
    )
    timeout_doc = f"seconds before the command and its children are killed (default {cfg.timeout:g}, max {cfg.max_timeout:g})"

    def pick_timeout(timeout_s: float | None) -> float:
        if timeout_s is not None and timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        return min(timeout_s or cfg.timeout, cfg.max_timeout)

    if cfg.persistent:
        key = f"omni_agent.tools.shell:{cfg.name}:{id(launcher)}"

        async def persistent_shell(context: ToolContext, command: str, restart: bool = False,
                                   timeout_s: float | None = None) -> ToolOutput:  # fmt: skip
            try:
                seconds = pick_timeout(timeout_s)
            except ValueError as exc:
                return ToolOutput.error(str(exc))
            session = context.state.get(key)
            replaced = False
            if isinstance(session, ShellSession) and session.loop not in (None, asyncio.get_running_loop()):
                session.kill_now()  # left over from an earlier event loop: its pipes are unusable
                session, replaced = None, True
            if session is None:
                session = context.state[key] = ShellSession(launcher)
                session.replaces_ended = replaced
            if restart:
                await session.close()
            return await watched(command, workspace, lambda: session.run(command, timeout=seconds))

        persistent_shell.__doc__ = (
            f"Run a bash command in a persistent shell session {where}; `cd` and exported variables "
            f"carry over to the next call. It starts in the workspace {workspace}. {limits_doc}.\n\n"
            f"Args:\n    command: bash command line.\n    restart: start a fresh session first.\n"
            f"    timeout_s: {timeout_doc}; on timeout the session is restarted."
        )
        return [tool(parallel_safe=False, **common)(persistent_shell)]  # type: ignore[arg-type]

    async def shell(command: str, workdir: str = ".", timeout_s: float | None = None) -> ToolOutput:
        try:
            seconds = pick_timeout(timeout_s)
            cwd = _workdir(workspace, workdir)
        except ValueError as exc:
            return ToolOutput.error(str(exc))
        return await watched(command, cwd, lambda: run_command(launcher, command, cwd=cwd, timeout=seconds))

    shell.__doc__ = (
        f"Run a bash command {where} and return its output and exit code. Each call starts a "
        f"fresh shell in the workspace {workspace} (use `&&` to chain steps). {limits_doc}.\n\n"
        f"Args:\n    command: bash command line.\n    workdir: folder to run in, relative to the workspace.\n"
        f"    timeout_s: {timeout_doc}."
    )
    return [tool(**common)(shell)]  # type: ignore[arg-type]


def _workdir(workspace: Path, workdir: str) -> Path:
    path = (workspace / workdir).resolve()
    if path != workspace and workspace not in path.parents:
        raise ValueError(f"workdir {workdir!r} is outside the workspace {workspace}")
    if not path.is_dir():
        raise ValueError(f"workdir {workdir!r} is not a folder in the workspace {workspace}")
    return path


def _to_output(launcher: _Launcher, result: ShellResult) -> ToolOutput:
    if _sandbox_failure(launcher, result):
        return ToolOutput(text=f"the sandbox could not start: {result.stderr.strip()}", is_error=True, data=result)
    return ToolOutput(text=result.render(), is_error=result.timed_out, data=result)
