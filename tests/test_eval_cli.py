"""The ``eval`` sub-app mounted the way the main CLI mounts it: ``eval SUITE`` runs, sub-commands
still work, and errors are one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from omni_agent.eval.cli import eval_app
from tests.fixtures.eval import shell_task


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root() -> None:
        pass

    app.add_typer(eval_app, name="eval")
    return app


def test_eval_suite_runs_and_subcommands_work(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"a.yaml": shell_task("a")})
    run = tmp_path / "run"
    res = CliRunner().invoke(_app(), ["eval", str(suite), "--model", "reference", "--out", str(run), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "scripted policy, not a model" in res.output and "1/1 passed" in res.output
    assert json.loads((run / "summary.json").read_text())["passed"] == 1
    res = CliRunner().invoke(_app(), ["eval", "validate", str(suite)])
    assert res.exit_code == 0 and "1 tasks OK" in res.output
    res = CliRunner().invoke(_app(), ["eval", "schema"])
    assert json.loads(res.output)["title"] == "omni-agent evaluation task"


def test_errors_are_one_clear_line(write_suite, tmp_path: Path) -> None:
    bad = write_suite({"bad.yaml": "id: x\ninstruction: hi\nchecks: []\nlimits: {steps: -1}\n"})
    res = CliRunner().invoke(_app(), ["eval", str(bad), "--model", "reference", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "bad.yaml:4: limits.steps" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(_app(), ["eval", "compare", str(tmp_path / "nope"), str(tmp_path)])
    assert res.exit_code == 2 and "not a run directory" in res.output
    res = CliRunner().invoke(_app(), ["eval", str(tmp_path / "missing"), "--model", "reference"])
    assert res.exit_code == 2 and "suite not found" in res.output
