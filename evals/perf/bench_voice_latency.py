"""Benchmark: voice latency, stage by stage.

1. **End of speech -> first tool call handed to the executor.** A spoken command (espeak-ng) is
   played to the listening loop in real time (``ArraySource(realtime=True)``: blocks arrive as a
   microphone would deliver them). Stages: VAD end-pointing (the silence the segmenter waits
   for), handing the utterance to the agent, the processor (template + audio features), Thinker
   prefill, Thinker decode of the call, then parse + validate + policy until ``ToolStarted``.
2. **Finished step -> first audio sample of its spoken progress.** From ``StepFinished`` to the
   progress utterance's first sample handed to the sink: policy + queue, synthesis, sink start.
   Engines: the Talker of the model (it shares the model lock with the Thinker, which is already
   generating the next step) and espeak-ng; sinks: none (pure cost) and the sound device when
   one exists.

The model is the tiny random Qwen3-Omni built by ``omni_agent.runtime.synthetic`` on CPU, with
its Thinker forced to write a tool call (random weights cannot understand speech); so model
stages show the pipeline's overhead at tiny size, not a real checkpoint's speed.

Run: ``.venv/bin/python evals/perf/bench_voice_latency.py [--runs N]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from omni_agent.loop import Agent
from omni_agent.machine import describe_machine
from omni_agent.models.base import GenerationSettings
from omni_agent.tool import tool
from omni_agent.voice import (
    ArraySource,
    NullSink,
    ProgressPolicy,
    SoundDeviceSink,
    Speaker,
    VoiceLoop,
    choose_engine,
    decode_audio,
)
from omni_agent.voice.microphone import AudioDeviceError


def forced_model(checkpoint_dir: Path, replies: list[str]) -> Any:
    """The real QwenOmniModel backend whose Thinker must write ``replies`` (token-forced)."""
    from transformers import LogitsProcessorList

    from omni_agent.runtime import QwenOmniModel, SpeechSettings
    from omni_agent.runtime.generation import eos_token_ids
    from omni_agent.runtime.speech import ForcedTokens

    class Forced(QwenOmniModel):
        def generate(self, request: Any, *, on_text: Any = None) -> Any:
            t0 = time.perf_counter()
            prepared = self.prepare(request)
            tok = self.processor.tokenizer
            ids = tok(self.replies[self.turn % len(self.replies)], add_special_tokens=False)["input_ids"]
            ids.append(eos_token_ids(tok)[0])
            self.turn += 1
            extra = {"logits_processor": LogitsProcessorList([ForcedTokens(prepared.prompt_tokens, ids)]),
                     "max_new_tokens": len(ids), "do_sample": False}  # fmt: skip
            with self._lock:
                result = self._generate_locked(prepared, GenerationSettings(max_new_tokens=len(ids), temperature=0.0),
                                               on_text=on_text, preprocess_s=time.perf_counter() - t0, thinker_extra=extra)  # fmt: skip
            self.timings.append(dict(result.timings))
            return result

    base = QwenOmniModel.load(checkpoint_dir, enable_talker=True,
                              speech=SpeechSettings(min_frames_per_token=1, max_frames_per_token=1, seed=0))  # fmt: skip
    model = Forced(base.checkpoint, name="tiny-qwen3-omni (forced)", speech=base.speech_settings)
    model.replies, model.turn, model.timings = replies, 0, []
    return model


@tool
def set_timer(minutes: int) -> str:
    """Start a countdown timer."""
    return f"timer set for {minutes} min"


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values) * 1000:8.1f} ms (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"


def speech_to_call(checkpoint_dir: Path, command: np.ndarray, runs: int) -> dict[str, list[float]]:
    call = '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'
    stages: dict[str, list[float]] = {}
    model = forced_model(checkpoint_dir, [call, "Timer set."])
    for _ in range(runs):
        agent = Agent(model, [set_timer], max_steps=2, trajectory_dir=None)  # as measured before: no recording
        marks: dict[str, float] = {}
        agent.events.subscribe(lambda e: marks.setdefault(e.type, time.monotonic()))
        source = ArraySource(command, realtime=True)
        loop = VoiceLoop(agent, source, max_commands=1)
        model.timings.clear()
        (heard,) = asyncio.run(loop.run())
        end_of_speech = source._t0 + heard.utterance.end_s  # stream time -> wall time (real-time source)
        t = model.timings[0]
        add = lambda k, v: stages.setdefault(k, []).append(v)  # noqa: E731
        add("1 VAD end-pointing (silence wait + windows)", heard.heard_at - end_of_speech)
        add("2 utterance -> run started", marks["run_started"] - heard.heard_at)
        add("3 processor (template + audio features)", t["preprocess"])
        add("4 Thinker prefill", t["prefill"])
        add("5 Thinker decode of the call", t["decode"])
        add("6 parse + validate + policy -> ToolStarted", heard.first_tool_at - marks["model_finished"])
        add("total: end of speech -> first tool call", heard.first_tool_at - end_of_speech)
    return stages


def step_to_speech(checkpoint_dir: Path, engine_name: str, sink: Any, runs: int) -> dict[str, list[float]]:
    call = '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'
    model = forced_model(checkpoint_dir, [call, call, "Timer set."])
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        model.turn = 0
        agent = Agent(model, [set_timer], max_steps=3, max_repeats=5, trajectory_dir=None)
        speaker = Speaker(choose_engine(model, engine=engine_name), sink)
        policy = ProgressPolicy(speaker.say, min_interval_s=0, announce_start=False)
        step_end: dict[int, float] = {}
        agent.events.subscribe(lambda e: step_end.setdefault(e.step, time.monotonic()) if e.type == "step_finished" else None)
        policy.attach(agent.events)
        asyncio.run(agent.arun("", audio=(np.zeros(8000, np.float32), 16_000)))
        speaker.wait_idle(60)
        speaker.close()
        first = next((r for r in speaker.history if r.kind == "progress" and r.first_sample_at), None)
        if first is None:
            continue
        t_step = step_end[1]
        add = lambda k, v: stages.setdefault(k, []).append(v)  # noqa: E731
        add("1 step finished -> queued (policy)", first.queued_at - t_step)
        add("2 queue wait", first.synth_started_at - first.queued_at)
        add(f"3 synthesis ({engine_name})", first.synth_ended_at - first.synth_started_at)
        add("4 sink start -> first sample", first.first_sample_at - first.synth_ended_at)
        add("total: step finished -> first audio sample", first.first_sample_at - t_step)
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from omni_agent.runtime.synthetic import save_synthetic_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_synthetic_checkpoint(Path(tmp) / "tiny", "qwen3_omni")
        wav = Path(tmp) / "command.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), "set a timer for five minutes"], check=True)
        command = np.concatenate([np.zeros(8000, np.float32), decode_audio(wav), np.zeros(16_000, np.float32)])
        print(f"machine: {describe_machine()}")
        print(f"command: {command.size / 16_000:.2f} s of audio, played in real time; {args.runs} runs; median (min, max)\n")
        print("End of speech -> first tool call handed to the executor (tiny Qwen3-Omni, CPU):")
        for name, values in speech_to_call(ckpt, command, args.runs).items():
            print(f"  {name:48s} {_ms(values)}")
        sinks: list[tuple[str, Any]] = [("no sink", NullSink())]
        try:
            device = SoundDeviceSink()
            sinks.append((f"device {device.check()}", device))
        except AudioDeviceError as exc:
            print(f"\n(sound device sink not measured: {exc.message})")
        for engine in ("talker", "espeak"):
            for sink_name, sink in sinks:
                print(f"\nFinished step -> first audio sample of its progress ({engine}, {sink_name}):")
                for name, values in step_to_speech(ckpt, engine, sink, args.runs).items():
                    print(f"  {name:48s} {_ms(values)}")


if __name__ == "__main__":
    main()
