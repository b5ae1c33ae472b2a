"""GPU smoke benchmark: one agent step of a full-size Qwen3-Omni-30B-A3B (random bf16 weights).

Builds the real architecture from evals/perf/data/qwen3-omni-30b-a3b-instruct.arch.json directly
on the GPU (no weights exist here), wraps it in the real backend (``QwenOmniModel.from_objects``:
same prompt building, processor and generate() wrapper as a loaded checkpoint), sends one step
with a 1280x720 screenshot and the tool schemas, and prints prefill time, decode ms/token and
peak GPU memory with the machine they came from.

The Talker is left out by default: an agent step is text-only (speech is a separate turn) and
the Thinker alone is ~61 GiB of the 65.7 GiB bf16 weights, which keeps an 80 GB H100 clear of
OOM. ``--with-talker`` builds it too (needs ~72 GiB).

    python evals/perf/gpu_smoke.py                 # exits 2 with a clear message without CUDA
    python evals/perf/gpu_smoke.py --new-tokens 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from omni_agent.machine import describe_machine  # noqa: E402
DEFAULT_ARCH = Path(__file__).resolve().parent / "data" / "qwen3-omni-30b-a3b-instruct.arch.json"


def log(message: str) -> None:
    print(f"[gpu_smoke {time.strftime('%H:%M:%S')}] {message}", flush=True)


def machine() -> str:
    """Cores, CPU, OS, Python and the GPU (name, memory, driver) of the machine that ran this."""
    return describe_machine(gpu=True)


def run_report(script: str) -> dict:
    """The header every GPU benchmark records and logs: machine, versions, date."""
    import torch
    import transformers

    report = {
        "machine": machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    print(f"[{script} {time.strftime('%H:%M:%S')}] machine: {report['machine']}; torch {report['torch']}, "
          f"transformers {report['transformers']}", flush=True)  # fmt: skip
    return report


def build_random_model(config, device, *, dtype):
    """Qwen3-Omni with random weights built directly on ``device`` (no CPU copy of 65 GiB; a meta
    build + to_empty() would leave the non-persistent rotary inv_freq buffers empty), with the
    random-build work-arounds applied and every parameter checked finite."""
    import torch
    import transformers

    from omni_agent.runtime.synthetic import assert_all_finite
    from omni_agent.runtime.workarounds import init_untrained_talker_experts, set_talker_audio_config

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            model = transformers.Qwen3OmniMoeForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    init_untrained_talker_experts(model)  # no-op without a Talker
    set_talker_audio_config(model)
    assert_all_finite(model)
    return model


def require_torch_cuda(script: str, builds: str, *, allow_cpu: bool = False) -> int | None:
    """One clear line and exit code 2 when torch or CUDA is missing; None when the run can go on.
    Shared by the GPU benchmarks (gpu_smoke, gpu_step, gpu_speech)."""
    try:
        import torch
    except ImportError:
        print(f"{script}: torch is not installed: pip install 'omni-agent[qwen]'", file=sys.stderr)
        return 2
    if not allow_cpu and not torch.cuda.is_available():
        print(
            f"{script}: CUDA is not available: this benchmark needs an NVIDIA GPU with ~80 GB "
            f"(it builds {builds} in bf16); nothing was run.",
            file=sys.stderr,
        )
        return 2
    return None


def screenshot(width: int = 1280, height: int = 720):
    """A synthetic desktop-like screenshot (windows, text, a button)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (32, 96, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height - 40, width, height), fill=(30, 30, 30))
    draw.rectangle((200, 120, 1000, 560), fill=(240, 240, 240), outline=(0, 0, 0))
    draw.text((220, 140), "Save changes before closing?", fill=(0, 0, 0))
    draw.rectangle((700, 480, 800, 520), fill=(0, 120, 215))
    draw.text((735, 492), "OK", fill=(255, 255, 255))
    return image


def build_processor(directory: Path):
    """Tokenizer (real Qwen special-token ids) + processor files, loaded by the runtime's loader."""
    from omni_agent.runtime.chat_template import QWEN3_CHAT_TEMPLATE
    from omni_agent.runtime.families import family_for_model_type
    from omni_agent.runtime.loading import load_processor
    from omni_agent.runtime.synthetic import _preprocessor_config, build_qwen_tokenizer

    build_qwen_tokenizer("qwen3_omni").save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config("qwen3_omni")))
    (directory / "chat_template.json").write_text(json.dumps({"chat_template": QWEN3_CHAT_TEMPLATE}))
    return load_processor(str(directory), family_for_model_type("qwen3_omni_moe"))


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "computer_use",
            "description": "Use a mouse and keyboard to interact with the computer screen.",
            "parameters": {
                "type": "object",
                "properties": {
                    "action": {"type": "string", "enum": ["left_click", "type", "key", "scroll", "answer"]},
                    "coordinate": {"type": "array", "items": {"type": "integer"}},
                    "text": {"type": "string"},
                },
                "required": ["action"],
            },
        },
    }
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=DEFAULT_ARCH, help="architecture JSON")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with a small --arch)")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded in the measured step")
    parser.add_argument("--with-talker", action="store_true", help="also build the Talker + Code2Wav")
    args = parser.parse_args(argv)

    refused = require_torch_cuda("gpu_smoke", "the full-size Qwen3-Omni-30B-A3B", allow_cpu=not args.device.startswith("cuda"))
    if refused is not None:
        return refused
    import torch
    if not args.arch.is_file():
        print(f"gpu_smoke: architecture file not found: {args.arch}", file=sys.stderr)
        return 2

    import transformers

    from omni_agent.messages import ImagePart, SystemMessage, TextPart, UserMessage
    from omni_agent.models.base import GenerationSettings, ModelRequest
    from omni_agent.runtime import QwenOmniModel
    from omni_agent.runtime.synthetic import qwen3_omni_config_from_arch

    log(f"machine: {machine()}")
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}")
    arch = json.loads(args.arch.read_text())
    config = qwen3_omni_config_from_arch(arch, enable_audio_output=args.with_talker)
    device = torch.device(args.device)
    try:
        t0 = time.perf_counter()
        log(f"building {args.arch.name} with random bf16 weights on {device} (talker={'on' if args.with_talker else 'off'})")
        model = build_random_model(config, device, dtype=torch.bfloat16)
        params = sum(p.numel() for p in model.parameters())
        build_s = time.perf_counter() - t0
        log(f"built {params / 1e9:.2f} B parameters in {build_s:.1f} s")
        if device.type == "cuda":
            torch.cuda.synchronize()
            log(f"memory after build: {torch.cuda.memory_allocated() / 2**30:.1f} GiB")

        with tempfile.TemporaryDirectory() as tmp:
            processor = build_processor(Path(tmp))
        qwen = QwenOmniModel.from_objects(model, processor, name="qwen3-omni-30b-a3b (random bf16)")
        shot = screenshot()
        request = ModelRequest(
            messages=[
                SystemMessage("You operate a desktop through the computer_use tool."),
                UserMessage([TextPart(text="Click the OK button in the dialog."), ImagePart.from_pil(shot)]),
            ],
            tools=TOOLS,
            settings=GenerationSettings(max_new_tokens=args.new_tokens, temperature=0.0),
        )
        t_pre = time.perf_counter()
        prepared = qwen.prepare(request)
        preprocess_s = time.perf_counter() - t_pre
        w, h = qwen.image_spec.resized_size(*shot.size)
        log(
            f"prompt: {prepared.prompt_tokens} tokens, screenshot {shot.width}x{shot.height} -> {w}x{h} "
            f"({qwen.image_spec.tokens_for(*shot.size)} image tokens), preprocess {preprocess_s * 1000:.0f} ms"
        )
        # Random weights may stop at once: force the decode length so ms/token is measured.
        force = {"min_new_tokens": args.new_tokens}
        log("warm-up step (4 tokens)")
        qwen._generate_locked(
            prepared, GenerationSettings(max_new_tokens=4), on_text=None, preprocess_s=0.0, thinker_extra={"min_new_tokens": 4}
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        log(f"measured step ({args.new_tokens} tokens)")
        result = qwen._generate_locked(
            prepared, request.settings, on_text=None, preprocess_s=preprocess_s, thinker_extra=force
        )
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    except torch.cuda.OutOfMemoryError as exc:
        print(f"gpu_smoke: out of GPU memory ({str(exc).splitlines()[0]}); try without --with-talker", file=sys.stderr)
        return 3
    t = result.timings
    per_token = t.get("decode_per_token", float("nan")) * 1000
    print("")
    print("== gpu_smoke: Qwen3-Omni-30B-A3B Thinker, one agent step (random bf16 weights) ==")
    print(f"machine         {machine()}")
    print(f"attention       {model.config.thinker_config.text_config._attn_implementation}")
    print(f"parameters      {params / 1e9:.2f} B (talker {'on' if args.with_talker else 'off'})")
    print(f"build           {build_s:.1f} s")
    print(f"prompt tokens   {result.prompt_tokens} (1280x720 screenshot + tools)")
    print(f"preprocess      {t['preprocess'] * 1000:.0f} ms")
    print(f"prefill         {t['prefill'] * 1000:.0f} ms (time to first token)")
    print(f"decode          {per_token:.1f} ms/token over {result.completion_tokens} tokens")
    print(f"peak memory     {peak:.1f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
