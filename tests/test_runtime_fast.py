"""The fast Thinker path (omni_agent.runtime.fast) against the plain generate() path, on CPU.

The static KV cache, the prefix reuse across agent steps, the M-RoPE positions of appended
tokens and the image-embedding cache are plain PyTorch: they run here on the tiny random
Qwen3-Omni. CUDA graphs / torch.compile only exist on a GPU (evals/perf/gpu_step.py checks
them there; the one GPU test below skips without CUDA).
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

import torch  # noqa: E402 - scripts/setup.sh installs it (CPU or CUDA build)

from PIL import Image, ImageDraw  # noqa: E402

from omni_agent.exceptions import ModelError, UserError  # noqa: E402
from omni_agent.messages import (  # noqa: E402
    AssistantMessage,
    AudioPart,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
)
from omni_agent.models.base import GenerationSettings, ModelRequest  # noqa: E402
from omni_agent.runtime import QwenOmniModel  # noqa: E402
from omni_agent.runtime.fast import FastOptions, PrefixState, find_image_spans  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "click",
            "description": "Click at x.",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
        },
    }
]


def screenshot(i: int, size: tuple[int, int] = (128, 96)) -> Image.Image:
    image = Image.new("RGB", size, ((37 * i) % 255, 90, 160))
    ImageDraw.Draw(image).rectangle((10 + 7 * i, 10, 40 + 7 * i, 40), fill=(255, 255, 255))
    return image


def fast_twin(model: QwenOmniModel, **options) -> QwenOmniModel:
    """The same weights behind the fast path (no second load; its own processor copy, since the
    fast path wraps the image processor with its cache)."""
    checkpoint = dataclasses.replace(model.checkpoint, processor=copy.copy(model.checkpoint.processor))
    return QwenOmniModel(checkpoint, name="fast", fast=FastOptions(max_cache_tokens=2048, **options))


def first_request(n_tokens: int = 4) -> ModelRequest:
    return ModelRequest(
        messages=[SystemMessage("You operate a desktop."), UserMessage([TextPart(text="Click OK."), ImagePart.from_pil(screenshot(0))])],
        tools=TOOLS,
        settings=GenerationSettings(max_new_tokens=n_tokens, temperature=0.0),
    )


def test_fast_prefill_and_decode_logits_match_the_plain_forward(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    prepared = fast.prepare(first_request())
    inputs = prepared.inputs
    thinker = tiny_qwen3_omni.model.thinker
    with torch.inference_mode():
        ref = thinker(**inputs).logits[0, -1].float()
        engine = fast.fast
        plan = engine.plan(inputs)
        assert plan.reuse == 0 and len(plan.spans) == 1
        got, _ = engine.prefill(inputs, plan)
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-4), (got - ref).abs().max()
        # One decode step through the static cache vs the plain forward over prompt + token.
        token = int(torch.argmax(ref))
        slot = len(engine.state)
        got2 = engine.decode(token, slot, engine.state.next_position(slot))
        longer = dict(inputs)
        longer["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([[token]])], dim=1)
        longer["attention_mask"] = torch.ones_like(longer["input_ids"])
        ref2 = thinker(**longer).logits[0, -1].float()
    assert torch.allclose(got2, ref2, atol=1e-4, rtol=1e-4), (got2 - ref2).abs().max()
    assert not torch.allclose(ref, ref2)  # the decode step really moved on


def test_three_step_episode_same_greedy_tokens_and_only_new_tokens_prefilled(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    messages = list(first_request().messages)
    fed_before: list[int] = []
    for step in range(3):
        request = ModelRequest(messages=messages, tools=TOOLS, settings=GenerationSettings(max_new_tokens=4, temperature=0.0))
        plain = tiny_qwen3_omni.generate(request)
        got = fast.generate(request)
        assert got.token_ids == plain.token_ids
        assert got.text == plain.text
        prompt = [int(t) for t in fast.prepare(request).inputs["input_ids"][0]]
        common = 0
        while common < min(len(prompt) - 1, len(fed_before)) and prompt[common] == fed_before[common]:
            common += 1
        # Exactly the tokens past the common prefix were prefilled; later steps reuse most.
        assert got.timings["prefilled_tokens"] == len(prompt) - common
        assert got.timings["reused_tokens"] == common
        if step > 0:
            assert common > len(prompt) // 2
        fed_before = fast.fast.state.token_ids[:]
        assert fed_before[: len(prompt)] == prompt
        call = ToolCall(id=f"call_{step}", name="click", arguments={"x": step})
        messages += [
            AssistantMessage(content=[TextPart(text=plain.text)] if plain.text else [], tool_calls=[call]),
            ToolMessage(result=ToolResult(call_id=call.id, name="click", content=[TextPart(text="ok"), ImagePart.from_pil(screenshot(step + 1))])),
        ]
    stats = fast.fast.stats
    assert stats.images_encoded == 3  # one new screenshot per step, each encoded once
    assert stats.prefilled_tokens < stats.prompt_tokens // 2


def test_positions_of_appended_tokens_equal_the_full_prompt_positions(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    messages = list(first_request().messages) + [
        AssistantMessage(content=[TextPart(text="Looking.")]),
        UserMessage([TextPart(text="And now?"), ImagePart.from_pil(screenshot(3, (160, 64)))]),
    ]
    inputs = fast.prepare(ModelRequest(messages=messages)).inputs
    engine = fast.fast
    full, _ = engine.inner.get_rope_index(inputs["input_ids"], inputs["image_grid_thw"], None, inputs["attention_mask"])
    ids = inputs["input_ids"][0].tolist()
    spans = find_image_spans(ids, inputs["pixel_values"], inputs["image_grid_thw"], image_token_id=engine.image_token_id, merge=engine.merge)
    assert len(spans) == 2
    for cut in (spans[0].start, spans[0].end, spans[1].start, len(ids) - 3):
        state = PrefixState()
        state.append(ids[:cut], full[:, 0, :cut].amax(dim=0).tolist())
        new = engine.positions(ids[cut:], [s for s in spans if s.start >= cut], state.next_position(cut))
        assert torch.equal(new[:, 0], full[:, 0, cut:].long()), cut


def test_a_changed_screenshot_of_the_same_size_is_not_reused(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    a = fast.prepare(first_request()).inputs
    changed = first_request()
    changed.messages[1] = UserMessage([TextPart(text="Click OK."), ImagePart.from_pil(screenshot(5))])
    b = fast.prepare(changed).inputs
    assert torch.equal(a["input_ids"], b["input_ids"])  # token ids alone cannot tell them apart
    engine = fast.fast
    plan_a = engine.plan(a)
    engine.state.append(plan_a.ids, list(range(len(plan_a.ids))), plan_a.spans)
    plan_b = engine.plan(b)
    assert plan_b.reuse == plan_b.spans[0].start  # cut at <|vision_start|> of the changed image
    assert engine.plan(a).reuse == len(plan_a.ids) - 1  # the same image: all but the last token


def test_preprocessing_cache_gives_the_processors_own_output(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni, incremental_prompt=False)  # the processor calls the cache
    images = [screenshot(1), screenshot(2, (160, 64)), screenshot(1)]
    request = ModelRequest(messages=[UserMessage([TextPart(text="look")] + [ImagePart.from_pil(im) for im in images])])
    plain = tiny_qwen3_omni.prepare(request).inputs
    cached = fast.prepare(request).inputs
    again = fast.prepare(request).inputs
    for key in ("input_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(plain[key], cached[key]) and torch.equal(plain[key], again[key]), key
    wrapper = fast.fast.preprocess_cache
    assert wrapper.misses == 2 and wrapper.hits == 4  # the repeated screenshot is processed once
    keys, tensor = wrapper.last_keys
    assert tensor is again["pixel_values"] and keys[0] == keys[2] != keys[1]
    spans = fast.fast.plan(again).spans
    assert [s.key for s in spans] == keys
    # A new object with other pixels (same size) gets its own key: nothing is matched by size.
    other = ModelRequest(messages=[UserMessage([TextPart(text="look")] + [ImagePart.from_pil(screenshot(4)) for _ in range(1)])])
    fast.prepare(other)
    assert wrapper.last_keys[0][0] not in keys
    # The buffer grows append-only: a longer list that extends the last one reuses its rows.
    longer = ModelRequest(messages=[UserMessage([TextPart(text="look")] + [ImagePart.from_pil(im) for im in images + [screenshot(6)]])])
    rows = fast.prepare(longer).inputs["pixel_values"]
    assert torch.equal(rows[: again["pixel_values"].shape[0]], again["pixel_values"])
    # The same object edited in place is hashed again (the sampled-pixel guard), not reused.
    edited = screenshot(8)
    request = ModelRequest(messages=[UserMessage([TextPart(text="look"), ImagePart.from_pil(edited)])])
    fast.prepare(request)
    before = wrapper.last_keys[0][0]
    ImageDraw.Draw(edited).rectangle((0, 0, 127, 95), fill=(0, 0, 0))
    fast.prepare(request)
    assert wrapper.last_keys[0][0] != before


def test_image_embeddings_are_cached_by_content(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni, prefix_reuse=False)
    request = first_request(2)
    first = fast.generate(request)
    second = fast.generate(request)
    assert first.token_ids == second.token_ids
    assert fast.fast.stats.images_encoded == 1 and fast.fast.stats.image_cache_hits == 1
    assert second.timings["prefilled_tokens"] == second.prompt_tokens  # no KV reuse asked for


def test_stop_tokens_min_new_tokens_and_streamed_text(tiny_qwen3_omni):
    fast = fast_twin(tiny_qwen3_omni)
    chunks: list[str] = []
    result = fast._generate_locked(
        fast.prepare(first_request(5)), GenerationSettings(max_new_tokens=5), on_text=chunks.append, preprocess_s=0.0,
        thinker_extra={"min_new_tokens": 5},
    )
    assert result.completion_tokens == 5 and result.finish_reason == "length"
    assert "".join(chunks) == result.text
    plain = tiny_qwen3_omni._generate_locked(
        tiny_qwen3_omni.prepare(first_request(5)), GenerationSettings(max_new_tokens=5), on_text=None, preprocess_s=0.0,
        thinker_extra={"min_new_tokens": 5},
    )
    assert plain.token_ids == result.token_ids


def test_a_step_larger_than_the_cache_is_refused_clearly(tiny_qwen3_omni):
    small = QwenOmniModel(
        dataclasses.replace(tiny_qwen3_omni.checkpoint, processor=copy.copy(tiny_qwen3_omni.processor)),
        name="small",
        fast=FastOptions(max_cache_tokens=128),
    )
    with pytest.raises(ModelError, match="max_cache_tokens"):
        small.generate(first_request())


def test_audio_input_and_speech_take_the_plain_path(tiny_qwen3_omni, spoken_command_wav):
    fast = fast_twin(tiny_qwen3_omni)
    request = ModelRequest(
        messages=[UserMessage([AudioPart.from_path(spoken_command_wav)])], settings=GenerationSettings(max_new_tokens=3)
    )
    plain = tiny_qwen3_omni.generate(request)
    assert fast.generate(request).token_ids == plain.token_ids
    assert fast.fast.stats.calls == 0  # the plain engine answered
    audio = fast.speak("hello there", settings=None)
    assert audio.load()[0].size > 0 and fast.fast.stats.calls == 0


def test_fast_path_is_off_by_default_and_rejects_other_families(tiny_qwen3_omni, tiny_qwen3_vl):
    assert tiny_qwen3_omni.fast is None
    with pytest.raises(UserError, match="Qwen3-Omni"):
        QwenOmniModel(tiny_qwen3_vl.checkpoint, name="vl", fast=True)
    assert FastOptions(max_cache_tokens=5000).buckets() == [2048, 4096, 5000]
    assert FastOptions(max_cache_tokens=16384).buckets()[-1] == 16384


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_decode_matches_eager_decode(tiny_qwen3_omni_dir):
    gpu = QwenOmniModel.load(tiny_qwen3_omni_dir, device_map="cuda", fast=FastOptions(max_cache_tokens=2048, compile=False))
    eager = QwenOmniModel(gpu.checkpoint, name="eager", fast=FastOptions(max_cache_tokens=2048, cuda_graphs=False))
    request = first_request(8)
    assert gpu.generate(request).token_ids == eager.generate(request).token_ids
    assert gpu.fast.stats.graphs_captured >= 1


def test_incremental_prompt_equals_full_processing_at_every_step(tiny_qwen3_omni):
    """Each step's prompt, tokenised incrementally (only the appended turns), equals the plain
    processor's full tokenisation: ids, mask, pixel rows, grids, text; image spans as a scan finds them."""
    fast = fast_twin(tiny_qwen3_omni)
    builder = fast.fast.prompts
    engine = fast.fast
    messages = list(first_request().messages)
    odd = screenshot(9, (100, 70))  # off the model's grid: resized to a new object every step
    for step in range(6):
        if step == 2:
            messages.append(UserMessage([TextPart(text="Also this <|im_start|> text"), ImagePart.from_pil(odd)]))
        if step == 4:  # an old screenshot evicted from the context: the prompt changes mid-way
            messages[1] = UserMessage([TextPart(text="Click OK."), TextPart(text="[screenshot removed]")])
        request = ModelRequest(messages=messages, tools=TOOLS)
        before = builder.tokenised_chunks
        got = fast.prepare(request)
        new_chunks = builder.tokenised_chunks - before
        want = tiny_qwen3_omni.prepare(request)
        assert got.text == want.text and got.image_sizes == want.image_sizes
        assert list(got.inputs.keys()) == list(want.inputs.keys())
        for key in want.inputs:
            assert torch.equal(got.inputs[key], want.inputs[key]), (step, key)
        layout = builder.layout_for(got.inputs)
        assert layout is not None and layout.ids == want.inputs["input_ids"][0].tolist()
        scanned = find_image_spans(
            layout.ids, got.inputs["pixel_values"], got.inputs["image_grid_thw"], image_token_id=engine.image_token_id, merge=engine.merge
        )
        assert [(s.start, s.end, s.grid, s.rows) for s in layout.spans] == [(s.start, s.end, s.grid, s.rows) for s in scanned]
        assert engine.plan(got.inputs).spans == layout.spans
        if step in (1, 3, 5):  # a plain append: only the new turns (assistant, tool, generation prompt)
            assert new_chunks <= 3, (step, new_chunks)
        if step == 4:  # the edit is in the first user turn: everything after it is tokenised again
            assert new_chunks >= 5
        call = ToolCall(id=f"call_{step}", name="click", arguments={"x": step})
        messages += [
            AssistantMessage(content=[TextPart(text=f"Step {step}.")], tool_calls=[call]),
            ToolMessage(result=ToolResult(call_id=call.id, name="click", content=[TextPart(text="ok"), ImagePart.from_pil(screenshot(step + 1))])),
        ]
    # Same content in a new object is matched by content key, not re-tokenised.
    again = [m for m in messages]
    again[-1] = ToolMessage(result=ToolResult(call_id="call_5", name="click", content=[TextPart(text="ok"), ImagePart.from_pil(screenshot(6))]))
    fast.prepare(ModelRequest(messages=messages, tools=TOOLS))
    before = builder.tokenised_chunks
    got = fast.prepare(ModelRequest(messages=again, tools=TOOLS))
    assert builder.tokenised_chunks == before  # nothing tokenised: the same prompt
    assert torch.equal(got.inputs["input_ids"], tiny_qwen3_omni.prepare(ModelRequest(messages=again, tools=TOOLS)).inputs["input_ids"])
    assert builder.full_builds == 0


def test_common_prefix_by_blocks_equals_the_item_by_item_scan():
    from omni_agent.runtime.fast.prefix_cache import common_prefix

    base = [i % 97 for i in range(3000)]
    for cut in (0, 1, 511, 512, 513, 1500, 2999):
        other = base[:cut] + [-1] + base[cut + 1 :]
        assert common_prefix(base, other, 3000, block=512) == cut
        assert common_prefix(base, other, cut // 2, block=64) == cut // 2  # never past the limit
    assert common_prefix(base, list(base), 2999) == 2999
