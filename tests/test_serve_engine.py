"""The batched engine through the server: concurrent clients share decode batches without
changing each other's tokens, sessions reuse their KV prefix, the budget refuses what cannot fit,
and a client that leaves mid-stream frees everything."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import pytest

from omni_agent.messages import ImagePart, UserMessage
from omni_agent.models.base import GenerationSettings, ModelRequest
from tests.fixtures.serve import load_tiny_engine, serve_backend

pytestmark = pytest.mark.slow


def _image_url(colour: tuple[int, int, int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (56, 56), colour).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _conversation(i: int) -> list[dict]:
    """Eight different conversations: different lengths, some with an image."""
    text = "Say something about item %d. " % i + "More words. " * i
    content: list[dict] = [{"type": "text", "text": text}]
    if i % 3 == 0:
        content.append({"type": "image_url", "image_url": {"url": _image_url((30 * i, 80, 200 - 20 * i))}})
    return [{"role": "user", "content": content}]


def _wait_idle(served, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (served.metric("omni_active_sequences") == 0 and served.metric("omni_waiting_sequences") == 0
                and served.metric("omni_requests_in_flight", {"endpoint": "chat"}) == 0):
            return
        time.sleep(0.05)
    pytest.fail("the server did not go back to idle")


def test_eight_concurrent_clients_get_their_alone_answers_in_shared_batches(served_tiny_omni, tiny_qwen3_omni):
    import openai

    served = served_tiny_omni
    client = served.client()
    sizes = [6 + 2 * (i % 4) for i in range(8)]  # rows leave the batch at different steps
    alone = [
        client.chat.completions.create(model="tiny-omni", messages=_conversation(i), max_tokens=sizes[i]).choices[0].message.content
        for i in range(8)
    ]
    # The engine alone agrees with the plain transformers generate() of the same checkpoint.
    plain = tiny_qwen3_omni.generate(ModelRequest(messages=[UserMessage(_conversation(1)[0]["content"][0]["text"])],
                                                  settings=GenerationSettings(max_new_tokens=sizes[1])))
    assert plain.text == alone[1]
    shared_before = served.metric("omni_shared_decode_steps_total")

    async def together() -> list[str | None]:
        aclient = openai.AsyncOpenAI(base_url=served.base_url, api_key=served.api_key, max_retries=0)
        answers = await asyncio.gather(*[
            aclient.chat.completions.create(model="tiny-omni", messages=_conversation(i), max_tokens=sizes[i])
            for i in range(8)
        ])
        await aclient.close()
        return [a.choices[0].message.content for a in answers]

    assert asyncio.run(together()) == alone
    assert served.metric("omni_shared_decode_steps_total") > shared_before
    assert served.metric("omni_max_batch_size") >= 3
    _wait_idle(served)


def test_a_session_reuses_its_kv_prefix_with_the_same_answer(served_tiny_omni):
    client = served_tiny_omni.client()
    first_turn = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": _image_url((1, 2, 3))}}]}]
    first = client.chat.completions.create(model="tiny-omni", messages=first_turn, max_tokens=5, extra_body={"session_id": "s-1"})
    second_turn = [*first_turn, {"role": "assistant", "content": first.choices[0].message.content},
                   {"role": "user", "content": [{"type": "text", "text": "and now?"}, {"type": "image_url", "image_url": {"url": _image_url((9, 9, 9))}}]}]
    reused = client.chat.completions.create(model="tiny-omni", messages=second_turn, max_tokens=5, extra_body={"session_id": "s-1"})
    fresh = client.chat.completions.create(model="tiny-omni", messages=second_turn, max_tokens=5)
    assert reused.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert reused.choices[0].message.content == fresh.choices[0].message.content
    assert served_tiny_omni.metric("omni_kv_cache_sessions") >= 1
    # Another image of the same size at the same place is not mistaken for the kept one.
    swapped = [first_turn[0], second_turn[1], {"role": "user", "content": "x"}]
    swapped[0] = {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": _image_url((200, 2, 3))}}]}
    other = client.chat.completions.create(model="tiny-omni", messages=swapped, max_tokens=2, extra_body={"session_id": "s-1"})
    text_len = other.usage.prompt_tokens_details.cached_tokens
    assert text_len < 20  # only the text before the changed image


def test_the_budget_refuses_what_cannot_fit_and_serves_the_rest(tiny_qwen3_omni_dir):
    import openai

    engine, metrics = load_tiny_engine(tiny_qwen3_omni_dir, kv_budget_bytes=1)  # replaced below
    engine.budget.budget = engine.budget.per_token * 200
    served = serve_backend(engine, metrics)
    try:
        client = served.client()
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi " * 300}], max_tokens=4)
        assert caught.value.body["code"] == "context_length_exceeded" and "KV budget" in caught.value.body["message"]
        ok = client.chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert ok.usage.completion_tokens >= 1
        assert metrics.value("omni_kv_cache_bytes") == 0 and metrics.value("omni_active_sequences") == 0
    finally:
        served.server.stop()


def test_a_client_that_leaves_mid_stream_frees_its_slot(served_tiny_omni):
    import httpx

    served = served_tiny_omni
    body = {"model": "tiny-omni", "messages": [{"role": "user", "content": "tell me a long story"}], "max_tokens": 400,
            "stream": True}
    headers = {"Authorization": f"Bearer {served.api_key}"}
    steps_before = served.metric("omni_decode_steps_total")
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", served.base_url + "/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            assert served.metric("omni_active_sequences") == 1
    _wait_idle(served)
    assert served.metric("omni_kv_cache_bytes") == served.backend.sessions.nbytes  # nothing but kept sessions
    # It stopped early: its 400 tokens were never all generated, and the server still answers.
    assert served.metric("omni_decode_steps_total") - steps_before < 399
    again = served.client().chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert again.choices[0].message.content is not None


def test_qwen25_omni_batched_equals_plain_generate(tiny_qwen25_omni_dir):
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.serve.engine import BatchedEngine

    model = QwenOmniModel.load(tiny_qwen25_omni_dir, enable_talker=True)
    engine = BatchedEngine(model)
    requests = [ModelRequest(messages=[UserMessage(text)], settings=GenerationSettings(max_new_tokens=n))
                for text, n in (("hello there", 24), ("a longer question about the weather today", 3))]
    plain = [model.generate(r).text for r in requests]

    async def together() -> list[str]:
        async def one(request):
            last = None
            async for chunk in engine.stream(request):
                last = chunk.response or last
            return last.text

        answers = await asyncio.gather(*[one(r) for r in requests])
        await engine.aclose()
        return answers

    assert asyncio.run(together()) == plain
    assert engine.metrics.value("omni_shared_decode_steps_total") >= 1


def test_a_stop_string_ends_the_answer_and_is_not_returned(served_tiny_omni):
    client = served_tiny_omni.client()
    messages = [{"role": "user", "content": "count"}]
    full = client.chat.completions.create(model="tiny-omni", messages=messages, max_tokens=10).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    cut = client.chat.completions.create(model="tiny-omni", messages=messages, max_tokens=10, stop=[stop])
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny-omni", messages=messages, max_tokens=10, stop=[stop], stream=True) if c.choices)
    assert cut.choices[0].message.content == streamed == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
