"""The README's examples, run as a user would run them (style guide: run the docs' examples in CI).

The ten-line Python example runs unchanged except for its model URL, which points at a real
OpenAI-protocol HTTP server on 127.0.0.1 (tests/fixtures/openai_server.py) answering the way
vLLM with a tool parser does. The other Python blocks (they need a Qwen-Omni checkpoint; the
same program runs on a tiny one in test_runtime_generation.py) must compile and import only
names that exist. Every command and option of the "Command line" section must exist.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.openai_server import OpenAITestServer, chat_chunk

README = Path(__file__).resolve().parents[1] / "README.md"
README_URL = "http://127.0.0.1:8000/v1"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def ten_line_example() -> str:
    (block,) = [b for b in python_blocks() if "@tool" in b and f"openai:{README_URL}" in b and "Toolkit" not in b]
    return block


def test_the_ten_line_example_runs_against_an_openai_server(openai_server: OpenAITestServer, tmp_path: Path) -> None:
    code = ten_line_example()
    assert len(code.strip().splitlines()) <= 12, "the README promises about ten lines"
    assert f"openai:{README_URL}#" in code
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "add", "arguments": ""}}
    openai_server.reply_stream([
        chat_chunk(content=""),
        chat_chunk(tool_calls=[call]),
        chat_chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"a": 2, '}}]),
        chat_chunk(tool_calls=[{"index": 0, "function": {"arguments": '"b": 40}'}}]),
        chat_chunk(finish_reason="tool_calls"),
    ])  # fmt: skip
    openai_server.reply_stream([chat_chunk(content="2 + 40 = "), chat_chunk(content="42."), chat_chunk(finish_reason="stop")])
    script = tmp_path / "example.py"
    script.write_text(code.replace(README_URL, openai_server.base_url))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "2 + 40 = 42.\n"
    first, second = (r.json for r in openai_server.chat_requests())
    assert first["model"] == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    (schema,) = first["tools"]
    assert schema["function"]["name"] == "add" and schema["function"]["parameters"]["required"] == ["a", "b"]
    tool_turn = second["messages"][-1]
    assert tool_turn["role"] == "tool" and tool_turn["content"] == "42"  # the real function ran


def block_with(marker: str) -> str:
    (block,) = [b for b in python_blocks() if marker in b]
    return block


def test_the_scripted_policy_example_runs_as_printed(tmp_path: Path) -> None:
    code = block_with("ScriptedModel([\n    '<tool_call>")
    assert "ModelResponse(" in code  # both forms a scripted policy takes
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "2 + 40 = 42 and 1 + 1 = 2. 42\n"


def test_the_desktop_example_runs_as_printed_and_is_the_example_file(tmp_path: Path) -> None:
    code = block_with("VirtualDisplay")
    example = (README.parent / "examples" / "desktop_script.py").read_text(encoding="utf-8")
    assert code in example, "the README's desktop example and examples/desktop_script.py differ"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer, page = proc.stdout.splitlines()
    assert answer == "answer - I clicked the middle of the screen." and Path(page.removeprefix("page: ")).is_file()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_python_block_compiles_and_imports_real_names(index: int) -> None:
    code = python_blocks()[index]
    compile(code, f"README python block {index + 1}", "exec")
    for module, names in re.findall(r"^from (omni_agent[\w.]*) import (.+)$", code, re.MULTILINE):
        imported = importlib.import_module(module)
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(imported, name), f"README imports {name} from {module}, which has no such name"


def cli_lines() -> list[list[str]]:
    section = README.read_text(encoding="utf-8").split("## Command line", 1)[1]
    block = section.split("```text\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("omni-agent ")]


def test_every_cli_command_and_option_in_the_readme_exists() -> None:
    from typer.testing import CliRunner

    from omni_agent.cli import app

    runner = CliRunner()
    lines = cli_lines()
    assert {words[1] for words in lines} >= {"run", "tools", "parse", "replay"}
    for words in lines:
        command = words[1:3] if words[1:3] in (["eval", "compare"], ["eval", "validate"], ["eval", "tau2"]) else words[1:2]
        if command == ["eval"]:
            command = ["eval", "run"]  # `eval SUITE` is `eval run SUITE`
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
        assert result.exit_code == 0, (command, result.output)
        for option in {w.strip("[]") for w in words if w.strip("[]").startswith("--")}:
            assert option in result.output, f"README shows `{' '.join(words)}` but {command} has no {option}"
    help_text = json.dumps(runner.invoke(app, ["--help"]).output)
    assert "--debug" in help_text  # "Errors print one line; --debug shows the traceback."
