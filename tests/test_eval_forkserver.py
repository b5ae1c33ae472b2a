"""Warm workers: each attempt is a fresh process forked from the pre-imported fork server; a
killed or hung one is seen exactly like a subprocess worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from omni_agent.eval.episode import EpisodeJob
from omni_agent.eval.forkserver import ForkServer
from omni_agent.eval.loading import load_suite
from omni_agent.eval.results import EpisodeResult, read_results
from omni_agent.eval.runner import run_suite
from omni_agent.eval.task import Task
from tests.fixtures.eval import shell_task


def _job(tmp_path: Path, task_id: str, setup: list[str]) -> tuple[EpisodeJob, Path, Path, Path]:
    task = Task.model_validate({
        "id": task_id, "instruction": "x", "setup": {"commands": setup},
        "reference": [{"answer": "ok"}], "checks": [{"type": "answer", "equals": "ok"}],
    })  # fmt: skip
    ep = tmp_path / "episodes" / task_id
    ep.mkdir(parents=True)
    job = EpisodeJob(task=task, model="reference", episode_id=task_id, episode_dir=str(ep), run_dir=str(tmp_path))
    (ep / "job.json").write_text(job.model_dump_json())
    return job, ep / "job.json", ep / "result.json", ep / "worker.log"


def test_each_episode_is_a_fresh_forked_process(tmp_path: Path) -> None:
    with ForkServer() as server:
        pids = set()
        for i in range(3):
            # the setup command prints the worker's pid ($PPID of the setup shell) into the log
            _, job, result, log = _job(tmp_path, f"t{i}", ["echo worker=$PPID >&2"])
            worker = server.spawn(job, result, log)
            assert worker.wait(timeout=60) == 0
            assert EpisodeResult.model_validate_json(result.read_text()).status == "passed"
            pids.add(worker.pid)
        assert len(pids) == 3 and os.getpid() not in pids


def test_a_killed_or_hung_forked_worker_is_reported(tmp_path: Path) -> None:
    with ForkServer() as server:
        _, job, result, log = _job(tmp_path, "hangs", ["sleep 60"])
        worker = server.spawn(job, result, log)
        assert worker.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(timeout=0.2)
        os.killpg(worker.pid, signal.SIGKILL)  # the worker leads its own process group
        assert worker.wait(timeout=30) == -signal.SIGKILL
        assert not result.exists()


PARENT_TASK = """
id: {id}
instruction: x
setup:
  commands:
    # the worker is $PPID of this shell; its parent's command line goes to parent.txt
    - "tr '\\\\0' ' ' < /proc/$(awk '{{print $4}}' /proc/$PPID/stat)/cmdline > parent.txt"
reference: [{{answer: ok}}]
checks:
  - {{type: file, path: parent.txt, contains: omni_agent.eval.forkserver}}
"""


def test_a_suite_runs_through_warm_workers(write_suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    suite = write_suite({f"{i}.yaml": PARENT_TASK.format(id=f"s{i}") for i in range(3)})
    summary = run_suite(load_suite(suite), model="reference", out=tmp_path / "run", workers=2, progress=False, report=False)
    assert summary.passed == 3, [r.checks for r in read_results(tmp_path / "run" / "results.jsonl")]
    # switched off, the workers are plain subprocesses of the runner, and the same check fails
    monkeypatch.setenv("OMNI_EVAL_FORKSERVER", "0")
    summary = run_suite(load_suite(suite), model="reference", out=tmp_path / "cold", workers=1, progress=False, report=False)
    assert summary.failed == 3
