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


def test_a_model_that_cannot_work_fails_before_any_episode(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"a.yaml": shell_task("a")})
    (suite / "no-ref.yaml").write_text("id: no-ref\ninstruction: hi\nchecks:\n  - type: answer\n    equals: x\n")
    cases = {
        "scripted:missing.yaml": "scripted model file not found",
        "bogus": "has no scheme",
        "qwen-omni:/no/such/checkpoint": "checkpoint not found",
        "reference": f"{suite / 'no-ref.yaml'}:1: reference: task 'no-ref' has no reference solution",
    }
    for i, (spec, message) in enumerate(cases.items()):
        run = tmp_path / f"run{i}"
        res = CliRunner().invoke(_app(), ["eval", str(suite), "--model", spec, "--out", str(run), "--no-progress"])
        assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, (spec, res.output)
        assert not (run / "results.jsonl").exists()  # nothing ran
    res = CliRunner().invoke(_app(), ["eval", "validate", str(suite), "--model", "reference"])
    assert res.exit_code == 2 and "no-ref.yaml:1: reference:" in res.output
    res = CliRunner().invoke(_app(), ["eval", "validate", str(suite)])
    assert res.exit_code == 0 and "without a reference solution: no-ref" in res.output
    res = CliRunner().invoke(_app(), ["eval", str(suite), "--model", "reference", "--only", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "matches --only nope" in res.output
    # a scripted policy that answers wrongly: a correct 0% report, labelled scripted everywhere
    (tmp_path / "wrong.yaml").write_text('- "no idea"\n')
    run = tmp_path / "scripted-run"
    res = CliRunner().invoke(_app(), ["eval", str(suite), "--model", f"scripted:{tmp_path / 'wrong.yaml'}", "--only", "a",
                                      "--out", str(run), "--no-progress"])  # fmt: skip
    assert res.exit_code == 1 and "0/1 passed (0.0%)" in res.output and "scripted policy, not a model" in res.output
    (result,) = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert result["status"] == "failed" and result["answer"] == "no idea" and result["scripted"]
