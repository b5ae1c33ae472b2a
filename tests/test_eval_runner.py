"""Runner robustness: setup failures, raising checks, a worker killed mid-episode, a model
failure, a resumed suite after the runner itself was killed, comparison, and Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omni_agent.eval.compare import compare_runs
from omni_agent.eval.loading import load_suite
from omni_agent.eval.results import read_results
from omni_agent.eval.runner import run_suite
from omni_agent.exceptions import UserError
from tests.fixtures.eval import shell_task


def _by_id(run: Path) -> dict:
    lines = (run / "results.jsonl").read_text().splitlines()
    results = [json.loads(l) for l in lines]
    assert len({r["episode_id"] for r in results}) == len(results), "an episode was written twice"
    return {r["episode_id"]: r for r in results}


def test_setup_failure_raising_check_killed_worker_and_model_failure(write_suite, tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    suite = write_suite({
        "ok.yaml": shell_task("ok"),
        "setup-fails.yaml": shell_task("setup-fails", setup=["echo broken >&2; exit 4"]),
        "check-raises.yaml": shell_task("check-raises", check="  - type: answer\n    regex: '([bad'"),
        # The first attempt kills its own worker process ($PPID of the setup shell) mid-episode.
        "worker-killed.yaml": shell_task(
            "worker-killed", setup=[f"test -e {marker} || {{ touch {marker}; kill -9 $PPID; sleep 5; }}"]
        ),
        "wrong-answer.yaml": shell_task("wrong-answer", answer="hello", check="  - type: answer\n    equals: 'bye'"),
    })  # fmt: skip
    run = tmp_path / "run"
    summary = run_suite(load_suite(suite), model="reference", out=run, workers=2, retries=1, progress=False)
    r = _by_id(run)
    assert set(r) == {"ok", "setup-fails", "check-raises", "worker-killed", "wrong-answer"}
    assert r["ok"]["status"] == "passed" and r["ok"]["attempts"] == 1 and r["ok"]["scripted"]
    assert r["setup-fails"]["status"] == "error" and r["setup-fails"]["error_stage"] == "setup"
    assert r["setup-fails"]["attempts"] == 2 and "exited with status 4" in r["setup-fails"]["error"]
    assert "broken" in r["setup-fails"]["error"]
    assert r["check-raises"]["status"] == "failed" and r["check-raises"]["attempts"] == 1
    assert r["check-raises"]["checks"][0]["error"]
    assert r["worker-killed"]["status"] == "passed" and r["worker-killed"]["attempts"] == 2
    assert "SIGKILL" in r["worker-killed"]["attempt_errors"][0]
    assert r["wrong-answer"]["status"] == "failed" and r["wrong-answer"]["attempts"] == 1  # not retried
    assert summary.complete and (summary.passed, summary.failed, summary.errors) == (2, 2, 1)
    saved = json.loads((run / "summary.json").read_text())
    assert saved["scripted"] and "scripted policy, not a model" in saved["policy"]
    assert (run / "index.html").exists() and (run / "episodes" / "ok" / "index.html").exists()
    # an existing run directory is never overwritten silently
    with pytest.raises(UserError, match="--resume"):
        run_suite(load_suite(suite), model="reference", out=run, progress=False)


def test_killed_runner_resumes_without_rerunning_finished_episodes(write_suite, tmp_path: Path) -> None:
    files = {f"t{i}.yaml": shell_task(f"t{i}") for i in range(3)}
    files["slow.yaml"] = shell_task("slow", command="sleep 60; echo hi", seconds=90)
    suite = write_suite(files)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "omni_agent.eval.cli", str(suite), "--model", "reference", "--out", str(run), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = (run / "results.jsonl").read_text().count("\n") if (run / "results.jsonl").exists() else 0
        if done >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # the runner dies mid-suite ("slow" is still running)
    proc.wait()
    before = _by_id(run)
    assert set(before) == {"t0", "t1", "t2"}
    with open(run / "results.jsonl", "a") as fh:
        fh.write('{"episode_id": "torn')  # an interrupted write: cut off on resume
    files["slow.yaml"] = shell_task("slow", seconds=90)  # make the rest quick
    write_suite(files)
    out = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    after = _by_id(run)
    assert set(after) == {"t0", "t1", "t2", "slow"}
    for k in before:  # finished episodes were skipped, not re-run
        assert after[k]["finished_at"] == before[k]["finished_at"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["complete"] and summary["passed"] == 4
    assert json.loads((run / "run.json").read_text())["resumes"] == 1
    assert "report:" in out.stdout


def test_compare_shows_flips(write_suite, tmp_path: Path) -> None:
    suite = write_suite({"a.yaml": shell_task("a"), "b.yaml": shell_task("b")})
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    run_suite(load_suite(suite), model="reference", out=run_a, workers=2, progress=False, report=False)
    write_suite({"a.yaml": shell_task("a", check="  - type: answer\n    equals: 'nope'"), "b.yaml": shell_task("b")})
    run_suite(load_suite(suite), model="reference", out=run_b, workers=2, progress=False, report=False)
    c = compare_runs(run_a, run_b)
    assert c.broken == ["a"] and c.fixed == [] and (c.rate_a, c.rate_b) == (1.0, 0.5)
    from typer.testing import CliRunner

    from omni_agent.eval.cli import eval_app

    res = CliRunner().invoke(eval_app, ["compare", str(run_a), str(run_b)])
    assert res.exit_code == 0 and "broken" in res.output and "100.0% -> 50.0%" in res.output


def test_ray_local_starts_a_real_local_cluster(write_suite, tmp_path: Path) -> None:
    """`omni-agent eval SUITE --ray local`: the runner starts its own local Ray instance, each
    episode runs as a Ray task, and the episode folders come back to the driver."""
    suite = write_suite({"a.yaml": shell_task("a"), "b.yaml": shell_task("b")})
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "omni_agent.eval.cli", str(suite), "--model", "reference", "--out", str(run),
           "--ray", "local", "--workers", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(run / "results.jsonl")
    assert sorted(r.episode_id for r in results) == ["a", "b"] and all(r.passed for r in results)
    assert all(r.worker.startswith("ray:") for r in results)
    assert json.loads((run / "run.json").read_text())["ray"] == "local"
    # the episode directories came back from the Ray workers: trajectories and pages exist
    for r in results:
        assert r.trajectory and (run / r.trajectory / "steps.jsonl").exists()
        assert (run / "episodes" / r.episode_id / "index.html").exists()


def test_ctrl_c_stops_at_once_without_retrying_and_resume_finishes(write_suite, tmp_path: Path) -> None:
    files = {"quick.yaml": shell_task("quick"), "slow.yaml": shell_task("slow", command="sleep 30; echo hi", seconds=60)}
    suite = write_suite(files)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "omni_agent.eval.cli", str(suite), "--model", "reference", "--out", str(run), "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "results.jsonl").exists():
        time.sleep(0.1)
    while time.monotonic() < deadline and not (run / "episodes" / "slow" / "trajectory").exists():
        time.sleep(0.1)  # "slow" is inside its shell call
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and f"--out {run} --resume" in err and "Traceback" not in err
    assert set(_by_id(run)) == {"quick"}
    # the interrupted episode was stopped, not retried (a retry would have started attempt 2)
    slow = run / "episodes" / "slow"
    assert json.loads((slow / "job.json").read_text())["attempt"] == 1 and not (slow / "result.json").exists()
    assert not json.loads((run / "summary.json").read_text())["complete"]
    files["slow.yaml"] = shell_task("slow", seconds=60)
    write_suite(files)
    out = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert {k: v["status"] for k, v in _by_id(run).items()} == {"quick": "passed", "slow": "passed"}


def test_openai_model_failing_every_task_and_unreachable_server(write_suite, tmp_path: Path, openai_server, refused_base_url) -> None:
    from tests.fixtures.openai_server import chat_chunk

    suite = write_suite({"a.yaml": shell_task("a"), "b.yaml": shell_task("b")})
    for _ in range(2):  # one wrong answer per episode
        openai_server.reply_stream([
            chat_chunk(content="I do not know."), chat_chunk(finish_reason="stop"),
            chat_chunk(usage={"prompt_tokens": 50, "completion_tokens": 4, "total_tokens": 54}),
        ])  # fmt: skip
    spec = f"openai:{openai_server.base_url}#test-model"
    summary = run_suite(load_suite(suite), model=spec, out=tmp_path / "wrong", workers=2, progress=False)
    assert (summary.episodes, summary.passed, summary.failed, summary.errors) == (2, 0, 2, 0)
    assert summary.success_rate == 0.0 and summary.complete and not summary.scripted
    assert summary.policy == spec and (summary.prompt_tokens, summary.completion_tokens) == (100, 8)
    assert "Model: openai:" in (tmp_path / "wrong" / "index.html").read_text()
    # A server that is down is the harness's problem, not a wrong answer: an error, retried.
    down = f"openai:{refused_base_url}#m?max_retries=0"
    summary = run_suite(load_suite(suite), model=down, out=tmp_path / "down", workers=2, retries=1, progress=False)
    assert (summary.failed, summary.errors) == (0, 2)
    for r in read_results(tmp_path / "down" / "results.jsonl"):
        assert r.status == "error" and r.infra_error and r.error_stage == "model" and r.attempts == 2
        assert "model unavailable" in r.error and "refused" in r.error


def test_compare_runs_with_different_tasks_reads_clearly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from omni_agent.eval.cli import eval_app
    from omni_agent.eval.results import EpisodeResult, append_result

    def run(name: str, statuses: dict[str, str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for tid, status in statuses.items():
            append_result(d / "results.jsonl", EpisodeResult(episode_id=tid, task_id=tid, status=status, steps=2, total_seconds=1.5))
        return d

    a = run("A", {"kept": "passed", "gone": "passed", "flip": "passed"})
    b = run("B", {"kept": "passed", "flip": "failed", "added": "failed"})
    c = compare_runs(a, b)
    assert (c.shared, c.shared_rate_a, c.shared_rate_b) == (2, 1.0, 0.5)
    assert (c.broken, c.new, c.removed) == (["flip"], ["added"], ["gone"])
    res = CliRunner().invoke(eval_app, ["compare", str(a), str(b)], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "on the 2 both ran, 100.0% -> 50.0%" in res.output
    assert "None" not in res.output and "- -> 2" in res.output and "1.5 -> -" in res.output
