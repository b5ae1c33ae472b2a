"""Voice: spoken commands in (decode, resample, VAD, microphone), spoken progress out (speaker).

Importing this package is light; sounddevice, onnxruntime and soxr load when first used
(install the ``voice`` extra).
"""

from .audio_io import INPUT_RATE, AudioDecodeError, command_part, decode_audio, resample
from .listen import HeardCommand, VoiceLoop
from .microphone import (
    ArraySource,
    AudioDeviceError,
    Microphone,
    NoSpeechError,
    input_devices,
    next_utterance,
    record_push_to_talk,
    utterances,
)
from .output import VoiceOutput, attach_voice_output, make_sink
from .progress import ProgressPolicy, SpokenItem, detect_language, spoken_text
from .speaker import (
    EspeakEngine,
    NullSink,
    SilentEngine,
    SoundDeviceSink,
    Speaker,
    SpeechRecord,
    TalkerEngine,
    WavFileSink,
    choose_engine,
)
from .vad import SileroVAD, SpeechStarted, Utterance, UtteranceEnded, UtteranceSegmenter, VADSettings, segment_utterances

__all__ = [
    "ArraySource",
    "AudioDecodeError",
    "AudioDeviceError",
    "EspeakEngine",
    "HeardCommand",
    "INPUT_RATE",
    "Microphone",
    "NoSpeechError",
    "NullSink",
    "ProgressPolicy",
    "SilentEngine",
    "SileroVAD",
    "SoundDeviceSink",
    "Speaker",
    "SpeechRecord",
    "SpeechStarted",
    "SpokenItem",
    "TalkerEngine",
    "Utterance",
    "UtteranceEnded",
    "UtteranceSegmenter",
    "VADSettings",
    "VoiceLoop",
    "VoiceOutput",
    "WavFileSink",
    "attach_voice_output",
    "choose_engine",
    "command_part",
    "decode_audio",
    "detect_language",
    "input_devices",
    "make_sink",
    "next_utterance",
    "record_push_to_talk",
    "resample",
    "segment_utterances",
    "spoken_text",
    "utterances",
]
