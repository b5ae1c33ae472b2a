"""Clients of one resident model: an eval suite loads the checkpoint once and every episode is a
client of its server; ``load_model("openai:...")`` / ``omni-agent run`` work against it; the
OpenAI backend reads speech in OpenAI's and vLLM-Omni's shapes."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from omni_agent.models.openai_convert import StreamAssembler, response_from_openai

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_eval_smoke_with_a_local_checkpoint_loads_it_once(tmp_path: Path, tiny_qwen3_omni_dir: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "omni_agent.eval.cli", "smoke", "--model", f"qwen-omni:{tiny_qwen3_omni_dir}",
           "--workers", "2", "--only", "shell,files", "--limit", "4", "--out", str(run), "--no-progress", "--allow-failures"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    metrics = (run / "server-metrics.txt").read_text()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines() if line and not line.startswith("#")}
    assert samples["omni_model_loads_total"] == 1.0
    results = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    assert len(results) == 4 and not [r for r in results if r.get("infra_error")]
    served = samples['omni_requests_total{endpoint="chat",status="200"}']
    assert served >= len(results)  # every episode asked the one server
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == f"qwen-omni:{tiny_qwen3_omni_dir}" and info["served_as"].startswith("openai:http://127.0.0.1:")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["policy"] == f"qwen-omni:{tiny_qwen3_omni_dir}" and not summary["scripted"]


def test_load_model_openai_and_the_run_command_use_the_server(served_tiny_omni, tmp_path: Path) -> None:
    import asyncio

    from omni_agent.messages import UserMessage
    from omni_agent.models import load_model
    from omni_agent.models.base import GenerationSettings, ModelRequest

    spec = f"openai:{served_tiny_omni.base_url}#tiny-omni?can_speak=true&api_key_env=OMNI_TEST_KEY"
    import os

    os.environ["OMNI_TEST_KEY"] = served_tiny_omni.api_key
    model = load_model(spec)
    request = ModelRequest(messages=[UserMessage("hi")], settings=GenerationSettings(max_new_tokens=6), speak=True)
    whole = asyncio.run(model.complete(request))

    async def streamed():
        last = None
        async for chunk in model.stream(request):
            last = chunk.response or last
        await model.aclose()
        return last

    streamed_response = asyncio.run(streamed())
    assert whole.text and whole.text == streamed_response.text and whole.model == "tiny-omni"
    (a, rate_a), (b, rate_b) = whole.audio.load(), streamed_response.audio.load()
    assert rate_a == rate_b == 24_000 and a.size == b.size > 0

    env = {**os.environ, "OPENAI_API_KEY": served_tiny_omni.api_key}
    out = subprocess.run(
        [sys.executable, "-m", "omni_agent.cli", "run", "say hi", "--model", f"openai:{served_tiny_omni.base_url}#tiny-omni",
         "--tools", "files", "--max-steps", "1", "--max-new-tokens", "8", "--trajectory", str(tmp_path / "traj"), "--workspace", str(tmp_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    # 0 answered; 3 stopped without an answer (a random tiny model is cut off at 8 tokens): either way it ran
    assert out.returncode in (0, 3), out.stdout + out.stderr
    meta = json.loads(next((tmp_path / "traj").rglob("meta.json")).read_text())
    assert "tiny-omni" in json.dumps(meta)


def _wav(samples: np.ndarray) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24_000)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def test_openai_backend_reads_vllm_omni_two_choices_and_modality_chunks() -> None:
    tone = np.sin(np.linspace(0, 60, 2400)).astype(np.float32) * 0.5
    body = {"model": "Qwen3-Omni", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": None, "audio": {"data": _wav(tone), "transcript": None}}, "finish_reason": "stop"},
    ]}
    response = response_from_openai(body)
    samples, rate = response.audio.load()
    assert response.text == "Hello." and rate == 24_000 and samples.size == tone.size

    assembler = StreamAssembler()
    shown = [
        assembler.feed({"modality": "text", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
        assembler.feed({"modality": "text", "choices": [{"index": 0, "delta": {"content": "lo."}}]}),
        assembler.feed({"modality": "audio", "choices": [{"index": 0, "delta": {"content": _wav(tone[:1200])}}]}),
        assembler.feed({"modality": "audio", "choices": [{"index": 0, "delta": {"content": _wav(tone[1200:])}, "finish_reason": "stop"}]}),
    ]
    _, streamed = assembler.finish()
    assert "".join(shown) == streamed.text == "Hello."  # audio bytes are never shown as text
    assert streamed.audio.load()[0].size == tone.size
