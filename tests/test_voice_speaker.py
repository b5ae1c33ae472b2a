"""The speaker queue (never blocks, drops stale speech, survives engine failures) and the progress policy."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from omni_agent.exceptions import UserError
from omni_agent.loop import Agent
from omni_agent.messages import AudioPart, read_audio_file
from omni_agent.models.scripted import ScriptedModel
from omni_agent.tool import tool
from omni_agent.voice import (
    EspeakEngine,
    ProgressPolicy,
    SilentEngine,
    Speaker,
    TalkerEngine,
    WavFileSink,
    attach_voice_output,
    choose_engine,
    detect_language,
    spoken_text,
)


class GatedEngine:
    """Synthesis that waits for the test: proves ``say`` returns while the engine is still busy."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = threading.Event()
        self.texts: list[str] = []

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart:
        self.started.set()
        assert self.gate.wait(10), "the test never opened the gate"
        self.texts.append(text)
        return AudioPart.from_array(np.full(1600, 0.1, np.float32), 16_000, transcript=text)


class BrokenEngine:
    name = "broken"

    def synthesize(self, text: str, *, language: str | None = None) -> AudioPart:
        if "boom" in text:
            raise RuntimeError("vocoder exploded")
        return AudioPart.from_array(np.zeros(160, np.float32), 16_000)


def test_say_never_blocks_and_stale_progress_is_dropped(tmp_path):
    engine = GatedEngine()
    with Speaker(engine, WavFileSink(tmp_path), max_pending=2) as speaker:
        first = speaker.say("first", kind="progress")
        assert engine.started.wait(5)
        # The engine is still blocked on the gate, yet say() returned and more can be queued.
        assert first.status == "synthesizing" and not engine.gate.is_set()
        queued = [speaker.say(f"step {i}", kind="progress") for i in range(3)]
        assert [r.status for r in queued] == ["dropped", "queued", "queued"]
        engine.gate.set()
        assert speaker.wait_idle(10)
    assert engine.texts == ["first", "step 1", "step 2"]
    files = sorted(p.name for p in tmp_path.glob("*.wav"))
    assert files == ["001-progress.wav", "002-progress.wav", "003-progress.wav"]
    samples, rate = read_audio_file(tmp_path / files[0])
    assert rate == 16_000 and samples.size == 1600


def test_interrupt_and_barge_in_drop_what_is_queued(tmp_path):
    engine = GatedEngine()
    speaker = Speaker(engine, WavFileSink(tmp_path))
    speaking = speaker.say("a long progress report")
    assert engine.started.wait(5)
    stale = speaker.say("stale progress")
    answer = speaker.say("the answer", kind="answer", interrupt=True)
    assert stale.status == "dropped" and speaking.cancel.is_set() and speaking.cancel_requested_at is not None
    engine.gate.set()
    assert speaker.wait_idle(10)
    assert speaking.status == "cancelled" and answer.status == "done"
    assert [p.name for p in sorted(tmp_path.glob("*.wav"))] == ["001-answer.wav"]  # the cut one never reached the file
    queued = speaker.say("x")
    speaker.barge_in()
    assert speaker.wait_idle(5) and queued.status in ("dropped", "cancelled")
    speaker.close()
    with pytest.raises(UserError, match="closed"):
        speaker.say("after close")


def test_engine_failure_is_reported_and_the_queue_goes_on(capsys):
    with Speaker(BrokenEngine()) as speaker:
        bad = speaker.say("boom")
        good = speaker.say("fine")
        assert speaker.wait_idle(5)
    assert bad.status == "failed" and "vocoder exploded" in bad.error
    assert good.status == "done" and good.samples_played == 160
    assert "speech synthesis failed" in capsys.readouterr().err


def test_espeak_engine_speaks_in_the_users_language():
    engine = EspeakEngine()
    en = engine.synthesize("Done: open page.", language="en")
    zh = engine.synthesize("完成了。", language="zh")
    for part in (en, zh):
        samples, rate = part.load()
        assert rate == 22_050 and samples.size > 0.3 * rate and np.abs(samples).max() > 0.05


def test_choose_engine(tiny_qwen3_omni):
    scripted = ScriptedModel(["hi"])
    assert isinstance(choose_engine(tiny_qwen3_omni), TalkerEngine)  # local model with a Talker
    assert isinstance(choose_engine(scripted), EspeakEngine)  # no Talker (remote server, Thinking)
    assert isinstance(choose_engine(scripted, engine="silent"), SilentEngine)
    with pytest.raises(UserError, match="no Talker"):
        choose_engine(scripted, engine="talker")
    with pytest.raises(UserError, match="unknown speech engine"):
        choose_engine(scripted, engine="loud")


# -- progress policy -------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@tool
def open_page(url: str) -> str:
    """Open a web page."""
    return f"opened {url}"


@tool
def read_page() -> str:
    """Read the page."""
    raise RuntimeError("page crashed")


def _call(name: str, args: str = "{}") -> str:
    return f'<tool_call>{{"name": "{name}", "arguments": {args}}}</tool_call>'


def test_progress_policy_says_start_outcomes_rate_limited_and_the_answer():
    said: list[tuple[str, str, bool]] = []
    clock = Clock()
    policy = ProgressPolicy(lambda text, kind, interrupt: said.append((kind, text, interrupt)), min_interval_s=4, clock=clock)
    model = ScriptedModel([_call("open_page", '{"url": "http://a"}'), _call("read_page"), _call("open_page", '{"url": "http://b"}'),
                           "The page says hello. ```print(1)``` See https://example.com for more."])  # fmt: skip
    agent = Agent(model, [open_page, read_page], max_consecutive_failures=5)
    ticks = iter([1.0, 5.0, 1.0])  # step 1 ends at +1 s (too soon after "started"), step 2 at +6, step 3 at +7
    agent.events.subscribe(lambda e: setattr(clock, "now", clock.now + next(ticks)) if e.type == "step_finished" and e.step <= 3 else None)
    policy.attach(agent.events)  # after the clock: it sees each step's end time
    result = agent.run("Check the page")
    assert result.answer.startswith("The page says hello")
    assert said[0] == ("started", "On it.", False)
    assert ("progress", "read page failed.", False) in said  # step 2: 6 s after the start
    assert not any("open page" in t for _, t, _ in said[1:2])  # step 1 was too soon: skipped
    assert policy.skipped == 2
    kind, text, interrupt = said[-1]
    assert kind == "answer" and interrupt and text == "The page says hello. (code omitted) See for more."


def test_progress_in_the_users_language_and_stop_reasons():
    said: list[tuple[str, str]] = []
    policy = ProgressPolicy(lambda text, kind, interrupt: said.append((kind, text)), min_interval_s=0)
    agent = Agent(ScriptedModel([_call("open_page", '{"url": "u"}')]), [open_page], max_steps=1)
    policy.attach(agent.events)
    agent.run("打开网页看看")
    assert said == [("started", "好的，马上开始。"), ("progress", "完成：open page。"), ("error", "我不得不停止：max steps。")]
    assert detect_language("Привет, открой страницу") == "ru" and detect_language("open the page") is None
    assert detect_language("ページを開いて") == "ja"


def test_questions_are_said_before_the_approver_answers():
    order: list[str] = []

    @tool(risk="dangerous")
    def wipe_disk() -> str:
        """Erase everything."""
        return "wiped"

    @tool
    def ask_user(question: str) -> str:
        """Ask the user a question."""
        return "yes"

    policy = ProgressPolicy(lambda text, kind, interrupt: order.append(f"said {kind}: {text}"), announce_start=False)

    def approver(call, reason):
        order.append(f"asked about {call.name}")
        return False

    model = ScriptedModel([_call("ask_user", '{"question": "Which disk?"}'), _call("wipe_disk"), "ok"])
    agent = Agent(model, [wipe_disk, ask_user], approver=policy.approver(approver))
    policy.attach(agent.events)
    agent.run("clean up")
    assert order[0] == "said question: Which disk?"
    i = next(i for i, line in enumerate(order) if line.startswith("said question: I need your permission to run wipe disk"))
    assert order[i + 1] == "asked about wipe_disk"


def test_spoken_text_cuts_at_a_sentence():
    long = "First sentence here. " * 30
    out = spoken_text(long, max_chars=60)
    assert out == "First sentence here. First sentence here."  # a third would pass 60 chars
    assert spoken_text("**Bold** and `code` and # heading") == "Bold and code and heading"


def test_attach_voice_output_speaks_progress_and_answer_through_a_wav_sink(tmp_path):
    model = ScriptedModel([_call("open_page", '{"url": "http://x"}'), "All done."])
    agent = Agent(model, [open_page], speak=True)
    output = attach_voice_output(agent, engine="espeak", sink=str(tmp_path / "speech"), min_interval_s=0)
    assert agent.speak is False  # the speaker says the answer; the model must not synthesise it too
    # A scripted model answers in microseconds and the answer interrupts stale progress; waiting
    # for the speaker after each step lets every utterance finish, as it would with a real model.
    agent.events.subscribe(lambda e: output.speaker.wait_idle(10) if e.type == "step_finished" else None)
    result = asyncio.run(agent.arun("open the page"))
    output.close()
    assert result.answer == "All done."
    records = output.speaker.history
    assert [(r.kind, r.text, r.status) for r in records] == [
        ("started", "On it.", "done"), ("progress", "Done: open page.", "done"), ("answer", "All done.", "done")
    ]  # fmt: skip
    for r in records:
        samples, rate = read_audio_file(r.path)
        assert rate == 22_050 and samples.size == r.samples_total > 0
        assert r.first_sample_at >= r.synth_ended_at >= r.synth_started_at >= r.queued_at
