"""``omni-agent serve`` on the GPU: concurrent GUI sessions and spoken answers through HTTP.

Builds the full-size Qwen3-Omni-30B-A3B (Thinker + Talker) with random bf16 weights on the GPU
(gpu_smoke's builder), serves it with the fast engine (``--engine fast``, the default:
``FastBatchedEngine``, row-static KV cache, one CUDA graph per batch bucket) or the plain one
(``--engine plain``: ``BatchedEngine``, eager transformers modules) on 127.0.0.1 and drives it
with real HTTP clients:

* GUI sessions: 1, 4 and 16 concurrent 10-step episodes (gpu_step's scenario: each step adds a
  tool result with a new 1280x704 screenshot and the model answers with a 40-token call), each
  session its own ``session_id`` so its KV prefix is reused from step to step;
* spoken answers: the same number of concurrent streamed requests with
  ``modalities: ["text", "audio"]``: request in -> Thinker text -> Talker -> first audio delta.

Printed per concurrency: aggregate decode throughput (completion tokens / wall time), step
latency p50 / p95, time to first audio p50 / max and the Talker's real-time factor (Talker time
/ audio time), plus the level's largest decode batch and its KV reuse. Before the levels (fast
engine): the next-token logits of 16 requests decoded alone vs in one batch of 16 and of 16
prompts prefilled alone vs in one forward (relative error, same top-1), and greedy answers over
HTTP alone vs together.

    python evals/perf/gpu_serve.py                      # exits 2 with a clear message without CUDA
    python evals/perf/gpu_serve.py --sessions 1,4,16 --steps 10 --json $OUT/gpu_serve.json
    python evals/perf/gpu_serve.py --engine plain       # the eager BatchedEngine, for comparison
    python evals/perf/gpu_serve.py --dry-run            # tiny model on CPU: checks the script only
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import gpu_smoke  # noqa: E402
import gpu_step  # noqa: E402


def log(message: str) -> None:
    print(f"[gpu_serve {time.strftime('%H:%M:%S')}] {message}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def build_served_model(args):
    """The random full-size model (or the tiny one for --dry-run) wrapped in the real backend."""
    import torch

    from omni_agent.runtime import QwenOmniModel, SpeechSettings
    from omni_agent.runtime.synthetic import qwen3_omni_config_from_arch, tiny_config

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    if args.dry_run:
        config = tiny_config("qwen3_omni")
    else:
        config = qwen3_omni_config_from_arch(json.loads(args.arch.read_text()), enable_audio_output=True)
    t0 = time.perf_counter()
    model = gpu_smoke.build_random_model(config, device, dtype=torch.float32 if args.dry_run else torch.bfloat16)
    log(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params (Thinker + Talker) in {time.perf_counter() - t0:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        processor = gpu_smoke.build_processor(Path(tmp))
    # Random weights: fix the Talker's frames per text token so every answer has a known length.
    speech = SpeechSettings(seed=0, min_frames_per_token=args.frames_per_token, max_frames_per_token=args.frames_per_token)
    return QwenOmniModel.from_objects(model, processor, name="qwen3-omni-30b-a3b-random", speech=speech), device


def session_requests(steps: int):
    """Per step, the OpenAI ``messages`` of gpu_step's GUI episode up to that step."""
    from omni_agent.models.openai_convert import messages_to_openai

    head, turns = gpu_step.episode_messages(steps, tool_text="Work step by step; answer with exactly one tool call per step.")
    transcript = list(head)
    out = []
    for step in range(steps):
        out.append(messages_to_openai(transcript))
        transcript.extend(turns[step])
    return out


async def gui_session(client, base: str, sid: str, requests: list, tools: list, call_tokens: int) -> list[dict]:
    rows = []
    for messages in requests:
        t0 = time.perf_counter()
        r = await client.post(f"{base}/chat/completions", json={
            "model": "qwen3-omni-30b-a3b-random", "messages": messages, "tools": tools, "max_tokens": call_tokens,
            "temperature": 0, "session_id": sid, "tool_choice": "none"})
        r.raise_for_status()
        usage = r.json()["usage"]
        rows.append({"ms": (time.perf_counter() - t0) * 1000, "tokens": usage["completion_tokens"],
                     "prompt": usage["prompt_tokens"], "cached": usage["prompt_tokens_details"]["cached_tokens"]})
    return rows


async def spoken_answer(client, base: str, text_tokens: int) -> dict:
    body = {"model": "qwen3-omni-30b-a3b-random", "stream": True, "max_tokens": text_tokens, "temperature": 0,
            "modalities": ["text", "audio"], "audio": {"voice": "Ethan", "format": "pcm16"},
            "messages": [{"role": "user", "content": "In one sentence, what is on the screen?"}]}
    t0 = time.perf_counter()
    first_audio = last_audio = last_text = None
    samples = 0
    async with client.stream("POST", f"{base}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    last_text = time.perf_counter()
                if delta.get("audio"):
                    now = time.perf_counter()
                    first_audio = first_audio or now
                    last_audio = now
                    samples += len(base64.b64decode(delta["audio"]["data"])) // 2
    audio_s = samples / 24_000
    talker_s = (last_audio or t0) - (last_text or t0)
    return {"ttfa_ms": ((first_audio or t0) - t0) * 1000, "audio_s": audio_s, "rtf": talker_s / audio_s if audio_s else float("nan")}


async def alone_vs_batched(base: str, n: int = 4, tokens: int = 8) -> dict:
    """Greedy answers of ``n`` different prompts served one at a time, then all at once."""
    import httpx

    def body(i: int) -> dict:
        return {"model": "qwen3-omni-30b-a3b-random", "max_tokens": tokens, "temperature": 0,
                "messages": [{"role": "user", "content": f"Question {i}: " + "tell me more " * (i * 7 + 1)}]}

    async with httpx.AsyncClient(timeout=None) as client:
        alone = []
        for i in range(n):
            alone.append((await client.post(f"{base}/chat/completions", json=body(i))).json()["choices"][0]["message"]["content"])
        together = await asyncio.gather(*[client.post(f"{base}/chat/completions", json=body(i)) for i in range(n)])
    batched = [r.json()["choices"][0]["message"]["content"] for r in together]
    return {"identical": sum(a == b for a, b in zip(alone, batched)), "of": n}


def logits_alone_vs_batched(engine, tokenizer, n: int = 16) -> dict:
    """Prefill ``n`` different prompts into rows 0..n-1 (the server is idle), then decode their
    next token alone (batch 1) and all together (batch n): relative error of the logits and
    top-1 agreement per request. Rows are given back untouched in the row table (never kept)."""
    import torch

    from omni_agent.runtime.fast.multi_prefill import prefill_many

    stack, cache, decoder = engine.stack, engine.cache, engine.decoder
    n = min(n, cache.rows // 2)  # rows 0..n-1 alone, n..2n-1 together
    entries = []
    prompts = []
    singles = []
    with torch.inference_mode():
        for i in range(n):
            ids = tokenizer(f"Request {i}: " + "describe the screen and the next action " * (1 + 3 * i))["input_ids"]
            x = stack.model.embed_tokens(torch.tensor([ids], device=engine.device))
            pos = torch.arange(len(ids), device=engine.device).view(1, 1, -1).expand(3, 1, -1)
            logits = stack.forward(x, pos, cache.row(i), 0)
            singles.append(logits[0, -1].float())
            prompts.append(ids)
            entries.append((int(logits[0, -1].argmax()), len(ids), i, len(ids)))
        together_rows = n  # the same prompts prefilled in one forward, into rows n..2n-1
        flat = [t for ids in prompts[:together_rows] for t in ids]
        pos = torch.cat([torch.arange(len(ids)) for ids in prompts[:together_rows]]).to(engine.device).view(1, 1, -1).expand(3, 1, -1)
        parts = [(cache.row(n + j), 0, len(ids)) for j, ids in enumerate(prompts[:together_rows])]
        shared = prefill_many(stack, stack.model.embed_tokens(torch.tensor([flat], device=engine.device)), pos, parts).float()
        single = torch.stack(singles[:together_rows])
        prefill_rel = ((shared - single).norm(dim=-1) / single.norm(dim=-1)).tolist()
        prefill_same = int((shared.argmax(-1) == single.argmax(-1)).sum())
        tokens, positions, rows, slots = (list(col) for col in zip(*entries))
        alone = torch.cat([decoder.step([tokens[i]], [positions[i]], [rows[i]], [slots[i]]).clone() for i in range(n)])
        together = decoder.step(tokens, positions, rows, slots).clone()
        graphs, decoder.graphs_on = decoder.graphs_on, False
        eager = decoder.step(tokens, positions, rows, slots).clone()  # the same step without its graph
        decoder.graphs_on = graphs
    rel = ((together - alone).norm(dim=-1) / alone.norm(dim=-1)).tolist()
    same = (together.argmax(-1) == alone.argmax(-1)).tolist()
    graph_rel = float(((together - eager).norm() / eager.norm()).item())
    return {"batch": n, "rel_err_max": max(rel), "rel_err_median": statistics.median(rel), "same_top1": sum(same), "of": n,
            "graph_vs_eager_rel_err": graph_rel, "prefill_together_rel_err_max": max(prefill_rel),
            "prefill_together_same_top1": prefill_same, "prefill_together_of": together_rows}


def kernel_check(engine) -> dict:
    """The Triton batched attention against its torch reference on the model's head shapes
    (bf16 cache, 16 entries over random rows and lengths, padding entries included)."""
    import torch

    from omni_agent.runtime.fast.batched_kernels import batched_decode_attention, batched_decode_attention_reference

    s = engine.stack
    gen = torch.Generator(device="cpu").manual_seed(0)
    rows, length = 8, 4096
    k = torch.randn((rows + 1, s.num_kv_heads, length, s.head_dim), generator=gen).to(engine.device, engine.dtype)
    v = torch.randn((rows + 1, s.num_kv_heads, length, s.head_dim), generator=gen).to(engine.device, engine.dtype)
    q = torch.randn((16, s.num_heads, s.head_dim), generator=gen).to(engine.device, engine.dtype)
    row_ids = torch.randint(0, rows + 1, (16,), generator=gen).to(engine.device)
    last = torch.randint(0, length, (16,), generator=gen).to(engine.device)
    want = batched_decode_attention_reference(q, k, v, row_ids, last, length, s.scale).float()
    got = batched_decode_attention(q, k, v, row_ids, last, length, s.scale).float()
    return {"rel_err": float(((got - want).norm() / want.norm()).item())}


async def run_level(base: str, sessions: int, args, requests: list, metrics, *, tag: str = "gui", engine=None) -> dict:
    import httpx

    tools = gpu_smoke.TOOLS + gpu_step.EXTRA_TOOLS
    metrics.max_batch_size.set(0)  # this level's largest batch
    prepared = getattr(engine, "prepare_seconds", None)
    prepare_mark = len(prepared) if prepared is not None else 0
    marks = {name: len(getattr(engine, name, ())) for name in ("step_seconds", "prefill_seconds")}
    shared_before = metrics.value("omni_shared_decode_steps_total")
    steps_before = metrics.value("omni_decode_steps_total")
    async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=64)) as client:
        t0 = time.perf_counter()
        per_session = await asyncio.gather(*[
            gui_session(client, base, f"{tag}-{sessions}-{i}", requests, tools, args.call_tokens) for i in range(sessions)])
        gui_wall = time.perf_counter() - t0
        prepare_ms = [1000 * v for v in list(prepared)[prepare_mark:]] if prepared is not None else []
        steps = list(getattr(engine, "step_seconds", ()))[marks["step_seconds"]:]
        prefills = list(getattr(engine, "prefill_seconds", ()))[marks["prefill_seconds"]:]
        top = max((b for b, _ in steps), default=0)
        done = [r for s in per_session for r in s]
        log(f"  {sessions} sessions: {sum(r['tokens'] for r in done) / gui_wall:.1f} tok/s, step p50 "
            f"{pct([r['ms'] for r in done], 0.5):.0f} ms p95 {pct([r['ms'] for r in done], 0.95):.0f} ms, max batch "
            f"{metrics.value('omni_max_batch_size'):.0f}; now {sessions} spoken answers")
        spoken = await asyncio.gather(*[spoken_answer(client, base, args.answer_tokens) for _ in range(sessions)])
    rows = [r for s in per_session for r in s]
    tokens = sum(r["tokens"] for r in rows)
    return {
        "sessions": sessions,
        "steps": len(rows),
        "tokens_per_s": tokens / gui_wall,
        "wall_s": gui_wall,
        "step_p50_ms": pct([r["ms"] for r in rows], 0.5),
        "step_p95_ms": pct([r["ms"] for r in rows], 0.95),
        "last_prompt_tokens": rows[-1]["prompt"],
        "cached_share": sum(r["cached"] for r in rows) / max(1, sum(r["prompt"] for r in rows)),
        "decode_steps": metrics.value("omni_decode_steps_total") - steps_before,
        "shared_decode_steps": metrics.value("omni_shared_decode_steps_total") - shared_before,
        "max_batch": metrics.value("omni_max_batch_size"),
        "prefilled_together_total": getattr(engine, "prefilled_together", None),
        "decode_step_p50_ms_at_max_batch": pct([1000 * t for b, t in steps if b == top], 0.5),
        "decode_step_p50_ms_batch1": pct([1000 * t for b, t in steps if b == 1], 0.5),
        "prefill_forward_p50_ms": pct([1000 * t for _, t in prefills], 0.5),
        "prefill_forward_total_s": sum(t for _, t in prefills),
        "prepare_p50_ms": pct(prepare_ms, 0.5),
        "prepare_p95_ms": pct(prepare_ms, 0.95),
        "ttfa_p50_ms": pct([s["ttfa_ms"] for s in spoken], 0.5),
        "ttfa_max_ms": max(s["ttfa_ms"] for s in spoken),
        "talker_rtf_median": statistics.median(s["rtf"] for s in spoken),
        "audio_s_median": statistics.median(s["audio_s"] for s in spoken),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=Path, default=gpu_smoke.DEFAULT_ARCH)
    parser.add_argument("--sessions", default="1,4,16")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--call-tokens", type=int, default=40)
    parser.add_argument("--answer-tokens", type=int, default=15, help="text tokens of each spoken answer")
    parser.add_argument("--frames-per-token", type=float, default=2.0, help="Talker frames (80 ms) per text token")
    parser.add_argument("--engine", choices=("fast", "plain"), default="fast", help="FastBatchedEngine (default) or BatchedEngine")
    parser.add_argument("--row-tokens", type=int, default=None, help="fast engine: KV slots per request (default: the engine's, 12288 on CUDA)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU: checks the script, measures nothing")
    args = parser.parse_args(argv)
    refused = gpu_smoke.require_torch_cuda("gpu_serve", "the full-size Qwen3-Omni-30B-A3B with its Talker", allow_cpu=args.dry_run)
    if refused is not None:
        return refused
    from omni_agent.serve.app import create_app
    from omni_agent.serve.engine import BatchedEngine
    from omni_agent.serve.fast_engine import FastBatchedEngine
    from omni_agent.serve.metrics import ServeMetrics
    from omni_agent.serve.server import BackgroundServer

    report: dict = gpu_smoke.run_report("gpu_serve")
    qwen, device = build_served_model(args)
    metrics = ServeMetrics()
    report["engine"] = args.engine
    if args.engine == "fast":
        row_tokens = args.row_tokens or (12288 if args.dry_run else None)  # a 10-step episode is ~9.4k tokens
        engine = FastBatchedEngine(qwen, metrics=metrics, row_tokens=row_tokens)
        log(f"fast engine: {engine.cache.rows} rows x {engine.cache.row_tokens} tokens ({engine.cache.nbytes / 2**30:.1f} GiB); "
            f"grouped experts from batch {engine.decoder.grouped_from} (grouped/gemv time per bucket: "
            f"{ {b: round(r, 2) for b, r in engine.expert_choice.items()} })")
        if engine.decoder.triton_attention:
            report["attention_kernel"] = kernel_check(engine)
            log(f"Triton batched attention vs torch reference (bf16): rel. err {report['attention_kernel']['rel_err']:.2e}")
        report["logits_alone_vs_batched"] = check = logits_alone_vs_batched(engine, qwen.processor.tokenizer)
        log(f"logits alone vs in a batch of {check['batch']}: rel. err max {check['rel_err_max']:.2e} median "
            f"{check['rel_err_median']:.2e}, same top-1 {check['same_top1']}/{check['of']}; graph vs eager step "
            f"rel. err {check['graph_vs_eager_rel_err']:.2e}; {check['prefill_together_of']} prompts prefilled together vs "
            f"alone: rel. err max {check['prefill_together_rel_err_max']:.2e}, same top-1 "
            f"{check['prefill_together_same_top1']}/{check['prefill_together_of']}")
        buckets = [b for b in engine.decoder.batch_sizes if b <= max(int(s) for s in args.sessions.split(",") if s)]
        log(f"captured {engine.decoder.graphs_captured} graphs so far; warming up batch buckets {buckets} x lengths {engine.decoder.length_sizes}")
        report["graph_warm_up_s"] = engine.warm_up(buckets)
        log(f"warm-up {report['graph_warm_up_s']:.1f} s, {engine.decoder.graphs_captured} graphs")
    else:
        engine = BatchedEngine(qwen, metrics=metrics)
    server = BackgroundServer(create_app(engine, metrics=metrics)).start()
    log(f"serving on {server.base_url} ({type(engine).__name__}); KV budget {engine.budget.budget / 2**30:.1f} GiB ({engine.budget.per_token} B/token)")
    requests = session_requests(args.steps)
    levels = []
    try:
        log("warm-up: one session step and one spoken answer")
        asyncio.run(run_level(server.base_url, 1, argparse.Namespace(**{**vars(args), "call_tokens": 4}), requests[:1], metrics, tag="warm"))
        report["alone_vs_batched"] = asyncio.run(alone_vs_batched(server.base_url))
        log(f"greedy answers alone vs in one batch (bf16): {report['alone_vs_batched']['identical']}/{report['alone_vs_batched']['of']} identical")
        for sessions in [int(s) for s in args.sessions.split(",") if s]:
            log(f"{sessions} concurrent sessions x {args.steps} steps, then {sessions} spoken answers")
            row = asyncio.run(run_level(server.base_url, sessions, args, requests, metrics, engine=engine))
            levels.append(row)
            log(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}))
            if args.json is not None:  # kept after every level: a run cut short still leaves its figures
                args.json.write_text(json.dumps({**report, "levels": levels}, indent=2))
    finally:
        server.stop()
    report["levels"] = levels
    print(f"\nmachine     {report['machine']}; torch {report['torch']}, transformers {report['transformers']}, {report['date']}")
    if args.engine == "fast":
        check = report["logits_alone_vs_batched"]
        print("engine      omni_agent.serve FastBatchedEngine: row-static KV cache, batched decode (one CUDA graph per batch bucket), "
              "continuous batching, session rows reused")
        print(f"logits      alone vs in a batch of {check['batch']}: rel. err max {check['rel_err_max']:.2e}, "
              f"same top-1 {check['same_top1']}/{check['of']}; prefilled together vs alone: rel. err max "
              f"{check['prefill_together_rel_err_max']:.2e}, same top-1 {check['prefill_together_same_top1']}/{check['prefill_together_of']}")
    else:
        print("engine      omni_agent.serve BatchedEngine: plain transformers path (eager, DynamicCache), continuous batching, session KV reuse")
    print(f"greedy      answers over HTTP alone vs together: {report['alone_vs_batched']['identical']}/{report['alone_vs_batched']['of']} identical")
    print(f"{'sessions':>8} {'tok/s':>8} {'step p50':>9} {'step p95':>9} {'TTFA p50':>9} {'TTFA max':>9} {'RTF':>6} {'max batch':>9} {'reused':>7}")
    for r in levels:
        print(f"{r['sessions']:>8} {r['tokens_per_s']:>8.1f} {r['step_p50_ms']:>7.0f}ms {r['step_p95_ms']:>7.0f}ms "
              f"{r['ttfa_p50_ms']:>7.0f}ms {r['ttfa_max_ms']:>7.0f}ms {r['talker_rtf_median']:>6.2f} {r['max_batch']:>9.0f} "
              f"{r['cached_share'] * 100:>6.0f}%")
    if any("decode_step_p50_ms_batch1" in r for r in levels):
        print(f"{'sessions':>8} {'decode step p50 (B=1 / max B)':>30} {'prefill fwd p50':>16} {'prefill fwd sum':>16} {'prepare p50':>12}")
        for r in levels:
            print(f"{r['sessions']:>8} {r['decode_step_p50_ms_batch1']:>12.1f} / {r['decode_step_p50_ms_at_max_batch']:>5.1f} ms (B={r['max_batch']:.0f})"
                  f" {r['prefill_forward_p50_ms']:>14.0f}ms {r['prefill_forward_total_s']:>15.2f}s {r['prepare_p50_ms']:>10.0f}ms")
    if len(levels) >= 2:
        one, many = levels[0], levels[-1]
        print(f"throughput x{many['tokens_per_s'] / one['tokens_per_s']:.1f} at {many['sessions']} sessions (target >= 8x); "
              f"step p95 x{many['step_p95_ms'] / one['step_p95_ms']:.1f} (target <= 2x); TTFA p50 {one['ttfa_p50_ms']:.0f} ms at "
              f"{one['sessions']} (target <= 300), {many['ttfa_p50_ms']:.0f} ms at {many['sessions']} (target <= 600); "
              f"RTF {many['talker_rtf_median']:.2f} at {many['sessions']} (target <= 0.3)")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
