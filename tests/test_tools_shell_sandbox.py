"""Shell tool inside the bubblewrap sandbox (real bwrap, real limits, a real TCP server).

Needs the ``bubblewrap`` apt package, which scripts/setup.sh installs: a missing bwrap fails here
on purpose instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from omni_agent.tool import Tool, ToolContext, ToolOutput
from omni_agent.tools.sandbox import SandboxLimits, bwrap_argv, create_pids_cgroup, limit_argv
from omni_agent.tools.shell import shell_tools
from tests.fixtures.shell import TcpListener

PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
FORKER = (  # forks children that sleep 5 s until the kernel refuses; prints how many it got
    "import os, time\nkids = []\ntry:\n    for _ in range(40):\n        pid = os.fork()\n"
    "        if pid == 0:\n            time.sleep(5)\n            os._exit(0)\n        kids.append(pid)\n"
    "except OSError as exc:\n    print('refused after', len(kids), type(exc).__name__)\n"
    "else:\n    print('all', len(kids))\n"
    "for k in kids:\n    os.kill(k, 9)\n"
)


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
    argv = bwrap_argv([PYTHON, "-c", FORKER], workspace=ws, cwd=ws, env={"PATH": "/usr/bin:/bin"},
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


# -- the pids cgroup: the process cap that binds root too -------------------------------------------

CGROUP_PARENTS = [Path("/sys/fs/cgroup/pids/omni-agent"), Path("/sys/fs/cgroup/omni-agent"),
                  Path("/sys/fs/cgroup/unified/omni-agent")]  # fmt: skip


def _writable_pids_cgroup_here() -> bool:
    """Probed independently of the code under test: v1 pids hierarchy or v2 with pids, writable."""
    v1 = Path("/sys/fs/cgroup/pids")
    if (v1 / "tasks").is_file() and os.access(v1, os.W_OK):
        return True
    for base in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        controllers = base / "cgroup.controllers"
        if controllers.is_file() and "pids" in controllers.read_text().split() and os.access(base, os.W_OK):
            return True
    return False


@pytest.fixture
def root_cgroup() -> None:
    """These tests need root and a writable pids cgroup (the CI container runs as root with one):
    elsewhere they fail saying so, rather than skip."""
    if os.geteuid() != 0 or not _writable_pids_cgroup_here():
        pytest.fail("needs root and a writable pids cgroup under /sys/fs/cgroup (run as root, as CI does)")


needs_root_cgroup = pytest.mark.usefixtures("root_cgroup")


def cgroup_leaves() -> set[Path]:
    return {leaf for parent in CGROUP_PARENTS if parent.is_dir() for leaf in parent.iterdir() if leaf.is_dir()}


def forks_allowed(out: ToolOutput) -> int:
    """How many children FORKER got (40 means it was never refused)."""
    words = out.data.stdout.split()
    assert out.data.exit_code == 0 and words[:2] in (["refused", "after"], ["all", "40"]), out.text
    return 40 if words[0] == "all" else int(words[2])


@needs_root_cgroup
def test_process_limit_binds_root_through_a_pids_cgroup(shell_workspace: Path) -> None:
    before = cgroup_leaves()
    t = sandboxed(shell_workspace, limits=SandboxLimits(nproc=8, cpu_s=10, memory_mb=None))
    out = call(t, f"{PYTHON} -c {shlex.quote(FORKER)}; echo still running")
    # bwrap, its PID-1 helper and python itself count too: the command runs, its forks stop short of 8.
    assert 1 <= forks_allowed(out) < 8
    assert out.data.stdout.endswith("still running\n")
    assert cgroup_leaves() - before == set()  # removed after the command


@needs_root_cgroup
def test_cgroup_exists_while_running_and_is_removed_after_a_timeout(shell_workspace: Path) -> None:
    before = cgroup_leaves()
    t = sandboxed(shell_workspace, kill_grace_s=0.2, limits=SandboxLimits(nproc=9))
    seen: dict[Path, tuple[str, int]] = {}  # leaf -> (pids.max, most processes seen in it)

    async def main() -> ToolOutput:
        running = asyncio.ensure_future(t.call({"command": "sleep 60 & sleep 60", "timeout_s": 1.0}))
        while not running.done():
            for leaf in cgroup_leaves() - before:
                with contextlib.suppress(OSError):
                    current = int((leaf / "pids.current").read_text())
                    seen[leaf] = ((leaf / "pids.max").read_text().strip(), max(current, seen.get(leaf, ("", 0))[1]))
            await asyncio.sleep(0.05)
        return await running

    out = asyncio.run(main())
    assert out.data.timed_out
    [(leaf, (limit, most))] = seen.items()  # one cgroup, capped at nproc, holding the command's processes
    assert limit == "9" and most >= 4  # bwrap, its PID-1 helper, bash, two sleeps (minus races)
    assert not leaf.exists() and cgroup_leaves() - before == set()


@needs_root_cgroup
def test_persistent_session_has_one_capped_cgroup_removed_with_the_session(shell_workspace: Path) -> None:
    before = cgroup_leaves()
    [t] = shell_tools(workspace=shell_workspace, sandbox="bubblewrap", persistent=True,
                      limits=SandboxLimits(nproc=8, cpu_s=10, memory_mb=None))  # fmt: skip
    context = ToolContext()

    async def main() -> tuple[ToolOutput, set[Path]]:
        out = await t.call({"command": f"{PYTHON} -c {shlex.quote(FORKER)}"}, context)
        return out, cgroup_leaves() - before

    out, during = asyncio.run(main())  # asyncio.run's end stops the session
    assert forks_allowed(out) < 8 and len(during) == 1
    assert cgroup_leaves() - before == set()


def _fake_cgroup_roots(base: Path) -> list[Path]:
    """Folders that are not cgroup file systems: empty, and plain files laid out like v1 / v2."""
    empty, v1, v2 = base / "empty", base / "v1", base / "v2"
    empty.mkdir(parents=True)
    (v1 / "pids").mkdir(parents=True)
    for name in ("tasks", "cgroup.procs"):
        (v1 / "pids" / name).write_text("")
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu pids\n")
    (v2 / "cgroup.subtree_control").write_text("pids\n")
    return [empty, v1, v2]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_falls_back_to_prlimit_without_a_usable_cgroup(shell_workspace: Path, tmp_path: Path) -> None:
    roots = _fake_cgroup_roots(tmp_path / "fake")
    listing = _tree(tmp_path / "fake")
    for root in roots:
        root.chmod(0o555)  # not writable (root writes anyway: the fakes also lack real cgroup files)
    try:
        for root in [*roots, tmp_path / "fake" / "missing"]:
            assert create_pids_cgroup(8, root=root) is None
        for root in roots:
            t = sandboxed(shell_workspace, cgroup_root=root, limits=SandboxLimits(nproc=8, cpu_s=10, memory_mb=None))
            allowed = forks_allowed(call(t, f"{PYTHON} -c {shlex.quote(FORKER)}"))  # the command runs regardless
            if os.geteuid() == 0:
                assert allowed == 40  # prlimit alone: RLIMIT_NPROC does not bind root (the gap the cgroup closes)
        assert _tree(tmp_path / "fake") == listing  # nothing made there, or all of it taken back
    finally:
        for root in roots:
            root.chmod(0o755)
