"""Graph captures and device-wide syncs from two threads (the serving engine's Thinker thread and
the batched Talker's thread share one GPU): the shared lock keeps them apart. Without it a
``torch.cuda.synchronize`` during the other thread's capture fails the capture
("operation not permitted when stream is capturing", seen on an H200)."""

from __future__ import annotations

import threading

import pytest
import torch

from omni_agent.runtime.fast.cuda_sync import GRAPH_LOCK, synchronize

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graph capture)")


def test_device_syncs_never_hit_another_threads_capture() -> None:
    x = torch.ones(1 << 20, device="cuda")
    errors: list[BaseException] = []
    outputs = []

    def capture_many() -> None:
        try:
            for _ in range(30):
                with GRAPH_LOCK:
                    graph = torch.cuda.CUDAGraph()
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        (x * 2).sum()
                    torch.cuda.current_stream().wait_stream(side)
                    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                        y = (x * 2).sum()
                graph.replay()
                outputs.append(float(y))
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=capture_many)
    worker.start()
    while worker.is_alive():
        (x + 1).sum()
        synchronize()
    worker.join()
    assert not errors, errors
    assert outputs == [2.0 * x.numel()] * 30
