"""The scripted model: replays outputs, streams them in chunks, records requests, says what it is."""

from __future__ import annotations

import asyncio
import json

import pytest

from omni_agent.exceptions import ModelError, UserError
from omni_agent.loop import Agent
from omni_agent.models.base import ModelRequest, ModelResponse
from omni_agent.models.scripted import ScriptedModel
from omni_agent.messages import UserMessage
from omni_agent.tool import tool
from tests.fixtures.core import tool_call


def _request(text: str = "hi") -> ModelRequest:
    return ModelRequest(messages=[UserMessage(text)])


def test_streams_in_small_chunks_then_the_response() -> None:
    model = ScriptedModel(["abcdefghijklmnopqrstuvwxyz"], chunk_size=5)

    async def collect():
        return [c async for c in model.stream(_request())]

    chunks = asyncio.run(collect())
    assert [c.text for c in chunks[:-1]] == ["abcde", "fghij", "klmno", "pqrst", "uvwxy", "z"]
    assert chunks[-1].response is not None and chunks[-1].response.text == "abcdefghijklmnopqrstuvwxyz"
    assert len(model.requests) == 1


def test_label_and_backend_say_scripted() -> None:
    model = ScriptedModel([], name="demo")
    assert model.info.backend == "scripted" and model.info.is_scripted
    assert model.info.label == "scripted:demo (scripted policy, not a model)"


def test_callable_outputs_see_the_request_and_responses_pass_through() -> None:
    model = ScriptedModel([lambda r: f"you said {r.messages[-1].text}", ModelResponse(text="fixed")])
    first = asyncio.run(model.complete(_request("ping")))
    second = asyncio.run(model.complete(_request()))
    assert first.text == "you said ping" and second.text == "fixed"
    assert "scripted" in second.model


def test_running_out_is_a_clear_model_error() -> None:
    model = ScriptedModel(["only one"])
    asyncio.run(model.complete(_request()))
    with pytest.raises(ModelError, match="ran out of outputs: request 2 but only 1 scripted"):
        asyncio.run(model.complete(_request()))


def test_from_yaml_and_json_files(tmp_path) -> None:
    yaml_file = tmp_path / "script.yaml"
    yaml_file.write_text("- |\n  " + tool_call("add", a=1, b=2).replace("\n", "\n  ") + "\n- The sum is 3.\n")
    json_file = tmp_path / "script.json"
    json_file.write_text(json.dumps([{"text": "hello", "finish_reason": "stop"}]))

    @tool
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    result = Agent(ScriptedModel.from_file(yaml_file), [add]).run("add")
    assert result.answer == "The sum is 3."
    model = ScriptedModel.from_file(json_file)
    assert model.info.name == "script" and asyncio.run(model.complete(_request())).text == "hello"


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("a: [", ".yaml", "not valid YAML"),
        ("{}", ".json", "expected a list"),
        ("[1]", ".json", "output 0 is an int"),
        ('[{"nope": 1}]', ".json", "output 0 is not a valid response"),
    ],
)
def test_bad_script_files_are_clear_errors(tmp_path, content: str, suffix: str, message: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        ScriptedModel.from_file(path)
    with pytest.raises(UserError, match="cannot read"):
        ScriptedModel.from_file(tmp_path / "missing.yaml")
