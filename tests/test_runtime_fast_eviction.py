"""In-place eviction (omni_agent.runtime.fast.eviction): the alignment on token lists, then the
tiny float32 Qwen3-Omni on CPU against a full re-prefill of the same prompt."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from omni_agent.runtime.fast.eviction import apply_to_state, plan_cache_edit
from omni_agent.runtime.fast.prefix_cache import ImageSpan, PrefixState

VS, PAD, VE = 900, 901, 902
"""Stand-ins for <|vision_start|>, <|image_pad|>, <|vision_end|>."""


def build(segments: list) -> tuple[list[int], list[ImageSpan], list[int], list[int]]:
    """ids, image spans, per-token max and min positions of a prompt given as text lists and
    ("img", key, pads, span) items (an image of ``pads`` tokens spanning ``span`` positions)."""
    ids: list[int] = []
    spans: list[ImageSpan] = []
    pmax: list[int] = []
    pmin: list[int] = []
    nxt = 0
    for seg in segments:
        if isinstance(seg, tuple):
            _, key, pads, span = seg
            ids.append(VS)
            pmax.append(nxt)
            pmin.append(nxt)
            start = len(ids) - 1
            nxt += 1
            for j in range(pads):
                ids.append(PAD)
                pmin.append(nxt)
                pmax.append(nxt + min(j, span - 1))
            spans.append(ImageSpan(start=start, end=len(ids), grid=(1, 2, pads // 2 * 4), rows=(0, 0), key=key))
            nxt += span
            ids.append(VE)
            pmax.append(nxt)
            pmin.append(nxt)
            nxt += 1
        else:
            for t in seg:
                ids.append(t)
                pmax.append(nxt)
                pmin.append(nxt)
                nxt += 1
    return ids, spans, pmax, pmin


def state_of(segments: list) -> PrefixState:
    ids, spans, pmax, pmin = build(segments)
    state = PrefixState()
    state.append(ids, pmax, spans, pmin)
    return state


T = list(range(10, 30))  # 20 text tokens
U = list(range(40, 60))
W = list(range(60, 75))
HOLE = [5, 6, 7]  # the placeholder text


def test_evicted_image_keeps_what_follows_and_fills_the_gap_with_the_placeholder():
    state = state_of([T, ("img", "a", 8, 10), U, ("img", "b", 8, 10), W])
    new_ids, new_spans, _, _ = build([T, HOLE, U, ("img", "b", 8, 10), W, [99, 98, 97]])
    # Built without the image, the new prompt's <|vision_start|>/<|vision_end|> are gone too.
    reuse = state.reusable(new_ids, new_spans)
    assert reuse == len(T)  # the plain prefix cache stops at the evicted image
    edit = plan_cache_edit(state, new_ids, new_spans, reuse=reuse, min_gain=1)
    assert edit is not None
    assert [(b.src, b.dst, b.length) for b in edit.blocks][0] == (0, 0, len(T))
    kept_after = edit.blocks[1]
    assert kept_after.src == len(T) + 10 and kept_after.dst == len(T) + len(HOLE)  # image (8 + 2) out, hole in
    assert edit.reuse_end == len(new_ids) - 3  # everything but the new turn
    assert [(i.start, i.end) for i in edit.inserts] == [(len(T), len(T) + len(HOLE))]
    before = state.position_cummax[len(T) - 1]
    assert edit.inserts[0].position == before + 1
    kept_positions = state.position_cummax[kept_after.src : kept_after.src + kept_after.length]
    apply_to_state(state, edit, new_ids, new_spans)
    assert state.token_ids == new_ids[: edit.reuse_end]
    # What follows the gap keeps its positions; the placeholder sits inside the gap.
    assert state.position_cummax[kept_after.dst : kept_after.dst + kept_after.length] == kept_positions
    assert state.position_cummax[len(T) : len(T) + 3] == [before + 1, before + 2, before + 3]
    assert state.position_cummax == sorted(state.position_cummax)
    assert [(s.key, s.start) for s in state.images] == [("b", new_spans[0].start)]
    assert state.reusable(new_ids, new_spans) == edit.reuse_end  # the next step is a plain append


def test_two_evicted_images_give_two_placeholders_in_one_edit():
    state = state_of([T, ("img", "a", 8, 10), U, ("img", "b", 8, 10), W, ("img", "c", 8, 10), T])
    new_ids, new_spans, _, _ = build([T, HOLE, U, HOLE, W, ("img", "c", 8, 10), T, [1, 2]])
    edit = plan_cache_edit(state, new_ids, new_spans, reuse=state.reusable(new_ids, new_spans), min_gain=1)
    assert edit is not None and len(edit.inserts) == 2
    assert edit.reuse_end == len(new_ids) - 2
    assert edit.dropped_tokens == 2 * 10
    assert edit.kept_tokens + edit.inserted_tokens == edit.reuse_end


def test_a_placeholder_longer_than_the_positions_it_fills_falls_back_to_the_prefix_cut():
    state = state_of([T, ("img", "a", 8, 2), U, W])  # the image spans only 2 positions (+2 markers)
    new_ids, new_spans, _, _ = build([T, list(range(100, 110)), U, W, [1]])
    assert plan_cache_edit(state, new_ids, new_spans, reuse=len(T), min_gain=1) is None


def test_no_edit_when_the_cache_is_a_prefix_or_the_gain_is_small():
    state = state_of([T, ("img", "a", 8, 10), U])
    ids, spans, _, _ = build([T, ("img", "a", 8, 10), U, [1, 2, 3]])
    assert plan_cache_edit(state, ids, spans, reuse=state.reusable(ids, spans)) is None
    new_ids, new_spans, _, _ = build([T, HOLE, U, [1, 2, 3]])
    assert plan_cache_edit(state, new_ids, new_spans, reuse=len(T), min_gain=len(U) + 5) is None


def test_an_image_in_the_gap_is_never_computed_in_the_middle():
    state = state_of([T, ("img", "a", 8, 10), U, W])
    # The evicted image's place now holds ANOTHER image: cannot be filled in place.
    new_ids, new_spans, _, _ = build([T, ("img", "z", 8, 10), U, W, [1]])
    edit = plan_cache_edit(state, new_ids, new_spans, reuse=state.reusable(new_ids, new_spans), min_gain=1)
    assert edit is None


def test_the_last_prompt_token_is_always_recomputed_and_images_are_kept_whole():
    state = state_of([T, ("img", "a", 8, 10), U, ("img", "b", 8, 10)])
    new_ids, new_spans, _, _ = build([T, HOLE, U, ("img", "b", 8, 10)])  # ends with the kept image
    edit = plan_cache_edit(state, new_ids, new_spans, reuse=len(T), min_gain=1)
    assert edit is not None
    assert edit.reuse_end < len(new_ids)
    assert all(not (s.start < edit.reuse_end < s.end) for s in new_spans)


# -- the tiny model, CPU, float32 ------------------------------------------------------------


import torch  # noqa: E402 - the qwen extra is part of every test install


def _wide_shot(i: int):
    from PIL import Image, ImageDraw

    # 1024x64: 2 x 32 merged patches -> 64 image tokens spanning 32 positions, room for the
    # placeholder text the byte-level test tokenizer makes of "[screenshot removed]".
    image = Image.new("RGB", (1024, 64), ((41 * i) % 255, 120, 200))
    ImageDraw.Draw(image).rectangle((20 + 60 * i, 8, 70 + 60 * i, 40), fill=(255, 255, 255))
    return image


def _episode(steps: int):
    from omni_agent.messages import AssistantMessage, ImagePart, SystemMessage, TextPart, ToolCall, ToolMessage, ToolResult, UserMessage

    messages = [SystemMessage("You operate a desktop."), UserMessage([TextPart(text="Fill the form.")])]
    for i in range(steps):
        call = ToolCall(id=f"call_{i}", name="click", arguments={"x": i})
        result = ToolResult(call_id=call.id, name="click", content=[TextPart(text="ok"), ImagePart.from_pil(_wide_shot(i))])
        messages += [AssistantMessage(content=[], tool_calls=[call]), ToolMessage(result=result)]
    return messages


def _twin(model, **options):
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.runtime.fast import FastOptions

    checkpoint = dataclasses.replace(model.checkpoint, processor=copy.copy(model.checkpoint.processor))
    return QwenOmniModel(checkpoint, name="fast", fast=FastOptions(max_cache_tokens=4096, **options))


TOOLS = [
    {
        "type": "function",
        "function": {"name": "click", "description": "Click at x.", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}},
    }
]


def _prepare(model, messages):
    from omni_agent.models.base import GenerationSettings, ModelRequest

    request = ModelRequest(messages=messages, tools=TOOLS, settings=GenerationSettings(max_new_tokens=2, temperature=0.0))
    return model.prepare(request).inputs


def test_in_place_eviction_on_the_tiny_model_against_a_full_re_prefill(tiny_qwen3_omni):
    from omni_agent.context import apply_image_budget

    messages = _episode(4)
    fast = _twin(tiny_qwen3_omni)
    engine = fast.fast
    before = _prepare(fast, messages)  # 4 screenshots, all cached
    with torch.inference_mode():
        engine.prefill(before, engine.plan(before))
    old_rows = engine.cache.k.clone()
    old_state = copy.deepcopy(engine.state)
    evicted, dropped = apply_image_budget(messages, max_images=2, chunk=2)
    assert dropped == 2
    after = _prepare(fast, evicted)
    plan = engine.plan(after)
    edit = plan.edit
    assert edit is not None and len(edit.inserts) == 2
    assert plan.reuse == old_state.images[0].start  # the plain cache would cut at the first evicted image
    assert plan.to_compute < len(plan.ids) - plan.reuse  # in place: far less to compute
    with torch.inference_mode():
        got, _ = engine.prefill(after, plan)
    # Kept rows moved bit for bit, positions of what follows kept.
    for b in edit.blocks:
        assert torch.equal(engine.cache.k[:, :, :, b.dst : b.dst + b.length], old_rows[:, :, :, b.src : b.src + b.length])
        assert engine.state.position_min[b.dst : b.dst + b.length] == old_state.position_min[b.src : b.src + b.length]
    assert engine.state.token_ids == plan.ids
    first = edit.inserts[0]
    in_place_rows = engine.cache.k[:, :, :, first.start : first.end].clone()

    reference = _twin(tiny_qwen3_omni, eviction="reprefill")
    ref_engine = reference.fast
    with torch.inference_mode():
        ref_logits, _ = ref_engine.prefill(after, ref_engine.plan(after))  # empty cache: all of it
    # The first placeholder sees exactly the prompt before it: its rows equal the re-prefill's.
    ref_rows = ref_engine.cache.k[:, :, :, first.start : first.end]
    assert torch.allclose(in_place_rows, ref_rows, atol=1e-5, rtol=1e-4)
    # What follows was computed with the evicted images visible: close, not equal.
    err = float((got - ref_logits).norm() / ref_logits.norm())
    assert 0.0 < err < 0.25, err
    assert int(got.argmax()) == int(ref_logits.argmax())


def test_long_episode_in_place_keeps_greedy_generation_running(tiny_qwen3_omni):
    """Steps through evictions: every eviction is done in place and later steps append only."""
    from omni_agent.context import apply_image_budget
    from omni_agent.models.base import GenerationSettings, ModelRequest

    fast = _twin(tiny_qwen3_omni)
    settings = GenerationSettings(max_new_tokens=3, temperature=0.0)
    history = _episode(0)
    evictions = 0
    builder = fast.fast.prompts
    for step in range(6):
        history = history + _episode(step + 1)[-2:]
        messages, _ = apply_image_budget(history, max_images=2, chunk=2)
        tokenised = builder.tokenised_chunks
        result = fast.generate(ModelRequest(messages=messages, tools=TOOLS, settings=settings))
        assert result.completion_tokens >= 1
        if "evict_in_place" in result.timings:
            evictions += 1
            assert result.timings["prefilled_tokens"] < result.prompt_tokens / 2
            # Only the two evicted turns and the new ones are tokenised again, not all that follows.
            assert builder.tokenised_chunks - tokenised <= 4
    assert evictions == fast.fast.stats.evictions_in_place >= 2
