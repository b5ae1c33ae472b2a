"""The installed `omni-agent` command, run as a subprocess exactly as a user would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXE = str(Path(sys.executable).parent / "omni-agent")


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "200", "NO_COLOR": "1"},
    )


def test_tools_json_lists_schemas(tmp_path: Path) -> None:
    proc = cli("tools", "--tools", "shell,files", "--json", "-w", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    schemas = json.loads(proc.stdout)
    names = [s["function"]["name"] for s in schemas]
    assert "shell" in names and any(n.startswith("file_") for n in names)
    for s in schemas:
        assert s["type"] == "function" and s["function"]["parameters"]["type"] == "object"


def test_tools_from_a_user_file(tmp_path: Path) -> None:
    mod = tmp_path / "mytools.py"
    mod.write_text(
        "from omni_agent import tool\n\n@tool\ndef greet(name: str, times: int = 1) -> str:\n"
        '    """Greet someone.\n\n    Args:\n        name: who to greet\n    """\n    return "hi " * times + name\n'
    )
    proc = cli("tools", "--tools", str(mod), "--json")
    assert proc.returncode == 0, proc.stderr
    (schema,) = json.loads(proc.stdout)
    params = schema["function"]["parameters"]
    assert params["required"] == ["name"]
    assert params["properties"]["name"]["description"] == "who to greet"


def test_parse_reports_calls_and_validation(tmp_path: Path) -> None:
    raw = (
        "<think>I should list files</think>Listing now.\n"
        '<tool_call>\n{"name": "shell", "arguments": {"command": "ls"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "shell", "arguments": {"command": 5, "bogus": true}}\n</tool_call><|im_end|>'
    )
    proc = cli("parse", "-", "--tools", "shell", "--json", "-w", str(tmp_path), stdin=raw)
    assert proc.returncode == 1  # one call is invalid
    doc = json.loads(proc.stdout)
    assert doc["visible_text"].strip() == "Listing now."
    assert doc["thinking"].strip() == "I should list files"
    assert [c["name"] for c in doc["calls"]] == ["shell", "shell"]
    first, second = doc["validation"]
    assert first["ok"] and not second["ok"]
    assert "command" in second["message"] and "bogus" in second["message"]


def test_parse_shows_the_arguments_a_call_runs_with_after_coercion(tmp_path: Path) -> None:
    raw = '<tool_call>{"name": "shell", "arguments": {"command": "ls", "timeout_s": "5"}}</tool_call>'
    proc = cli("parse", "-", "--tools", "shell", "-w", str(tmp_path), stdin=raw)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout
    assert 'runs as (after coercion): {"command": "ls", "timeout_s": 5' in proc.stdout


def test_parse_clean_output_exits_zero(tmp_path: Path) -> None:
    f = tmp_path / "out.txt"
    f.write_text('<tool_call>{"name": "shell", "arguments": {"command": "pwd"}}</tool_call>')
    proc = cli("parse", str(f))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "shell" in proc.stdout


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    proc = cli("run", "hello", "--model", "nonsense:thing", "-w", str(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error:" in proc.stderr and "nonsense" in proc.stderr
    proc = cli("parse", str(tmp_path / "missing.txt"))
    assert proc.returncode == 2 and "no such file" in proc.stderr and "Traceback" not in proc.stderr
    debug = cli("--debug", "parse", str(tmp_path / "missing.txt"))
    assert "Traceback" in debug.stderr


@pytest.mark.slow
def test_run_then_replay_with_a_scripted_policy(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        '<tool_call>\n{"name": "file_create", "arguments": {"path": "note.txt", "content": "hello"}}\n</tool_call>',
        '<tool_call>\n{"name": "shell", "arguments": {"command": "cat note.txt"}}\n</tool_call>',
        "The note says hello.",
    ]))
    ws = tmp_path / "ws"
    runs = tmp_path / "runs"
    proc = cli("run", "write a note", "--model", f"scripted:{script}", "--tools", "shell,files",
               "-w", str(ws), "--trajectory", str(runs), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["answer"] == "The note says hello." and result["stop_reason"] == "answer"
    assert (ws / "note.txt").read_text() == "hello"
    traj = Path(result["trajectory_dir"])
    assert (traj / "steps.jsonl").is_file() and (traj / "meta.json").is_file()
    meta = json.loads((traj / "meta.json").read_text())
    assert "scripted" in json.dumps(meta)
    # Replay in a fresh world like the one the run started from: nothing diverges.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    proc = cli("replay", str(traj), "--json", "-w", str(fresh))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (fresh / "note.txt").read_text() == "hello"
    # A world that differs (the note already exists): replay reports where it diverged.
    proc = cli("replay", str(traj), "--json", "-w", str(ws))
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["diverged"]
    assert report["calls"][0]["status"] == "diverged" and report["calls"][0]["name"] == "file_create"


@pytest.mark.slow
def test_run_with_a_spoken_command_and_speech_out(tmp_path: Path) -> None:
    """`omni-agent run --audio command.wav --speak`: the audio reaches the model's request, the
    tool runs, and progress + answer are spoken (espeak-ng engine, WAV sink: no sound device here)."""
    wav = tmp_path / "command.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "create a file called hello"], check=True, timeout=60)
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        '<tool_call>\n{"name": "file_create", "arguments": {"path": "hello.txt", "content": "hi"}}\n</tool_call>',
        "I created hello.txt.",
    ]))
    spoken = tmp_path / "spoken"
    ws = tmp_path / "ws"
    proc = cli("run", "--audio", str(wav), "--model", f"scripted:{script}", "--tools", "files", "-w", str(ws),
               "--trajectory", str(tmp_path / "runs"), "--speak", "--speak-to", str(spoken),
               "--speech-engine", "espeak", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (ws / "hello.txt").read_text() == "hi"
    traj = Path(json.loads(proc.stdout)["trajectory_dir"])
    first_step = json.loads((traj / "steps.jsonl").read_text().splitlines()[0])
    assert '"kind": "audio"' in json.dumps(first_step) or "'kind': 'audio'" in str(first_step)
    wavs = sorted(spoken.glob("*.wav"))
    assert wavs, "nothing was spoken"
    assert any(w.stat().st_size > 8000 for w in wavs)


TOOLS_WITH_IMAGE = '''
import time
from pathlib import Path
from PIL import Image
from omni_agent import tool

@tool
def snap(color: str) -> Image.Image:
    """A picture of one colour."""
    return Image.new("RGB", (40, 30), color)

@tool
def weird(tag: str) -> str:
    """Text that looks like rich markup and changes every call."""
    return f"[/bold] list[int] [red]{tag} {time.time_ns()}"

@tool(timeout=30)
def slow(seconds: float) -> str:
    """Sleep."""
    time.sleep(seconds)
    return "slept"
'''


def test_run_writes_images_and_an_html_report_then_replay_prints_markup_safely(tmp_path: Path) -> None:
    tools = tmp_path / "pics.py"
    tools.write_text(TOOLS_WITH_IMAGE)
    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        '<tool_call>{"name": "snap", "arguments": {"color": "blue"}}</tool_call>'
        '<tool_call>{"name": "weird", "arguments": {"tag": "[/x]"}}</tool_call>',
        "Done [bold]really[/].",
    ]))  # fmt: skip
    proc = cli("run", "take a picture", "--model", f"scripted:{script}", "--tools", str(tools),
               "-w", str(tmp_path / "ws"), "--trajectory", str(tmp_path / "runs [/x]"), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    traj = Path(doc["trajectory_dir"])
    images = sorted((traj / "media").glob("*.png"))
    assert len(images) == 1
    from PIL import Image

    assert Image.open(images[0]).getpixel((5, 5)) == (0, 0, 255)
    page = Path(doc["report"]).read_text()
    assert Path(doc["report"]) == traj / "index.html"
    assert f'<img src="media/{images[0].name}"' in page
    # The result text changes on replay; the divergence report shows it verbatim (not as markup).
    proc = cli("replay", str(traj), "-w", str(tmp_path / "ws"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "error" not in proc.stderr
    assert "weird (diverged)" in proc.stdout and "[/bold] list[int] [red][/x]" in proc.stdout


def test_ctrl_c_stops_the_run_with_one_line_and_keeps_a_loadable_trajectory(tmp_path: Path) -> None:
    import signal

    from omni_agent.trajectory import load_trajectory

    tools = tmp_path / "pics.py"
    tools.write_text(TOOLS_WITH_IMAGE)
    script = tmp_path / "script.json"
    script.write_text(json.dumps(['<tool_call>{"name": "slow", "arguments": {"seconds": 20}}</tool_call>', "never"]))
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [EXE, "run", "sleep", "--model", f"scripted:{script}", "--tools", str(tools), "-w", str(tmp_path / "ws"),
         "--trajectory", str(runs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait until the tool is running
        seen.append(line)
        if line.startswith("→ slow"):
            break
    else:
        raise AssertionError("".join(seen))
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=30)
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest
    (line,) = [x for x in rest.splitlines() if "interrupted" in x]
    (run_dir,) = [p for p in runs.iterdir() if p.is_dir()]
    assert line == f"interrupted: the run was stopped; trajectory kept in {run_dir}"
    traj = load_trajectory(run_dir)
    assert traj.meta.stop_reason == "cancelled" and traj.finished
    assert [c.name for c in traj.steps[-1].calls] == ["slow"]
    assert (run_dir / "index.html").is_file()


def test_live_display_shows_text_then_calls_then_named_results(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from omni_agent import Agent, ScriptedModel, tool
    from omni_agent.display import LiveDisplay

    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    model = ScriptedModel([
        'Adding now.<tool_call>{"name": "add", "arguments": {"a": 2, "b": 40}}</tool_call>'
        '<tool_call>{"name": "add", "arguments": {"a": "x"}}</tool_call>',
        "It is 42.",
    ])  # fmt: skip
    buffer = io.StringIO()
    agent = Agent(model, [add])
    agent.events.subscribe(LiveDisplay(Console(file=buffer, width=120, no_color=True)))
    assert agent.run("add").answer == "It is 42."
    shown = buffer.getvalue()
    order = [shown.index(s) for s in ("Adding now.", '→ add {"a": 2, "b": 40}', '→ add {"a": "x"}', "✗ add invalid:", "✓ add: 42")]
    assert order == sorted(order), shown
    assert "missing required argument" in shown and "It is 42." in shown


@pytest.mark.slow
def test_run_on_a_local_qwen_omni_checkpoint(tmp_path: Path, tiny_qwen3_omni_dir: Path, spoken_command_wav: Path) -> None:
    """The whole CLI path a user with a downloaded checkpoint takes: spec -> loader -> prompt with a
    screenshot and a spoken command -> generation -> parser -> trajectory (tiny random weights, so the
    text is noise; --max-new-tokens bounds it)."""
    from PIL import Image

    shot = tmp_path / "shot.png"
    Image.new("RGB", (320, 200), (30, 120, 200)).save(shot)
    proc = cli("run", "What is on the screen?", "--model", f"qwen-omni:{tiny_qwen3_omni_dir}?device_map=cpu&dtype=float32",
               "--tools", "files", "-w", str(tmp_path / "ws"), "--image", str(shot), "--audio", str(spoken_command_wav),
               "--trajectory", str(tmp_path / "runs"), "--max-new-tokens", "6", "--max-steps", "1", "--json")
    assert proc.returncode in (0, 3), proc.stderr  # 3: the random model may not have answered in one step
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert result["steps"] == 1
    record = json.loads((Path(result["trajectory_dir"]) / "steps.jsonl").read_text().splitlines()[-1])
    assert 1 <= record["usage"]["completion_tokens"] <= 6 and record["usage"]["prompt_tokens"] > 50
    kinds = json.dumps(record)
    assert '"kind": "image"' in kinds and '"kind": "audio"' in kinds
