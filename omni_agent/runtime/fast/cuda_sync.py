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
from typing import Any

__all__ = ["GRAPH_LOCK", "synchronize"]

GRAPH_LOCK = threading.RLock()
"""Held around every graph capture (its warm-up included) and every device-wide sync."""


def synchronize(device: Any = None) -> None:
    """``torch.cuda.synchronize`` that never runs while another thread captures a graph."""
    import torch

    with GRAPH_LOCK:
        torch.cuda.synchronize(device)
