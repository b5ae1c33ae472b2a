"""Run episodes as Ray tasks: ``omni-agent eval SUITE --ray ADDRESS``.

Each Ray task runs one episode on whichever node Ray picks, through the same worker subprocess
as a local run (:func:`omni_agent.eval.runner.run_episode_with_retries`), so each node brings
its own virtual display and browser and retries infrastructure failures itself. The episode
directory (trajectory, screenshots, logs; not the workspace) comes back to the driver as a
tar.gz, so the report works the same whether the nodes share a file system or not.

``ADDRESS``: ``local`` starts a private Ray instance on this machine (``num_cpus`` = workers);
``auto`` or ``ray://host:port`` joins a running cluster.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..exceptions import UserError, require
from .results import EpisodeResult
from .safety import HostMode
from .task import Task

__all__ = ["ray_results"]

MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


def _pack(episode_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(episode_dir.iterdir()):
            if child.name == "workspace":
                continue
            tar.add(child, arcname=child.name)
    data = buf.getvalue()
    return data if len(data) <= MAX_ARTIFACT_BYTES else b""


def _ray_episode(task_data: dict[str, Any], model: str, retries: int, host_mode: HostMode = "sandboxed") -> tuple[str, bytes]:
    """Body of one Ray task (runs on a node): the episode in a scratch run dir there."""
    from .runner import run_episode_with_retries

    task = Task.model_validate(task_data)
    scratch = Path(tempfile.mkdtemp(prefix="omni-eval-ray-"))
    try:
        result = run_episode_with_retries(
            task, model=model, run_dir=scratch, retries=retries, worker=f"ray:{socket.gethostname()}:{os.getpid()}",
            host_mode=host_mode,
        )
        episode_dir = scratch / "episodes" / task.id
        artifact = _pack(episode_dir) if episode_dir.exists() else b""
        return result.model_dump_json(), artifact
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack(data: bytes, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(target, filter="data")


def ray_results(
    tasks: list[Task], *, model: str, run_dir: Path, retries: int, address: str, workers: int = 2,
    host_mode: HostMode = "sandboxed",
) -> Iterator[EpisodeResult]:
    """Submit every task as a Ray task; yield results as they finish (any order)."""
    ray = require("ray", "eval")
    started_here = False
    if not ray.is_initialized():
        try:
            if address == "local":
                ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as exc:
            raise UserError(f"cannot connect to Ray at {address!r}: {type(exc).__name__}: {exc}") from exc
        started_here = True
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(_ray_episode)
        pending = {remote.remote(t.model_dump(mode="json"), model, retries, host_mode): t for t in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    result_json, artifact = ray.get(ref)
                except Exception as exc:  # the Ray task itself died (node lost): an infra error
                    yield EpisodeResult(
                        episode_id=task.id, task_id=task.id, category=task.category, status="error",
                        error=f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                        error_stage="worker", infra_error=True, model=model,
                    )  # fmt: skip
                    continue
                result = EpisodeResult.model_validate_json(result_json)
                if artifact:
                    _unpack(artifact, run_dir / "episodes" / task.id)
                yield result
    finally:
        if started_here:
            ray.shutdown()
