"""GPU speech benchmark: N concurrent spoken messages through ONE batched Talker (the speech scheduler).

Builds the full-size Qwen3-Omni-30B-A3B (Thinker + Talker + Code2Wav) with random bf16 weights on
the GPU, wraps it in the real backend and sends N = 1, 4, 16 concurrent 15-word messages (each a
different text) to ``omni_agent.serve.speech_scheduler.SpeechScheduler``: one thread runs one
batched Talker step + one batched code-predictor run per codec frame for every active stream.
Random weights would stop at random frames, so each message is fixed at 5 codec frames (0.4 s)
per word through SpeechSettings. Printed per N: first audio p50 / max (request in -> first
playable chunk), the Talker's real-time factor per stream (compute seconds / audio seconds,
p50 / max), frames per batch size; the Talker step + code predictor time per batch bucket; and
the check that one stream alone (StreamingSpeaker) and inside a batch agree (greedy codes,
Talker logits within bf16 tolerance, same top-1).

    python evals/perf/gpu_speech_batch.py --json $OUT/gpu_speech_batch.json   # exits 2 without CUDA
    python evals/perf/gpu_speech_batch.py --dry-run                           # tiny model on CPU: checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import gpu_smoke  # noqa: E402
from gpu_step import Dev  # noqa: E402

FRAMES_PER_WORD = 5  # 12.5 Hz codec: 0.4 s of speech per word
NUMBERS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen".split()
TARGETS = {"first_audio_ms": {1: 300.0, 16: 600.0}, "rtf_at_16": 0.3}


def log(message: str) -> None:
    print(f"[gpu_speech_batch {time.strftime('%H:%M:%S')}] {message}", flush=True)


def message(i: int) -> str:
    """Fifteen words, a different text per stream."""
    return f"The download finished, so I am now unpacking the archive into your folder number {NUMBERS[i % 16]}."


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run_concurrent(scheduler, jobs: list) -> list[dict]:
    """Every job from its own thread at once; per stream: first audio, total, audio seconds, RTF."""
    barrier = threading.Barrier(len(jobs))
    rows: list[dict] = [{} for _ in jobs]

    def client(i: int) -> None:
        barrier.wait()
        t0 = time.perf_counter()
        first, samples, frames = None, 0, 0
        for chunk in scheduler.chunks(jobs[i]):
            first = first if first is not None else time.perf_counter() - t0
            samples += chunk.samples.size
            frames += chunk.frames
        total = time.perf_counter() - t0
        rows[i] = {"first_audio_ms": first * 1000, "total_s": total, "audio_s": samples / 24000, "frames": frames,
                   "rtf": total / (samples / 24000)}  # fmt: skip

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return rows


def engine_frame_times(speaker, dev, buckets: list[int], reps: int) -> dict[int, dict[str, float]]:
    """Talker step and code predictor alone per batch bucket (graph replays, synchronised)."""
    import torch

    engine = speaker.engine
    hidden = engine.talker_stack.model.config.hidden_size
    out = {}
    for b in buckets:
        past = torch.randn((b, 1, hidden), dtype=engine.dtype, device=engine.device)
        code0 = torch.randint(0, 1024, (b, 1), device=engine.device)
        rows, slots = list(range(b)), [120] * b  # a 15-word message's slots (prompt + frames)
        timings = {}
        for name, fn in (("code_predictor_ms", lambda: engine.code_predictor(past, code0)),
                         ("talker_step_ms", lambda: engine.step(past, rows, slots))):  # fmt: skip
            with torch.inference_mode():
                fn()
                dev.sync()
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                dev.sync()
            timings[name] = (time.perf_counter() - t) * 1000 / reps
        timings["frame_ms"] = timings["code_predictor_ms"] + timings["talker_step_ms"]
        out[b] = timings
    return out


def equivalence(qwen, speaker, tokenizer, device) -> dict:
    """One stream alone (StreamingSpeaker, graphs) vs the same stream in a batch of 3 (greedy)."""
    import torch

    from omni_agent.runtime.fast.batched_speech import speech_job
    from omni_agent.runtime.fast.streaming_speech import StreamingSpeaker
    from omni_agent.runtime.speech import SpeechSettings

    frames = 12
    settings = SpeechSettings(seed=0, min_frames_per_token=1.0, max_frames_per_token=1.0)
    jobs = [speech_job(qwen, message(i), settings=settings) for i in range(3)]
    for job in jobs:
        job.do_sample, job.max_frames, job.min_frames = False, frames, frames
    alone = StreamingSpeaker(qwen.model, qwen.processor)
    list(alone.stream(jobs[0].input_ids, jobs[0].text_ids, **jobs[0].stream_kwargs()))
    states = speaker.add_many(jobs)
    while speaker.streams:
        speaker.frame()
        for s in [s for s in speaker.streams if s.done]:
            speaker.remove(s)
    same = 0
    for f in range(frames):
        if not torch.equal(states[0].codes[..., f], alone.last_codes[..., f]):
            break
        same += 1
    # logits: the alone engine's prefill + one Talker step vs the batched prefill + step (3 rows)
    with torch.inference_mode():
        job = jobs[0]
        ids = job.input_ids.to(device)
        forced = torch.tensor([job.text_ids + [job.stop_ids[0]]], device=device)
        parts = alone.talker_inputs(ids, torch.cat((ids, forced), dim=1), job.speaker_id, job.stop_ids)
        engine = alone._frames_engine()
        _, ref_prefill = engine.prefill(parts["embeds"])
        step_in = qwen.model.talker.get_input_embeddings()(torch.tensor([[7]], device=device)) + parts["trailing"][:, :1]
        n = parts["embeds"].shape[1]
        _, ref_step = engine.step(step_in, n)
        states = speaker.add_many(jobs)
        got_prefill = states[0].scores
        _, got_step = speaker.engine.step(step_in.expand(3, -1, -1), [s.row for s in states], [n] * 3)
        for s in list(speaker.streams):
            speaker.remove(s)

    def rel(a, b) -> float:
        return float((a.float() - b.float()).norm() / b.float().norm())

    return {
        "greedy_frames_equal": f"{same}/{frames}",
        "prefill_rel_err": rel(got_prefill, ref_prefill), "step_rel_err": rel(got_step[:1], ref_step),
        "prefill_top1_same": bool(got_prefill.argmax() == ref_prefill.argmax()),
        "step_top1_same": bool(got_step[0].argmax() == ref_step[0].argmax()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=gpu_smoke.DEFAULT_ARCH)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--reps", type=int, default=20, help="replays per bucket for the frame-time table")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny model, CPU allowed: checks the script, measures nothing")
    args = parser.parse_args(argv)
    refused = gpu_smoke.require_torch_cuda("gpu_speech_batch", "the full-size Qwen3-Omni-30B-A3B with its Talker", allow_cpu=args.dry_run)
    if refused is not None:
        return refused
    import torch
    import transformers

    from omni_agent.runtime import QwenOmniModel, SpeechSettings
    from omni_agent.runtime.synthetic import qwen3_omni_config_from_arch, tiny_config
    from omni_agent.serve.speech_scheduler import SpeechScheduler, TalkerStats

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    dev = Dev(device)
    report: dict = gpu_smoke.run_report("gpu_speech_batch")
    t0 = time.perf_counter()
    config = tiny_config("qwen3_omni") if args.dry_run else qwen3_omni_config_from_arch(json.loads(args.arch.read_text()), enable_audio_output=True)
    model = gpu_smoke.build_random_model(config, device, dtype=torch.float32 if args.dry_run else torch.bfloat16)
    log(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params in {time.perf_counter() - t0:.1f} s, {dev.allocated_gib():.1f} GiB")
    with tempfile.TemporaryDirectory() as tmp:
        processor = gpu_smoke.build_processor(Path(tmp))
    qwen = QwenOmniModel.from_objects(model, processor, name="qwen3-omni (random bf16)")
    tokenizer = processor.tokenizer
    counts = [int(n) for n in args.concurrency.split(",") if n]
    scheduler = SpeechScheduler(qwen, max_streams=max(counts))
    t = time.perf_counter()
    scheduler.speaker.warm_up()
    report["warm_up_s"] = time.perf_counter() - t
    log(f"warm-up (graphs for {len(scheduler.speaker.engine.buckets)} buckets x {len(scheduler.speaker.engine.lengths)} lengths, Code2Wav plans): {report['warm_up_s']:.1f} s")

    def job(i: int):
        text = message(i)
        per_token = FRAMES_PER_WORD * 15 / len(tokenizer(text, add_special_tokens=False)["input_ids"])
        return scheduler.job(text, settings=SpeechSettings(seed=i, min_frames_per_token=per_token, max_frames_per_token=per_token))

    run_concurrent(scheduler, [job(i) for i in range(max(counts))])  # warm: sampling paths, allocator
    runs = []
    for n in counts:
        scheduler.stats = TalkerStats()
        dev.sync()
        dev.reset_peak()
        rows = run_concurrent(scheduler, [job(i) for i in range(n)])
        firsts, rtfs = [r["first_audio_ms"] for r in rows], [r["rtf"] for r in rows]
        stats = scheduler.stats
        frame_ms = {b: statistics.median(v) * 1000 for b, v in sorted(stats.frame_seconds.items())}
        run = {"n": n, "first_audio_ms_p50": pct(firsts, 0.5), "first_audio_ms_max": max(firsts), "rtf_p50": pct(rtfs, 0.5),
               "rtf_max": max(rtfs), "audio_s": rows[0]["audio_s"], "frames": rows[0]["frames"],
               "scheduler_frame_ms_by_batch": frame_ms, "frames_by_batch": dict(sorted(stats.frames.items())),
               "peak_gib": dev.peak_gib(), "streams": rows}  # fmt: skip
        runs.append(run)
        log(f"N={n:2d}: first audio p50 {run['first_audio_ms_p50']:.0f} ms, max {run['first_audio_ms_max']:.0f} ms; RTF p50 {run['rtf_p50']:.3f}, "
            f"max {run['rtf_max']:.3f}; {run['frames']} frames ({run['audio_s']:.1f} s) per stream; scheduler frame ms by batch {frame_ms}")  # fmt: skip
    report["runs"] = runs
    # Where a frame's time goes at the largest N: synchronised after each phase (a little slower).
    speaker = scheduler.speaker
    speaker.profile, speaker.phase_seconds, scheduler.stats = True, {}, TalkerStats()
    run_concurrent(scheduler, [job(i) for i in range(max(counts))])
    speaker.profile = False
    frames_run = sum(scheduler.stats.frames.values())
    report["phase_ms_per_frame"] = {k: v * 1000 / max(frames_run, 1) for k, v in speaker.phase_seconds.items()}
    log(f"N={max(counts)} phases per frame (synchronised): {report['phase_ms_per_frame']}")
    report["engine_frame_ms"] = engine_frame_times(scheduler.speaker, dev, scheduler.speaker.engine.buckets, args.reps)
    log(f"engine frame time per bucket: {report['engine_frame_ms']}")
    scheduler.close()
    report["check"] = equivalence(qwen, scheduler.speaker, tokenizer, device)
    log(f"check: {report['check']}")

    print("")
    print("== gpu_speech_batch: concurrent spoken 15-word messages through one batched Talker (random bf16 weights) ==")
    print(f"machine   {report['machine']}")
    print(f"versions  torch {torch.__version__}, transformers {transformers.__version__}, {report['date']}")
    print(f"frames    {FRAMES_PER_WORD} codec frames (0.4 s) per word; chunks of 4 -> 8 -> 16 frames")
    print("")
    print("   N | first audio p50   max (ms) | Talker RTF p50   max | frames/stream | scheduler frame ms by batch")
    for r in runs:
        fm = ", ".join(f"{b}: {ms:.1f}" for b, ms in r["scheduler_frame_ms_by_batch"].items())
        print(f"{r['n']:4d} | {r['first_audio_ms_p50']:15.0f} {r['first_audio_ms_max']:9.0f} | {r['rtf_p50']:14.3f} {r['rtf_max']:5.3f} | {r['frames']:13d} | {fm}")
    print("")
    print("bucket | talker step ms  code predictor ms  frame ms")
    for b, ms in report["engine_frame_ms"].items():
        print(f"{b:6d} | {ms['talker_step_ms']:14.2f} {ms['code_predictor_ms']:18.2f} {ms['frame_ms']:9.2f}")
    print("phases    per frame at N=%d (synchronised): %s" % (max(counts), ", ".join(f"{k} {v:.2f} ms" for k, v in report["phase_ms_per_frame"].items())))
    print(f"check     {report['check']}")
    by_n = {r["n"]: r for r in runs}
    verdicts = []
    for n, target in TARGETS["first_audio_ms"].items():
        if n in by_n:
            got = by_n[n]["first_audio_ms_max"]
            verdicts.append(f"first audio at {n} <= {target:.0f} ms: {'MET' if got <= target else 'NOT met'} (max {got:.0f} ms)")
    if 16 in by_n:
        got = by_n[16]["rtf_max"]
        verdicts.append(f"RTF at 16 <= {TARGETS['rtf_at_16']}: {'MET' if got <= TARGETS['rtf_at_16'] else 'NOT met'} (max {got:.3f})")
    print("targets   " + "; ".join(verdicts))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
