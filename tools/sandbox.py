"""The bubblewrap profile the shell tool runs commands in.

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
kernel does not apply it to root at all: run the agent as an ordinary user for the process cap to
mean something (the timeout still kills every process of a command).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from omni_agent.exceptions import UserError

__all__ = ["SandboxLimits", "find_program", "limit_argv", "bwrap_argv"]


class SandboxLimits(BaseModel):
    """Per-process resource limits inside the sandbox; None leaves one unlimited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu_s: int | None = Field(default=120, ge=1)
    """CPU seconds per process (RLIMIT_CPU)."""
    memory_mb: int | None = Field(default=4096, ge=16)
    """Address space per process in MiB (RLIMIT_AS)."""
    nproc: int | None = Field(default=512, ge=1)
    """Processes of the user (RLIMIT_NPROC; not enforced for root, see the module docstring)."""


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
) -> list[str]:
    """Wrap ``argv`` so it runs inside the sandbox with ``cwd`` (inside ``workspace``)."""
    ws = str(workspace)
    # Order matters: the tmpfs on /tmp comes before the workspace bind, so a workspace under /tmp
    # (pytest's tmp_path, mkdtemp) is bound on top of the empty tmpfs instead of hidden by it.
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    out += ["--bind", ws, ws]
    out += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for key, value in env.items():
        out += ["--setenv", key, value]
    out += ["--chdir", str(cwd), "--"]
    return out + limit_argv(limits, prlimit=prlimit) + list(argv)
