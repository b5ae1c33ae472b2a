"""The fast engine's parts: row ownership and LRU sessions, the batched decode attention against
the single-sequence maths (and the Triton kernel against its reference on CUDA), captured graphs
against the eager step, and which engine ``serve --engine`` picks."""

from __future__ import annotations

import pytest
import torch

from omni_agent.exceptions import UserError
from omni_agent.runtime.fast.batched_decode import batch_buckets
from omni_agent.runtime.fast.batched_kernels import batched_decode_attention_reference
from omni_agent.runtime.fast.layers import attention_decode
from omni_agent.serve.errors import CapacityError
from omni_agent.serve.fast_engine import RowBudget
from omni_agent.serve.kv_sessions import MediaBlock
from omni_agent.serve.row_table import RowTable

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_a_session_gets_its_own_row_back_with_the_reusable_prefix():
    table = RowTable(3, max_sessions=3)
    row, reuse = table.acquire("s", [1, 2, 3], [])
    assert reuse == 0 and table.busy == 1
    table.release(row, session_id="s", ids=[1, 2, 3, 9])
    again, reuse = table.acquire("s", [1, 2, 3, 9, 4, 5], [])
    assert again is row and reuse == 4
    table.release(again)  # no session: the row is free again
    assert table.kept == [] and table.busy == 0


def test_a_changed_image_cuts_the_reused_prefix_at_its_start():
    table = RowTable(1, max_sessions=1)
    row, _ = table.acquire("s", [1, 2, 7, 7, 3], [])
    table.release(row, session_id="s", ids=[1, 2, 7, 7, 3], blocks=[MediaBlock("image", 1, 4, 0, "old")])
    _, reuse = table.acquire("s", [1, 2, 7, 7, 3, 4], [MediaBlock("image", 1, 4, 0, "new")])
    assert reuse == 1


def test_rows_are_reclaimed_least_recently_used_and_busy_rows_wait():
    table = RowTable(2, max_sessions=5)
    a, _ = table.acquire("a", [1], [])
    b, _ = table.acquire("b", [2], [])
    assert table.acquire("c", [3], []) is None  # every row busy
    table.release(a, session_id="a", ids=[1])
    table.release(b, session_id="b", ids=[2])
    c, reuse = table.acquire("c", [3], [])
    assert c is a and reuse == 0  # a was used least recently
    assert [r.session_id for r in table.kept] == ["b"]


def test_at_most_max_sessions_rows_are_kept():
    table = RowTable(4, max_sessions=2)
    rows = [table.acquire(s, [i], [])[0] for i, s in enumerate("abc")]
    for row, s in zip(rows, "abc"):
        table.release(row, session_id=s, ids=[1])
    assert [r.session_id for r in table.kept] == ["b", "c"]


def test_the_row_budget_refuses_what_one_row_cannot_hold():
    budget = RowBudget(10_000, 10, row_tokens=100)
    budget.check_possible(100)
    with pytest.raises(CapacityError) as caught:
        budget.check_possible(101)
    assert caught.value.code == "context_length_exceeded" and "100 tokens per request" in caught.value.message


def test_batch_buckets_are_powers_of_two_covering_the_largest_batch():
    assert batch_buckets(1) == [1]
    assert batch_buckets(12) == [1, 2, 4, 8, 16]


def _random_rows(device: str, dtype: torch.dtype = torch.float32):
    gen = torch.Generator(device="cpu").manual_seed(1)
    rows, hkv, length, d, hq = 5, 2, 96, 32, 8
    k = torch.randn((rows + 1, hkv, length, d), generator=gen).to(device, dtype)
    v = torch.randn((rows + 1, hkv, length, d), generator=gen).to(device, dtype)
    q = torch.randn((4, hq, d), generator=gen).to(device, dtype)
    row_ids = torch.tensor([3, 0, 5, 3], device=device)  # 5: the scratch row (padding)
    last = torch.tensor([70, 5, 0, 95], device=device)
    return q, k, v, row_ids, last


def test_batched_attention_equals_the_single_sequence_maths_per_entry():
    q, k, v, rows, last = _random_rows("cpu")
    out = batched_decode_attention_reference(q, k, v, rows, last, 96, 0.125)
    for b in range(4):
        r, n = int(rows[b]), int(last[b]) + 1
        valid = torch.arange(n) <= int(last[b])
        one = attention_decode(q[b].view(1, 8, 1, 32), k[r : r + 1, :, :n], v[r : r + 1, :, :n], valid, 0.125)
        torch.testing.assert_close(out[b], one.view(8, 32), rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_batched_attention_equals_its_reference(dtype):
    from omni_agent.runtime.fast.batched_kernels import batched_decode_attention

    q, k, v, rows, last = _random_rows("cuda", dtype)
    want = batched_decode_attention_reference(q, k, v, rows, last, 96, 0.125)
    got = batched_decode_attention(q, k, v, rows, last, 96, 0.125, chunk=32, block_n=16)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


@needs_cuda
def test_a_graph_replay_equals_the_eager_step(tiny_qwen3_omni_dir):
    from tests.fixtures.serve import load_tiny_engine

    engine, _ = load_tiny_engine(tiny_qwen3_omni_dir, fast=True, max_batch=4, max_sessions=2)
    decoder = engine.decoder
    assert decoder.graphs_on
    entries = ([11, 12, 13], [40, 7, 90], [0, 1, 2], [40, 7, 90])
    with torch.inference_mode():
        replayed = decoder.step(*entries).clone()
        decoder.graphs_on = False
        eager = decoder.step(*entries)
    assert decoder.graphs_captured == 1
    torch.testing.assert_close(replayed, eager, rtol=1e-4, atol=1e-4)


def test_serve_picks_the_engine_by_name_and_device(tiny_qwen3_omni_dir, tiny_qwen25_omni_dir):
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.serve.engine import BatchedEngine
    from omni_agent.serve.fast_engine import FastBatchedEngine
    from omni_agent.serve.metrics import ServeMetrics
    from omni_agent.serve.server import backend_for_model

    omni3 = QwenOmniModel.load(tiny_qwen3_omni_dir)
    fast = backend_for_model(omni3, metrics=ServeMetrics(), engine="fast", max_sessions=2)
    assert isinstance(fast, FastBatchedEngine)
    auto = backend_for_model(omni3, metrics=ServeMetrics(), engine="auto", max_sessions=2)
    on_cuda = omni3.model.thinker.lm_head.weight.device.type == "cuda"
    assert type(auto) is (FastBatchedEngine if on_cuda else BatchedEngine)
    assert type(backend_for_model(omni3, metrics=ServeMetrics(), engine="batched")) is BatchedEngine
    omni25 = QwenOmniModel.load(tiny_qwen25_omni_dir)
    with pytest.raises(UserError, match="Qwen3-Omni"):
        backend_for_model(omni25, metrics=ServeMetrics(), engine="fast")
    with pytest.raises(UserError, match="auto, fast, batched or serial"):
        backend_for_model(omni3, metrics=ServeMetrics(), engine="turbo")


def test_short_requests_prefilled_together_match_their_single_prefills(tiny_qwen3_omni_dir):
    from omni_agent.runtime.fast.multi_prefill import prefill_many
    from tests.fixtures.serve import load_tiny_engine

    engine, _ = load_tiny_engine(tiny_qwen3_omni_dir, fast=True, max_batch=4, max_sessions=2)
    stack, cache = engine.stack, engine.cache
    prompts = [[5, 6, 7, 8, 9], [100, 200, 300], [42] * 11]
    with torch.inference_mode():
        singles = []
        for row, ids in enumerate(prompts):
            pos = torch.arange(len(ids)).view(1, 1, -1).expand(3, 1, -1)
            singles.append(stack.forward(stack.model.embed_tokens(torch.tensor([ids])), pos, cache.row(row), 0)[0, -1])
        flat = [t for ids in prompts for t in ids]
        pos = torch.cat([torch.arange(len(ids)) for ids in prompts]).view(1, 1, -1).expand(3, 1, -1)
        parts = [(cache.row(3 + j), 0, len(ids)) for j, ids in enumerate(prompts)]
        together = prefill_many(stack, stack.model.embed_tokens(torch.tensor([flat])), pos, parts)
    torch.testing.assert_close(together, torch.stack(singles), rtol=1e-5, atol=1e-5)
    for j, ids in enumerate(prompts):  # each part's K/V landed in its own row, at its own slots
        torch.testing.assert_close(cache.k[:, 3 + j, :, : len(ids)], cache.k[:, j, :, : len(ids)], rtol=1e-5, atol=1e-5)


def test_requests_with_images_prefilled_together_match_their_single_prefills(tiny_qwen3_omni_dir):
    import asyncio
    import base64
    import io

    from PIL import Image

    from omni_agent.models.base import ModelRequest
    from omni_agent.serve.chat import ChatLimits, _messages
    from omni_agent.serve.engine import _Sequence
    from tests.fixtures.serve import load_tiny_engine

    def url(colour):
        buf = io.BytesIO()
        Image.new("RGB", (56, 56), colour).save(buf, "PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    engine, _ = load_tiny_engine(tiny_qwen3_omni_dir, fast=True, max_batch=4, max_sessions=2)
    loop = asyncio.new_event_loop()
    seqs = []
    for i, colour in enumerate([(10, 20, 30), (200, 100, 0), None]):
        content = [{"type": "text", "text": "what is here? " * (i + 1)}] + ([{"type": "image_url", "image_url": {"url": url(colour)}}] if colour else [])
        request = ModelRequest(messages=_messages([{"role": "user", "content": content}], ChatLimits()))
        ids, inputs, blocks = engine._prepare(request, "")
        seqs.append(_Sequence(ids=ids, inputs=inputs, settings=request.settings, session_id=None, prefix_text="", blocks=blocks,
                              loop=loop, queue=asyncio.Queue()))
    with torch.inference_mode():
        singles = []
        for row, seq in enumerate(seqs):
            positions, _ = engine._rope_index(seq.inputs)
            singles.append(engine._prefill_fast(seq, engine.cache.row(row), positions, 0))
        for seq in seqs:
            engine._row_of[seq] = engine.rows.acquire(None, seq.ids, seq.blocks)[0]
        assert [engine._row_of[s].index for s in seqs] == [0, 1, 2]
        kept = engine.cache.k[:, :3].clone()
        engine.cache.k[:, :3].zero_()
        engine._prefill_together([(seq, 0) for seq in seqs])
    assert engine.prefilled_together == 3
    torch.testing.assert_close(engine.cache.k[:, :3], kept, rtol=1e-5, atol=1e-5)  # the same K per row
    first = [seq.generated[0] for seq in seqs]
    assert first == [int(logits.argmax()) for logits in singles]
    loop.close()
