"""Shell tool in persistent-session mode: one bash per run that keeps cd and exports."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Awaitable, Callable

from omni_agent.tool import Tool, ToolContext, ToolOutput
from omni_agent.tools.shell import shell_tools
from tests.fixtures.shell import process_alive, wait_until_gone

Send = Callable[..., Awaitable[ToolOutput]]


def session_tool(workspace: Path, **options: object) -> Tool:
    [t] = shell_tools(workspace=workspace, persistent=True, **options)
    return t


def run_session(t: Tool, body: Callable[[Send], Awaitable[None]]) -> ToolContext:
    """Run ``body`` in one event loop with one run context, as the agent loop does."""
    context = ToolContext(run_id="run-1")

    async def send(command: str, **arguments: object) -> ToolOutput:
        return await t.call({"command": command, **arguments}, context)

    asyncio.run(body(send))
    return context


def test_schema_and_not_parallel(shell_workspace: Path) -> None:
    t = session_tool(shell_workspace)
    assert t.kind == "shell" and not t.parallel_safe
    assert set(t.parameters["properties"]) == {"command", "restart", "timeout_s"}
    assert "persistent shell session" in t.description


def test_cd_and_exports_persist(shell_workspace: Path, tmp_path: Path) -> None:
    (shell_workspace / "sub").mkdir()

    async def body(send: Send) -> None:
        assert (await send("cd sub && export GREETING=hello && LOCAL=kept")).data.exit_code == 0
        out = await send('pwd; echo "$GREETING $LOCAL"; bash -c \'echo "child sees $GREETING"\'')
        assert out.data.stdout == f"{shell_workspace / 'sub'}\nhello kept\nchild sees hello\n"
        assert out.data.cwd == str(shell_workspace / "sub")
        fresh = await send("pwd; echo \"[$GREETING]\"", restart=True)
        assert fresh.data.stdout == f"{shell_workspace}\n[]\n"

    run_session(session_tool(shell_workspace), body)


def test_exit_codes_streams_and_missing_newline(shell_workspace: Path) -> None:
    async def body(send: Send) -> None:
        out = await send("printf no-newline; printf err-no-newline >&2; false")
        assert (out.data.stdout, out.data.stderr, out.data.exit_code) == ("no-newline", "err-no-newline", 1)
        assert out.text == "[stdout]\nno-newline\n[stderr]\nerr-no-newline\n[exit code 1]"
        out = await send("echo; echo")  # blank lines are output too
        assert out.data.stdout == "\n\n"

    run_session(session_tool(shell_workspace), body)


def test_syntax_errors_stdin_and_exec_redirect_do_not_break_the_session(shell_workspace: Path) -> None:
    async def body(send: Send) -> None:
        bad = await send("echo 'unclosed")
        assert bad.data.exit_code == 2 and "unexpected EOF" in bad.data.stderr
        read = await send("read line; echo status=$?")  # stdin is /dev/null, not our protocol pipe
        assert read.data.stdout == "status=1\n"
        await send("exec >captured.txt; echo into-file")
        later = await send("echo still-works >&2; echo $((6 * 7))")
        assert later.data.exit_code == 0 and later.data.stderr == "still-works\n"

    run_session(session_tool(shell_workspace), body)
    assert (shell_workspace / "captured.txt").read_text() == "into-file\n42\n"


def test_large_output_is_truncated_and_marker_found(shell_workspace: Path) -> None:
    async def body(send: Send) -> None:
        out = await send("seq 1 200000; echo done >&2")
        total = sum(len(f"{i}\n") for i in range(1, 200001))
        assert out.data.stdout_cut_bytes == total - 1000
        assert out.data.stdout.startswith("1\n2\n3\n") and out.data.stdout.endswith("199999\n200000\n")
        assert f"[... {total - 1000} bytes cut ...]" in out.data.stdout
        assert out.data.stderr == "done\n" and out.data.exit_code == 0

    run_session(session_tool(shell_workspace, max_output_bytes=1000), body)


def test_timeout_kills_and_restarts_the_session(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    async def body(send: Send) -> None:
        await send("cd /tmp; export KEPT=1")
        out = await send("bash -c 'trap \"\" TERM; sleep 60' & echo $! > " + str(shell_workspace / "bg.pid") + "; sleep 60", timeout_s=0.5)
        assert out.is_error and out.data.timed_out
        assert "shell session restarted (cd and exported variables were reset)" in out.text
        pid = int((shell_workspace / "bg.pid").read_text())
        kill_leftovers.append(pid)
        assert wait_until_gone([pid], timeout=0.5) == []
        after = await send('pwd; echo "[$KEPT]"')
        assert after.data.stdout == f"{shell_workspace}\n[]\n"

    run_session(session_tool(shell_workspace, kill_grace_s=0.2), body)


def test_exit_ends_the_session_and_the_next_call_starts_one(shell_workspace: Path) -> None:
    async def body(send: Send) -> None:
        await send("export GONE=1")
        out = await send("exit 7")
        assert out.data.exit_code == 7 and "the shell session ended" in out.text
        nxt = await send('echo "[$GONE]"')
        assert nxt.data.stdout == "[]\n" and "a new shell session was started" in nxt.text

    run_session(session_tool(shell_workspace), body)


def test_session_stops_when_its_event_loop_ends(shell_workspace: Path, kill_leftovers: list[int]) -> None:
    t = session_tool(shell_workspace)

    async def body(send: Send) -> None:
        out = await send("echo $$; sleep 60 & echo $!")
        kill_leftovers.extend(int(p) for p in out.data.stdout.split())

    context = run_session(t, body)
    assert wait_until_gone(kill_leftovers) == []
    # The same run context in a new event loop gets a new session, and says so.
    again = asyncio.run(t.call({"command": "echo $$"}, context))
    assert again.data.exit_code == 0 and "a new shell session was started" in again.text
    assert int(again.data.stdout) not in kill_leftovers


def test_separate_runs_have_separate_sessions(shell_workspace: Path) -> None:
    t = session_tool(shell_workspace)
    a, b = ToolContext(run_id="a"), ToolContext(run_id="b")

    async def main() -> tuple[str, str]:
        await t.call({"command": "export WHO=a"}, a)
        await t.call({"command": "export WHO=b"}, b)
        return (await t.call({"command": "echo $WHO"}, a)).data.stdout, (await t.call({"command": "echo $WHO"}, b)).data.stdout

    assert asyncio.run(main()) == ("a\n", "b\n")


def test_session_process_is_killed_when_the_context_goes_away(shell_workspace: Path) -> None:
    t = session_tool(shell_workspace)

    async def main() -> int:
        context = ToolContext()
        pid = int((await t.call({"command": "echo $$"}, context)).data.stdout)
        assert process_alive(pid)
        del context  # the run is over and nobody closed the session
        return pid

    pid = asyncio.run(main())
    assert wait_until_gone([pid]) == []
