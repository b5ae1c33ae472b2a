"""The batched Talker (omni_agent.runtime.fast.batched_speech) against a stream alone.

Tiny random Qwen3-Omni, CPU, float32, greedy: a stream's codec codes and waveform inside a batch
of different texts that join at different frames are exactly those of ``StreamingSpeaker``
alone; padding a batch to a larger bucket changes nothing; a message too long for a row and a
stream that cannot start fail alone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omni_agent.exceptions import UserError
from omni_agent.models.base import ModelRequest
from omni_agent.runtime.fast.batched_speech import BatchedSpeaker, SpeechJob, bucket_for, speech_job
from omni_agent.runtime.fast.streaming_speech import StreamingSpeaker
from omni_agent.runtime.speech import speech_messages

TEXTS = ("Opening the settings window now.", "I found the form and I am filling in your name.", "Done.")
FRAMES = (12, 9, 7)


def _job(model, text: str, frames: int, **kw) -> SpeechJob:
    prompt = model.prepare(ModelRequest(messages=speech_messages(model.family))).inputs["input_ids"]
    ids = model.processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    fields = dict(speaker_id=2302, stop_ids=[151645], max_frames=frames, min_frames=frames, do_sample=False, chunk_frames=2, max_chunk_frames=4)
    fields.update(kw)
    return SpeechJob(input_ids=prompt, text_ids=ids, **fields)


def _alone(model, job: SpeechJob):
    speaker = StreamingSpeaker(model.model, model.processor)
    chunks = list(speaker.stream(job.input_ids, job.text_ids, **job.stream_kwargs()))
    return speaker.last_codes, np.concatenate([c.samples for c in chunks]), [c.frames for c in chunks]


def _run(speaker: BatchedSpeaker, joins: dict[int, SpeechJob]) -> dict[int, tuple]:
    """Frames until every stream is done; job i joins before frame ``i``'s key. -> {key: (codes, wave, chunk frames)}."""
    got: dict[int, list] = {}
    states = {i: s for i, s in enumerate(speaker.streams)}
    frame = 0
    while frame <= max(joins, default=-1) or speaker.streams:
        if frame in joins:
            states[frame] = speaker.add(joins[frame])
        for state, item in speaker.frame():
            assert not isinstance(item, Exception), item
            got.setdefault(id(state), []).append(item)
        for state in [s for s in speaker.streams if s.done]:
            speaker.remove(state)
        frame += 1
    return {
        k: (s.codes, np.concatenate([c.samples for c in got[id(s)]]), [c.frames for c in got[id(s)]]) for k, s in states.items()
    }


def test_each_stream_in_a_batch_equals_the_stream_alone(tiny_qwen3_omni):
    jobs = [_job(tiny_qwen3_omni, t, f) for t, f in zip(TEXTS, FRAMES)]
    alone = [_alone(tiny_qwen3_omni, job) for job in jobs]
    speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=4, max_tokens=512)
    batched = _run(speaker, {0: jobs[0], 2: jobs[1], 3: jobs[2]})  # they join at different frames
    for (codes, wave, chunking), key in zip(alone, (0, 2, 3)):
        got_codes, got_wave, got_chunking = batched[key]
        assert torch.equal(got_codes, codes)
        assert got_chunking == chunking  # 2, then doubling up to 4, then the rest
        assert got_wave.shape == wave.shape
        np.testing.assert_allclose(got_wave, wave, atol=1e-6)
    assert speaker.free_rows == [0, 1, 2, 3] and not speaker.streams
    # joining together: one batched prefill for the prompts of one length, same codes again
    states = speaker.add_many(jobs)
    assert len({s.slot for s in states}) < len(states)  # at least two share a prefill
    together = _run(speaker, {})
    for i, ((codes, wave, _), state) in enumerate(zip(alone, states)):
        assert torch.equal(state.codes, codes)
        np.testing.assert_allclose(together[i][1], wave, atol=1e-6)


def test_sampled_streams_in_a_batch_draw_what_they_draw_alone(tiny_qwen3_omni):
    """Sampling (seeded, repetition penalty, top-k / top-p) runs batched per settings group and
    gives each stream the codes its own generator gives it alone."""
    settings = [dict(seed=1), dict(seed=2, top_k=5, temperature=0.7), dict(seed=3, top_p=0.8)]
    jobs = [_job(tiny_qwen3_omni, t, 12, min_frames=2, do_sample=True, **kw) for t, kw in zip(TEXTS, settings)]
    alone = [_alone(tiny_qwen3_omni, job) for job in jobs]
    speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=4, max_tokens=512)
    batched = _run(speaker, {0: jobs[0], 1: jobs[1], 2: jobs[2]})
    for (codes, wave, _), key in zip(alone, (0, 1, 2)):
        assert torch.equal(batched[key][0], codes)
        np.testing.assert_allclose(batched[key][1], wave, atol=1e-6)


def test_residual_codes_follow_the_stream_not_the_code_predictors_config(tiny_qwen3_omni):
    """transformers' generate() writes the Talker's do_sample onto the code predictor's
    generation_config (shared, mutable state): a greedy stream must stay greedy whatever the last
    generate() left there, and a sampled stream samples its residual codes from its own generator."""
    cp_config = tiny_qwen3_omni.model.talker.code_predictor.generation_config
    greedy = _job(tiny_qwen3_omni, TEXTS[0], 10)
    sampled = _job(tiny_qwen3_omni, TEXTS[0], 10, do_sample=True, seed=5, top_k=1)  # first code greedy in effect
    before = cp_config.do_sample
    try:
        cp_config.do_sample = False
        greedy_codes = _alone(tiny_qwen3_omni, greedy)[0]
        cp_config.do_sample = True
        assert torch.equal(_alone(tiny_qwen3_omni, greedy)[0], greedy_codes)
        speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=2, max_tokens=512)
        batched = _run(speaker, {0: greedy, 1: sampled})
        assert torch.equal(batched[0][0], greedy_codes)
        sampled_alone = _alone(tiny_qwen3_omni, sampled)[0]
        assert torch.equal(batched[1][0], sampled_alone)
        assert sampled_alone[0, 0, 0] == greedy_codes[0, 0, 0]  # top_k=1: frame 0's first code is greedy's ...
        assert not torch.equal(sampled_alone[0, 1:, 0], greedy_codes[0, 1:, 0])  # ... its residual codes are sampled
    finally:
        cp_config.do_sample = before


def test_padding_to_a_bucket_changes_nothing(tiny_qwen3_omni):
    speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=8, max_tokens=512)
    states = [speaker.add(_job(tiny_qwen3_omni, t, f)) for t, f in zip(TEXTS, FRAMES)]
    engine = speaker.engine
    past = torch.cat([s.past_hidden for s in states])
    code0 = torch.tensor([[3], [17], [40]])
    with torch.inference_mode():
        small = engine.code_predictor(past, code0, bucket=4)
        large = engine.code_predictor(past, code0, bucket=8)
        embeds = small[1] + 0.5
        rows, slots = [s.row for s in states], [s.slot for s in states]
        step_small = engine.step(embeds, rows, slots, bucket=4)
        step_large = engine.step(embeds, rows, slots, bucket=8)
    assert bucket_for(3, 8) == 4 and small[0].shape == (3, engine.groups - 1)
    for a, b in zip(small + step_small, large + step_large):
        assert torch.equal(a, b)
    # the padding rows wrote only the scratch row: the streams' rows are as the step left them
    assert engine.cache.scratch == 8 and bool((engine.cache.k[:, 3:8] == 0).all())


def test_each_rows_talker_step_and_code_predictor_are_its_own(tiny_qwen3_omni):
    """Rows at different slots: each row's logits in a batch of 3 equal that row's step alone
    (batch 1), so no row reads another's keys or slots."""
    speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=4, max_tokens=512)
    first = speaker.add(_job(tiny_qwen3_omni, TEXTS[0], 12))
    for _ in range(3):
        speaker.frame()
    states = [first, *speaker.add_many([_job(tiny_qwen3_omni, t, 12) for t in TEXTS[1:]])]
    assert states[0].slot > states[1].slot  # the first one is 3 frames ahead
    engine = speaker.engine
    past = torch.cat([s.past_hidden for s in states])
    code0 = torch.tensor([[3], [17], [40]])
    with torch.inference_mode():
        codes, summed = engine.code_predictor(past, code0)
        embeds = summed + 0.25
        hidden, scores = engine.step(embeds, [s.row for s in states], [s.slot for s in states])
        for i, s in enumerate(states):
            one_codes, one_summed = engine.code_predictor(past[i : i + 1], code0[i : i + 1])
            one_hidden, one_scores = engine.step(embeds[i : i + 1], [s.row], [s.slot])
            torch.testing.assert_close(one_codes, codes[i : i + 1], rtol=0, atol=0)
            torch.testing.assert_close(one_summed, summed[i : i + 1], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(one_scores, scores[i : i + 1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(one_hidden, hidden[i : i + 1], rtol=1e-5, atol=1e-5)


def test_a_message_too_long_for_a_row_is_refused_and_a_long_cap_is_clipped(tiny_qwen3_omni):
    speaker = BatchedSpeaker(tiny_qwen3_omni.model, tiny_qwen3_omni.processor, max_streams=2, max_tokens=48)
    with pytest.raises(UserError, match="Talker KV slots"):
        speaker.add(_job(tiny_qwen3_omni, " ".join(["word"] * 40), 30))
    assert speaker.free_rows == [0, 1]  # nothing taken
    state = speaker.add(_job(tiny_qwen3_omni, "Done.", 2, max_frames=400))
    assert state.max_frames == 48 - state.slot - 1  # the row's end, not the generous cap


def test_speech_job_matches_speak_stream_settings(tiny_qwen3_omni):
    job = speech_job(tiny_qwen3_omni, "  Saving the file. ", voice="ethan")
    assert job.text_ids == tiny_qwen3_omni.processor.tokenizer("Saving the file.", add_special_tokens=False)["input_ids"]
    assert job.speaker_id == 2302 and job.do_sample and job.max_frames >= 2
    with pytest.raises(UserError, match="non-empty"):
        speech_job(tiny_qwen3_omni, "   ")
    with pytest.raises(UserError, match="unknown voice"):
        speech_job(tiny_qwen3_omni, "hi", voice="nobody")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_captured_batches_match_the_stream_alone_on_gpu(tiny_qwen3_omni_dir):
    from omni_agent.runtime import QwenOmniModel

    gpu = QwenOmniModel.load(tiny_qwen3_omni_dir, device_map="cuda", enable_talker=True)
    jobs = [_job(gpu, t, f) for t, f in zip(TEXTS, FRAMES)]
    alone = [_alone(gpu, job) for job in jobs]
    speaker = BatchedSpeaker(gpu.model, gpu.processor, max_streams=4, max_tokens=512)
    speaker.warm_up(left_context=25, max_chunk_frames=4)
    batched = _run(speaker, {0: jobs[0], 2: jobs[1], 3: jobs[2]})
    assert speaker.engine.graphs and speaker.engine._talker_graphs and speaker.engine._cp_graphs
    for (codes, _, _), key in zip(alone, (0, 2, 3)):
        assert torch.equal(batched[key][0].cpu(), codes.cpu())
