"""Each guarded upstream work-around: needed where the bug is, a no-op where it is not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omni_agent.models.base import GenerationSettings, ModelRequest
from omni_agent.runtime.families import FAMILIES
from omni_agent.runtime.workarounds import (
    guard_generate_kwargs,
    init_untrained_talker_experts,
    set_talker_audio_config,
)

ROOT = Path(__file__).resolve().parents[1]
QWEN3, QWEN25, VL = FAMILIES


def test_talker_experts_initialised_on_random_build():
    import torch

    from omni_agent.runtime.synthetic import assert_all_finite, tiny_config
    import transformers

    torch.manual_seed(0)
    model = transformers.Qwen3OmniMoeForConditionalGeneration(tiny_config("qwen3_omni"))
    experts = [p for n, p in model.talker.named_parameters() if ".experts." in n]
    bad_before = any((not torch.isfinite(p).all()) or p.abs().max() > 1e3 for p in experts)
    applied = init_untrained_talker_experts(model)
    assert applied == bad_before  # applied exactly when upstream left them uninitialised
    assert_all_finite(model)
    assert all(p.abs().max() < 1e3 for p in experts)
    snapshot = [p.clone() for p in experts]
    assert init_untrained_talker_experts(model) is False  # a sane model is left untouched
    assert all(torch.equal(a, b) for a, b in zip(snapshot, experts))


def test_talker_audio_config_copied(tiny_qwen3_omni, spoken_command_wav):
    from omni_agent.messages import AudioPart, UserMessage

    cfg = tiny_qwen3_omni.model.config
    assert getattr(cfg.talker_config, "audio_config", None) is not None  # set at load (or by upstream)
    assert set_talker_audio_config(tiny_qwen3_omni.model) is False  # already there: no-op
    # audio input + speech output in one generate() call: the path the bug broke
    prepared = tiny_qwen3_omni.prepare(ModelRequest(messages=[UserMessage([AudioPart.from_path(spoken_command_wav)])]))
    result = tiny_qwen3_omni._generate_locked(
        prepared, GenerationSettings(max_new_tokens=2, seed=0), on_text=None, preprocess_s=0.0,
        return_audio=True, voice="Ethan", talker_extra={"max_new_tokens": 4},
    )  # fmt: skip
    assert result.waveform is not None and np.isfinite(result.waveform).all()


class _PreferCodecEos:
    """Talker logits processor pushing codec EOS to the top: without the guard, EOS comes first."""

    def __init__(self, eos: int) -> None:
        self.eos = eos

    def __call__(self, input_ids, scores):
        scores[:, self.eos] = scores[:, self.eos] + 1e4
        return scores


def test_talker_min_new_tokens_guard(tiny_qwen3_omni):
    from transformers import LogitsProcessorList

    from omni_agent.messages import UserMessage

    assert guard_generate_kwargs(QWEN3, {"talker_min_new_tokens": 0}, return_audio=True)["talker_min_new_tokens"] == 2
    assert guard_generate_kwargs(QWEN3, {"talker_min_new_tokens": 9}, return_audio=True)["talker_min_new_tokens"] == 9
    assert "talker_min_new_tokens" not in guard_generate_kwargs(QWEN3, {}, return_audio=False)
    eos = tiny_qwen3_omni.model.config.talker_config.codec_eos_token_id
    prepared = tiny_qwen3_omni.prepare(ModelRequest(messages=[UserMessage("hi")]))
    result = tiny_qwen3_omni._generate_locked(
        prepared, GenerationSettings(max_new_tokens=2, seed=0), on_text=None, preprocess_s=0.0,
        return_audio=True, voice="Ethan",
        talker_extra={"max_new_tokens": 6, "logits_processor": LogitsProcessorList([_PreferCodecEos(eos)])},
    )  # fmt: skip
    assert result.waveform is not None and result.waveform.size > 0  # no "stack expects a non-empty TensorList"


def test_qwen25_pixel_values_kept_from_talker(tiny_qwen25_omni):
    from PIL import Image

    from omni_agent.messages import ImagePart, UserMessage

    assert guard_generate_kwargs(QWEN25, {"pixel_values": 1}, return_audio=True)["talker_pixel_values"] is None
    assert "talker_pixel_values" not in guard_generate_kwargs(QWEN25, {"pixel_values": 1}, return_audio=False)
    assert "talker_pixel_values" not in guard_generate_kwargs(QWEN3, {"pixel_values": 1}, return_audio=True)
    request = ModelRequest(messages=[UserMessage([ImagePart.from_pil(Image.new("RGB", (112, 112)))])])
    prepared = tiny_qwen25_omni.prepare(request)
    result = tiny_qwen25_omni._generate_locked(
        prepared, GenerationSettings(max_new_tokens=2, seed=0), on_text=None, preprocess_s=0.0,
        return_audio=True, voice="Chelsie", talker_extra={"max_new_tokens": 4, "min_new_tokens": 2},
    )  # fmt: skip
    assert result.waveform is not None and np.isfinite(result.waveform).all()


def test_generate_output_shapes_normalised():
    import torch
    from types import SimpleNamespace

    from omni_agent.runtime.generation import split_generate_output

    seq = torch.ones(1, 5, dtype=torch.long)
    wav = torch.zeros(1, 1, 7)
    for output, has_wav in (
        (seq, False),  # 5.x text only
        (SimpleNamespace(sequences=seq), False),  # GenerateOutput
        ((SimpleNamespace(sequences=seq), None), False),  # 4.57 without audio
        ((seq, wav), True),  # 5.x batch 1 with audio
        ((seq, [wav.reshape(-1)]), True),  # 5.23 batched audio list
    ):
        sequences, w = split_generate_output(output)
        assert sequences is seq and (w is not None) == has_wav


@pytest.mark.parametrize("script", ["gpu_smoke", "gpu_step", "gpu_speech"])
def test_gpu_benchmarks_without_cuda_say_so(script):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the no-CUDA message is not shown")
    proc = subprocess.run([sys.executable, str(ROOT / "evals" / "perf" / f"{script}.py")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{script}: CUDA is not available") and "nothing was run" in proc.stderr


@pytest.mark.slow
def test_gpu_smoke_code_path_on_cpu_with_tiny_arch(tmp_path):
    """The benchmark's build -> backend -> generate path, run on CPU with a tiny architecture."""
    import json

    from omni_agent.runtime.synthetic import _tiny_qwen3_omni

    arch = dict(_tiny_qwen3_omni(), model_type="qwen3_omni_moe")
    (tmp_path / "tiny.arch.json").write_text(json.dumps(arch))
    cmd = [sys.executable, str(ROOT / "evals" / "perf" / "gpu_smoke.py"), "--arch", str(tmp_path / "tiny.arch.json"),
           "--device", "cpu", "--new-tokens", "4"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "prefill" in proc.stdout and "ms/token over 4 tokens" in proc.stdout
    assert "880 image tokens" in proc.stdout  # the 1280x720 screenshot on the 32-pixel grid
