"""Shell tool inside the bubblewrap sandbox (real bwrap, real limits, a real TCP server).

Needs the ``bubblewrap`` apt package, which scripts/setup.sh installs: a missing bwrap fails here
on purpose instead of skipping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from omni_agent.tool import Tool, ToolContext, ToolOutput
from omni_agent.tools.sandbox import SandboxLimits, bwrap_argv, limit_argv
from omni_agent.tools.shell import shell_tools
from tests.fixtures.shell import TcpListener

PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


def sandboxed(workspace: Path, **options: object) -> Tool:
    [t] = shell_tools(workspace=workspace, sandbox="bubblewrap", **options)
    return t


def call(t: Tool, command: str, **arguments: object) -> ToolOutput:
    return asyncio.run(t.call({"command": command, **arguments}))


def test_profile_argv(tmp_path: Path) -> None:
    argv = bwrap_argv(["bash", "-c", "true"], workspace=tmp_path, cwd=tmp_path, env={"PATH": "/bin"},
                      limits=SandboxLimits(cpu_s=5, memory_mb=100, nproc=7), bwrap="bwrap", prlimit="prlimit")  # fmt: skip
    joined = " ".join(argv)
    assert "--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp" in joined
    assert joined.index("--tmpfs /tmp") < joined.index(f"--bind {tmp_path} {tmp_path}")
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--cap-drop ALL", "--clearenv"):
        assert flag in joined
    assert argv[-8:] == ["prlimit", "--cpu=5", f"--as={100 * 1024 * 1024}", "--nproc=7", "--", "bash", "-c", "true"]
    assert limit_argv(SandboxLimits(cpu_s=None, memory_mb=None, nproc=None), prlimit="prlimit") == []


def test_no_network_even_to_the_host_loopback(shell_workspace: Path, tcp_listener: TcpListener) -> None:
    probe = f"echo hi > /dev/tcp/127.0.0.1/{tcp_listener.port} && echo connected"
    [plain] = shell_tools(workspace=shell_workspace)
    assert call(plain, probe).data.stdout == "connected\n"  # the server is reachable from outside
    accepted_before = tcp_listener.accepted
    out = call(sandboxed(shell_workspace), probe)
    assert out.data.exit_code != 0 and "connected" not in out.data.stdout
    assert "Connection refused" in out.data.stderr or "Network is unreachable" in out.data.stderr
    assert tcp_listener.accepted == accepted_before


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A folder outside /tmp (the sandbox hides /tmp behind a tmpfs), readable by everyone."""
    path = Path(tempfile.mkdtemp(prefix="omni-agent-test-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_writes_only_inside_the_workspace(shell_workspace: Path, host_dir: Path) -> None:
    (host_dir / "existing.txt").write_text("original\n")
    t = sandboxed(shell_workspace)
    out = call(t, f"echo new > {host_dir}/new.txt; echo changed >> {host_dir}/existing.txt; "
                  f"rm -f {host_dir}/existing.txt; touch /etc/omni-agent-test; "
                  "echo kept > inside.txt; mkdir -p d/e && echo x > d/e/f")  # fmt: skip
    assert out.data.stderr.count("Read-only file system") == 4, out.data.stderr
    assert not (host_dir / "new.txt").exists()
    assert (host_dir / "existing.txt").read_text() == "original\n"
    assert not Path("/etc/omni-agent-test").exists()
    assert (shell_workspace / "inside.txt").read_text() == "kept\n"  # workspace writes persist
    assert (shell_workspace / "d" / "e" / "f").read_text() == "x\n"


def test_tmp_is_private_and_empty(shell_workspace: Path, tmp_path: Path) -> None:
    marker = tmp_path / "host-only.txt"
    marker.write_text("host")
    out = call(sandboxed(shell_workspace), f"cat {marker}; echo scratch > /tmp/scratch && cat /tmp/scratch")
    assert "No such file" in out.data.stderr and out.data.stdout == "scratch\n"
    assert not Path("/tmp/scratch").exists() or Path("/tmp/scratch").read_text() != "scratch\n"


def test_environment_is_cleared_to_the_allowlist(shell_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_TEST_SECRET", "hunter2")
    out = call(sandboxed(shell_workspace, env={"EXTRA": "1"}), "env")
    assert "hunter2" not in out.text and "EXTRA=1" in out.data.stdout and "PATH=" in out.data.stdout


def test_capabilities_dropped(shell_workspace: Path) -> None:
    out = call(sandboxed(shell_workspace), "grep CapEff /proc/self/status; hostname omni-test")
    assert "CapEff:\t0000000000000000" in out.data.stdout
    assert out.data.exit_code != 0  # setting the hostname needs CAP_SYS_ADMIN


def test_memory_limit_enforced(shell_workspace: Path) -> None:
    t = sandboxed(shell_workspace, limits=SandboxLimits(memory_mb=200, cpu_s=30, nproc=None))
    small = call(t, f"{PYTHON} -c \"b = bytearray(20 * 2**20); print('small ok')\"")
    assert small.data.stdout == "small ok\n"
    big = call(t, f"{PYTHON} -c \"b = bytearray(400 * 2**20); print('big ok')\"")
    assert big.data.exit_code != 0 and "MemoryError" in big.data.stderr and "big ok" not in big.data.stdout


def test_cpu_limit_enforced(shell_workspace: Path) -> None:
    t = sandboxed(shell_workspace, limits=SandboxLimits(cpu_s=1, memory_mb=None, nproc=None))
    out = call(t, "while :; do :; done", timeout_s=20)
    assert not out.data.timed_out and out.data.exit_code in (128 + 24, 128 + 9)  # SIGXCPU, then SIGKILL
    assert out.data.duration_s < 15


def test_process_limit_enforced_for_an_ordinary_user(host_dir: Path) -> None:
    """RLIMIT_NPROC never applies to root (kernel rule), so run the sandbox's argv as nobody."""
    ws = host_dir / "nobody-ws"
    ws.mkdir()
    ws.chmod(0o777)
    forker = (
        "import os, time\nkids = []\ntry:\n    for _ in range(40):\n        pid = os.fork()\n"
        "        if pid == 0:\n            time.sleep(5)\n            os._exit(0)\n        kids.append(pid)\n"
        "except OSError as exc:\n    print('refused after', len(kids), type(exc).__name__)\n"
        "for k in kids:\n    os.kill(k, 9)\n"
    )
    argv = bwrap_argv([PYTHON, "-c", forker], workspace=ws, cwd=ws, env={"PATH": "/usr/bin:/bin"},
                      limits=SandboxLimits(nproc=8, cpu_s=10, memory_mb=None), bwrap="bwrap", prlimit="prlimit")  # fmt: skip
    if os.geteuid() == 0:
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.stdout.startswith("refused after "), done.stderr
    assert int(done.stdout.split()[2]) < 8


def test_timeout_kills_the_sandbox(shell_workspace: Path) -> None:
    t = sandboxed(shell_workspace, kill_grace_s=0.2)
    out = call(t, "sleep 60 & sleep 60", timeout_s=0.5)
    assert out.data.timed_out and out.data.duration_s < 4
    survivors = subprocess.run(["pgrep", "-f", f"--bind {shell_workspace}"], capture_output=True, text=True)
    assert survivors.stdout == ""


def test_persistent_session_in_the_sandbox(shell_workspace: Path, tcp_listener: TcpListener) -> None:
    [t] = shell_tools(workspace=shell_workspace, sandbox="bubblewrap", persistent=True)
    context = ToolContext()

    async def main() -> list[ToolOutput]:
        return [
            await t.call({"command": "mkdir -p sub && cd sub && export V=1"}, context),
            await t.call({"command": f'pwd; echo "$V"; echo > /dev/tcp/127.0.0.1/{tcp_listener.port}'}, context),
        ]

    _, second = asyncio.run(main())
    assert second.data.stdout == f"{shell_workspace / 'sub'}\n1\n"
    assert second.data.exit_code != 0 and tcp_listener.accepted == 0
