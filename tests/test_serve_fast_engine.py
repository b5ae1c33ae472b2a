"""The fast engine (row-static KV cache, batched decode) through the server: concurrent clients
get the answers they get alone and the plain engine's answers, a session's next turn reuses its
row, padding to a batch bucket changes nothing, a request too long for a row is refused, and a
client that leaves frees its row."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from tests.fixtures.serve import load_tiny_engine
from tests.test_serve_engine import _conversation, _image_url

pytestmark = pytest.mark.slow


def _wait_idle(served, timeout_s: float = 20.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (served.metric("omni_active_sequences") == 0 and served.metric("omni_waiting_sequences") == 0
                and served.metric("omni_requests_in_flight", {"endpoint": "chat"}) == 0 and served.backend.rows.busy == 0):
            return
        time.sleep(0.05)
    pytest.fail("the server did not go back to idle")


def _answers_together(served, requests: list[dict]) -> list[str | None]:
    import openai

    async def run() -> list[str | None]:
        client = openai.AsyncOpenAI(base_url=served.base_url, api_key=served.api_key, max_retries=0)
        answers = await asyncio.gather(*[client.chat.completions.create(model="tiny-omni", **r) for r in requests])
        await client.close()
        return [a.choices[0].message.content for a in answers]

    return asyncio.run(run())


def test_eight_concurrent_clients_get_their_alone_and_plain_engine_answers(served_fast_omni, served_tiny_omni):
    served = served_fast_omni
    requests = [{"messages": _conversation(i), "max_tokens": 6 + 2 * (i % 4)} for i in range(8)]  # rows leave at different steps
    client = served.client()
    alone = [client.chat.completions.create(model="tiny-omni", **r).choices[0].message.content for r in requests]
    plain = [served_tiny_omni.client().chat.completions.create(model="tiny-omni", **r).choices[0].message.content for r in requests]
    assert alone == plain  # images included (every third conversation)
    shared_before = served.metric("omni_shared_decode_steps_total")
    assert _answers_together(served, requests) == alone
    assert served.metric("omni_shared_decode_steps_total") > shared_before
    assert served.metric("omni_max_batch_size") >= 3
    _wait_idle(served)


def test_a_session_reuses_its_row_with_the_same_tokens(served_fast_omni):
    client = served_fast_omni.client()
    first_turn = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": _image_url((1, 2, 3))}}]}]
    first = client.chat.completions.create(model="tiny-omni", messages=first_turn, max_tokens=5, extra_body={"session_id": "fast-1"})
    second_turn = [*first_turn, {"role": "assistant", "content": first.choices[0].message.content},
                   {"role": "user", "content": [{"type": "text", "text": "and now?"}, {"type": "image_url", "image_url": {"url": _image_url((9, 9, 9))}}]}]
    reused = client.chat.completions.create(model="tiny-omni", messages=second_turn, max_tokens=5, extra_body={"session_id": "fast-1"})
    fresh = client.chat.completions.create(model="tiny-omni", messages=second_turn, max_tokens=5)
    assert reused.usage.prompt_tokens_details.cached_tokens > first.usage.prompt_tokens // 2
    assert fresh.usage.prompt_tokens_details.cached_tokens == 0
    assert reused.choices[0].message.content == fresh.choices[0].message.content
    assert served_fast_omni.metric("omni_kv_cache_sessions") >= 1
    # A different image of the same size at the same place is not mistaken for the kept one.
    swapped = [{"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": _image_url((200, 2, 3))}}]},
               second_turn[1], {"role": "user", "content": "x"}]
    other = client.chat.completions.create(model="tiny-omni", messages=swapped, max_tokens=2, extra_body={"session_id": "fast-1"})
    assert other.usage.prompt_tokens_details.cached_tokens < 20  # only the text before the changed image


def test_audio_input_is_prefilled_by_the_plain_forward_with_the_plain_answer(served_fast_omni, served_tiny_omni, spoken_command_wav):
    data = base64.b64encode(spoken_command_wav.read_bytes()).decode()
    messages = [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                                             {"type": "text", "text": "what did I say?"}]}]
    fast = served_fast_omni.client().chat.completions.create(model="tiny-omni", messages=messages, max_tokens=6)
    plain = served_tiny_omni.client().chat.completions.create(model="tiny-omni", messages=messages, max_tokens=6)
    assert fast.choices[0].message.content == plain.choices[0].message.content
    assert fast.usage.completion_tokens == 6


def test_a_request_too_long_for_a_row_is_refused_and_the_server_goes_on(served_fast_omni):
    import openai

    client = served_fast_omni.client()
    row = served_fast_omni.backend.cache.row_tokens
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=row + 1)
    assert caught.value.body["code"] == "context_length_exceeded" and "KV budget" in caught.value.body["message"]
    assert f"{row} tokens per request" in caught.value.body["message"]
    ok = client.chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert ok.usage.completion_tokens >= 1
    _wait_idle(served_fast_omni)


def test_a_client_that_leaves_mid_stream_frees_its_row(served_fast_omni):
    import httpx

    served = served_fast_omni
    body = {"model": "tiny-omni", "messages": [{"role": "user", "content": "tell me a long story"}], "max_tokens": 400, "stream": True}
    steps_before = served.metric("omni_decode_steps_total")
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", served.base_url + "/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {served.api_key}"}) as response:
            assert response.status_code == 200
            assert next(line for line in response.iter_lines() if line.startswith("data:"))
            assert served.backend.rows.busy == 1
    _wait_idle(served)
    assert served.metric("omni_kv_cache_bytes") == served.backend.kept_bytes  # nothing but kept sessions
    assert served.metric("omni_decode_steps_total") - steps_before < 399
    again = served.client().chat.completions.create(model="tiny-omni", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert again.choices[0].message.content is not None


def test_padding_to_a_batch_bucket_changes_no_entry_and_no_other_row(tiny_qwen3_omni_dir):
    import torch

    engine, _ = load_tiny_engine(tiny_qwen3_omni_dir, fast=True, max_batch=8, max_sessions=4)
    decoder, cache = engine.decoder, engine.cache
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        cache.k.copy_(torch.randn(cache.k.shape, generator=gen))
        cache.v.copy_(torch.randn(cache.v.shape, generator=gen))
        entries = ([11, 12, 13], [40, 7, 90], [0, 1, 2], [40, 7, 90])  # tokens, positions, rows, slots
        alone = torch.cat([decoder.step(*[[column[i]] for column in entries]) for i in range(3)])  # bucket 1
        untouched = cache.k[:, 3 : cache.rows].clone()
        in_four = decoder.step(*entries)  # bucket 4: one padding entry
        decoder.batch_sizes = [8]
        in_eight = decoder.step(*entries)  # bucket 8: five padding entries
    assert in_four.shape == in_eight.shape == alone.shape == (3, engine.stack.lm_head.weight.shape[0])
    torch.testing.assert_close(in_four, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(in_eight, in_four, rtol=1e-5, atol=1e-5)
    assert torch.equal(in_eight.argmax(-1), alone.argmax(-1))
    assert torch.equal(cache.k[:, 3 : cache.rows], untouched)  # padding wrote only the scratch row


def test_prompts_are_prepared_incrementally_with_the_plain_engines_ids_and_images(served_fast_omni, served_tiny_omni):
    from omni_agent.models.base import ModelRequest
    from omni_agent.serve.chat import ChatLimits, _messages

    fast, plain = served_fast_omni.backend, served_tiny_omni.backend
    turn = [{"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": _image_url((5, 6, 7))}}]}]
    turns = [turn, [*turn, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "text", "text": "more"}, {"type": "image_url", "image_url": {"url": _image_url((7, 6, 5))}}]}]]
    reused_before = fast.prompts.reused_chunks
    for messages in turns:
        request = ModelRequest(messages=_messages(messages, ChatLimits()))  # as the server parses them
        ids, _, blocks = fast._prepare(request, "")
        want_ids, _, want_blocks = plain._prepare(request, "")
        assert ids == want_ids
        assert [(b.kind, b.start, b.end, b.key) for b in blocks] == [(b.kind, b.start, b.end, b.key) for b in want_blocks]
    assert fast.prompts.reused_chunks > reused_before  # the second turn kept the first turn's chunks


def test_seeded_sampling_gives_each_row_its_own_stream_alone_or_batched(served_fast_omni):
    requests = [{"messages": _conversation(i + 1), "max_tokens": 6, "temperature": 1.0, "seed": 100 + i} for i in range(4)]
    client = served_fast_omni.client()
    alone = [client.chat.completions.create(model="tiny-omni", **r).choices[0].message.content for r in requests]
    assert _answers_together(served_fast_omni, requests) == alone
    greedy = client.chat.completions.create(model="tiny-omni", messages=_conversation(1), max_tokens=6).choices[0].message.content
    assert alone[0] != greedy  # sampled, not argmax
