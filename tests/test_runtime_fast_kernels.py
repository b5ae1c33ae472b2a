"""The fast path's prefill pieces against the transformers code they replace, on CPU tensors:
grouped-GEMM MoE prefill vs the experts module, GPU screenshot preprocessing vs the image
processor, grouped-query attention without repeating K/V. (On a GPU the same functions run
with the CUDA kernels; evals/perf/gpu_step.py checks and times them there.)"""

from __future__ import annotations

import pytest

import torch  # noqa: E402 - the qwen extra is part of every test install

from omni_agent.runtime.fast.device_image import accepts, device_image_spec, preprocess_on_device  # noqa: E402
from omni_agent.runtime.fast.layers import attention_at_slots, attention_prefill  # noqa: E402
from omni_agent.runtime.fast.moe_prefill import _kernel, moe_prefill  # noqa: E402


def _moe_layer(tiny_qwen3_omni):
    layers = tiny_qwen3_omni.model.thinker.model.language_model.layers
    return next(layer for layer in layers if hasattr(layer.mlp, "experts"))


@pytest.mark.parametrize("tokens", [1, 7, 64])
def test_moe_prefill_reference_layout_equals_the_experts_module(tiny_qwen3_omni, tokens):
    mlp = _moe_layer(tiny_qwen3_omni).mlp
    cfg = tiny_qwen3_omni.model.thinker.config.text_config
    h = torch.randn(tokens, cfg.hidden_size)
    with torch.inference_mode():
        want = mlp(h.unsqueeze(0))[0]
        got = moe_prefill(
            h, mlp.gate.weight, mlp.experts.gate_up_proj, mlp.experts.down_proj,
            top_k=cfg.num_experts_per_tok, norm_topk=cfg.norm_topk_prob, grouped=False,
        )  # fmt: skip
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()


def test_moe_prefill_grouped_kernel_equals_the_reference_where_torch_has_one(tiny_qwen3_omni):
    """torch >= 2.9 ships a CPU grouped GEMM as well: the same call the GPU makes."""
    mlp = _moe_layer(tiny_qwen3_omni).mlp
    cfg = tiny_qwen3_omni.model.thinker.config.text_config
    h = torch.randn(33, cfg.hidden_size)
    args = (h, mlp.gate.weight, mlp.experts.gate_up_proj, mlp.experts.down_proj)
    kw = dict(top_k=cfg.num_experts_per_tok, norm_topk=cfg.norm_topk_prob)
    with torch.inference_mode():
        ref = moe_prefill(*args, grouped=False, **kw)
        assert _kernel() is not None, "this torch has no grouped GEMM"
        got = moe_prefill(*args, grouped=True, **kw)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), (got - ref).abs().max()


def test_moe_prefill_sends_each_token_to_its_top_k_experts():
    """Random router and experts, checked against a per-token loop over the chosen experts."""
    torch.manual_seed(3)
    e, hidden, inter, k = 6, 16, 8, 2
    router = torch.randn(e, hidden)
    gate_up = torch.randn(e, 2 * inter, hidden) * 0.1
    down = torch.randn(e, hidden, inter) * 0.1
    h = torch.randn(40, hidden)
    got = moe_prefill(h, router, gate_up, down, top_k=k, norm_topk=True, grouped=False)
    probs = torch.softmax(h @ router.T, dim=-1)
    w, idx = torch.topk(probs, k)
    w = w / w.sum(-1, keepdim=True)
    want = torch.zeros_like(h)
    for t in range(h.shape[0]):
        for j in range(k):
            g, u = (gate_up[idx[t, j]] @ h[t]).chunk(2)
            want[t] += w[t, j] * (down[idx[t, j]] @ (torch.nn.functional.silu(g) * u))
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def _screenshot(size):
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (32, 96, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 10, size[0] // 2, size[1] // 2), fill=(240, 240, 240), outline=(0, 0, 0))
    draw.text((20, 20), "Save changes?", fill=(0, 0, 0))
    noise = torch.randint(0, 256, (size[1] // 4, size[0] // 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    image.paste(Image.fromarray(noise.numpy()), (size[0] // 2, size[1] // 2))
    return image


@pytest.mark.parametrize("size", [(320, 192), (1280, 704)])
def test_device_preprocessing_equals_the_processor_on_the_patch_grid(tiny_qwen3_omni, size):
    processor = tiny_qwen3_omni.checkpoint.processor.image_processor
    processor = getattr(processor, "_inner", processor)
    spec = device_image_spec(processor)
    assert spec is not None
    image = _screenshot(size)
    ref = processor([image], return_tensors="pt")
    rows, grid = preprocess_on_device(image, spec, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(grid, ref["image_grid_thw"])
    assert rows.shape == ref["pixel_values"].shape
    assert torch.allclose(rows, ref["pixel_values"].float(), atol=1e-5)


def test_device_preprocessing_resizes_like_the_processor_within_one_uint8_level(tiny_qwen3_omni):
    processor = tiny_qwen3_omni.checkpoint.processor.image_processor
    processor = getattr(processor, "_inner", processor)
    spec = device_image_spec(processor)
    image = _screenshot((1280, 720))  # not on the 32-px grid: resized to 1280x704
    ref = processor([image], return_tensors="pt")
    rows, grid = preprocess_on_device(image, spec, device=torch.device("cpu"), dtype=torch.float32)
    assert torch.equal(grid, ref["image_grid_thw"]) and grid.tolist() == [[1, 44, 80]]
    level = 1 / 255 / min(spec.std)
    diff = (rows - ref["pixel_values"].float()).abs()
    assert diff.max() <= 2 * level + 1e-6  # PIL rounds to uint8 between its two passes
    assert diff.mean() < 0.2 * level


def test_device_preprocessing_declines_options_it_does_not_reproduce():
    assert accepts({"return_tensors": "pt"})
    assert not accepts({"do_resize": False})

    class NotQwen:
        image_mean = [0.5] * 3

    assert device_image_spec(NotQwen()) is None


def test_grouped_query_attention_without_repeating_kv_equals_the_repeated_form():
    torch.manual_seed(0)
    hq, hkv, d, start, n = 8, 2, 16, 11, 5
    q = torch.randn(1, hq, n, d)
    kc = torch.randn(1, hkv, 32, d)
    vc = torch.randn(1, hkv, 32, d)
    got = attention_prefill(q, kc, vc, start, d**-0.5)
    k = kc[:, :, : start + n].repeat_interleave(hq // hkv, dim=1)
    v = vc[:, :, : start + n].repeat_interleave(hq // hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * d**-0.5
    mask = torch.arange(start + n).view(1, -1) <= (torch.arange(n).view(-1, 1) + start)
    want = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
    assert torch.allclose(got, want, atol=1e-5)
    # The scattered-slot form (in-place eviction's placeholders) at contiguous slots is the same.
    slots = torch.arange(start, start + n)
    assert torch.allclose(attention_at_slots(q, kc, vc, slots, d**-0.5), want, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grouped_kernel_on_cuda_matches_the_reference_in_bf16():
    torch.manual_seed(0)
    e, hidden, inter, k = 16, 256, 128, 4
    dev = torch.device("cuda")
    router = torch.randn(e, hidden, device=dev, dtype=torch.bfloat16)
    gate_up = torch.randn(e, 2 * inter, hidden, device=dev, dtype=torch.bfloat16) * 0.05
    down = torch.randn(e, hidden, inter, device=dev, dtype=torch.bfloat16) * 0.05
    h = torch.randn(300, hidden, device=dev, dtype=torch.bfloat16)
    ref = moe_prefill(h, router, gate_up, down, top_k=k, norm_topk=True, grouped=False)  # one matmul per expert
    got = moe_prefill(h, router, gate_up, down, top_k=k, norm_topk=True, grouped=True)
    assert float((got.float() - ref.float()).norm() / ref.float().norm()) < 1e-2


@pytest.mark.parametrize("size", [(720, 1280), (704, 1280), (1080, 1920), (50, 60), (3000, 4000)])
def test_smart_resize_is_the_processors_rule(tiny_qwen3_omni, size):
    from omni_agent.runtime.fast.device_image import smart_resize

    processor = tiny_qwen3_omni.checkpoint.processor.image_processor
    processor = getattr(processor, "_inner", processor)
    spec = device_image_spec(processor)
    h, w = smart_resize(*size, factor=spec.patch_size * spec.merge_size, min_pixels=spec.min_pixels, max_pixels=spec.max_pixels)
    rows = processor.get_number_of_image_patches(*size, images_kwargs={})
    assert (h // spec.patch_size) * (w // spec.patch_size) == rows
    assert h % 32 == 0 and w % 32 == 0
