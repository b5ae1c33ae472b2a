"""tau2-bench through the runner: the real tau2 environments and evaluator, our agent as the
assistant (scripted: tau2's expected actions through the parser, validator and tools), a scripted
user or a user model over real HTTP, pass^k, the HTML report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from omni_agent.eval.results import read_results
from omni_agent.eval.runner import run_suite
from omni_agent.eval.tau2_bench import STOP, ModelUser, ScriptedUser, domain_tasks, pass_hat_k, run_task
from omni_agent.eval.tau2_episode import pass_hat_k_from_results, tau2_tasks
from omni_agent.models.scripted import ScriptedModel
from omni_agent.prompting import render_tool_call


def test_pass_hat_k_is_taus_formula() -> None:
    trials = {"a": [True, True, True], "b": [True, False, True], "c": [False, False, False]}
    assert pass_hat_k(trials, 1) == (1 + 2 / 3 + 0) / 3
    assert pass_hat_k(trials, 2) == (1 + 1 / 3 + 0) / 3  # C(2,2)/C(3,2) for b
    assert pass_hat_k(trials, 3) == 1 / 3


def test_mock_domain_end_to_end_in_the_runner(tmp_path: Path) -> None:
    """Every mock task, scripted assistant and scripted user, scored by tau2's evaluator."""
    tasks = tau2_tasks("mock", user_model="scripted", trials=1)
    assert len(tasks) == len(domain_tasks("mock")) == 9
    summary = run_suite(tasks, model="reference", out=tmp_path, suite="tau2-mock", workers=2, progress=False)
    results = {r.task_id: r for r in read_results(tmp_path / "results.jsonl")}
    assert summary.scripted and len(results) == 9
    failed = sorted(t for t, r in results.items() if not r.passed)
    # the one mock task whose solution tau2 gives only as an environment assertion, no actions:
    # the scripted assistant (which replays actions) cannot solve it, and tau2 says so
    assert failed == ["mock-update_task_with_history_and_env_assertions-t0"]
    for r in results.values():
        assert r.checks[0].type == "tau2_reward" and r.metrics["tau2_reward"] == (1.0 if r.passed else 0.0)
        assert "scripted user" in (r.answer or "")
    sim = json.loads((tmp_path / "episodes" / results["mock-create_task_1-t0"].episode_id / "tau2-simulation.json").read_text())
    assert sim["reward_info"]["db_check"]["db_match"] is True
    assert any(m.get("tool_calls") and m["tool_calls"][0]["name"] == "create_task" for m in sim["messages"])
    assert pass_hat_k_from_results(list(results.values()), tasks, 1) == {"pass^1": round(8 / 9, 4)}
    assert (tmp_path / "index.html").exists()


def test_one_airline_task_with_its_report(tmp_path: Path) -> None:
    tasks = tau2_tasks("airline", user_model="scripted", trials=2, task_ids=["3"])
    summary = run_suite(tasks, model="reference", out=tmp_path, suite="tau2-airline", workers=1, progress=False)
    results = read_results(tmp_path / "results.jsonl")
    assert [r.passed for r in results] == [True, True] and summary.passed == 2
    assert pass_hat_k_from_results(results, tasks, 2) == {"pass^1": 1.0, "pass^2": 1.0}
    page = (tmp_path / "index.html").read_text()
    assert "airline-3-t0" in page and "tau2" in page
    episode = tmp_path / "episodes" / results[0].episode_id
    assert results[0].trajectory and (tmp_path / results[0].trajectory).is_dir() and (episode / "tau2-simulation.json").exists()


def test_a_wrong_assistant_gets_reward_zero() -> None:
    task = next(t for t in domain_tasks("mock") if t.id == "create_task_1")
    wrong = ScriptedModel([render_tool_call("create_task", {"user_id": "user_1", "title": "Unimportant"}), "Done."], name="wrong")
    result = asyncio.run(run_task("mock", task, wrong, ScriptedUser(["Please create 'Important Meeting' for user_1."])))
    assert result.reward == 0.0 and result.termination == "user_stop"
    assert result.reward_info["db_check"]["db_match"] is False


def test_user_model_over_http(openai_server) -> None:
    """``--user-model openai:URL#name``: the user is a model behind an OpenAI-compatible server,
    prompted with tau2's own user-simulator guidelines and the task's scenario."""
    from omni_agent.models.spec import load_model

    task = next(t for t in domain_tasks("mock") if t.id == "create_task_1")
    openai_server.reply_chat("Hi, please create a task called 'Important Meeting' for user_1.")
    openai_server.reply_chat(f"Thanks, that's all. {STOP}")
    assistant = ScriptedModel([render_tool_call("create_task", {"user_id": "user_1", "title": "Important Meeting"}), "Created it."], name="a")
    user = ModelUser(load_model(f"openai:{openai_server.base_url}#user?max_retries=0"), task)
    result = asyncio.run(run_task("mock", task, assistant, user))
    assert result.reward == 1.0 and result.termination == "user_stop" and result.turns == 1
    first, second = (r.json["messages"] for r in openai_server.chat_requests())
    assert first[0]["role"] == "system" and "Important Meeting" in first[0]["content"] and "<scenario>" in first[0]["content"]
    assert first[-1] == {"role": "user", "content": "Hi! How can I help you today?"}  # roles flipped
    assert second[-1]["role"] == "user" and second[-1]["content"] == "Created it."


def test_a_user_model_that_is_down_is_an_infrastructure_error(tmp_path: Path) -> None:
    tasks = tau2_tasks("mock", user_model="openai:http://127.0.0.1:9/v1#down?max_retries=0", task_ids=["create_task_1"])
    run_suite(tasks, model="reference", out=tmp_path, retries=0, progress=False)
    (result,) = read_results(tmp_path / "results.jsonl")
    assert result.status == "error" and result.infra_error and result.error_stage == "model"


def test_telecom_is_refused_until_the_user_has_tools() -> None:
    import pytest

    from omni_agent.exceptions import UserError

    with pytest.raises(UserError, match="user simulator needs tools"):
        tau2_tasks("telecom", user_model="scripted")
