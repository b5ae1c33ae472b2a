"""Shell tool, one command per call (no sandbox): exit codes, output caps, env, timeouts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from omni_agent.exceptions import UserError
from omni_agent.registry import ToolRegistry
from omni_agent.tool import Tool, ToolOutput
from omni_agent.tools.shell import ShellConfig, ShellResult, shell_tools
from tests.fixtures.shell import wait_until_gone


def call(t: Tool, **arguments: object) -> ToolOutput:
    return asyncio.run(t.call(dict(arguments)))


def one(**options: object) -> Tool:
    [t] = shell_tools(**options)
    return t


def test_tool_shape_and_schema(shell_workspace: Path) -> None:
    t = one(workspace=shell_workspace)
    assert t.name == "shell" and t.kind == "shell" and t.assess is not None
    assert t.parameters["required"] == ["command"]
    assert set(t.parameters["properties"]) == {"command", "workdir", "timeout_s"}
    assert str(shell_workspace) in t.description
    assert t.timeout is not None and t.timeout > ShellConfig(workspace=shell_workspace).max_timeout
    ToolRegistry([t])  # a valid, registrable tool


def test_exit_code_and_labelled_streams(shell_workspace: Path) -> None:
    out = call(one(workspace=shell_workspace), command="echo out; echo err >&2; exit 3")
    assert out.text == "[stdout]\nout\n[stderr]\nerr\n[exit code 3]"
    assert not out.is_error
    result = out.data
    assert isinstance(result, ShellResult)
    assert (result.exit_code, result.stdout, result.stderr, result.timed_out) == (3, "out\n", "err\n", False)


def test_no_output_and_success(shell_workspace: Path) -> None:
    out = call(one(workspace=shell_workspace), command="true")
    assert out.text == "(no output)\n[exit code 0]"


def test_head_and_tail_kept_and_cut_stated_exactly(shell_workspace: Path) -> None:
    t = one(workspace=shell_workspace, max_output_bytes=2000)
    cmd = "head -c 1000 /dev/zero | tr '\\0' A; head -c 5000 /dev/zero | tr '\\0' B; head -c 1000 /dev/zero | tr '\\0' C"
    out = call(t, command=cmd + "; echo tail-on-stderr >&2")
    assert out.data.stdout == "A" * 1000 + "\n[... 5000 bytes cut ...]\n" + "C" * 1000
    assert out.data.stdout_cut_bytes == 5000 and out.data.stderr_cut_bytes == 0
    assert out.data.stderr == "tail-on-stderr\n"


def test_large_output_does_not_block_the_pipe(shell_workspace: Path) -> None:
    # 5 MB on each stream at once: both pipes must be drained concurrently or this would hang.
    t = one(workspace=shell_workspace, max_output_bytes=100)
    out = call(t, command="head -c 5000000 /dev/zero | tr '\\0' x; head -c 5000000 /dev/zero | tr '\\0' y >&2", timeout_s=20)
    assert out.data.exit_code == 0
    assert out.data.stdout_cut_bytes == out.data.stderr_cut_bytes == 5_000_000 - 100


def test_env_allowlist_hides_secrets(shell_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OMNI_TEST_ALLOWED", "visible")
    t = one(workspace=shell_workspace, env_allowlist=("PATH", "OMNI_TEST_ALL*"), env={"FIXED": "set-by-config"})
    out = call(t, command='echo "[$OMNI_TEST_SECRET][$OMNI_TEST_ALLOWED][$FIXED]"; env')
    assert out.data.stdout.startswith("[][visible][set-by-config]\n")
    assert "hunter2" not in out.text
    assert "HOME=" not in out.data.stdout  # not in this allowlist


def test_default_allowlist_passes_path_but_not_other_variables(shell_workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    out = call(one(workspace=shell_workspace), command="env")
    assert "PATH=" in out.data.stdout and "s3cr3t" not in out.data.stdout


def test_stdin_is_closed(shell_workspace: Path) -> None:
    out = call(one(workspace=shell_workspace), command="cat; read line; echo read-status=$?", timeout_s=5)
    assert out.data.stdout == "read-status=1\n" and not out.data.timed_out


def test_runs_in_workspace_and_workdir(shell_workspace: Path) -> None:
    (shell_workspace / "sub").mkdir()
    t = one(workspace=shell_workspace)
    assert call(t, command="pwd").data.stdout == f"{shell_workspace}\n"
    assert call(t, command="pwd", workdir="sub").data.stdout == f"{shell_workspace / 'sub'}\n"


@pytest.mark.parametrize("workdir", ["..", "/etc", "sub/../../", "missing"])
def test_workdir_outside_or_missing_is_refused(shell_workspace: Path, workdir: str) -> None:
    out = call(one(workspace=shell_workspace), command="touch should-not-exist", workdir=workdir)
    assert out.is_error and repr(workdir) in out.text
    assert not list(shell_workspace.parent.rglob("should-not-exist"))


def test_timeout_kills_grandchildren_even_when_they_ignore_sigterm(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    t = one(workspace=shell_workspace, kill_grace_s=0.2)
    cmd = (
        "bash -c 'trap \"\" TERM; sleep 60 & echo $! > ignores-term.pid; wait' & echo $! > child.pid; "
        "setsid sleep 60 & echo $! > new-session.pid; "  # left the process group: found through /proc
        "sleep 60"
    )
    out = call(t, command=cmd, timeout_s=1.0)
    pids = [int((shell_workspace / f).read_text()) for f in ("ignores-term.pid", "child.pid", "new-session.pid")]
    kill_leftovers.extend(pids)
    assert out.is_error and out.data.timed_out and out.data.exit_code is None
    assert "[timed out after 1 s: the command and all its child processes were killed]" in out.text
    assert wait_until_gone(pids, timeout=0.5) == []


def test_background_process_holding_the_pipe_is_stopped(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    out = call(one(workspace=shell_workspace), command="sleep 60 & echo $! > bg.pid; echo started", timeout_s=10)
    pid = int((shell_workspace / "bg.pid").read_text())
    kill_leftovers.append(pid)
    assert out.data.stdout == "started\n" and out.data.exit_code == 0 and out.data.duration_s < 5
    assert "background processes that kept the output open were stopped" in out.text
    assert wait_until_gone([pid], timeout=0.5) == []


def test_background_process_with_redirected_output_keeps_running(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    out = call(one(workspace=shell_workspace), command="nohup sleep 30 >/dev/null 2>&1 & echo $! > bg.pid")
    pid = int((shell_workspace / "bg.pid").read_text())
    kill_leftovers.append(pid)
    assert out.data.exit_code == 0 and "stopped" not in out.text
    assert wait_until_gone([pid], timeout=0.2) == [pid]  # a deliberate daemon is left alone


def test_cancelled_call_leaves_no_process(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    t = one(workspace=shell_workspace)

    async def main() -> None:
        task = asyncio.ensure_future(t.call({"command": "sleep 60 & echo $! > bg.pid; sleep 60"}))
        for _ in range(200):
            if (shell_workspace / "bg.pid").exists() and (shell_workspace / "bg.pid").read_text().strip():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    pid = int((shell_workspace / "bg.pid").read_text())
    kill_leftovers.append(pid)
    assert wait_until_gone([pid]) == []


def test_model_timeout_is_capped_and_validated(shell_workspace: Path) -> None:
    t = one(workspace=shell_workspace, timeout=5, max_timeout=1)
    out = call(t, command="sleep 10", timeout_s=30)
    assert out.data.timed_out and out.data.duration_s < 4
    bad = call(t, command="true", timeout_s=-1)
    assert bad.is_error and "timeout_s must be positive" in bad.text


def test_invalid_utf8_output_is_replaced_not_fatal(shell_workspace: Path) -> None:
    out = call(one(workspace=shell_workspace), command="printf 'ok \\377\\376 end'")
    assert out.data.stdout == "ok \ufffd\ufffd end"


def test_concurrent_calls_do_not_block_each_other(shell_workspace: Path) -> None:
    t = one(workspace=shell_workspace)

    async def main() -> list[ToolOutput]:
        return await asyncio.gather(*(t.call({"command": f"sleep 0.5; echo {i}"}) for i in range(4)))

    outs = asyncio.run(main())
    assert [o.data.stdout for o in outs] == [f"{i}\n" for i in range(4)]
    # run one after another they would take 2 s; the assertion on order above is the real check,
    # this one catches a blocking implementation without timing anything tight.
    assert max(o.data.duration_s for o in outs) < 1.9


def test_bad_options_are_user_errors(shell_workspace: Path) -> None:
    with pytest.raises(UserError, match="sandbox"):
        shell_tools(workspace=shell_workspace, sandbox="docker")
    with pytest.raises(UserError, match="no_such_option"):
        shell_tools(workspace=shell_workspace, no_such_option=1)
    with pytest.raises(UserError, match="workspace"):
        shell_tools()


def test_missing_bwrap_is_a_clear_error(shell_workspace: Path) -> None:
    with pytest.raises(UserError, match=r"needs the bwrap program.*apt-get install bubblewrap"):
        shell_tools(workspace=shell_workspace, sandbox="bubblewrap", bwrap_path="/nonexistent/bwrap")


def test_config_object_and_creates_workspace(tmp_path: Path) -> None:
    cfg = ShellConfig(workspace=tmp_path / "new" / "ws", timeout=3)
    [t] = shell_tools(cfg, name="bash")
    assert t.name == "bash" and (tmp_path / "new" / "ws").is_dir()
