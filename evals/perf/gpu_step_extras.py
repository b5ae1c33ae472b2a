"""Issue 15's measurements for ``gpu_step.py``: steady prefill, device preprocessing, in-place
eviction (long episode + logits against a full re-prefill). Each function returns a dict of
figures (or a line) that gpu_step.py prints and writes to its JSON report; all run on CPU too
(``--dry-run``), where the figures mean nothing but the code paths are exercised."""

from __future__ import annotations

import statistics
import time
from typing import Any


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    at = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[at]


def spread(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(values_ms),
        "p95_ms": percentile(values_ms, 95),
        "min_ms": min(values_ms),
        "max_ms": max(values_ms),
        "n": len(values_ms),
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steady_prefill(engine: Any, inputs: Any, *, repeats: int, profile_path: Any = None) -> dict[str, Any]:
    """The forward over the last image + what follows it (the step-10 prefill: ~994 new tokens
    after a ~10.7k-token cached prefix), ``repeats`` times on the same state: p50 / p95 of the
    forward alone, as the step timings measure it. With ``profile_path``: one profiled run's
    top kernels written there (torch.profiler table)."""
    import torch

    from omni_agent.runtime.fast.thinker import StepPlan

    plan = engine.plan(inputs)
    cut = plan.spans[-1].start
    engine.reset()
    with torch.inference_mode():
        engine.prefill(inputs, StepPlan(ids=plan.ids[:cut], spans=[s for s in plan.spans if s.end <= cut], reuse=0))
    times = []
    vision = []
    for i in range(repeats + 2):
        engine.state.truncate(cut)
        with torch.inference_mode():
            logits, t = engine.prefill(inputs, StepPlan(ids=plan.ids, spans=plan.spans, reuse=cut))
        if i >= 2:  # two warm-ups: new shapes on the first
            times.append(t["prefill_forward"] * 1000)
            vision.append(t["vision"] * 1000)
    out: dict[str, Any] = {"new_tokens": len(plan.ids) - cut, "cached_prefix": cut, "forward": spread(times), "vision": spread(vision)}
    mode = engine.stack.prefill_experts
    if mode is not None:  # the same forward through the transformers experts module, for comparison
        engine.stack.prefill_experts = None
        module_times = []
        for i in range(min(repeats, 8) + 2):
            engine.state.truncate(cut)
            with torch.inference_mode():
                module_logits, t = engine.prefill(inputs, StepPlan(ids=plan.ids, spans=plan.spans, reuse=cut))
            if i >= 2:
                module_times.append(t["prefill_forward"] * 1000)
        engine.stack.prefill_experts = mode
        out["experts"] = mode
        out["forward_with_module_experts"] = spread(module_times)
        out["module_vs_grouped_logits_rel_err"] = float((logits - module_logits).norm() / module_logits.norm())
        out["module_experts_implementation"] = str(getattr(engine.thinker.config.text_config, "_experts_implementation", None))
    if profile_path is not None and engine.device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        engine.state.truncate(cut)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof, torch.inference_mode():
            engine.prefill(inputs, StepPlan(ids=plan.ids, spans=plan.spans, reuse=cut))
        table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        profile_path.write_text(table)
        out["profile"] = str(profile_path)
    return out


def device_preprocessing(processor: Any, screenshot: Any, *, device: Any, repeats: int = 20) -> dict[str, Any]:
    """The processor (CPU) against ``preprocess_on_device`` on one screenshot: values and time."""
    import torch

    from omni_agent.runtime.fast.device_image import device_image_spec, preprocess_on_device

    inner = processor.image_processor
    inner = getattr(inner, "_inner", inner)
    spec = device_image_spec(inner)
    if spec is None:
        return {"error": f"{type(inner).__name__}: not a processor the device path reproduces"}
    ref = inner([screenshot], return_tensors="pt")
    rows, grid = preprocess_on_device(screenshot, spec, device=device, dtype=torch.float32)
    diff = (rows.cpu() - ref["pixel_values"].float()).abs().max().item()
    cpu_ms, dev_ms = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        inner([screenshot], return_tensors="pt")
        cpu_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        preprocess_on_device(screenshot, spec, device=device, dtype=torch.bfloat16)
        _sync(device)
        dev_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "size": list(screenshot.size),
        "processor": type(inner).__name__,
        "same_grid": bool(torch.equal(grid, ref["image_grid_thw"])),
        "max_abs_diff_float32": diff,
        "one_uint8_level": 1 / 255 / min(spec.std),
        "processor_cpu": spread(cpu_ms),
        "on_device": spread(dev_ms),
    }


def long_episode(qwen: Any, head: list, turns: list, *, tools: list, settings: Any, force: dict, max_images: int, dev: Any) -> dict[str, Any]:
    """30-step episode with an image budget: per-step latency, which steps evicted in place
    (or re-prefilled, with ``eviction="reprefill"``), eviction steps against the others."""
    from omni_agent.context import apply_image_budget
    from omni_agent.models.base import ModelRequest

    engine = qwen.fast
    engine.reset(forget_images=True)
    transcript = list(head)
    rows = []
    evicted_before = 0
    for step, (call_msg, tool_msg) in enumerate(turns, start=1):
        messages, dropped = apply_image_budget(transcript, max_images=max_images, chunk=2)
        request = ModelRequest(messages=messages, tools=tools, settings=settings)
        dev.sync()
        t0 = time.perf_counter()
        prepared = qwen.prepare(request)
        pre = time.perf_counter() - t0
        result = qwen._generate_locked(prepared, settings, on_text=None, preprocess_s=pre, thinker_extra=force)
        dev.sync()
        t = result.timings
        rows.append(
            {
                "step": step,
                "prompt": result.prompt_tokens,
                "eviction": dropped > evicted_before,
                "in_place": "evict_in_place" in t,
                "evict_ms": t.get("evict_in_place", 0.0) * 1000,
                "prefilled_tokens": int(t.get("prefilled_tokens", 0)),
                "preprocess_ms": pre * 1000,
                "forward_ms": t.get("prefill_forward", 0.0) * 1000,
                "decode_ms_per_token": t.get("decode_per_token", float("nan")) * 1000,
                "step_ms": (pre + t["generate"]) * 1000,
            }
        )
        evicted_before = dropped
        transcript = transcript + [call_msg, tool_msg]
    steady = [r for r in rows if r["step"] > max_images + 1]  # the budget is full from here on
    with_ev = [r["step_ms"] for r in steady if r["eviction"]]
    without = [r["step_ms"] for r in steady if not r["eviction"]]
    ratio = statistics.mean(with_ev) / statistics.mean(without) if with_ev and without else float("nan")
    return {"rows": rows, "eviction_steps_ms": with_ev, "other_steps_ms": without, "eviction_over_other": ratio}


def eviction_logits(qwen: Any, head: list, turns: list, *, tools: list, max_images: int) -> dict[str, Any]:
    """Logits after an in-place eviction against a full re-prefill of the same prompt (the exact
    answer): the cache holds the prompt before the first eviction, the next prompt evicts."""
    import torch

    from omni_agent.context import apply_image_budget
    from omni_agent.models.base import GenerationSettings, ModelRequest

    engine = qwen.fast
    settings = GenerationSettings(max_new_tokens=1)
    transcript = list(head)
    previous = None
    for call_msg, tool_msg in turns:
        transcript = transcript + [call_msg, tool_msg]
        messages, dropped = apply_image_budget(transcript, max_images=max_images, chunk=2)
        if dropped:
            break
        previous = messages
    if previous is None or not dropped:
        return {"error": "no eviction in this episode"}
    before = qwen.prepare(ModelRequest(messages=previous, tools=tools, settings=settings)).inputs
    after = qwen.prepare(ModelRequest(messages=messages, tools=tools, settings=settings)).inputs
    engine.reset()
    with torch.inference_mode():
        engine.prefill(before, engine.plan(before))
        plan = engine.plan(after)
        in_place, _ = engine.prefill(after, plan)
        engine.reset()
        full, _ = engine.prefill(after, engine.plan(after))
    err = float((in_place - full).norm() / full.norm())
    top5 = set(torch.topk(full, 5).indices.tolist())
    return {
        "evicted_images": dropped,
        "prompt_tokens": len(plan.ids),
        "kept_in_place": plan.edit.kept_tokens if plan.edit is not None else 0,
        "computed": plan.to_compute,
        "plain_cut_would_prefill": len(plan.ids) - plan.reuse,
        "logits_rel_err": err,
        "top1_same": int(in_place.argmax()) == int(full.argmax()),
        "top1_in_reference_top5": int(in_place.argmax()) in top5,
    }


def decode_profile(engine: Any, *, path: Any, replays: int = 50) -> dict[str, Any]:
    """Where a decoded token's time goes: the captured graph's replay time against the sum of the
    same step's kernel times run eagerly (the difference is launch gaps inside the graph), the
    number of kernels per token, and the top kernels (torch.profiler table written to ``path``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if engine.device.type != "cuda" or not engine._graphs:
        return {"error": "needs CUDA and a captured decode graph"}
    slot = len(engine.state)
    bucket = engine._bucket(slot + 1)
    graph, _ = engine._graph(bucket)
    with torch.inference_mode():
        engine.slot_buf.fill_(slot)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        graph.replay()
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        replay_ms = start.elapsed_time(end) / replays
        engine._run_step(bucket)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            engine._run_step(bucket)
            torch.cuda.synchronize()
    events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_ms = sum(e.time_range.elapsed_us() for e in events) / 1000
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))
    return {"context_slots": slot, "bucket": bucket, "graph_replay_ms": replay_ms, "kernels": len(events), "kernel_sum_ms": kernel_ms, "table": str(path)}


def _graph_time_ms(fn: Any, replays: int = 20) -> float:
    """Milliseconds per replay of a CUDA graph capturing ``fn()``."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / replays


def decode_attention_check(device: Any, *, layers: int = 48, bucket: int = 12288, sweep: bool = True) -> dict[str, Any]:
    """The Triton decode-attention kernel against the matmul form (and float64) on fresh random
    bf16 K/V in Thinker shapes (32 query heads, 4 KV heads, 128 dims), and both timed as one
    token's worth of layers inside a CUDA graph."""
    import torch

    from omni_agent.runtime.fast.attention_kernels import decode_attention
    from omni_agent.runtime.fast.layers import attention_decode

    if device.type != "cuda":
        return {"error": "needs CUDA"}
    out: dict[str, Any] = {}
    scale = 128**-0.5
    kc = torch.randn(layers, 1, 4, bucket, 128, device=device, dtype=torch.bfloat16)
    vc = torch.randn(layers, 1, 4, bucket, 128, device=device, dtype=torch.bfloat16)
    q = torch.randn(1, 32, 1, 128, device=device, dtype=torch.bfloat16)
    slots = torch.arange(bucket, device=device)
    for context in (300, 2700, 11600):
        slot = torch.tensor([context - 1], device=device)
        valid = slots <= slot
        got = decode_attention(q, kc[0], vc[0], slot, bucket, scale)
        ref = attention_decode(q.double(), kc[0].double(), vc[0].double(), valid, scale)
        mm = attention_decode(q, kc[0], vc[0], valid, scale)
        err = lambda a: float((a.double() - ref).norm() / ref.norm())  # noqa: E731
        t_kernel = _graph_time_ms(lambda: [decode_attention(q, kc[i], vc[i], slot, bucket, scale) for i in range(layers)])
        t_matmul = _graph_time_ms(lambda: [attention_decode(q, kc[i], vc[i], valid, scale) for i in range(layers)])
        out[context] = {
            "rel_err_kernel": err(got), "rel_err_matmul": err(mm),
            "kernel_ms_per_token": t_kernel, "matmul_ms_per_token": t_matmul,
        }  # fmt: skip
    out["router_topk"] = _router_check(device)
    # the fused K/V write: same output, the row lands in the cache
    slot = torch.tensor([11599], device=device)
    kn, vn = torch.randn(1, 4, 1, 128, device=device, dtype=torch.bfloat16), torch.randn(1, 4, 1, 128, device=device, dtype=torch.bfloat16)
    k2, v2 = kc[0].clone(), vc[0].clone()
    fused = decode_attention(q, k2, v2, slot, bucket, scale, k_new=kn, v_new=vn)
    k3, v3 = kc[0].clone(), vc[0].clone()
    k3.index_copy_(2, slot, kn)
    v3.index_copy_(2, slot, vn)
    plain = decode_attention(q, k3, v3, slot, bucket, scale)
    out["fused_kv_write"] = {
        "cache_rows_equal": bool(torch.equal(k2, k3) and torch.equal(v2, v3)),
        "out_max_diff": float((fused.float() - plain.float()).abs().max()),
        "ms_per_token": _graph_time_ms(lambda: [decode_attention(q, kc[i], vc[i], slot, bucket, scale, k_new=kn, v_new=vn) for i in range(layers)]),
    }
    if not sweep:
        return out
    for context in (2700, 11600):
        slot = torch.tensor([context - 1], device=device)
        times = {}
        for chunk in (64, 128, 256, 512):
            for block_n in (32, 64, 128):
                for warps in (2, 4, 8):
                    if block_n > chunk:
                        continue
                    fn = lambda: [decode_attention(q, kc[i], vc[i], slot, bucket, scale, chunk=chunk, block_n=block_n, num_warps=warps) for i in range(layers)]  # noqa: E731
                    times[f"chunk{chunk}_n{block_n}_w{warps}"] = round(_graph_time_ms(fn), 4)
        out[f"sweep_{context}_ms_per_token"] = times
        best = min(times, key=times.get)
        out[f"sweep_{context}_best"] = f"{best} {times[best]:.3f} ms"
    return out


def _router_check(device: Any) -> str:
    """The fused softmax + top-k router kernel against torch on fresh random logits."""
    import torch

    from omni_agent.runtime.fast.moe_kernels import router_topk

    same_ids = 0
    worst = 0.0
    for _ in range(50):
        logits = torch.randn(128, device=device, dtype=torch.bfloat16) * 3
        probs = torch.softmax(logits.float(), dim=-1)
        w, i = torch.topk(probs, 8)
        w = (w / w.sum()).to(torch.bfloat16)
        gw, gi = router_topk(logits, 8, normalize=True, dtype=torch.bfloat16)
        same_ids += int(torch.equal(gi, i))
        worst = max(worst, float((gw.float() - w.float()).abs().max()))
    return f"same experts in the same order {same_ids}/50, max weight diff {worst:.1e}"


def _event_ms(fn: Any, repeats: int = 10) -> float:
    """Median milliseconds of ``fn()`` timed with device events (after one warm-up call)."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def vision_graph_check(engine: Any, inputs: Any, *, repeats: int = 20) -> dict[str, Any]:
    """The last screenshot through the eager encoder (``get_image_features``, as before) and
    through its grid's CUDA graph (``vision_graph.py``): outputs compared, both timed (host clock
    around each call with a sync, as the step timings measure it)."""
    import torch

    from omni_agent.runtime.fast.vision_graph import VisionGraphs

    plan = engine.plan(inputs)
    span = plan.spans[-1]
    rows = inputs["pixel_values"][span.rows[0] : span.rows[1]].to(engine.device, engine.dtype)
    grid = torch.tensor([list(span.grid)], dtype=torch.long, device=engine.device)
    graphs = engine.vision_graphs or VisionGraphs(engine.inner.visual, use_graphs=engine.device.type == "cuda")
    eager_ms, graph_ms = [], []
    with torch.inference_mode():
        ref = engine.inner.get_image_features(rows, grid, return_dict=True)
        got, deep = graphs.encode(rows, span.grid)
        for _ in range(repeats):
            t0 = time.perf_counter()
            engine.inner.get_image_features(rows, grid, return_dict=True)
            _sync(engine.device)
            eager_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            graphs.encode(rows, span.grid)
            _sync(engine.device)
            graph_ms.append((time.perf_counter() - t0) * 1000)
    ref_embeds = ref.pooler_output[0]
    ref_deep = [d[0] for d in ref.deepstack_features]
    return {
        "grid": list(span.grid),
        "bit_identical": bool(torch.equal(got, ref_embeds) and all(torch.equal(a, b) for a, b in zip(deep, ref_deep))),
        "rel_err": float((got.float() - ref_embeds.float()).norm() / ref_embeds.float().norm()),
        "capture_checks": graphs.checks,
        "eager": spread(eager_ms),
        "graph": spread(graph_ms),
    }


def prefill_attention_backends(device: Any, *, new: int = 889, total: int = 11612, layers: int = 48) -> dict[str, Any]:
    """The step-10 prefill attention (``new`` queries at the end of ``total`` keys, lower-right
    causal, 32 query / 4 KV heads, 128 dims, bf16) through each sdpa backend that takes it, and
    FlexAttention: ms for 48 layers, or why the backend refused."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    if device.type != "cuda":
        return {"error": "needs CUDA"}
    q = torch.randn(1, 32, new, 128, device=device, dtype=torch.bfloat16)
    k = torch.randn(1, 4, total, 128, device=device, dtype=torch.bfloat16)
    v = torch.randn_like(k)
    kr, vr = k.repeat_interleave(8, dim=1), v.repeat_interleave(8, dim=1)
    scale = 128**-0.5
    out: dict[str, Any] = {"shape": f"q {new} x k {total}, 32/4 heads"}
    ref = None
    rows = torch.arange(new, device=device).view(-1, 1) + (total - new)
    mask = torch.arange(total, device=device).view(1, -1) <= rows
    cases = {
        "flash_lower_right_gqa": (SDPBackend.FLASH_ATTENTION, lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(new, total), scale=scale, enable_gqa=True)),
        "efficient_lower_right_gqa": (SDPBackend.EFFICIENT_ATTENTION, lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(new, total), scale=scale, enable_gqa=True)),
        "cudnn_lower_right_repeated": (SDPBackend.CUDNN_ATTENTION, lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=causal_lower_right(new, total), scale=scale)),
        "cudnn_bool_mask_repeated": (SDPBackend.CUDNN_ATTENTION, lambda: F.scaled_dot_product_attention(q, kr, vr, attn_mask=mask, scale=scale)),
    }  # fmt: skip
    for name, (backend, fn) in cases.items():
        try:
            with sdpa_kernel(backend):
                t0 = time.perf_counter()
                got = fn()
                torch.cuda.synchronize()
                first_ms = (time.perf_counter() - t0) * 1000
                ms = _event_ms(fn)
            ref = got if ref is None else ref
            out[name] = {"ms_48_layers": ms * layers, "first_call_ms": first_ms, "rel_err_vs_flash": float((got.float() - ref.float()).norm() / ref.float().norm())}
        except Exception as exc:  # noqa: BLE001 - a backend refusing this case is the finding
            out[name] = {"refused": str(exc).splitlines()[0][:200]}
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        offset = total - new
        block_mask = create_block_mask(lambda b, h, qi, ki: ki <= qi + offset, None, None, new, total, device=str(device))
        flex = torch.compile(flex_attention, dynamic=False)
        fn = lambda: flex(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=True)  # noqa: E731
        got = fn()
        out["flex_lower_right_gqa"] = {"ms_48_layers": _event_ms(fn) * layers, "rel_err_vs_flash": float((got.float() - ref.float()).norm() / ref.float().norm()) if ref is not None else None}
    except Exception as exc:  # noqa: BLE001
        out["flex_lower_right_gqa"] = {"refused": str(exc).splitlines()[0][:200]}
    return out
