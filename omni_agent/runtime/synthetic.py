"""Random checkpoints of the real architectures, for tests and benchmarks (no weights download).

A synthetic checkpoint is saved exactly like a downloaded one (config.json, safetensors,
tokenizer files, preprocessor_config.json, chat_template.json, spk_dict.pt for Qwen2.5-Omni),
so loading it exercises the very code path a real checkpoint takes. The tokenizer is built
locally: byte-level BPE whose special tokens sit at their real Qwen ids and where ``user``,
``assistant`` and ``system`` are single tokens at their real ids (generate() finds turns by the
token after ``<|im_start|>``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "QWEN25_OMNI_SPECIAL_TOKENS",
    "QWEN3_SPECIAL_TOKENS",
    "assert_all_finite",
    "build_qwen_tokenizer",
    "qwen3_omni_config_from_arch",
    "save_synthetic_checkpoint",
    "tiny_config",
]

_QWEN_BASE = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_QWEN_TOOLS = [
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
]  # fmt: skip
QWEN3_SPECIAL_TOKENS = _QWEN_BASE + [
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>",
    "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
] + _QWEN_TOOLS + [
    "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>",
    "<tts_text_bos_single>", "<|audio_pad|>",
]  # fmt: skip
"""Qwen3 / Qwen3-Omni special tokens in id order from 151643 (audio_pad = 151675)."""
QWEN25_OMNI_SPECIAL_TOKENS = _QWEN_BASE + [
    "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_bos|>", "<|vision_eos|>", "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
] + _QWEN_TOOLS  # fmt: skip
"""Qwen2.5-Omni special tokens in id order from 151643 (IMAGE = 151655)."""
_FIRST_SPECIAL_ID = 151643
_ROLE_TOKEN_IDS = {"user": 872, "assistant": 77091, "system": 8948}
_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}

Kind = Literal["qwen3_omni", "qwen2_5_omni", "qwen3_vl"]


def _media_tokens(kind: Kind) -> dict[str, str]:
    if kind == "qwen2_5_omni":
        return {
            "image_token": "<|IMAGE|>", "audio_token": "<|AUDIO|>", "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
        }  # fmt: skip
    tokens = {
        "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
        "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
    }  # fmt: skip
    if kind == "qwen3_omni":
        tokens.update(audio_token="<|audio_pad|>", audio_bos_token="<|audio_start|>", audio_eos_token="<|audio_end|>")
    return tokens


def build_qwen_tokenizer(kind: Kind = "qwen3_omni") -> Any:
    """A Qwen2Tokenizer with every special token at its real id; text is byte-level."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = QWEN25_OMNI_SPECIAL_TOKENS if kind == "qwen2_5_omni" else QWEN3_SPECIAL_TOKENS
    byte_chars = bytes_to_unicode()
    vocab: dict[str, int] = {byte_chars[b]: b for b in range(256)}
    for offset, token in enumerate(specials):
        vocab[token] = _FIRST_SPECIAL_ID + offset
    used = set(vocab.values()) | set(_ROLE_TOKEN_IDS.values())
    next_id = 256

    def fresh_id() -> int:
        nonlocal next_id
        while next_id in used:
            next_id += 1
        used.add(next_id)
        return next_id

    merges: list[tuple[str, str]] = []
    for word, word_id in _ROLE_TOKEN_IDS.items():  # left-to-right merge chains ending at the real id
        current = word[0]
        for char in word[1:]:
            merges.append((current, char))
            current += char
            if current not in vocab:
                vocab[current] = word_id if current == word else fresh_id()
    # Fill the id gaps with plain "w<id>" words: never produced by encoding, but what a random
    # model generates then decodes to visible text (not to fake special tokens).
    size = _FIRST_SPECIAL_ID + len(specials)
    while len(vocab) < size:
        token_id = fresh_id()
        vocab[f"w{token_id}"] = token_id
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=_media_tokens(kind),
    )
    tokenizer.add_tokens(
        [AddedToken(t, special=t not in _NOT_SPECIAL, normalized=False) for t in specials]
    )
    for token, token_id in list(zip(specials, range(_FIRST_SPECIAL_ID, size))) + list(_ROLE_TOKEN_IDS.items()):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != token_id:  # pragma: no cover - guards the construction above
            raise RuntimeError(f"tokenizer put {token} at {got}, expected {token_id}")
    return tokenizer


# --- tiny configs (hidden 32, 2 layers, 4 experts): build in seconds, generate in milliseconds ----

_H = 32
_TEXT = dict(
    hidden_size=_H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    head_dim=8, max_position_embeddings=4096,
)  # fmt: skip
_MOE = dict(moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)
_MROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1], "interleaved": True}


def _tiny_qwen3_omni() -> dict[str, Any]:
    thinker = dict(
        audio_token_id=151675, image_token_id=151655, video_token_id=151656, audio_start_token_id=151669,
        audio_end_token_id=151670, vision_start_token_id=151652, vision_end_token_id=151653,
        position_id_per_seconds=13, seconds_per_chunk=2, user_token_id=872,
        audio_config=dict(
            num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
            output_dim=_H, n_window=50, n_window_infer=800, conv_chunksize=500, downsample_hidden_size=16,
        ),
        vision_config=dict(
            depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=_H, num_position_embeddings=256, deepstack_visual_indexes=[1],
        ),
        text_config=dict(_TEXT, **_MOE, vocab_size=151936, rope_parameters=dict(_MROPE, mrope_interleaved=True)),
    )  # fmt: skip
    talker = dict(
        accept_hidden_layer=1, audio_token_id=151675, audio_start_token_id=151669, image_token_id=151655,
        video_token_id=151656, vision_start_token_id=151652, codec_bos_id=2149, codec_eos_token_id=2150,
        codec_nothink_id=2155, codec_pad_id=2148, codec_think_bos_id=2156, codec_think_eos_id=2157,
        num_code_groups=4, position_id_per_seconds=13, seconds_per_chunk=2, spatial_merge_size=2,
        speaker_id={"aiden": 2303, "chelsie": 2301, "ethan": 2302}, thinker_hidden_size=_H,
        code_predictor_config=dict(_TEXT, num_hidden_layers=1, vocab_size=2048, num_code_groups=4),
        text_config=dict(
            _TEXT, **_MOE, vocab_size=3072, shared_expert_intermediate_size=32, rope_parameters=dict(_MROPE)
        ),
    )  # fmt: skip
    code2wav = dict(
        codebook_size=2048, hidden_size=_H, intermediate_size=64, num_attention_heads=4, num_key_value_heads=4,
        num_hidden_layers=1, num_quantizers=4, decoder_dim=32, upsample_rates=[8, 5, 4, 3],
        upsampling_ratios=[2, 2], sliding_window=72,
    )  # fmt: skip
    return dict(thinker_config=thinker, talker_config=talker, code2wav_config=code2wav)


# A trained Qwen2.5-Omni Talker only emits codec ids below the DiT's 8193 codec embeddings (or
# its end token); a random one samples its whole 8448-entry vocabulary, and an id past the DiT's
# table crashed Token2Wav (IndexError). The tiny DiT embeds every Talker id instead.
_QWEN25_TALKER_VOCAB = 8448


def _tiny_qwen25_omni() -> dict[str, Any]:
    thinker = dict(
        audio_token_index=151646, image_token_index=151655, video_token_index=151656,
        audio_start_token_id=151647, audio_end_token_id=151648, vision_start_token_id=151652,
        vision_end_token_id=151653, position_id_per_seconds=25, seconds_per_chunk=2, user_token_id=872,
        audio_config=dict(
            num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=32, d_model=16,
            output_dim=_H, n_window=100,
        ),
        vision_config=dict(
            depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=14, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=_H, fullatt_block_indexes=[1], window_size=112,
        ),
        text_config=dict(
            {k: v for k, v in _TEXT.items() if k != "head_dim"}, vocab_size=151936,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
        ),
    )  # fmt: skip
    talker = dict(
        {k: v for k, v in _TEXT.items() if k != "head_dim"}, head_dim=8, embedding_size=_H, vocab_size=_QWEN25_TALKER_VOCAB,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
    )  # fmt: skip
    token2wav = dict(
        dit_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, emb_dim=16, enc_emb_dim=8,
            enc_dim=8, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8, enc_se_channels=8,
            look_ahead_layers=[1], look_backward_layers=[0], repeats=2, block_size=24, dropout=0.0,
            num_embeds=_QWEN25_TALKER_VOCAB,
        ),
        bigvgan_config=dict(
            upsample_initial_channel=128, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
        ),
    )  # fmt: skip
    return dict(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)


def _tiny_qwen3_vl() -> dict[str, Any]:
    return dict(
        text_config=dict(_TEXT, vocab_size=151936, rope_parameters=dict(_MROPE, mrope_section=[2, 1, 1])),
        vision_config=dict(
            depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=_H, num_position_embeddings=256, deepstack_visual_indexes=[1],
        ),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )  # fmt: skip


def tiny_config(kind: Kind) -> Any:
    """The transformers config of a tiny model of ``kind`` (real token ids, tiny sizes)."""
    import transformers

    if kind == "qwen3_omni":
        return transformers.Qwen3OmniMoeConfig(**_tiny_qwen3_omni())
    if kind == "qwen2_5_omni":
        return transformers.Qwen2_5OmniConfig(**_tiny_qwen25_omni())
    if kind == "qwen3_vl":
        return transformers.Qwen3VLConfig(**_tiny_qwen3_vl())
    raise ValueError(f"unknown kind {kind!r}")


def qwen3_omni_config_from_arch(arch: dict[str, Any], *, enable_audio_output: bool = True) -> Any:
    """Qwen3OmniMoeConfig from an architecture JSON (e.g. evals/perf/data/*.arch.json)."""
    import transformers

    fields = {k: copy.deepcopy(v) for k, v in arch.items() if not k.startswith("_") and k != "architectures"}
    fields.pop("model_type", None)
    fields["enable_audio_output"] = enable_audio_output
    return transformers.Qwen3OmniMoeConfig(**fields)


def assert_all_finite(model: Any) -> None:
    """Raise if any parameter is NaN/inf (a random build must never hide uninitialised memory)."""
    import torch

    bad = [n for n, p in model.named_parameters() if p.device.type != "meta" and not torch.isfinite(p).all()]
    if bad:
        raise AssertionError(f"non-finite parameters: {bad[:5]}{' ...' if len(bad) > 5 else ''}")


def _preprocessor_config(kind: Kind) -> dict[str, Any]:
    patch = 14 if kind == "qwen2_5_omni" else 16
    factor = patch * 2
    config: dict[str, Any] = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "patch_size": patch,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "image_mean": [0.5, 0.5, 0.5] if kind != "qwen2_5_omni" else [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.5, 0.5, 0.5] if kind != "qwen2_5_omni" else [0.26862954, 0.26130258, 0.27577711],
        "size": {"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 2048},
        "processor_class": {
            "qwen3_omni": "Qwen3OmniMoeProcessor",
            "qwen2_5_omni": "Qwen2_5OmniProcessor",
            "qwen3_vl": "Qwen3VLProcessor",
        }[kind],
    }
    if kind != "qwen3_vl":
        config.update(
            feature_extractor_type="WhisperFeatureExtractor", feature_size=128, sampling_rate=16000,
            hop_length=160, chunk_length=300, n_fft=400, padding_side="right", padding_value=0.0,
            return_attention_mask=True,
        )  # fmt: skip
    return config


def save_synthetic_checkpoint(
    directory: str | Path, kind: Kind, *, seed: int = 0, chat_template: str | None = None
) -> Path:
    """Build a random ``kind`` model and save it with tokenizer, processor files and template."""
    import torch
    import transformers

    from .chat_template import QWEN3_CHAT_TEMPLATE, QWEN25_OMNI_CHAT_TEMPLATE
    from .workarounds import init_untrained_talker_experts

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = tiny_config(kind)
    model_class = {
        "qwen3_omni": transformers.Qwen3OmniMoeForConditionalGeneration,
        "qwen2_5_omni": transformers.Qwen2_5OmniForConditionalGeneration,
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
    }[kind]
    model = model_class(config).eval()
    init_untrained_talker_experts(model)
    assert_all_finite(model)
    model.save_pretrained(directory)
    if kind == "qwen2_5_omni":
        _save_qwen25_speakers(model, directory)
    build_qwen_tokenizer(kind).save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(kind), indent=2))
    template = chat_template or (QWEN25_OMNI_CHAT_TEMPLATE if kind == "qwen2_5_omni" else QWEN3_CHAT_TEMPLATE)
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    return directory


def _save_qwen25_speakers(model: Any, directory: Path) -> None:
    """spk_dict.pt as Qwen2.5-Omni ships it: per voice a conditioning vector, a reference mel
    and the text BOS token id the Talker starts from."""
    import torch

    dit = model.config.token2wav_config.dit_config
    generator = torch.Generator().manual_seed(1)
    speakers = {}
    for offset, name in enumerate(("Chelsie", "Ethan")):
        speakers[name] = {
            "cond": torch.randn(1, dit.enc_emb_dim, generator=generator),
            "ref_mel": torch.randn(1, 30, dit.mel_dim, generator=generator),
            "bos_token": 151870 + offset,
        }
    torch.save(speakers, directory / "spk_dict.pt")
