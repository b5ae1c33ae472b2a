"""The newcomer's programs in examples/ run as written: a desktop script on its own virtual
display, a browser script that reads the page after the run, and a hand-written two-task suite
(with a tool module beside its task file) under ``omni-agent eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from omni_agent import load_trajectory

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=180, cwd=cwd)


def test_the_desktop_script_clicks_and_writes_its_page(tmp_path: Path) -> None:
    proc = _run("desktop_script.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.splitlines()
    assert first == "answer - I clicked the middle of the screen."
    page = Path(second.removeprefix("page: "))
    assert page.name == "index.html" and page.is_file()
    trajectory = load_trajectory(page.parent)
    assert [s.outcome for s in trajectory.steps] == ["tools", "answer"]
    (result,) = trajectory.steps[0].results
    assert result.name == "computer_use" and not result.is_error, result
    assert "click" in result.text and result.images, "the click ran and the screen was shown"


def test_the_browser_script_reads_the_page_the_agent_left(tmp_path: Path) -> None:
    proc = _run("browser_script.py", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["answer - I typed hello and pressed Go.", "title: hello"]


def test_the_hand_written_suite_validates_and_passes_with_its_reference(tmp_path: Path) -> None:
    from omni_agent.cli import app

    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    res = CliRunner().invoke(app, ["eval", "validate", str(EXAMPLES / "first_suite")], env=env)
    assert res.exit_code == 0 and "2 tasks OK" in res.output, res.output
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["eval", str(EXAMPLES / "first_suite"), "--model", "reference", "--out", str(out),
                                   "--no-progress"], env=env)  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["passed"], summary["episodes"]) == (2, 2)
    results = {r["task_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert results["count-words"]["answer"] == "4" and results["lights-call"]["status"] == "passed"
