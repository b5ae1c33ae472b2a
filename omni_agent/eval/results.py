"""Episode results (one JSON line each in ``results.jsonl``) and the suite summary.

``results.jsonl`` is the source of truth of a suite run: one line per finished episode, each
appended with a single ``write`` + ``fsync``, so an interrupted run leaves only whole lines
(plus, at worst, one torn last line that :func:`read_results` drops and :func:`repair_results`
cuts off before a resumed run appends). ``summary.json`` and the HTML report are derived from it.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..machine import machine_info
from .checks import CheckResult
from .safety import Denial, HostMode

__all__ = [
    "TASK_STAGE",
    "CategorySummary",
    "EpisodeResult",
    "Summary",
    "append_result",
    "machine_info",
    "read_results",
    "repair_results",
    "summarize",
]

Status = Literal["passed", "failed", "error"]
"""passed: every check passed; failed: the agent's work failed a check (the model's fault);
error: the episode could not be run: infrastructure (after its retries), or a mistake in the task
file (``error_stage == "task"``, never retried)."""

TASK_STAGE = "task"
"""``error_stage`` of a task-file mistake: its own kind of result, fixed in the file, not retried."""


class EpisodeResult(BaseModel):
    episode_id: str
    task_id: str
    category: str = "general"
    status: Status
    checks: list[CheckResult] = Field(default_factory=list)
    answer: str | None = None
    stop_reason: str | None = None
    steps: int = 0
    seconds: float = 0.0
    """Wall time of the agent run (model + tools)."""
    total_seconds: float = 0.0
    """Wall time of the whole attempt: worker start, setup, run, checks, teardown."""
    timings: dict[str, float] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    scripted: bool = False
    error: str | None = None
    error_stage: str | None = None
    """Where an error happened: task (the task file's own mistake), setup, model, run, checks,
    teardown, worker."""
    infra_error: bool = False
    """True when the failure was the harness's (setup, browser crash, worker death): retried."""
    attempts: int = 1
    attempt_errors: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    trajectory: str | None = None
    """Trajectory directory, relative to the run directory."""
    host_mode: HostMode = "sandboxed"
    """sandboxed: shell in the sandbox, "ask" denied; host: the run used --unsafe-host."""
    denials: list[Denial] = Field(default_factory=list)
    """Calls the policy denied or the sandbox refused, in order (see :mod:`.safety`)."""
    worker: str = ""
    finished_at: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def task_error(self) -> bool:
        """The task file itself is wrong (fix the file; retrying cannot help)."""
        return self.status == "error" and self.error_stage == TASK_STAGE

    @classmethod
    def worker_failure(cls, job: Any, error: str, **extra: Any) -> "EpisodeResult":
        """An infrastructure error at the worker stage (retried by the runner)."""
        return cls(
            episode_id=job.episode_id,
            task_id=job.task.id,
            category=job.task.category,
            status="error",
            error=error,
            error_stage="worker",
            infra_error=True,
            attempts=job.attempt,
            worker=job.worker,
            **extra,
        )


def append_result(path: Path, result: EpisodeResult) -> None:
    """Append one result line durably (one write call, then fsync)."""
    line = (result.model_dump_json() + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_results(path: Path) -> list[EpisodeResult]:
    """All whole result lines; a torn or unreadable line is skipped. Later lines for the same
    episode win (a resumed run may re-run an episode)."""
    if not path.exists():
        return []
    by_id: dict[str, EpisodeResult] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            result = EpisodeResult.model_validate_json(line)
        except ValueError:
            continue
        by_id[result.episode_id] = result
    return list(by_id.values())


def repair_results(path: Path) -> int:
    """Cut a torn last line (an interrupted write) so appends start on a fresh line; returns
    the number of bytes removed."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data[: data.rfind(b"\n") + 1]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_bytes(keep)
    os.replace(tmp, path)
    return len(data) - len(keep)


class CategorySummary(BaseModel):
    episodes: int
    passed: int
    failed: int
    errors: int
    success_rate: float


class Summary(BaseModel):
    suite: str
    policy: str
    """The model or policy label; scripted runs say so ("scripted policy, not a model")."""
    scripted: bool
    episodes: int
    expected_episodes: int
    complete: bool
    passed: int
    failed: int
    errors: int
    success_rate: float
    by_category: dict[str, CategorySummary]
    task_errors: int = 0
    """Of ``errors``: episodes stopped by a mistake in their task file."""
    mean_steps: float
    mean_seconds: float
    total_seconds: float
    prompt_tokens: int
    completion_tokens: int
    metrics: dict[str, float] = Field(default_factory=dict)
    """Means of per-episode metrics (e.g. MiniWoB++ ``reward``)."""
    retried_episodes: int = 0
    workers: int = 1
    started_at: str = ""
    finished_at: str = ""
    wall_seconds: float = 0.0
    machine: dict[str, Any] = Field(default_factory=dict)


def _rate(passed: int, n: int) -> float:
    return round(passed / n, 4) if n else 0.0


def summarize(
    results: list[EpisodeResult], *, suite: str, policy: str, scripted: bool, expected: int, **extra: Any
) -> Summary:
    cats: dict[str, list[EpisodeResult]] = {}
    for r in results:
        cats.setdefault(r.category, []).append(r)
    by_category = {
        c: CategorySummary(
            episodes=len(rs),
            passed=sum(r.status == "passed" for r in rs),
            failed=sum(r.status == "failed" for r in rs),
            errors=sum(r.status == "error" for r in rs),
            success_rate=_rate(sum(r.status == "passed" for r in rs), len(rs)),
        )
        for c, rs in sorted(cats.items())
    }
    metric_names = sorted({k for r in results for k in r.metrics})
    metrics = {
        f"mean_{k}": round(statistics.fmean([r.metrics[k] for r in results if k in r.metrics]), 4) for k in metric_names
    }
    passed = sum(r.status == "passed" for r in results)
    return Summary(
        suite=suite,
        policy=policy,
        scripted=scripted,
        episodes=len(results),
        expected_episodes=expected,
        complete=len(results) >= expected,
        passed=passed,
        failed=sum(r.status == "failed" for r in results),
        errors=sum(r.status == "error" for r in results),
        success_rate=_rate(passed, len(results)),
        by_category=by_category,
        task_errors=sum(r.task_error for r in results),
        mean_steps=round(statistics.fmean([r.steps for r in results]), 3) if results else 0.0,
        mean_seconds=round(statistics.fmean([r.total_seconds for r in results]), 3) if results else 0.0,
        total_seconds=round(sum(r.total_seconds for r in results), 3),
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        metrics=metrics,
        retried_episodes=sum(r.attempts > 1 for r in results),
        **extra,
    )


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
