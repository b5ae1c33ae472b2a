"""GPU speech benchmark: spoken progress messages, plain generate(return_audio=True) vs streaming.

Builds the full-size Qwen3-Omni-30B-A3B (Thinker + Talker + Code2Wav) with random bf16 weights on
the GPU, wraps it in the real backend and speaks progress messages of 5-25 words two ways:
``speak()`` on the plain path (Thinker forced token by token, then the Talker, then Code2Wav:
nothing streams) and ``speak_stream()`` (no Thinker pass, our frame loop, Code2Wav in chunks).
Random weights would stop at random frames, so the frame count is fixed at ~5 codec frames
(0.4 s) per word through SpeechSettings. Printed per message: first-audio latency, total time,
audio seconds, real-time factor (audio seconds per second of compute), peak memory; and the
check that both produce the same codes with greedy sampling.

    python evals/perf/gpu_speech.py            # exits 2 with a clear message without CUDA
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import gpu_smoke  # noqa: E402
from gpu_step import Dev  # noqa: E402

MESSAGES = {
    5: "Opening the settings window now.",
    10: "I found the form and I am filling in your name.",
    15: "The download finished, so I am now unpacking the archive into your documents folder.",
    25: (
        "I clicked the save button, the dialog closed without errors, and the spreadsheet now shows "
        "the updated totals for all twelve months of this year."
    ),
}
FRAMES_PER_WORD = 5  # 12.5 Hz codec: 0.4 s of speech per word
TARGET_FIRST_AUDIO_MS = 300.0
TARGET_REALTIME = 3.0


def log(message: str) -> None:
    print(f"[gpu_speech {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=gpu_smoke.DEFAULT_ARCH)
    parser.add_argument("--plain-words", default="5,15", help="messages also spoken on the plain path (slow)")
    parser.add_argument("--chunk-frames", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny model, CPU allowed: checks the script, measures nothing")
    args = parser.parse_args(argv)
    refused = gpu_smoke.require_torch_cuda(
        "gpu_speech", "the full-size Qwen3-Omni-30B-A3B with its Talker", allow_cpu=args.dry_run
    )
    if refused is not None:
        return refused
    import torch
    import numpy as np
    import transformers

    from omni_agent.models.base import GenerationSettings, ModelRequest
    from omni_agent.runtime import QwenOmniModel, SpeechSettings
    from omni_agent.runtime.fast.streaming_speech import StreamingSpeaker
    from omni_agent.runtime.generation import eos_token_ids
    from omni_agent.runtime.speech import speech_generation_extras, speech_messages
    from omni_agent.runtime.synthetic import qwen3_omni_config_from_arch, tiny_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = Dev(device)
    report: dict = gpu_smoke.run_report("gpu_speech")
    t0 = time.perf_counter()
    if args.dry_run:
        config = tiny_config("qwen3_omni")
    else:
        config = qwen3_omni_config_from_arch(json.loads(args.arch.read_text()), enable_audio_output=True)
    model = gpu_smoke.build_random_model(config, device, dtype=torch.float32 if args.dry_run else torch.bfloat16)
    log(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params (with Talker) in {time.perf_counter() - t0:.1f} s, {dev.allocated_gib():.1f} GiB")
    with tempfile.TemporaryDirectory() as tmp:
        processor = gpu_smoke.build_processor(Path(tmp))
    qwen = QwenOmniModel.from_objects(model, processor, name="qwen3-omni (random bf16)")
    tokenizer = processor.tokenizer

    def settings_for(text: str, words: int) -> SpeechSettings:
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        per_token = FRAMES_PER_WORD * words / n
        return SpeechSettings(seed=0, min_frames_per_token=per_token, max_frames_per_token=per_token)

    def plain(text: str, settings: SpeechSettings):
        """speak()'s own call, kept here to read its timings (Thinker vs Talker + Code2Wav)."""
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prepared = qwen.prepare(ModelRequest(messages=speech_messages(qwen.family)))
        thinker, talker = speech_generation_extras(
            qwen.family, prompt_length=prepared.prompt_tokens, text_ids=text_ids, stop_id=eos_token_ids(tokenizer)[0], settings=settings
        )
        return qwen._generate_locked(
            prepared, GenerationSettings(max_new_tokens=len(text_ids) + 1, temperature=0.0, seed=settings.seed),
            on_text=None, preprocess_s=0.0, return_audio=True, voice="Ethan", thinker_extra=thinker, talker_extra=talker,
        )  # fmt: skip

    log("warm-up (both paths, 5 words)")
    warm = settings_for(MESSAGES[5], 5)
    plain(MESSAGES[5], warm)
    list(qwen.speak_stream(MESSAGES[5], settings=warm, chunk_frames=args.chunk_frames))

    rows = []
    plain_words = {int(w) for w in args.plain_words.split(",") if w}
    for words, text in MESSAGES.items():
        settings = settings_for(text, words)
        row: dict = {"words": words}
        if words in plain_words:
            dev.sync()
            dev.reset_peak()
            t = time.perf_counter()
            result = plain(text, settings)
            total = time.perf_counter() - t
            audio_s = result.waveform.size / 24000
            talker_s = result.timings.get("talker", float("nan"))
            row["plain"] = {
                "first_audio_ms": total * 1000, "total_ms": total * 1000, "thinker_ms": (total - talker_s) * 1000,
                "talker_code2wav_ms": talker_s * 1000, "audio_s": audio_s, "realtime_x": audio_s / total,
                "talker_realtime_x": audio_s / talker_s, "frames": round(audio_s * 12.5),
                "peak_gib": dev.peak_gib(),
            }  # fmt: skip
        dev.sync()
        dev.reset_peak()
        t = time.perf_counter()
        first = None
        samples = 0
        frames = 0
        for chunk in qwen.speak_stream(text, settings=settings, chunk_frames=args.chunk_frames):
            if first is None:
                first = time.perf_counter() - t
            samples += chunk.samples.size
            frames += chunk.frames
        total = time.perf_counter() - t
        audio_s = samples / 24000
        row["stream"] = {
            "first_audio_ms": first * 1000, "total_ms": total * 1000, "audio_s": audio_s, "realtime_x": audio_s / total,
            "frames": frames, "ms_per_frame": total * 1000 / max(frames, 1), "peak_gib": dev.peak_gib(),
        }  # fmt: skip
        rows.append(row)
        p = row.get("plain")
        log(
            f"{words:2d} words: "
            + (f"plain first audio {p['first_audio_ms']:.0f} ms (Thinker {p['thinker_ms']:.0f}, Talker+Code2Wav {p['talker_code2wav_ms']:.0f}), {p['realtime_x']:.2f}x real time | " if p else "")
            + f"stream first audio {row['stream']['first_audio_ms']:.0f} ms, {row['stream']['ms_per_frame']:.1f} ms/frame, {row['stream']['realtime_x']:.2f}x real time ({frames} frames)"
        )
    report["messages"] = rows

    # Same codes? Greedy Talker on both paths for a short message.
    log("check: greedy codes, plain generate() vs the streamed frame loop")
    text = MESSAGES[5]
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    prepared = qwen.prepare(ModelRequest(messages=speech_messages(qwen.family)))
    stop = eos_token_ids(tokenizer)
    thinker, talker = speech_generation_extras(qwen.family, prompt_length=prepared.prompt_tokens, text_ids=text_ids, stop_id=stop[0], settings=SpeechSettings())
    for key in ("temperature", "top_k", "top_p"):
        talker.pop(key)
    talker.update(do_sample=False, max_new_tokens=12, min_new_tokens=12)
    ref = qwen._generate_locked(
        prepared, GenerationSettings(max_new_tokens=len(text_ids) + 1, temperature=0.0), on_text=None, preprocess_s=0.0,
        return_audio=True, voice="Ethan", thinker_extra=thinker, talker_extra=talker,
    ).waveform  # fmt: skip
    codes = {}
    for engine in ("modules", "static"):
        speaker = StreamingSpeaker(model, processor, engine=engine)
        list(speaker.stream(prepared.inputs["input_ids"], text_ids, speaker_id=config.talker_config.speaker_id["ethan"], stop_ids=stop, max_frames=12, min_frames=12, do_sample=False))
        codes[engine] = speaker.last_codes
    with torch.inference_mode():
        mine = model.code2wav.chunked_decode(codes["modules"][..., :11], chunk_size=300, left_context_size=25).float().reshape(-1).cpu().numpy()
    same = mine.shape == ref.shape and bool(np.allclose(mine, ref, atol=1e-3))
    err = float(np.linalg.norm(mine - ref) / max(np.linalg.norm(ref), 1e-12)) if mine.shape == ref.shape else float("nan")
    agree = 0
    for f in range(codes["static"].shape[-1]):
        if not torch.equal(codes["static"][..., f], codes["modules"][..., f]):
            break
        agree += 1
    # Logits of the static engine (our layers; CUDA graph for the decode step) vs the modules on
    # the same inputs: the Talker prefill, one Talker decode step, the code predictor's first step.
    from transformers import DynamicCache

    from omni_agent.runtime.fast.streaming_speech import _StaticFrameEngine

    def rel(a, b) -> float:
        return float((a.float() - b.float()).norm() / b.float().norm())

    with torch.inference_mode():
        spk = StreamingSpeaker(model, processor)
        forced = torch.tensor([list(text_ids) + [stop[0]]], device=device)
        ids = prepared.inputs["input_ids"].to(device)
        parts = spk.talker_inputs(ids, torch.cat((ids, forced), dim=1), config.talker_config.speaker_id["ethan"], stop)
        engine = _StaticFrameEngine(model.talker, max_tokens=2048, groups=int(config.talker_config.num_code_groups), graphs=True)
        hidden, scores = engine.prefill(parts["embeds"])
        cache = DynamicCache(config=model.talker.config)
        out = model.talker.model(inputs_embeds=parts["embeds"], past_key_values=cache, use_cache=True)
        ref_scores = model.talker.codec_head(out.last_hidden_state[:, -1]).float()
        step_in = model.talker.get_input_embeddings()(torch.tensor([[7]], device=device)) + parts["trailing"][:, :1]
        _, step_scores = engine.step(step_in, parts["embeds"].shape[1])
        out2 = model.talker.model(inputs_embeds=step_in, past_key_values=cache, use_cache=True)
        ref_step = model.talker.codec_head(out2.last_hidden_state[:, -1]).float()
        code0 = torch.tensor([[7]], device=device)
        engine.code_predictor(out.last_hidden_state[:, -1:], code0)
        cp = model.talker.code_predictor
        x = torch.cat((out.last_hidden_state[:, -1:], model.talker.get_input_embeddings()(code0)), dim=1)
        ref_cp = cp.lm_head[0](cp.model(inputs_embeds=x).last_hidden_state[:, -1]).float()
        h, _ = engine.cp_stack.forward(x, engine.cp_prefill_pos, engine.cp_cache, 0, return_hidden=True)
        got_cp = torch.nn.functional.linear(h[:, -1], cp.lm_head[0].weight).float()
    static_checks = {
        "talker_prefill_rel_err": rel(scores, ref_scores), "talker_graph_step_rel_err": rel(step_scores, ref_step),
        "code_predictor_rel_err": rel(got_cp, ref_cp),
    }  # fmt: skip
    report["check"] = {
        **static_checks,
        "modules_engine_same_waveform_as_generate": same, "rel_err": err,
        "static_engine_frames_equal_to_modules_engine": f"{agree}/{codes['static'].shape[-1]} (greedy, bf16)",
    }  # fmt: skip
    log(f"check: {report['check']}")

    print("")
    print("== gpu_speech: Qwen3-Omni-30B-A3B spoken progress messages (random bf16 weights) ==")
    print(f"machine   {report['machine']}")
    print(f"versions  torch {torch.__version__}, transformers {transformers.__version__}, {report['date']}")
    print(f"frames    {FRAMES_PER_WORD} codec frames (0.4 s) per word, streaming chunks of {args.chunk_frames} frames")
    print("")
    print("words | plain: first audio  total  Talker+C2W  x real time | stream: first audio  total  ms/frame  x real time | audio s")
    for r in rows:
        p, s = r.get("plain"), r["stream"]
        ptxt = f"{p['first_audio_ms']:10.0f} {p['total_ms']:7.0f} {p['talker_code2wav_ms']:10.0f} {p['realtime_x']:10.2f}" if p else " " * 42
        print(f"{r['words']:5d} | {ptxt} | {s['first_audio_ms']:12.0f} {s['total_ms']:7.0f} {s['ms_per_frame']:8.1f} {s['realtime_x']:10.2f} | {s['audio_s']:.1f}")
    fifteen = next(r for r in rows if r["words"] == 15)["stream"]
    rt = min(r["stream"]["realtime_x"] for r in rows)
    print(f"check     {report['check']}")
    print(f"targets   first audio of 15 words <= {TARGET_FIRST_AUDIO_MS:.0f} ms: {'MET' if fifteen['first_audio_ms'] <= TARGET_FIRST_AUDIO_MS else 'NOT met'} ({fifteen['first_audio_ms']:.0f} ms); Talker >= {TARGET_REALTIME:.0f}x real time: {'MET' if rt >= TARGET_REALTIME else 'NOT met'} ({rt:.2f}x)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
