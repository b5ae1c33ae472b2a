"""Bad input gets an OpenAI-shaped error and the server goes on serving (real HTTP, no model:
a scripted policy behind the serial backend), plus unit tests of the request conversion and the
session-prefix rules."""

from __future__ import annotations

import base64
import io
import json

import pytest

from omni_agent.serve.chat import ChatCompletionRequest, ChatLimits, to_model_request
from omni_agent.serve.errors import RequestError
from omni_agent.serve.kv_sessions import MediaBlock, SessionStore, SessionKV, reusable_prefix
from tests.fixtures.serve import serve_backend


@pytest.fixture(scope="module")
def served():
    from omni_agent.models.scripted import ScriptedModel
    from omni_agent.serve.backend import SerialBackend
    from omni_agent.serve.chat import ChatLimits
    from omni_agent.serve.metrics import ServeMetrics

    model = ScriptedModel(["fine"] * 20, name="script")
    s = serve_backend(SerialBackend(model), ServeMetrics(), limits=ChatLimits(max_image_pixels=100_000))
    yield s
    s.server.stop()


def _post(served, body, *, raw: bytes | None = None):
    import httpx

    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(served.base_url + "/chat/completions", content=data, headers={"Content-Type": "application/json"}, timeout=30)


def _png(size) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


BAD_INPUTS = {
    "malformed JSON": (None, b'{"model": "script", "messages": [', 400, "invalid_json"),
    "unknown model": ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, None, 404, "model_not_found"),
    "missing messages": ({"model": "script"}, None, 400, None),
    "huge image": ({"model": "script", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": _png((1000, 1000))}}]}]}, None, 400, "image_too_large"),
    "undecodable image": ({"model": "script", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, None, 400, None),
    "web image URL": ({"model": "script", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}]}, None, 400, None),
    "invalid tool schema": ({"model": "script", "messages": [{"role": "user", "content": "hi"}], "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]},
        None, 400, None),
    "unknown tool_choice": ({"model": "script", "messages": [{"role": "user", "content": "hi"}], "tools": [],
                             "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None, 400, None),
    "bad role": ({"model": "script", "messages": [{"role": "wizard", "content": "hi"}]}, None, 400, None),
    "mp3 audio out": ({"model": "script", "messages": [{"role": "user", "content": "hi"}], "modalities": ["text", "audio"],
                       "audio": {"voice": "x", "format": "mp3"}}, None, 400, None),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_an_openai_error_and_the_server_goes_on(served, case):
    body, raw, status, code = BAD_INPUTS[case]
    response = _post(served, body, raw=raw)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"]
    if code is not None:
        assert error["code"] == code
    ok = _post(served, {"model": "script", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "fine"
    assert served.metric("omni_requests_in_flight", {"endpoint": "chat"}) == 0


def test_unknown_route_and_method_are_openai_shaped(served):
    import httpx

    assert httpx.get(served.base_url + "/nope").json()["error"]["code"] == "not_found"
    assert httpx.get(served.base_url + "/chat/completions").status_code == 405


# ------------------------------------------------------------------------------------ units


def _request(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields})


def test_tool_choice_modes_and_settings():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    other = {"type": "function", "function": {"name": "g"}}
    request, choice = to_model_request(_request(tools=[tool, other]), ChatLimits())
    assert choice == "auto" and [t["function"]["name"] for t in request.tools] == ["f", "g"]
    request, choice = to_model_request(_request(tools=[tool, other], tool_choice="none"), ChatLimits())
    assert choice == "none" and request.tools == []
    request, choice = to_model_request(_request(tools=[tool, other], tool_choice={"type": "function", "function": {"name": "g"}}), ChatLimits())
    assert choice == "function:g" and [t["function"]["name"] for t in request.tools] == ["g"]
    with pytest.raises(RequestError, match="needs tools"):
        to_model_request(_request(tool_choice="required"), ChatLimits())
    request, _ = to_model_request(_request(max_completion_tokens=7, temperature=0.5, seed=3, stop="END"), ChatLimits())
    assert (request.settings.max_new_tokens, request.settings.temperature, request.settings.seed, request.settings.stop) == (7, 0.5, 3, ["END"])


def test_tool_results_take_the_name_of_their_call():
    body = _request(messages=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
    ])
    request, _ = to_model_request(body, ChatLimits())
    assistant, result = request.messages[2], request.messages[3]
    assert assistant.tool_calls[0].arguments == {"a": 1} and assistant.tool_calls[0].id == "c1"
    assert result.result.name == "f" and result.result.text == "42"
    with pytest.raises(RequestError, match="not JSON"):
        to_model_request(_request(messages=[{"role": "assistant", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{"}}]}]), ChatLimits())


def test_reusable_prefix_stops_at_a_changed_or_cut_media_block():
    old_ids = [1, 2, 9, 5, 5, 5, 8, 3, 4]
    old = [MediaBlock("image", 2, 6, 0, "red")]
    same = [MediaBlock("image", 2, 6, 0, "red")]
    assert reusable_prefix(old_ids, old, old_ids + [7, 7], same) == len(old_ids)
    assert reusable_prefix(old_ids, old, old_ids + [7], [MediaBlock("image", 2, 6, 0, "blue")]) == 2
    assert reusable_prefix(old_ids, old, old_ids, same) == len(old_ids) - 1  # the last token is recomputed
    assert reusable_prefix([1, 2, 9, 5], [], [1, 2, 9, 5, 5, 5, 8], [MediaBlock("image", 2, 6, 0, "red")]) == 2


def test_session_store_is_lru_and_counts_bytes():
    store = SessionStore(max_sessions=2)
    for name in ("a", "b", "c"):
        store.put(name, SessionKV(ids=[1], kv=[], blocks=[], nbytes=10))
    assert list(store.items) == ["b", "c"] and store.nbytes == 20
    assert store.take("b") is not None and store.take("b") is None
    assert store.evict_oldest() and not store.evict_oldest()


def test_image_file_paths_only_under_the_allowed_directory(tmp_path):
    from PIL import Image

    allowed = tmp_path / "media"
    allowed.mkdir()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(allowed / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")

    def with_image(url: str) -> ChatCompletionRequest:
        return _request(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])

    request, _ = to_model_request(with_image(f"file://{allowed / 'a.png'}"), ChatLimits(media_dir=str(allowed)))
    assert request.messages[0].images[0].load().getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(RequestError, match="not a file under the server's media directory"):
        to_model_request(with_image(str(allowed / ".." / "outside.png")), ChatLimits(media_dir=str(allowed)))
    with pytest.raises(RequestError, match="must be data URLs"):
        to_model_request(with_image(str(allowed / "a.png")), ChatLimits())
