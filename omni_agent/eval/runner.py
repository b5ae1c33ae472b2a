"""Run a suite: N worker processes in parallel, retries of infrastructure failures, resume.

Each attempt of each episode runs in a fresh worker subprocess (``python -m
omni_agent.eval.worker``) in its own process group, so a crashed or killed worker is seen (no
result file, a non-zero exit) and whatever it started is stopped. Threads only wait on the
subprocesses; the one writer of ``results.jsonl`` is the calling thread, which appends each
finished episode durably, so an interrupted suite resumes by skipping the episodes already in
the file. Model failures (wrong answer, out of steps) are results, not retried; setup errors, a
browser crash and a dead or hung worker are retried up to ``retries`` times.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..exceptions import UserError
from ..trajectory import utc_now
from .episode import EpisodeJob
from .forkserver import ForkServer, fork_server_supported
from .policy import is_reference
from .results import (
    EpisodeResult,
    Summary,
    append_result,
    machine_info,
    read_results,
    repair_results,
    summarize,
    write_json,
)
from .safety import HostMode
from .task import Task

__all__ = [
    "SETUP_ALLOWANCE_S",
    "SuiteInterrupted",
    "check_model",
    "policy_label",
    "run_attempt",
    "run_episode_with_retries",
    "run_suite",
]

SETUP_ALLOWANCE_S = 120.0
"""Time a worker gets beyond the task's own limit (start-up, setup, checks, teardown)."""

RESULTS = "results.jsonl"
SUMMARY = "summary.json"
RUN_INFO = "run.json"

_LIVE: dict[int, Any] = {}
"""Running workers by pid: subprocess.Popen, or forkserver.ForkedWorker (same pid/poll/wait)."""
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()
"""Set when the suite is interrupted: no new attempt starts, and a killed worker is not retried."""


class SuiteInterrupted(Exception):
    """An attempt was not run (or not retried) because the suite is being interrupted."""


def policy_label(model: str) -> str:
    if is_reference(model):
        return "reference solution (scripted policy, not a model)"
    if model.startswith("scripted:"):
        return f"{model} (scripted policy, not a model)"
    return model


def _die_with_parent() -> None:
    # Linux: the worker gets SIGKILL if the runner thread that started it dies (runner killed).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _cleanup_after_dead_worker(episode_dir: Path, worker_pid: int) -> None:
    pid_file = episode_dir / "scratch" / "pids.txt"
    pids = [worker_pid]
    if pid_file.exists():
        pids += [int(p) for p in pid_file.read_text().split() if p.isdigit()]
    _kill_groups(pids)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


def _start_worker(job_path: Path, result_path: Path, log: Any, *, python: str | None, forks: ForkServer | None) -> Any:
    """A fresh worker process: forked from the warm fork server when there is one (a few ms),
    else ``python -m omni_agent.eval.worker`` (interpreter start-up and imports, ~0.4 s)."""
    if forks is not None and python is None:
        with contextlib.suppress(OSError):  # a fork server that went away: fall back to a subprocess
            return forks.spawn(job_path, result_path, Path(log.name))
    return subprocess.Popen(
        [python or sys.executable, "-m", "omni_agent.eval.worker", str(job_path), str(result_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )


def run_attempt(
    job: EpisodeJob, *, timeout: float, python: str | None = None, forks: ForkServer | None = None
) -> EpisodeResult:
    """One attempt in a fresh worker process; a dead or hung worker becomes an infra error."""
    if _STOPPING.is_set():
        raise SuiteInterrupted(job.episode_id)
    ep_dir = Path(job.episode_dir)
    if ep_dir.exists():
        shutil.rmtree(ep_dir)
    ep_dir.mkdir(parents=True)
    job_path, result_path = ep_dir / "job.json", ep_dir / "result.json"
    job_path.write_text(job.model_dump_json(), encoding="utf-8")
    t0 = time.perf_counter()
    with open(ep_dir / "worker.log", "wb") as log:
        proc = _start_worker(job_path, result_path, log, python=python, forks=forks)
        with _LIVE_LOCK:
            _LIVE[proc.pid] = proc
        if _STOPPING.is_set():  # interrupted while this worker was starting
            _kill_groups([proc.pid])
        try:
            code = proc.wait(timeout=timeout)
            reason = None if code == 0 else _describe_exit(code)
        except subprocess.TimeoutExpired:
            reason = f"worker exceeded {timeout:g} s and was killed"
            _kill_groups([proc.pid])
            proc.wait()
        finally:
            with _LIVE_LOCK:
                _LIVE.pop(proc.pid, None)
    if _STOPPING.is_set() and reason is not None:
        _cleanup_after_dead_worker(ep_dir, proc.pid)
        raise SuiteInterrupted(job.episode_id)
    if reason is None and result_path.exists():
        result = EpisodeResult.model_validate_json(result_path.read_text(encoding="utf-8"))
        wall = time.perf_counter() - t0
        # The worker timed itself from inside; the rest is process start-up and imports.
        timings = {**result.timings, "worker_overhead": round(max(0.0, wall - result.total_seconds), 4)}
        return result.model_copy(update={"total_seconds": round(wall, 4), "timings": timings})
    _cleanup_after_dead_worker(ep_dir, proc.pid)
    return EpisodeResult.worker_failure(
        job,
        f"worker died mid-episode ({reason or 'no result written'}); see worker.log",
        model=policy_label(job.model),
        scripted=is_reference(job.model),
        total_seconds=round(time.perf_counter() - t0, 4),
        finished_at=utc_now(),
    )


def run_episode_with_retries(
    task: Task,
    *,
    model: str,
    run_dir: Path,
    retries: int,
    worker: str = "",
    python: str | None = None,
    host_mode: HostMode = "sandboxed",
    forks: ForkServer | None = None,
) -> EpisodeResult:
    """Run attempts until one is not an infrastructure failure (or the retries are used up)."""
    errors: list[str] = []
    result: EpisodeResult | None = None
    for attempt in range(1, retries + 2):
        job = EpisodeJob(
            task=task,
            model=model,
            episode_id=task.id,
            episode_dir=str(run_dir / "episodes" / task.id),
            run_dir=str(run_dir),
            attempt=attempt,
            worker=worker,
            host_mode=host_mode,
        )
        result = run_attempt(job, timeout=task.limits.seconds + SETUP_ALLOWANCE_S, python=python, forks=forks)
        if not result.infra_error:
            break
        errors.append(f"attempt {attempt}: {result.error}")
    assert result is not None
    prior = errors[:-1] if result.infra_error else errors
    return result.model_copy(update={"attempts": attempt, "attempt_errors": prior})


def check_model(model: str, tasks: list[Task], *, local: bool = True) -> None:
    """Fail before any episode starts when the model cannot work at all: a malformed spec, a
    scripted file or local checkpoint that is not there, or the reference policy on tasks that
    have no reference solution. (Otherwise every episode would end in the same error.)
    ``local=False`` (Ray) checks only the spelling: paths are the cluster nodes' business."""
    if is_reference(model):
        missing = [t for t in tasks if not t.reference]
        if missing:
            where = "\n".join(f"{t.source or t.id}:1: reference: task {t.id!r} has no reference solution" for t in missing)
            raise UserError(f"--model {model} replays each task's reference solution, and {len(missing)} task(s) have none:\n{where}")
        return
    from ..models.spec import parse_model_spec

    specs = {(model, None)} | {(t.model, str(t.base_dir)) for t in tasks if t.model}
    for spec, base in sorted(specs, key=str):
        parsed = parse_model_spec(spec)
        if not local or parsed.scheme == "openai":
            continue
        target = Path(parsed.target).expanduser()
        path = target if target.is_absolute() or base is None else Path(base) / target
        if parsed.scheme == "scripted":
            from ..models.scripted import ScriptedModel

            if not path.is_file():
                raise UserError(f"scripted model file not found: {path} (from {spec!r})")
            ScriptedModel.from_file(path)  # a syntax error shows now, once
        elif parsed.target.startswith(("/", "./", "../", "~")) and not path.exists():
            raise UserError(f"checkpoint not found: {path} (from {spec!r})")


def kill_live_workers() -> None:
    """Stop every running worker (SIGTERM: the episode cleans up) and start no new ones."""
    _STOPPING.set()
    with _LIVE_LOCK:
        procs = list(_LIVE.values())
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
    # A worker stuck where SIGTERM cannot reach it still goes, a few seconds later.
    stragglers = threading.Timer(5.0, _kill_groups, [[p.pid for p in procs if p.poll() is None]])
    stragglers.daemon = True
    stragglers.start()


def _warm_workers() -> ForkServer | None:
    """The fork server of pre-imported workers, or None where it cannot run (then each worker
    is a plain subprocess). ``OMNI_EVAL_FORKSERVER=0`` turns it off."""
    if os.environ.get("OMNI_EVAL_FORKSERVER", "1") == "0" or not fork_server_supported():
        return None
    try:
        return ForkServer().start()
    except (OSError, RuntimeError) as exc:
        print(f"warning: no warm workers ({exc}); each episode starts a fresh Python", file=sys.stderr)
        return None


def _local_results(
    tasks: list[Task], *, model: str, run_dir: Path, workers: int, retries: int, host_mode: HostMode
) -> Iterator[EpisodeResult]:
    forks = _warm_workers()
    with contextlib.ExitStack() as stack, concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-worker") as pool:
        if forks is not None:
            stack.callback(forks.close)
        futures = [
            pool.submit(run_episode_with_retries, t, model=model, run_dir=run_dir, retries=retries,
                        worker=f"local-{i % workers}", host_mode=host_mode, forks=forks)  # fmt: skip
            for i, t in enumerate(tasks)
        ]
        try:
            for fut in concurrent.futures.as_completed(futures):
                yield fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            kill_live_workers()
            raise


def _check_run_dir(run_dir: Path, *, suite: str, model: str, resume: bool) -> list[EpisodeResult]:
    results_path = run_dir / RESULTS
    info_path = run_dir / RUN_INFO
    if results_path.exists() and not resume:
        raise UserError(f"{run_dir} already holds results: pass --resume to continue that run, or pick a new --out")
    if not resume or not info_path.exists():
        return []
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info.get("model") != model:
        raise UserError(f"cannot resume {run_dir}: it was run with model {info.get('model')!r}, not {model!r}")
    repair_results(results_path)
    return read_results(results_path)


def run_suite(
    tasks: list[Task],
    *,
    model: str,
    out: str | os.PathLike[str],
    suite: str = "",
    workers: int = 1,
    retries: int = 2,
    resume: bool = False,
    ray_address: str | None = None,
    progress: bool = True,
    report: bool = True,
    on_result: Callable[[EpisodeResult], None] | None = None,
    unsafe_host: bool = False,
    episode_model: str | None = None,
) -> Summary:
    """Run every task once (skipping finished ones when resuming); write results.jsonl,
    summary.json and the HTML report into ``out``; return the summary.

    Episodes run their shell in the bubblewrap sandbox and deny "ask" decisions unless the task
    approves the tool (:mod:`.safety`); ``unsafe_host=True`` (``--unsafe-host``) runs the shell
    on this machine and approves every ask. ``episode_model``: the spec episodes load instead of
    ``model`` (the server that serves ``model`` to the suite)."""
    if workers < 1:
        raise UserError("--workers must be >= 1")
    if retries < 0:
        raise UserError("--retries must be >= 0")
    if not tasks:
        raise UserError("the suite has no tasks")
    check_model(model, tasks, local=not ray_address)
    host_mode: HostMode = "host" if unsafe_host else "sandboxed"
    _STOPPING.clear()
    run_dir = Path(out).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    done = _check_run_dir(run_dir, suite=suite, model=model, resume=resume)
    ids = {t.id for t in tasks}
    done = [r for r in done if r.episode_id in ids]
    done_ids = {r.episode_id for r in done}
    pending = [t for t in tasks if t.id not in done_ids]
    info_path = run_dir / RUN_INFO
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.update(
        suite=suite, model=model, policy=policy_label(model), scripted=is_reference(model) or model.startswith("scripted:"),
        tasks=[t.id for t in tasks], workers=workers, ray=ray_address, host_mode=host_mode, served_as=episode_model,
    )  # fmt: skip
    info.setdefault("started_at", utc_now())
    info.setdefault("resumes", -1)
    info["resumes"] += 1
    write_json(info_path, info)

    t0 = time.perf_counter()
    results = list(done)
    if ray_address:
        from .ray_runner import ray_results

        stream = ray_results(pending, model=episode_model or model, run_dir=run_dir, retries=retries, address=ray_address,
                             workers=workers, host_mode=host_mode)  # fmt: skip
    else:
        stream = _local_results(pending, model=episode_model or model, run_dir=run_dir, workers=workers, retries=retries,
                                host_mode=host_mode)  # fmt: skip
    bar = _Progress(len(tasks), len(done), enabled=progress, label=policy_label(model))
    try:
        with bar:
            for result in stream:
                append_result(run_dir / RESULTS, result)
                results.append(result)
                bar.advance(result)
                if on_result is not None:
                    on_result(result)
    finally:
        summary = summarize(
            results,
            suite=suite,
            policy=policy_label(model),
            scripted=bool(info["scripted"]),
            expected=len(tasks),
            workers=workers,
            started_at=info["started_at"],
            finished_at=utc_now(),
            wall_seconds=round(time.perf_counter() - t0, 3),
            machine=machine_info(),
        )
        write_json(run_dir / SUMMARY, summary.model_dump(mode="json"))
        if report:
            from .report import write_report

            write_report(run_dir)
    return summary


class _Progress:
    """A rich progress bar (on stderr) with running pass / fail / error counts."""

    def __init__(self, total: int, completed: int, *, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self.total, self.completed = total, completed
        self.counts = {"passed": 0, "failed": 0, "error": 0}
        self.label = label
        self._progress: Any = None

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[counts]}"), TimeElapsedColumn(),
                console=Console(stderr=True),
            )  # fmt: skip
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label[:60], total=self.total, completed=self.completed, counts="")
        return self

    def advance(self, result: EpisodeResult) -> None:
        self.counts[result.status] += 1
        if self._progress is not None:
            c = self.counts
            text = f"[green]{c['passed']} passed[/] [red]{c['failed']} failed[/] [yellow]{c['error']} errors[/]"
            self._progress.update(self._task, advance=1, counts=text)

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
