"""The vision encoder of one new screenshot as one CUDA graph per image grid.

Why: a desktop agent sends screenshots of one size, so every new image has the same grid
(1280x704 -> 44 x 80 patches). Eagerly, the encoder (27 blocks) is ~1,000 launches from
Python: 23-24 ms on an H200 for ~5 TFLOP of work. The grid-dependent tensors (position-embedding
interpolation taps, rotary positions, attention segment bounds) are what stops a capture: they
use ``.tolist()`` and ``repeat_interleave``. transformers computes them with standalone helpers
(``transformers.vision_utils``) and takes them precomputed as keyword arguments, so they are
computed once per grid here, the segment bounds on the host (the sdpa path splits by them), and
the encoder itself is captured: the same kernels, so the output is the eager encoder's exactly
(checked once per grid at capture; a grid whose replay differs runs eagerly).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["VisionGraphs", "precomputed_vision_kwargs"]


def precomputed_vision_kwargs(visual: Any, grid: tuple[int, int, int], device: Any) -> dict[str, Any]:
    """The grid-dependent inputs of ``visual.forward`` for one image of ``grid`` (t, h, w), as
    transformers' own helpers compute them; segment bounds stay on the host unless flash
    attention (which takes them on the device) is the encoder's attention."""
    import torch
    from transformers.utils.generic import is_flash_attention_requested
    from transformers.vision_utils import (
        get_vision_cu_seqlens,
        get_vision_interpolation_indices_and_weights,
        get_vision_position_ids,
    )

    grid_t = torch.tensor([list(grid)], dtype=torch.long, device=device)
    indices, weights = get_vision_interpolation_indices_and_weights(
        grid_t,
        num_grid_per_side=visual.num_grid_per_side,
        mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners,
        spatial_merge_size=visual.config.spatial_merge_size,
    )
    flash = is_flash_attention_requested(visual.config)
    out = {
        "interp_indices": indices,
        "interp_weights": weights,
        "position_ids": get_vision_position_ids(grid_t, visual.spatial_merge_size),
        "cu_seqlens": get_vision_cu_seqlens(grid_t if flash else grid_t.cpu()),
    }
    if flash:
        out["max_seqlen"] = int(grid[1] * grid[2])
    return out


@dataclass
class _Entry:
    grid: tuple[int, int, int]
    kwargs: dict[str, Any]
    grid_t: Any
    pixels: Any = None  # static input of the graph
    graph: Any = None
    outputs: tuple[Any, list[Any]] | None = None
    rel_err: float | None = None  # replay vs the eager encoder at capture (0.0: bit-identical)
    eager_only: bool = False


@dataclass
class VisionGraphs:
    """Encodes one image at a time, replaying a CUDA graph captured for its grid (``use_graphs``)
    or running the encoder eagerly with the same precomputed inputs. Keeps ``max_grids`` grids."""

    visual: Any
    use_graphs: bool
    max_grids: int = 4
    _entries: OrderedDict[tuple[int, int, int], _Entry] = field(default_factory=OrderedDict)
    _pool: Any = None

    @property
    def checks(self) -> dict[str, float | None]:
        """Per captured grid: relative error of the replay against the eager encoder."""
        return {"x".join(map(str, g)): e.rel_err for g, e in self._entries.items() if e.graph is not None}

    def encode(self, pixels: Any, grid: tuple[int, int, int]) -> tuple[Any, list[Any]]:
        """(merged embeddings [tokens, H_text], deepstack features) of one image; tensors owned by
        the caller (copies of the graph's outputs)."""
        import torch

        grid = tuple(int(v) for v in grid)  # type: ignore[assignment]
        entry = self._entries.get(grid)
        if entry is None:
            entry = self._new_entry(grid, pixels.device)
        self._entries.move_to_end(grid)
        dtype = self.visual.dtype if hasattr(self.visual, "dtype") else next(self.visual.parameters()).dtype
        pixels = pixels.to(dtype)
        if not self.use_graphs or entry.eager_only:
            return self._eager(pixels, entry)
        if entry.graph is None:
            self._capture(entry, pixels)
            if entry.eager_only:
                return self._eager(pixels, entry)
        entry.pixels.copy_(pixels)
        entry.graph.replay()
        embeds, deep = entry.outputs  # type: ignore[misc]
        return embeds.clone(), [torch.clone(d) for d in deep]

    def _new_entry(self, grid: tuple[int, int, int], device: Any) -> _Entry:
        import torch

        while len(self._entries) >= self.max_grids:
            self._entries.popitem(last=False)
        entry = _Entry(
            grid=grid,
            kwargs=precomputed_vision_kwargs(self.visual, grid, device),
            grid_t=torch.tensor([list(grid)], dtype=torch.long, device=device),
        )
        self._entries[grid] = entry
        return entry

    def _run(self, pixels: Any, entry: _Entry) -> tuple[Any, list[Any]]:
        out = self.visual(pixels, grid_thw=entry.grid_t, **dict(entry.kwargs))
        return out.pooler_output, list(out.deepstack_features)

    def _eager(self, pixels: Any, entry: _Entry) -> tuple[Any, list[Any]]:
        return self._run(pixels, entry)

    def _capture(self, entry: _Entry, pixels: Any) -> None:
        """Warm up, capture, and compare one replay with the plain encoder on these pixels."""
        import torch

        try:
            entry.pixels = pixels.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._run(entry.pixels, entry)
            torch.cuda.current_stream().wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                entry.outputs = self._run(entry.pixels, entry)
            entry.graph = graph
            graph.replay()
            plain = self.visual(pixels, grid_thw=entry.grid_t)  # transformers' own path, nothing precomputed
            ref = plain.pooler_output.float()
            entry.rel_err = float((entry.outputs[0].float() - ref).norm() / ref.norm().clamp_min(1e-12))
        except Exception as exc:  # noqa: BLE001 - any capture failure: the eager encoder still works
            warnings.warn(f"vision encoder graph for grid {entry.grid} not captured ({exc}); running it eagerly", stacklevel=3)
            entry.graph = None
            entry.outputs = None
            entry.eager_only = True
            return
        if entry.rel_err > 1e-2:  # not the same function: never serve it
            warnings.warn(f"vision graph for grid {entry.grid} differs from the encoder (rel. err {entry.rel_err:.1e}); eager", stacklevel=3)
            entry.eager_only = True
