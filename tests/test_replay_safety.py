"""Replay re-runs shell commands only where and as the run did: in the recorded workspace and
sandbox, under the run's policy; without them it refuses instead of using the current folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from omni_agent.loop import Agent
from omni_agent.models.scripted import ScriptedModel
from omni_agent.policy import DefaultPolicy, allow_all
from omni_agent.replay import replay
from omni_agent.tools.shell import shell_tools
from tests.fixtures.core import tool_call

# In the sandbox's own PID namespace process 1 is bwrap: the output says where it ran.
PROBE = "touch made.txt && cat /proc/1/comm"


def _record(parent: Path, ws: Path, commands: list[str], *, metadata: dict | None, sandbox: str = "none") -> Path:
    model = ScriptedModel([tool_call("shell", command=c) for c in commands] + ["done"])
    Agent(model, shell_tools(workspace=ws, sandbox=sandbox), trajectory_dir=parent, approver=allow_all,
          metadata=metadata).run("x")  # fmt: skip
    [run] = [p for p in parent.iterdir() if p.is_dir()]
    return run


def _cli_replay(run: Path, *args: str, cwd: Path) -> tuple[int, dict]:
    exe = str(Path(sys.executable).parent / "omni-agent")
    proc = subprocess.run([exe, "replay", str(run), "--json", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_without_a_recorded_workspace_shell_commands_are_refused_not_run_here(tmp_path: Path) -> None:
    ws, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = _record(tmp_path / "runs", ws, ["touch made.txt"], metadata=None)
    (ws / "made.txt").unlink()
    code, report = _cli_replay(run, "--tools", "shell", cwd=elsewhere)
    assert code == 1 and not report["ok"]
    [call] = report["calls"]
    assert call["status"] == "refused" and "never run in the current directory" in call["differences"][0]
    assert not (elsewhere / "made.txt").exists() and not (ws / "made.txt").exists()
    # the library refuses too when it is given no workspace and none is recorded
    lib = replay(run, shell_tools(workspace=elsewhere))
    assert [c.status for c in lib.calls] == ["refused"] and not (elsewhere / "made.txt").exists()


def test_replay_uses_the_recorded_workspace_and_sandbox(tmp_path: Path) -> None:
    ws, elsewhere = tmp_path / "ws", tmp_path / "elsewhere"
    elsewhere.mkdir()
    meta = {"toolsets": ["shell"], "workspace": str(ws.resolve()), "sandbox": "bubblewrap"}
    run = _record(tmp_path / "runs", ws, [PROBE], metadata=meta, sandbox="bubblewrap")
    (ws / "made.txt").unlink()
    code, report = _cli_replay(run, cwd=elsewhere)
    assert code == 0 and report["ok"], report
    assert report["calls"][0]["replayed_text"].startswith("[stdout]\nbwrap")
    assert (ws / "made.txt").exists() and not (elsewhere / "made.txt").exists()
    # a workspace recorded without its sandbox is not enough: the shell is refused
    bare = _record(tmp_path / "runs2", ws, ["touch again.txt"], metadata={"toolsets": ["shell"], "workspace": str(ws)})
    code, report = _cli_replay(bare, cwd=elsewhere)
    assert code == 1 and report["calls"][0]["status"] == "refused" and "sandbox" in report["calls"][0]["differences"][0]
    code, report = _cli_replay(bare, "--sandbox", "bubblewrap", cwd=elsewhere)
    assert report["calls"][0]["status"] == "same"


def test_replay_applies_the_policy_and_the_recorded_approvals(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    # `rm -rf "$D"` makes the default policy ask; the recorded run approved it
    run = _record(tmp_path / "runs", ws, ['mkdir -p sub && D=sub; rm -rf "$D"', "echo hi"], metadata={"workspace": str(ws)})
    report = replay(run, shell_tools(workspace=ws))
    assert [c.status for c in report.calls] == ["same", "same"], report.summary()
    denied = replay(run, shell_tools(workspace=ws), policy=DefaultPolicy(deny={"shell"}))
    assert [c.status for c in denied.calls] == ["refused", "refused"]
    assert "disabled for this run" in denied.calls[0].differences[0]


def test_an_ask_the_recorded_run_did_not_approve_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run = _record(tmp_path / "runs", ws, ["echo hi"], metadata={"workspace": str(ws)})

    class AsksAlways(DefaultPolicy):
        def decide(self, call, tool, state):  # type: ignore[no-untyped-def]
            from omni_agent.policy import Decision

            return Decision(action="ask", reason="new rule")

    report = replay(run, shell_tools(workspace=ws), policy=AsksAlways())
    assert report.calls[0].status == "refused" and "did not approve" in report.calls[0].differences[0]
    assert not report.ok
