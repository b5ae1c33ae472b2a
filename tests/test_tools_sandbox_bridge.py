"""The sandbox's loopback bridge: a sandboxed command reaches the listed 127.0.0.1 ports of the
host and no other; the command's exit status and a persistent session work through the relay."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from omni_agent.tool import ToolContext
from omni_agent.tools.shell import shell_tools


@pytest.fixture
def two_servers(loopback_page) -> tuple[int, int]:  # noqa: ANN001
    return loopback_page("hello from {port}").port, loopback_page("hello from {port}").port


def _run(tool, commands: list[str], ws: Path) -> list[str]:  # type: ignore[no-untyped-def]
    async def go() -> list[str]:
        ctx = ToolContext(workspace=ws, state={})
        return [(await tool.call({"command": c}, ctx)).text for c in commands]

    return asyncio.run(go())


def test_only_the_listed_port_is_reachable(tmp_path: Path, two_servers: tuple[int, int]) -> None:
    allowed, other = two_servers
    [shell] = shell_tools(workspace=tmp_path, sandbox="bubblewrap", local_ports=(allowed,))
    assert f"no network except 127.0.0.1:{allowed}" in shell.description
    ok, refused, code = _run(shell, [f"curl -sS http://127.0.0.1:{allowed}/", f"curl -sS http://127.0.0.1:{other}/", "exit 3"], tmp_path)
    assert f"hello from {allowed}" in ok and "[exit code 0]" in ok
    assert "Failed to connect" in refused and "[exit code 7]" in refused
    assert code.endswith("[exit code 3]")


def test_without_ports_the_sandbox_has_no_network(tmp_path: Path, two_servers: tuple[int, int]) -> None:
    [shell] = shell_tools(workspace=tmp_path, sandbox="bubblewrap")
    [out] = _run(shell, [f"curl -sS http://127.0.0.1:{two_servers[0]}/"], tmp_path)
    assert "Failed to connect" in out


def test_a_persistent_session_keeps_state_through_the_relay(tmp_path: Path, two_servers: tuple[int, int]) -> None:
    allowed, _ = two_servers
    [shell] = shell_tools(workspace=tmp_path, sandbox="bubblewrap", local_ports=(allowed,), persistent=True)
    first, second = _run(shell, [f"export U=http://127.0.0.1:{allowed}/", 'curl -sS "$U"'], tmp_path)
    assert "[exit code 0]" in first and f"hello from {allowed}" in second


def test_a_checkout_and_venv_under_tmp_still_reach_the_port(tmp_path: Path, two_servers: tuple[int, int], monkeypatch) -> None:  # noqa: ANN001
    """The sandbox hides the host's /tmp under an empty tmpfs; a clone in /tmp (its venv python and
    the relay script) must still work, as CI clones wherever it likes."""
    import os
    import shutil
    import sys

    from omni_agent.tools import sandbox_bridge

    checkout = Path(tempfile.mkdtemp(prefix="omni-clone-", dir="/tmp"))
    try:
        (checkout / "bin").mkdir()
        os.symlink(os.path.realpath(sys.executable), checkout / "bin" / "python")  # a venv's python is a symlink
        shutil.copy(sandbox_bridge.RELAY_SCRIPT, checkout / "_sandbox_relay.py")
        monkeypatch.setattr(sys, "executable", str(checkout / "bin" / "python"))
        monkeypatch.setattr(sandbox_bridge, "RELAY_SCRIPT", checkout / "_sandbox_relay.py")
        allowed, _ = two_servers
        [shell] = shell_tools(workspace=tmp_path, sandbox="bubblewrap", local_ports=(allowed,))
        [out] = _run(shell, [f"curl -sS http://127.0.0.1:{allowed}/"], tmp_path)
        assert f"hello from {allowed}" in out and "[exit code 0]" in out
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
