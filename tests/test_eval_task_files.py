"""Task files fail at validate time, with the file, the line and the fix, never as retried
infrastructure errors: relative paths from the task file, JSON Schemas checked, YAML's ``on:``
trap refused, ``expected.arguments`` taking one value, and a task-file mistake found only when
an episode starts is its own result kind, run once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omni_agent.eval.loading import TaskFileError, load_suite, load_task
from omni_agent.eval.runner import run_suite
from omni_agent.eval.task import Task
from tests.fixtures.eval import shell_task

TOOL_MODULE = '''
from omni_agent import tool

@tool
def shout(text: str) -> str:
    """Say it loudly."""
    return text.upper()
'''

CALL_TASK = """
id: {id}
instruction: Switch the kitchen lights on.
functions:
- type: function
  function:
    name: set_lights
    parameters:
      type: object
      properties:
{properties}
      required: [room, {required}]
reference:
- calls:
  - name: set_lights
    arguments: {{room: kitchen}}
checks:
- type: tool_calls
  expected:
  - name: set_lights
    arguments: {{room: kitchen}}
"""


def _cli() -> object:
    from omni_agent.cli import app

    return app


def test_a_tool_module_is_found_beside_the_task_file_wherever_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "suite" / "nested"
    folder.mkdir(parents=True)
    (folder / "helpers.py").write_text(TOOL_MODULE)
    text = shell_task("shout").replace("tools: [shell]", "tools: [shell, helpers.py, 'helpers.py:shout']")
    (folder / "shout.yaml").write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (task,) = load_suite(tmp_path / "suite")
    assert task.tools == ["shell", str(folder / "helpers.py"), f"{folder / 'helpers.py'}:shout"]
    res = CliRunner().invoke(_cli(), ["eval", "validate", str(tmp_path / "suite")])
    assert res.exit_code == 0, res.output

    (folder / "shout.yaml").write_text(text.replace("helpers.py, ", "missing.py, "))
    with pytest.raises(TaskFileError) as info:
        load_task(folder / "shout.yaml")
    ((line, field, message),) = info.value.problems
    assert line == 4 and field == "tools[1]" and f"tool module not found: {folder / 'missing.py'}" in message


def test_an_mcp_server_command_in_tools_is_not_taken_for_a_tool_module(tmp_path: Path) -> None:
    folder = tmp_path / "suite"
    folder.mkdir()
    spec = "mcp:weather=stdio:python weather.py"  # a command line, run as written
    (folder / "t.yaml").write_text(shell_task("t").replace("tools: [shell]", f"tools: [shell, '{spec}']"))
    task = load_task(folder / "t.yaml")  # no "tool module not found: .../mcp:weather=stdio:python weather.py"
    assert task.tools == ["shell", spec]


def test_eval_validate_checks_every_json_schema_and_loads_every_tool_set(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    bad_type = CALL_TASK.format(id="bad-type", properties="        room: {type: strng}", required="room")
    missing = CALL_TASK.format(id="missing", properties="        room: {type: string}", required="level")
    suite = write_suite({"bad-type.yaml": bad_type, "missing.yaml": missing})
    res = CliRunner().invoke(_cli(), ["eval", "validate", str(suite)], env={"COLUMNS": "300"})
    assert res.exit_code == 2
    assert f"{suite / 'bad-type.yaml'}:3: functions: functions[0]: tool set_lights: invalid JSON Schema: 'strng'" in res.output
    assert "missing.yaml:3: functions: functions[0] (set_lights): required names 'level' but properties has 'room'" in res.output

    (suite / "bad-type.yaml").unlink()
    (suite / "missing.yaml").unlink()
    (suite / "empty.py").write_text("X = 1\n")
    (suite / "t.yaml").write_text(shell_task("t").replace("tools: [shell]", "tools: [shell, empty.py]"))
    res = CliRunner().invoke(_cli(), ["eval", "validate", str(suite)], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "t.yaml: tools: " in res.output and "defines no tools" in res.output


def test_an_unquoted_on_key_is_refused_with_the_fix_named(write_suite) -> None:  # noqa: ANN001
    text = CALL_TASK.format(id="lights", properties="        room: {type: string}\n        on: {type: boolean}", required="'on'")
    suite = write_suite({"lights.yaml": text})
    with pytest.raises(TaskFileError) as info:
        load_task(suite / "lights.yaml")
    assert "lights.yaml:11: functions[0].function.parameters.properties.on: YAML reads the key on as the bool True" in str(info.value)
    assert "quote it ('on': ...)" in str(info.value)
    (suite / "lights.yaml").write_text(text.replace("        on:", "        'on':"))
    (task,) = load_suite(suite)
    assert task.functions[0]["function"]["parameters"]["properties"]["on"] == {"type": "boolean"}


def test_expected_arguments_take_one_value_or_a_list() -> None:
    check = {"type": "tool_calls", "expected": [{"name": "f", "arguments": {"a": 1, "b": [2, 3], "c": [[4, 5]]}}]}
    task = Task.model_validate({"id": "t", "instruction": "x", "checks": [check]})
    assert task.checks[0].expected[0].arguments == {"a": [1], "b": [2, 3], "c": [[4, 5]]}


def test_missing_files_named_relative_to_the_task_fail_at_load(write_suite) -> None:  # noqa: ANN001
    text = shell_task("t").replace("instruction: run it", "instruction: {audio: say.wav}")
    text = text.replace("setup:\n", "setup:\n  files: {data.txt: {source: data/in.txt}}\n")
    suite = write_suite({"t.yaml": text})
    with pytest.raises(TaskFileError) as info:
        load_task(suite / "t.yaml")
    fields = [(field, message.split(":")[0]) for _, field, message in info.value.problems]
    assert fields == [("instruction.audio", "audio file not found"), ("setup.files.data.txt.source", "source file not found")]


def test_a_task_file_mistake_found_at_episode_start_is_its_own_kind_and_never_retried(write_suite, tmp_path: Path) -> None:  # noqa: ANN001
    bad = shell_task("bad-options").replace("tools: [shell]", "tools: [shell]\ntool_options: {sandbox: sometimes}")
    suite = write_suite({"bad.yaml": bad, "good.yaml": shell_task("good")})
    tasks = load_suite(suite)
    summary = run_suite(tasks, model="reference", out=tmp_path / "run", retries=2, progress=False, report=False)
    results = {r["task_id"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())}
    bad_result = results["bad-options"]
    assert bad_result["status"] == "error" and bad_result["error_stage"] == "task" and not bad_result["infra_error"]
    assert bad_result["attempts"] == 1 and bad_result["error"].startswith("task file: ")
    assert results["good"]["status"] == "passed"
    assert summary.errors == 1 and summary.task_errors == 1
