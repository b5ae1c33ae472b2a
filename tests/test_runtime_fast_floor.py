"""Issue 15's last pieces of the fast Thinker path, on CPU where they are plain PyTorch:
greedy decoding with the argmax inside the decode step (the host one step ahead), the vision
encoder run with its grid-dependent inputs precomputed (what its CUDA graph captures), the
eviction placeholders' attention with its length from the host. The Triton kernel's fused K/V
write needs CUDA (the one test that skips without it)."""

from __future__ import annotations

import torch  # noqa: E402 - scripts/setup.sh installs it (CPU or CUDA build)

import pytest

from omni_agent.messages import ImagePart, TextPart, UserMessage  # noqa: E402
from omni_agent.models.base import GenerationSettings, ModelRequest  # noqa: E402
from omni_agent.runtime.fast.layers import attention_at_slots  # noqa: E402
from omni_agent.runtime.fast.vision_graph import VisionGraphs, precomputed_vision_kwargs  # noqa: E402

from tests.test_runtime_fast import TOOLS, fast_twin, first_request, screenshot  # noqa: E402 - the fast-path tests' scenario


def _generate(model, request, *, stop_ids, min_new_tokens):
    engine = model.fast
    inputs = model.prepare(request).inputs
    return engine.generate(
        inputs, settings=request.settings, stop_ids=stop_ids, tokenizer=model.processor.tokenizer, min_new_tokens=min_new_tokens
    )


def test_greedy_inside_the_step_gives_the_host_loops_tokens_stops_and_cache(tiny_qwen3_omni):
    on_device = fast_twin(tiny_qwen3_omni, sample_in_graph=True)
    on_host = fast_twin(tiny_qwen3_omni, sample_in_graph=False)
    request = first_request(10)
    free_a, finish_a, _ = _generate(on_device, request, stop_ids=[], min_new_tokens=0)
    free_b, finish_b, _ = _generate(on_host, request, stop_ids=[], min_new_tokens=0)
    assert free_a == free_b and len(free_a) == 10 and finish_a == finish_b == "length"
    assert on_device.fast.state.token_ids == on_host.fast.state.token_ids  # same rows fed to the cache
    stop = free_a[3]
    first_stop = free_a.index(stop)
    for min_new in (0, first_stop + 2):  # a stop token, then the same token banned until min_new_tokens
        on_device.fast.reset()
        on_host.fast.reset()
        got, finish, _ = _generate(on_device, request, stop_ids=[stop], min_new_tokens=min_new)
        want, finish_want, _ = _generate(on_host, request, stop_ids=[stop], min_new_tokens=min_new)
        assert got == want and finish == finish_want
        assert on_device.fast.state.token_ids == on_host.fast.state.token_ids
        if min_new == 0:
            assert finish == "stop" and len(got) == first_stop + 1
        else:
            assert stop not in got[: min_new - 1]


def test_greedy_inside_the_step_streams_every_token_once(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    seen: list[int] = []
    inputs = fast.prepare(first_request(6)).inputs
    tokens, _, timings = fast.fast.generate(
        inputs, settings=GenerationSettings(max_new_tokens=6, temperature=0.0), stop_ids=[], tokenizer=fast.processor.tokenizer,
        on_token=seen.append,
    )  # fmt: skip
    assert seen == tokens and len(tokens) == 6
    assert timings["decode_per_token"] > 0


def test_sampling_with_temperature_still_runs_on_the_host(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    settings = GenerationSettings(max_new_tokens=5, temperature=0.8, seed=7)
    a = fast.generate(ModelRequest(messages=first_request().messages, tools=TOOLS, settings=settings))
    fast.fast.reset()
    b = fast.generate(ModelRequest(messages=first_request().messages, tools=TOOLS, settings=settings))
    assert a.token_ids == b.token_ids and len(a.token_ids) == 5


def test_vision_encoder_with_precomputed_grid_inputs_equals_the_models_own_call(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    engine = fast.fast
    inputs = fast.prepare(first_request()).inputs
    span = engine.plan(inputs).spans[0]
    rows = inputs["pixel_values"][span.rows[0] : span.rows[1]]
    grid = torch.tensor([list(span.grid)])
    graphs = VisionGraphs(engine.inner.visual, use_graphs=False)
    with torch.inference_mode():
        ref = engine.inner.get_image_features(rows, grid, return_dict=True)
        embeds, deep = graphs.encode(rows, span.grid)
    assert torch.equal(embeds, ref.pooler_output[0])
    assert len(deep) == len(ref.deepstack_features) and all(torch.equal(a, b[0]) for a, b in zip(deep, ref.deepstack_features))
    kwargs = precomputed_vision_kwargs(engine.inner.visual, span.grid, rows.device)
    assert kwargs["cu_seqlens"].device.type == "cpu"  # the sdpa path splits by them: no device read
    assert kwargs["cu_seqlens"].tolist() == [0, span.grid[1] * span.grid[2]]


def test_vision_graphs_keep_a_bounded_number_of_grids(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    engine = fast.fast
    graphs = VisionGraphs(engine.inner.visual, use_graphs=False, max_grids=1)
    for size in ((128, 96), (96, 128)):
        messages = [UserMessage([TextPart(text="Click OK."), ImagePart.from_pil(screenshot(1, size))])]
        inputs = fast.prepare(ModelRequest(messages=messages, tools=TOOLS)).inputs
        span = engine.plan(inputs).spans[0]
        with torch.inference_mode():
            graphs.encode(inputs["pixel_values"][span.rows[0] : span.rows[1]], span.grid)
    assert len(graphs._entries) == 1 and next(iter(graphs._entries)) == tuple(span.grid)


def test_placeholder_attention_with_the_host_length_equals_the_device_read():
    torch.manual_seed(0)
    q = torch.randn(1, 8, 3, 16)
    k = torch.randn(1, 2, 40, 16)
    v = torch.randn(1, 2, 40, 16)
    slots = torch.tensor([5, 6, 20])
    a = attention_at_slots(q, k, v, slots, 0.25)
    b = attention_at_slots(q, k, v, slots, 0.25, 21)
    assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton kernel needs CUDA")
def test_decode_attention_writes_the_new_rows_and_attends_to_them():
    from omni_agent.runtime.fast.attention_kernels import decode_attention

    dev = torch.device("cuda")
    q = torch.randn(1, 32, 1, 128, device=dev, dtype=torch.bfloat16)
    kc = torch.randn(1, 4, 1024, 128, device=dev, dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    kn, vn = torch.randn(1, 4, 1, 128, device=dev, dtype=torch.bfloat16), torch.randn(1, 4, 1, 128, device=dev, dtype=torch.bfloat16)
    slot = torch.tensor([700], device=dev)
    k_ref, v_ref = kc.clone(), vc.clone()
    k_ref.index_copy_(2, slot, kn)
    v_ref.index_copy_(2, slot, vn)
    want = decode_attention(q, k_ref, v_ref, slot, 1024, 128**-0.5)
    got = decode_attention(q, kc, vc, slot, 1024, 128**-0.5, k_new=kn, v_new=vn)
    assert torch.equal(kc, k_ref) and torch.equal(vc, v_ref)
    assert torch.equal(got, want)
