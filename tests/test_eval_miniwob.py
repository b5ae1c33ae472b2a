"""MiniWoB++ through the project's browser tools: reference solutions earn positive rewards read
from the page's JavaScript, a wrong action a negative one, and the episode timeout holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omni_agent.eval.miniwob import DEFAULT_TASKS, REFERENCE_SOLUTIONS, miniwob_html_dir, miniwob_task
from omni_agent.eval.runner import run_suite

pytestmark = pytest.mark.slow


def test_default_set_exists() -> None:
    assert len(DEFAULT_TASKS) >= 30
    assert all((miniwob_html_dir() / f"{n}.html").is_file() for n in DEFAULT_TASKS)
    assert set(REFERENCE_SOLUTIONS) <= set(DEFAULT_TASKS)


def test_rewards_wrong_action_and_timeout(tmp_path: Path) -> None:
    wrong = miniwob_task(
        "click-button", seed=3,
        # clicks a button whose text is NOT the target: the page answers with reward -1
        reference=[{"calls": [{"name": "browser_click", "arguments": {"selector": "#area button:not(:text-is('{target}')) >> nth=0"}}]}],
    )  # fmt: skip
    wrong = wrong.model_copy(update={"id": "miniwob-click-button-wrong"})
    slow = miniwob_task(
        "click-test", seconds=4, reference=[{"calls": [{"name": "browser_wait", "arguments": {"seconds": 20}}]}]
    ).model_copy(update={"id": "miniwob-click-test-timeout"})
    # answers "done" at once, leaving the page unfinished: scored as the page's timeout (-1), not 0
    gives_up = miniwob_task("click-test", reference=[]).model_copy(update={"id": "miniwob-click-test-gives-up"})
    tasks = [miniwob_task("click-test"), miniwob_task("click-button", seed=3), miniwob_task("enter-text", seed=1), wrong, slow, gives_up]
    summary = run_suite(tasks, model="reference", out=tmp_path / "run", workers=2, retries=0, progress=False)
    results = {json.loads(l)["episode_id"]: json.loads(l) for l in (tmp_path / "run" / "results.jsonl").read_text().splitlines()}
    for good in ("miniwob-click-test-s0", "miniwob-click-button-s3", "miniwob-enter-text-s1"):
        assert results[good]["status"] == "passed", results[good]
        assert 0 < results[good]["metrics"]["reward"] <= 1 and results[good]["metrics"]["raw_reward"] == 1
    bad = results["miniwob-click-button-wrong"]
    assert bad["status"] == "failed" and bad["metrics"]["raw_reward"] == -1 and bad["metrics"]["reward"] < 0
    timed = results["miniwob-click-test-timeout"]
    assert timed["status"] == "failed" and timed["stop_reason"] == "time_limit"
    assert timed["metrics"] == {"raw_reward": -1, "reward": -1}
    quitter = results["miniwob-click-test-gives-up"]
    assert quitter["status"] == "failed" and quitter["steps"] == 1 and quitter["metrics"] == {"raw_reward": -1, "reward": -1}
    assert timed["seconds"] < 12  # the 20 s wait was cut at the 4 s limit (plus slack on a busy machine)
    assert summary.metrics["mean_reward"] == pytest.approx(
        sum(r["metrics"]["reward"] for r in results.values()) / len(results), abs=1e-3
    )
    # the episode page shows the trajectory with the screenshots the agent saw
    page = (tmp_path / "run" / "episodes" / "miniwob-click-test-s0" / "index.html").read_text()
    assert "trajectory" in page and "reward" in page
    traj = tmp_path / "run" / results["miniwob-click-test-s0"]["trajectory"]
    assert list((traj / "media").glob("*")), "no screenshots were recorded"
