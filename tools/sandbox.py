"""The bubblewrap profile the shell tool runs commands in, and its per-command pids cgroup.

Needs the ``bwrap`` program (apt package ``bubblewrap``) and ``prlimit`` (util-linux). The
profile: the whole file system read-only, fresh ``/dev``, ``/proc`` and an empty ``/tmp``, the
workspace bound writable at its own path (so paths mean the same inside and out), every namespace
unshared (no network: only a loopback of its own), all capabilities dropped, a cleared
environment with only the allowlisted variables set again, and ``prlimit`` inside for CPU
seconds, address space and process count. ``--die-with-parent`` and the PID namespace make sure
nothing outlives the shell tool's kill.

Limits, measured facts: RLIMIT_AS stops ``malloc`` beyond the cap (programs that reserve large
virtual ranges up front, such as Node or the JVM, need a higher ``memory_mb``); RLIMIT_CPU kills
with SIGXCPU (exit 152). RLIMIT_NPROC counts *all* processes of the user on the machine, and the
kernel does not apply it to root at all.

Which process cap applies when: where a writable pids cgroup exists (in practice: the agent runs
as root and ``/sys/fs/cgroup`` is mounted read-write, either cgroup v1 with the ``pids``
hierarchy at ``<root>/pids`` or cgroup v2 at ``<root>`` or ``<root>/unified`` with ``pids`` in
``cgroup.controllers``), :func:`create_pids_cgroup` makes ``.../omni-agent/<unique>`` with
``pids.max = nproc`` and :meth:`PidsCgroup.wrap` puts the command into it before it can fork (a
``sh`` that writes its own pid to ``cgroup.procs`` and then execs bwrap). That cap counts every
process of the command, root's included, and nothing else. ``prlimit --nproc`` stays in the argv
either way; it is the only process cap where no cgroup can be made (unprivileged users,
read-only cgroup mounts as in default Docker), and there it does nothing for root. A missing
cgroup never fails a command: it only falls back to prlimit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from omni_agent.exceptions import UserError

__all__ = [
    "DEFAULT_CGROUP_ROOT",
    "PidsCgroup",
    "SandboxLimits",
    "bwrap_argv",
    "create_pids_cgroup",
    "find_program",
    "limit_argv",
]

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
_CGROUP_PARENT = "omni-agent"
"""Shared parent of the per-command cgroups; left in place (other runs may be using it)."""


class SandboxLimits(BaseModel):
    """Per-process resource limits inside the sandbox; None leaves one unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_s: int | None = Field(default=120, ge=1)
    """CPU seconds per process (RLIMIT_CPU)."""
    memory_mb: int | None = Field(default=4096, ge=16)
    """Address space per process in MiB (RLIMIT_AS)."""
    nproc: int | None = Field(default=512, ge=1)
    """Processes of one command (a pids cgroup where writable, else RLIMIT_NPROC, which does not
    bind root: see the module docstring)."""


def find_program(name: str, *, configured: str | None = None, purpose: str) -> str:
    """Path of ``name`` (or the configured path); UserError saying how to install it if absent."""
    found = shutil.which(configured or name)
    if found is None:
        where = f"at {configured!r}" if configured else "on PATH"
        package = {"bwrap": "bubblewrap", "prlimit": "util-linux"}.get(name, name)
        raise UserError(
            f"{purpose} needs the {name} program, which was not found {where}: "
            f"install it (Debian/Ubuntu: apt-get install {package}) or choose sandbox='none'"
        )
    return found


def limit_argv(limits: SandboxLimits, *, prlimit: str) -> list[str]:
    """``prlimit --cpu=.. --as=.. --nproc=.. --`` (empty when no limit is set)."""
    opts: list[str] = []
    if limits.cpu_s is not None:
        opts.append(f"--cpu={limits.cpu_s}")
    if limits.memory_mb is not None:
        opts.append(f"--as={limits.memory_mb * 1024 * 1024}")
    if limits.nproc is not None:
        opts.append(f"--nproc={limits.nproc}")
    return [prlimit, *opts, "--"] if opts else []


def bwrap_argv(
    argv: list[str],
    *,
    workspace: Path,
    cwd: Path,
    env: dict[str, str],
    limits: SandboxLimits,
    bwrap: str,
    prlimit: str,
    extra_binds: tuple[Path, ...] = (),
) -> list[str]:
    """Wrap ``argv`` so it runs inside the sandbox with ``cwd`` (inside ``workspace``);
    ``extra_binds`` are further writable folders (the network bridge's sockets)."""
    ws = str(workspace)
    # Order matters: the tmpfs on /tmp comes before the workspace bind, so a workspace under /tmp
    # (pytest's tmp_path, mkdtemp) is bound on top of the empty tmpfs instead of hidden by it.
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    out += ["--bind", ws, ws]
    for extra in extra_binds:
        out += ["--bind", str(extra), str(extra)]
    out += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for key, value in env.items():
        out += ["--setenv", key, value]
    out += ["--chdir", str(cwd), "--"]
    return out + limit_argv(limits, prlimit=prlimit) + list(argv)


# -- the pids cgroup -----------------------------------------------------------------------------

# Runs outside the sandbox (bwrap makes /sys read-only inside): joins the cgroup, then execs the
# sandbox, so the first fork already counts. If joining fails it says so and runs uncapped by the
# cgroup (prlimit still applies) rather than failing the command.
_ENTER_SCRIPT = (
    'echo $$ 2>/dev/null >"$0" || echo "omni-agent: could not join the pids cgroup $0; '
    'only prlimit --nproc limits processes" >&2; exec "$@"'
)


class PidsCgroup:
    """One command's pids cgroup (a folder on a cgroup file system)."""

    def __init__(self, path: Path, *, v2: bool) -> None:
        self.path = path
        self.v2 = v2
        self.removed = False

    def wrap(self, argv: list[str], *, sh: str) -> list[str]:
        """``argv`` started inside this cgroup before it can fork."""
        return [sh, "-c", _ENTER_SCRIPT, str(self.path / "cgroup.procs"), *argv]

    def pids(self) -> list[int]:
        """Processes in the cgroup now (empty once it is gone)."""
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def remove(self, *, wait_s: float = 2.0) -> bool:
        """SIGKILL whatever is still in the cgroup and delete it; False if it could not be
        deleted within ``wait_s`` (left behind; never raises). Safe to call twice."""
        if self.removed:
            return True
        deadline = time.monotonic() + wait_s
        while True:
            if self.v2:
                with contextlib.suppress(OSError):
                    (self.path / "cgroup.kill").write_text("1")  # kernel >= 5.14, race-free
            # cgroup v1 has no cgroup.kill: signal by pid. The pids come from the cgroup itself, a
            # moment before the signal, so an unrelated process could only be hit if the pid
            # space wrapped around in between.
            for pid in self.pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # EBUSY: killed processes not gone yet
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.005)
                continue
            self.removed = True
            return True


def _pids_parent(root: Path) -> tuple[Path, bool] | None:
    """(folder that holds pids cgroups, is v2) for the cgroup mounts under ``root``, if any."""
    v1 = root / "pids"
    if (v1 / "tasks").is_file() and (v1 / "cgroup.procs").is_file():  # `tasks` exists in v1 only
        return v1, False
    for base in (root, root / "unified"):
        with contextlib.suppress(OSError):
            if "pids" in (base / "cgroup.controllers").read_text().split():
                return base, True
    return None


def _enable_pids(base: Path) -> None:
    """cgroup v2: children of ``base`` get the pids controller (OSError if it cannot be had)."""
    control = base / "cgroup.subtree_control"
    if "pids" not in control.read_text().split():
        control.write_text("+pids")


def create_pids_cgroup(max_pids: int, *, root: Path = DEFAULT_CGROUP_ROOT) -> PidsCgroup | None:
    """A fresh cgroup capped at ``max_pids`` processes under ``root``'s pids hierarchy, or None
    where none can be made (no such mount, read-only, no permission): then prlimit is the cap."""
    found = _pids_parent(root)
    if found is None:
        return None
    base, v2 = found
    parent = base / _CGROUP_PARENT
    leaf = parent / uuid.uuid4().hex
    made: list[Path] = []  # what to take back if this turns out not to be a usable cgroup
    try:
        if v2:
            _enable_pids(base)
        with contextlib.suppress(FileExistsError):
            parent.mkdir()
            made.append(parent)
        if v2:
            _enable_pids(parent)
        leaf.mkdir()
        made.append(leaf)
        # A real cgroup file system creates pids.max itself; a plain folder that merely looks
        # like one (or a hierarchy without the controller) does not.
        limit_file = leaf / "pids.max"
        if not limit_file.is_file():
            raise OSError(f"{leaf} has no pids.max")
        limit_file.write_text(str(max_pids))
    except OSError:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        return None
    return PidsCgroup(leaf, v2=v2)
