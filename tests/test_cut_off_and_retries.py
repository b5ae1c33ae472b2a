"""A reply cut off at the token limit is never an answer (on the OpenAI-compatible and the local
backend); a stream that fails mid-way keeps its text in the trajectory and on screen; server
errors are retried only when a retry can help (connection, 429, 503) and named for what they are."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from omni_agent import Agent, GenerationSettings, StopReason, tool
from omni_agent.display import LiveDisplay
from omni_agent.models.openai_compat import OpenAICompatModel
from tests.fixtures.openai_server import OpenAITestServer, chat_chunk


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _model(server: OpenAITestServer) -> OpenAICompatModel:
    return OpenAICompatModel(server.base_url, "test-model", backoff_s=0.01, max_backoff_s=0.05)


def _steps(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def test_a_reply_cut_off_at_the_token_limit_is_not_an_answer(openai_server: OpenAITestServer, tmp_path: Path) -> None:
    openai_server.reply_stream([chat_chunk(content="The answer is forty"), chat_chunk(finish_reason="length")])
    agent = Agent(_model(openai_server), [add], trajectory_dir=tmp_path, settings=GenerationSettings(max_new_tokens=5))
    result = agent.run("What is 2 + 40?")
    assert result.stop_reason is StopReason.TOKEN_LIMIT and result.answer is None
    assert result.error == "the reply was cut off at the token limit (5 new tokens) before it finished"
    (step,) = _steps(result.trajectory_dir)
    assert step["outcome"] == "token_limit" and step["raw_text"] == "The answer is forty"


def test_a_call_cut_off_at_the_token_limit_is_fed_back_and_the_run_goes_on(openai_server: OpenAITestServer) -> None:
    openai_server.reply_stream([chat_chunk(content='<tool_call>\n{"name": "add", "argu'), chat_chunk(finish_reason="length")])
    openai_server.reply_stream([chat_chunk(content="42"), chat_chunk(finish_reason="stop")])
    agent = Agent(_model(openai_server), [add], trajectory_dir=None, settings=GenerationSettings(max_new_tokens=9))
    result = agent.run("What is 2 + 40?")
    assert result.stop_reason is StopReason.ANSWER and result.answer == "42"
    feedback = openai_server.chat_requests()[1].json["messages"][-1]["content"]
    text = feedback if isinstance(feedback, str) else " ".join(p.get("text", "") for p in feedback)
    assert "could not be read" in text and "cut off at the token limit (9 tokens)" in text


def test_the_cli_exits_3_for_a_cut_off_reply(openai_server: OpenAITestServer, tmp_path: Path) -> None:
    from omni_agent.cli import app

    openai_server.reply_stream([chat_chunk(content="Half an ans"), chat_chunk(finish_reason="length")])
    res = CliRunner().invoke(app, ["run", "x", "--model", f"openai:{openai_server.base_url}#test-model", "--tools", "",
                                   "-w", str(tmp_path), "--trajectory", str(tmp_path / "runs")])  # fmt: skip
    assert res.exit_code == 3 and "token limit" in res.output
    assert res.stdout.strip() == ""  # nothing printed as the answer


def test_a_stream_that_fails_mid_way_keeps_its_text_in_the_trajectory_and_on_screen(
    openai_server: OpenAITestServer, tmp_path: Path
) -> None:
    openai_server.reply_stream(
        [chat_chunk(content="Let me think about "), chat_chunk(content="this carefully"), chat_chunk(content=" and")],
        drop_after_events=2,
    )
    screen = io.StringIO()
    agent = Agent(_model(openai_server), [add], trajectory_dir=tmp_path)
    agent.events.subscribe(LiveDisplay(Console(file=screen, width=200, color_system=None)))
    result = agent.run("Think.")
    assert result.stop_reason is StopReason.MODEL_ERROR and "mid-stream" in (result.error or "")
    (step,) = _steps(result.trajectory_dir)
    assert step["raw_text"] == "Let me think about this carefully"
    shown = screen.getvalue()
    assert "stopped mid-answer" in shown and "Let me think about this carefully" in shown
    assert shown.index("Let me think about this carefully") < shown.index("error (model_error)")


def test_a_server_error_is_not_retried_and_is_named(openai_server: OpenAITestServer) -> None:
    openai_server.reply_error(500, "CUDA error: device-side assert triggered", kind="InternalServerError")
    result = Agent(_model(openai_server), [add], trajectory_dir=None).run("x")
    assert len(openai_server.chat_requests()) == 1  # the whole answer is not regenerated three times
    assert result.stop_reason is StopReason.MODEL_ERROR
    assert "failed with a server error (HTTP 500): CUDA error" in (result.error or "")
    assert "unavailable" not in (result.error or "")


def test_rate_limits_and_unavailable_servers_are_retried(openai_server: OpenAITestServer) -> None:
    openai_server.reply_error(429, "slow down", headers={"Retry-After": "0"}, kind="RateLimitError")
    openai_server.reply_error(503, "loading the model", kind="ServiceUnavailableError")
    openai_server.reply_stream([chat_chunk(content="fine"), chat_chunk(finish_reason="stop")])
    notices: list[str] = []
    model = _model(openai_server)
    model.on_retry = lambda n: notices.append(n.reason)
    result = Agent(model, [add], trajectory_dir=None).run("x")
    assert result.answer == "fine" and len(openai_server.chat_requests()) == 3
    assert notices == [
        "rate limited (HTTP 429): slow down (RateLimitError)",
        "unavailable (HTTP 503): loading the model (ServiceUnavailableError)",
    ]


def test_the_local_backend_stopping_at_max_new_tokens_is_a_token_limit(tiny_qwen3_omni) -> None:  # noqa: ANN001
    agent = Agent(tiny_qwen3_omni, max_steps=1, trajectory_dir=None, settings=GenerationSettings(max_new_tokens=3, seed=0))
    result = agent.run("Describe the weather in many words.")
    last = result.messages[-1]
    assert last.raw_text, "the generated text was kept"
    assert result.stop_reason is StopReason.TOKEN_LIMIT and result.answer is None
    assert "cut off at the token limit (3 new tokens)" in (result.error or "")
