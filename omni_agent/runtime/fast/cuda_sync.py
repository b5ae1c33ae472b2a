"""One lock for CUDA-graph captures and device-wide synchronisations shared by threads.

Why: the serving engine's Thinker thread and the batched Talker's thread share one GPU, and
each captures CUDA graphs (at start-up and for new buckets). A capture, even in
``thread_local`` mode, fails when another thread calls ``torch.cuda.synchronize`` meanwhile (a
device-wide sync waits on the capturing stream: "operation not permitted when stream is
capturing", seen on an H200 when the Talker's warm-up overlapped the engine's start-up). So
captures and device-wide syncs take this lock; stream-ordered syncs (``.item()``, copies to
the host) do not need it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

__all__ = ["GRAPH_LOCK", "capture_graph", "synchronize"]

GRAPH_LOCK = threading.RLock()
"""Held around every graph capture (its warm-up included) and every device-wide sync."""


def synchronize(device: Any = None) -> None:
    """``torch.cuda.synchronize`` that never runs while another thread captures a graph."""
    import torch

    with GRAPH_LOCK:
        torch.cuda.synchronize(device)


def capture_graph(fn: Callable[[], Any], *, pool: Any = None, warm_ups: int = 2) -> tuple[Any, Any]:
    """Run ``fn`` ``warm_ups`` times on a side stream (compilation, cuBLAS handles, allocator),
    then capture it as a CUDA graph under the lock -> (graph, the captured call's outputs).
    ``thread_local``: another thread may be launching work meanwhile."""
    import torch

    with GRAPH_LOCK:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warm_ups):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
            out = fn()
        return graph, out
