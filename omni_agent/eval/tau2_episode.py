"""tau2-bench in the runner: one task trial as one episode (own worker process, resumable, a
page in the HTML report), and the suite's tasks and pass^k.

A tau2 task becomes a runner :class:`Task` whose ``metadata["tau2"]`` names the domain, the
tau2 task id, the trial and the user model; its reference solution is tau2's expected actions
(``--model reference`` is the scripted assistant); its one check is tau2's reward.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import typer

from ..trajectory import utc_now
from .checks import CheckContext, run_checks
from .episode import EpisodeJob
from .policy import is_reference, reference_model
from .results import EpisodeResult
from .task import Task
from .tau2_bench import ModelUser, ScriptedUser, domain_tasks, pass_hat_k, run_task, scripted_solution

__all__ = ["SCRIPTED_USER", "pass_hat_k_from_results", "run_tau2_episode", "tau2_cmd", "tau2_tasks"]

SCRIPTED_USER = "scripted"
"""``--user-model scripted``: the user states the task's request once, then ends the chat."""


def tau2_tasks(domain: str, *, user_model: str, trials: int = 1, task_ids: list[str] | None = None) -> list[Task]:
    tasks = []
    for tau_task in domain_tasks(domain):
        if task_ids and tau_task.id not in task_ids:
            continue
        outputs, user_turns = scripted_solution(tau_task)
        criteria = tau_task.evaluation_criteria
        actions = [a for a in (criteria.actions or []) if a.requestor == "assistant"] if criteria else []
        reference = [{"calls": [{"name": a.name, "arguments": a.arguments}]} for a in actions]
        reference.append({"answer": outputs[-1]})
        for trial in range(trials):
            tasks.append(Task.model_validate({
                "id": f"{domain}-{tau_task.id}-t{trial}"[:128].replace(" ", "_"), "category": f"tau2-{domain}",
                "instruction": user_turns[0], "reference": reference, "checks": [{"type": "tau2_reward"}],
                "limits": {"steps": 40, "seconds": 900},
                "metadata": {"tau2": {"domain": domain, "task_id": tau_task.id, "trial": trial, "user_model": user_model}},
            }))  # fmt: skip
    return tasks


async def run_tau2_episode(job: EpisodeJob) -> EpisodeResult:
    """The conversation and tau2's verdict; a model or simulator that breaks is an error result."""
    from ..exceptions import ModelUnavailableError, OmniAgentError
    from ..models.spec import load_model

    task, meta = job.task, job.task.metadata["tau2"]
    ep_dir, t0 = Path(job.episode_dir), time.perf_counter()
    base: dict[str, Any] = dict(episode_id=job.episode_id, task_id=task.id, category=task.category, attempts=job.attempt,
                                worker=job.worker, scripted=is_reference(job.model) or job.model.startswith("scripted:"))  # fmt: skip
    tau_task = next(t for t in domain_tasks(meta["domain"]) if t.id == meta["task_id"])
    try:
        model = reference_model(task, {}) if is_reference(job.model) else load_model(job.model)
        if meta["user_model"] == SCRIPTED_USER:
            user: Any = ScriptedUser([task.instruction_text])
        else:
            user = ModelUser(load_model(meta["user_model"]), tau_task)
        result = await run_task(meta["domain"], tau_task, model, user, trial=meta["trial"], trajectory_dir=ep_dir / "trajectory")
    except (OmniAgentError, OSError) as exc:  # a server that is down is the harness's problem: retried
        return EpisodeResult(**base, status="error", error=str(exc), error_stage="model", model=job.model,
                             infra_error=isinstance(exc, ModelUnavailableError),
                             total_seconds=round(time.perf_counter() - t0, 4), finished_at=utc_now())  # fmt: skip
    (ep_dir / "tau2-simulation.json").write_text(json.dumps(result.__dict__, indent=1, default=str))
    ctx = CheckContext(workspace=ep_dir, metrics={"tau2_reward": result.reward})
    checks = await run_checks(task.checks, ctx)
    label = "reference solution (scripted policy, not a model)" if is_reference(job.model) else model.info.label
    turns = sorted(p for p in (ep_dir / "trajectory").glob("*") if p.is_dir())
    return EpisodeResult(
        **base, status="passed" if all(c.passed for c in checks) else "failed", checks=checks,
        answer=f"{result.termination}; user: {user.label}", stop_reason=result.termination, steps=result.turns,
        model=label, metrics={"tau2_reward": result.reward}, seconds=round(time.perf_counter() - t0, 4),
        total_seconds=round(time.perf_counter() - t0, 4), finished_at=utc_now(),
        trajectory=os.path.relpath(turns[0], job.run_dir) if turns else None,
    )  # fmt: skip


def pass_hat_k_from_results(results: list[EpisodeResult], tasks: list[Task], k_max: int) -> dict[str, float]:
    """pass^1..pass^k over the finished trials (a trial passes when tau2's reward is 1)."""
    trial_of = {t.id: t.metadata["tau2"] for t in tasks if "tau2" in t.metadata}
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        if r.task_id in trial_of:
            meta = trial_of[r.task_id]
            by_task[f"{meta['domain']}/{meta['task_id']}"].append(r.passed)
    return {f"pass^{k}": round(pass_hat_k(by_task, k), 4) for k in range(1, k_max + 1)}


def tau2_cmd(
    domain: str = typer.Option("mock", "--domain", help="mock, airline or retail (telecom: not yet)."),
    model: str = typer.Option(..., "--model", "-m", help="The assistant: a model spec, or 'reference' (tau2's expected actions, scripted)."),
    user_model: str = typer.Option(..., "--user-model", help="The user simulator: openai:URL#name (any model spec), or 'scripted'."),
    trials: int = typer.Option(1, "--trials", "-k", min=1, help="Trials per task; pass^1..pass^k are reported."),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="Comma-separated tau2 task ids (default: all of the domain)."),
    workers: int = typer.Option(1, "--workers", "-j"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/tau2-DOMAIN-TIME)."),
    resume: bool = typer.Option(False, "--resume"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """tau2-bench: our agent as the assistant, a simulated user, tau2's own evaluator; pass^k."""
    from rich.console import Console

    from ..exceptions import OmniAgentError
    from .results import read_results
    from .runner import run_suite

    console = Console()
    try:
        suite = tau2_tasks(domain, user_model=user_model, trials=trials, task_ids=[t for t in (tasks or "").split(",") if t] or None)
        run_dir = out or Path("runs") / f"tau2-{domain}-{time.strftime('%Y%m%d-%H%M%S')}"
        summary = run_suite(suite, model=model, out=run_dir, suite=f"tau2-{domain}", workers=workers, resume=resume, progress=progress)
    except OmniAgentError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    scores = pass_hat_k_from_results(read_results(run_dir / "results.jsonl"), suite, trials)
    (run_dir / "tau2.json").write_text(json.dumps({"domain": domain, "user_model": user_model, "trials": trials, **scores}, indent=2))
    label = "scripted user (stand-in for a user model)" if user_model == SCRIPTED_USER else user_model
    console.print(f"policy: {summary.policy}; user: {label}")
    console.print(" ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f"  ({len(suite)} episodes) -> {run_dir / 'index.html'}")
