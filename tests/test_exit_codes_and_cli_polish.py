"""Exit codes CI can use (``eval`` fails on failed episodes, ``eval compare --fail-on-regression``,
every command's codes in its ``--help``), and CLI polish: ``--debug`` anywhere, ``--speak-to``
implying ``--speak``, "did you mean" for spec typos, plurals and articles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omni_agent.cli import app
from tests.fixtures.eval import shell_task

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def _invoke(*args: str) -> object:
    return CliRunner().invoke(app, list(args), env=ENV)


def test_eval_exits_1_on_failed_episodes_unless_allowed_and_compare_can_fail_on_regression(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    suite = write_suite({"a.yaml": shell_task("a")})
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text('- "no idea"\n')
    good, bad, allowed = tmp_path / "good", tmp_path / "bad", tmp_path / "allowed"
    res = _invoke("eval", str(suite), "--model", "reference", "--out", str(good), "--no-progress")
    assert res.exit_code == 0, res.output
    res = _invoke("eval", str(suite), "--model", f"scripted:{wrong}", "--out", str(bad), "--no-progress")
    assert res.exit_code == 1 and "0/1 passed" in res.output
    res = _invoke("eval", str(suite), "--model", f"scripted:{wrong}", "--out", str(allowed), "--no-progress", "--allow-failures")
    assert res.exit_code == 0 and "0/1 passed" in res.output

    assert _invoke("eval", "compare", str(good), str(bad)).exit_code == 0  # reports only
    res = _invoke("eval", "compare", str(good), str(bad), "--fail-on-regression")
    assert res.exit_code == 1 and "regression: a passed in RUN_A and not in RUN_B" in res.output
    assert _invoke("eval", "compare", str(bad), str(good), "--fail-on-regression").exit_code == 0  # fixed, not worse


@pytest.mark.parametrize(
    "command",
    [["run"], ["tools"], ["parse"], ["replay"], ["listen"], ["eval", "run"], ["eval", "compare"], ["eval", "validate"],
     ["eval", "schema"], ["console"], ["mcp-server"]],  # fmt: skip
)
def test_every_command_lists_its_exit_codes_in_help(command: list[str]) -> None:
    res = _invoke(*command, "--help")
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "Exit codes: 0 " in text and (" 2 " in text or command in (["eval", "compare"], ["eval", "schema"]))
    if command == ["run"]:
        assert "3 stopped without an answer" in text
    if command == ["eval", "run"]:
        assert "1 an episode failed or errored (0 with --allow-failures)" in text


def test_debug_works_after_the_sub_command_too(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "omni_agent.cli", *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)  # fmt: skip

    quiet = cli("tools", "--tools", "nope")
    assert quiet.returncode == 2 and "unknown toolset 'nope'" in quiet.stderr and "Traceback" not in quiet.stderr
    for args in (("--debug", "tools", "--tools", "nope"), ("tools", "--tools", "nope", "--debug")):
        loud = cli(*args)
        assert loud.returncode != 0 and "Traceback" in loud.stderr and "UserError: unknown toolset 'nope'" in loud.stderr


def test_speak_to_a_folder_implies_speak(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("- All done here.\n")
    voice = tmp_path / "voice"
    res = _invoke("run", "say it", "--model", f"scripted:{policy}", "--tools", "", "--speak-to", str(voice),
                  "--speech-engine", "espeak", "-w", str(tmp_path), "--trajectory", str(tmp_path / "runs"))  # fmt: skip
    assert res.exit_code == 0, res.output
    assert sorted(voice.glob("*.wav")), "nothing was spoken to the folder"


def test_a_spec_typo_gets_did_you_mean() -> None:
    from omni_agent import UserError, load_model

    with pytest.raises(UserError, match=r"did you mean scripted:policy.yaml\?"):
        load_model("script:policy.yaml")
    with pytest.raises(UserError, match=r"did you mean qwen-omni:/models/x\?"):
        load_model("qwen-omny:/models/x")


def test_plurals_and_articles(tmp_path: Path) -> None:
    from omni_agent import Agent, ScriptedModel, StopReason, UserError
    from omni_agent.wording import article, plural
    from tests.fixtures.core import tool_call

    assert (plural(1, "step"), plural(2, "step"), plural(0, "step")) == ("1 step", "2 steps", "0 steps")
    assert (article("int"), article("str"), article("ellipsis")) == ("an int", "a str", "an ellipsis")
    with pytest.raises(UserError, match="scripted output 0 is an int;"):
        ScriptedModel([3])  # type: ignore[list-item]
    result = Agent(ScriptedModel([tool_call("nope")]), max_steps=1, trajectory_dir=None).run("x")
    assert result.stop_reason is StopReason.MAX_STEPS and result.error == "stopped after 1 step"
    res = _invoke("run", "x", "--model", f"scripted:{_policy(tmp_path)}", "--tools", "", "-w", str(tmp_path),
                  "--trajectory", str(tmp_path / "runs"))  # fmt: skip
    assert "· 1 step ·" in res.output and "1 steps" not in res.output


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "answer.yaml"
    p.write_text("- fine\n")
    return p
