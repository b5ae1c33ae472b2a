"""``listen`` on the command line, and the spoken function-calling suite in tasks/voice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omni_agent.eval.loading import load_suite
from omni_agent.messages import read_audio_file
from omni_agent.voice import decode_audio, segment_utterances
from omni_agent.voice.cli import app

ROOT = Path(__file__).resolve().parents[1]
VOICE_TASKS = ROOT / "tasks" / "voice"


def _script(path: Path, outputs: list[str]) -> Path:
    path.write_text(yaml.safe_dump(outputs))
    return path


@pytest.mark.slow
def test_listen_from_a_recording_runs_the_command_and_speaks(synth, tmp_path):
    wav = synth("create a file called notes", pad_s=(0.5, 1.0))
    script = _script(tmp_path / "script.yaml", [
        '<tool_call>{"name": "file_create", "arguments": {"path": "notes.txt", "content": "hi"}}</tool_call>',
        "Created notes.txt.",
    ])  # fmt: skip
    work, said = tmp_path / "work", tmp_path / "said"
    work.mkdir()
    result = CliRunner().invoke(app, [
        "listen", "--model", f"scripted:{script}", "--tools", "files", "--workspace", str(work), "--audio", str(wav),
        "--speak-to", str(said), "--speech-engine", "espeak", "--trajectory", str(tmp_path / "runs"),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "heard" in out and "doing file_create(" in out and "answer Created notes.txt." in out and "said" in out
    assert (work / "notes.txt").read_text() == "hi"
    wavs = sorted(said.glob("*.wav"))
    assert wavs and wavs[-1].name.endswith("-answer.wav") and read_audio_file(wavs[-1])[0].size > 0


def test_listen_without_speech_fails_with_a_message(tmp_path):
    silent = tmp_path / "silence.wav"
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(silent), "trim", "0", "1.5"], check=True)
    script = _script(tmp_path / "s.yaml", ["unused"])
    result = CliRunner().invoke(app, ["listen", "--model", f"scripted:{script}", "--audio", str(silent), "--no-speak",
                                      "--trajectory", str(tmp_path / "runs")])  # fmt: skip
    assert result.exit_code == 3 and "no spoken command was heard" in result.output


def test_voice_suite_has_20_spoken_tasks_with_bfcl_checks():
    tasks = load_suite(str(VOICE_TASKS))
    assert len(tasks) >= 20
    categories = {t.category for t in tasks}
    assert {"voice-simple", "voice-multiple", "voice-parallel", "voice-irrelevance", "voice-noisy"} <= categories
    voices = set()
    for task in tasks:
        assert task.instruction_audio and not task.instruction_text
        (check,) = task.checks
        assert check.type == "tool_calls" and task.functions
        names = {f["function"]["name"] for f in task.functions}
        assert all(e.name in names for e in check.expected)
        voices.add((task.metadata["espeak_voice"], task.metadata["words_per_minute"]))
        samples = decode_audio(task.base_dir / task.instruction_audio)
        assert len(segment_utterances(samples)) >= 1, task.id  # every command is audible speech
    assert len(voices) >= 8  # several voices and speeds
    out = subprocess.run([sys.executable, str(VOICE_TASKS / "make_audio.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout  # the committed audio matches the task files


@pytest.mark.slow
def test_voice_tasks_run_through_the_eval_runner_and_are_scored(tmp_path):
    only = "voice-parallel-lights-jazz,voice-thermostat-fahrenheit,voice-irrelevant-joke"
    wrong = _script(tmp_path / "wrong.yaml", [
        '<tool_call>{"name": "set_lights", "arguments": {"room": "kitchen", "on": true}}</tool_call>', "ok",
    ] * 3)  # fmt: skip
    results = {}
    for label, model in (("reference", "reference"), ("wrong", f"scripted:{wrong}")):
        run_dir = tmp_path / label
        cmd = [sys.executable, "-m", "omni_agent.eval.cli", "run", str(VOICE_TASKS), "--model", model, "--only", only,
               "--out", str(run_dir), "--no-progress", "--retries", "0"]  # fmt: skip
        subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
        rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        results[label] = {r["task_id"]: r["status"] for r in rows}
    assert results["reference"] == dict.fromkeys(only.split(","), "passed")
    assert all(status == "failed" for status in results["wrong"].values()), results["wrong"]
