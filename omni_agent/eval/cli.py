"""``omni-agent eval``: run a suite, compare two runs, check task files, print the task schema.

    omni-agent eval SUITE --model MODEL [--workers N] [--out DIR] [--resume] [--ray ADDRESS]
    omni-agent eval compare RUN_A RUN_B
    omni-agent eval validate SUITE
    omni-agent eval schema

``SUITE`` is a directory of task files, one task file, ``file.py:factory`` or an alias
(``smoke``, ``miniwob``, ``bfcl``). ``--model reference`` replays each task's reference
solution (a scripted policy, never reported as a model). Mount on the main app with
``app.add_typer(eval_app, name="eval")``.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from ..exceptions import OmniAgentError, UserError
from ..wording import plural

__all__ = ["eval_app"]


class _DefaultRunGroup(TyperGroup):
    """``eval SUITE ...`` means ``eval run SUITE ...``: a first word that is not a sub-command is
    taken as the suite."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(
    cls=_DefaultRunGroup,
    help="Run evaluation suites (eval SUITE --model ...), compare runs, check task files.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_out = Console()
_err = Console(stderr=True)


def _fail(exc: BaseException) -> None:
    if os.environ.get("OMNI_AGENT_DEBUG") == "1":
        raise exc
    message = exc.message if isinstance(exc, OmniAgentError) else f"{type(exc).__name__}: {exc}"
    _err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(2)


def _default_out(suite: str) -> Path:
    import time

    name = Path(suite.split(":")[0]).stem or "suite"
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


@eval_app.command("run")
def run_cmd(
    suite: str = typer.Argument(..., help="Task directory, task file, file.py:factory, or smoke / miniwob / bfcl."),
    model: str = typer.Option(..., "--model", "-m", help="Model spec (openai:URL#name, qwen-omni:/path, scripted:FILE) or 'reference'."),
    workers: int = typer.Option(1, "--workers", "-j", help="Episodes run in parallel (one process each)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default runs/SUITE-TIME)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out, skipping finished episodes."),
    ray: Optional[str] = typer.Option(None, "--ray", help="Run episodes as Ray tasks on this cluster ('auto', 'local' or ray://HOST:PORT)."),
    retries: int = typer.Option(2, "--retries", help="Retries of infrastructure failures (setup, browser crash, worker death)."),
    only: Optional[str] = typer.Option(None, "--only", help="Comma-separated task ids or categories to run."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Run at most this many tasks."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    unsafe_host: bool = typer.Option(False, "--unsafe-host", help="Run the model's shell commands on this machine (no sandbox) and approve every 'ask' of the policy."),
    allow_failures: bool = typer.Option(False, "--allow-failures", help="Exit 0 even when episodes failed or errored."),
    server: Optional[str] = typer.Option(None, "--server", help="Episodes use this OpenAI-compatible server (e.g. omni-agent serve) instead of loading MODEL."),
    share: bool = typer.Option(True, "--share/--no-share", help="Load a local qwen-omni:/qwen-vl: MODEL once and serve it to every episode."),
) -> None:
    """Run every task of SUITE with MODEL and write results.jsonl, summary.json and index.html.

    Exit codes: 0 every episode passed; 1 an episode failed or errored (0 with --allow-failures);
    2 bad usage, suite or model spec; 130 interrupted (resume with --resume)."""
    from ..serve.shared import shared_model_server, shares
    from .loading import check_task_tools, load_suite
    from .runner import run_suite

    run_dir: Path | None = None
    try:
        tasks = load_suite(suite)
        check_task_tools(tasks)  # a tool module that does not load fails here, not in every episode
        if only:
            wanted = {w.strip() for w in only.split(",") if w.strip()}
            tasks = [t for t in tasks if t.id in wanted or t.category in wanted]
            if not tasks:
                raise UserError(f"no task id or category of {suite} matches --only {only}")
        if limit is not None:
            tasks = tasks[:limit]
        if out is None and resume:
            raise typer.BadParameter("--resume needs --out (the run directory to continue)")
        run_dir = out or _default_out(suite)
        serving = server is not None or (share and shares(model))
        with shared_model_server(model, server_url=server) if serving else _not_shared(model) as shared:
            summary = run_suite(
                tasks, model=model, out=run_dir, suite=suite, workers=workers, retries=retries,
                resume=resume, ray_address=ray, progress=progress, unsafe_host=unsafe_host,
                episode_model=shared.episode_spec,
            )  # fmt: skip
            metrics_file = shared.write_metrics(run_dir)
        if metrics_file is not None:
            _err.print(f"served {escape(model)} once to every episode; server metrics: {escape(str(metrics_file))}")
    except typer.BadParameter:
        raise
    except KeyboardInterrupt:
        # run_suite has stopped the workers and written what finished (results, summary, report).
        if run_dir is None:
            _err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        again = ["omni-agent", "eval", suite, "--model", model, "--out", str(run_dir), "--resume"]
        again += [*(["--workers", str(workers)] if workers != 1 else []), *(["--only", only] if only else [])]
        again += ["--limit", str(limit)] if limit is not None else []
        _err.print(f"[yellow]interrupted: finished episodes are saved in {escape(str(run_dir))}; continue with:[/]")
        _err.print(escape(shlex.join(again)), soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None
    except (OmniAgentError, OSError, ValueError) as exc:
        _fail(exc)
        return
    _print_summary(summary.model_dump(), run_dir)
    if (summary.failed or summary.errors) and not allow_failures:
        raise typer.Exit(1)


def _not_shared(model: str) -> Any:
    import contextlib

    from ..serve.shared import SharedModel

    return contextlib.nullcontext(SharedModel(spec=model, episode_spec=model))


def _print_summary(s: dict[str, Any], run_dir: Path) -> None:
    style = "bold yellow" if s["scripted"] else "bold green"
    _out.print(f"[{style}]policy: {escape(s['policy'])}[/]")
    table = Table(title=f"{s['suite']}: {s['passed']}/{s['episodes']} passed ({s['success_rate'] * 100:.1f}%)")
    for col in ("category", "passed", "rate", "failed", "errors"):
        table.add_column(col)
    for cat, c in s["by_category"].items():
        table.add_row(cat, f"{c['passed']}/{c['episodes']}", f"{c['success_rate'] * 100:.0f}%", str(c["failed"]), str(c["errors"]))
    _out.print(table)
    extra = "".join(f", {k} {v}" for k, v in s.get("metrics", {}).items())
    _out.print(
        f"mean steps {s['mean_steps']}, mean seconds {s['mean_seconds']}, tokens {s['prompt_tokens']}+{s['completion_tokens']}{extra}"
    )
    if s.get("task_errors"):
        _out.print(f"[red]{plural(s['task_errors'], 'episode')} stopped by a mistake in the task file (fix it; not retried)[/]")
    if not s["complete"]:
        _out.print(f"[yellow]incomplete: {s['episodes']} of {s['expected_episodes']} episodes; resume with --resume --out {run_dir}[/]")
    _out.print(f"report: {escape(str((Path(run_dir) / 'index.html').resolve()))}", soft_wrap=True)


def _tau2_cmd_module() -> None:
    from .tau2_episode import tau2_cmd

    eval_app.command("tau2")(tau2_cmd)


_tau2_cmd_module()


@eval_app.command("compare")
def compare_cmd(
    run_a: Path = typer.Argument(..., help="Baseline run directory."),
    run_b: Path = typer.Argument(..., help="New run directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
    fail_on_regression: bool = typer.Option(
        False, "--fail-on-regression", help="Exit 1 when a task that passed in RUN_A does not pass in RUN_B."
    ),
) -> None:
    """Show what changed between two runs: success flips per task, rates, steps, time.

    Exit codes: 0 compared (and, with --fail-on-regression, nothing got worse); 1 a task got worse
    with --fail-on-regression; 2 a run directory cannot be read."""
    from .compare import compare_runs, render_comparison

    try:
        comparison = compare_runs(run_a, run_b)
    except (OmniAgentError, OSError, ValueError) as exc:
        _fail(exc)
        return
    if as_json:
        print(comparison.model_dump_json(indent=2))
    else:
        render_comparison(comparison, _out)
    if fail_on_regression and comparison.broken:
        _err.print(f"[red]regression: {escape(', '.join(comparison.broken))} passed in RUN_A and not in RUN_B[/]")
        raise typer.Exit(1)


@eval_app.command("validate")
def validate_cmd(
    suite: str = typer.Argument(..., help="Task directory, file or factory."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Also check the tasks can run with this model ('reference': each needs a reference solution)."),
) -> None:
    """Check task files (errors name the file, line and field): the YAML, the JSON Schemas of
    ``functions``, files named relative to the task, and that every tool set loads.

    Exit codes: 0 every task is valid; 2 a task file has a mistake (each is listed)."""
    from .loading import check_task_tools, load_suite
    from .runner import check_model

    try:
        tasks = load_suite(suite)
        check_task_tools(tasks)
        if model is not None:
            check_model(model, tasks)
    except OmniAgentError as exc:
        _fail(exc)
        return
    no_ref = [t.id for t in tasks if not t.reference]
    _out.print(f"{len(tasks)} tasks OK" + (f"; without a reference solution: {', '.join(no_ref)}" if no_ref else ""))


@eval_app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of task files (the one published as tasks/schema.json).

    Exit codes: 0 printed."""
    from .task import schema_text

    sys.stdout.write(schema_text())


def main() -> None:  # pragma: no cover - for ``python -m omni_agent.eval.cli``
    eval_app()


if __name__ == "__main__":  # pragma: no cover
    main()
