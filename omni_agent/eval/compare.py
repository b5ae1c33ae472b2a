"""Compare two suite runs: which tasks flipped, and how rates, steps and time moved."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..exceptions import UserError
from .results import EpisodeResult, read_results

__all__ = ["Comparison", "TaskChange", "compare_runs", "render_comparison"]


class TaskChange(BaseModel):
    task_id: str
    category: str
    before: str | None
    """Status in run A (None: not in run A)."""
    after: str | None
    steps_before: int | None = None
    steps_after: int | None = None
    seconds_before: float | None = None
    seconds_after: float | None = None

    @property
    def flip(self) -> str:
        a, b = self.before == "passed", self.after == "passed"
        if self.before is None:
            return "new"
        if self.after is None:
            return "removed"
        return "fixed" if b and not a else "broken" if a and not b else "same"


class Comparison(BaseModel):
    run_a: str
    run_b: str
    policy_a: str
    policy_b: str
    rate_a: float
    rate_b: float
    shared: int = 0
    """Tasks both runs have."""
    shared_rate_a: float = 0.0
    shared_rate_b: float = 0.0
    """Success rates over the shared tasks only: the fair comparison when the task sets differ."""
    by_category: dict[str, tuple[float | None, float | None]]
    mean_steps: tuple[float, float]
    mean_seconds: tuple[float, float]
    fixed: list[str] = Field(default_factory=list)
    broken: list[str] = Field(default_factory=list)
    new: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changes: list[TaskChange] = Field(default_factory=list)


def _load(run: Path) -> tuple[list[EpisodeResult], dict[str, Any]]:
    results_path = run / "results.jsonl"
    if not results_path.exists():
        raise UserError(f"{run} is not a run directory (no results.jsonl)")
    summary_path = run / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return read_results(results_path), summary


def _rate(results: list[EpisodeResult]) -> float:
    return round(sum(r.passed for r in results) / len(results), 4) if results else 0.0


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 3) if values else 0.0


def compare_runs(run_a: str | Path, run_b: str | Path) -> Comparison:
    a_results, a_sum = _load(Path(run_a))
    b_results, b_sum = _load(Path(run_b))
    a, b = {r.episode_id: r for r in a_results}, {r.episode_id: r for r in b_results}
    changes = []
    for tid in sorted(set(a) | set(b)):
        ra, rb = a.get(tid), b.get(tid)
        changes.append(
            TaskChange(
                task_id=tid,
                category=(rb or ra).category,  # type: ignore[union-attr]
                before=ra.status if ra else None,
                after=rb.status if rb else None,
                steps_before=ra.steps if ra else None,
                steps_after=rb.steps if rb else None,
                seconds_before=ra.total_seconds if ra else None,
                seconds_after=rb.total_seconds if rb else None,
            )
        )
    cats = sorted({r.category for r in a_results} | {r.category for r in b_results})
    by_cat = {
        c: (
            _rate([r for r in a_results if r.category == c]) if any(r.category == c for r in a_results) else None,
            _rate([r for r in b_results if r.category == c]) if any(r.category == c for r in b_results) else None,
        )
        for c in cats
    }
    shared = sorted(set(a) & set(b))
    return Comparison(
        shared=len(shared),
        shared_rate_a=_rate([a[t] for t in shared]),
        shared_rate_b=_rate([b[t] for t in shared]),
        run_a=str(run_a),
        run_b=str(run_b),
        policy_a=a_sum.get("policy", "?"),
        policy_b=b_sum.get("policy", "?"),
        rate_a=_rate(a_results),
        rate_b=_rate(b_results),
        by_category=by_cat,
        mean_steps=(_mean([r.steps for r in a_results]), _mean([r.steps for r in b_results])),
        mean_seconds=(_mean([r.total_seconds for r in a_results]), _mean([r.total_seconds for r in b_results])),
        fixed=[c.task_id for c in changes if c.flip == "fixed"],
        broken=[c.task_id for c in changes if c.flip == "broken"],
        new=[c.task_id for c in changes if c.flip == "new"],
        removed=[c.task_id for c in changes if c.flip == "removed"],
        changes=changes,
    )


def render_comparison(c: Comparison, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.1f}%"

    console.print(f"A: {escape(c.run_a)} [dim]({escape(c.policy_a)})[/]")
    console.print(f"B: {escape(c.run_b)} [dim]({escape(c.policy_b)})[/]")
    delta = (c.rate_b - c.rate_a) * 100
    color = "green" if delta > 0 else "red" if delta < 0 else "white"
    console.print(f"success rate {pct(c.rate_a)} -> {pct(c.rate_b)} [{color}]({delta:+.1f} points)[/]")
    if (c.new or c.removed) and not c.shared:
        console.print("[bold]the runs share no task[/]: their rates are not comparable")
    elif c.new or c.removed:
        d = (c.shared_rate_b - c.shared_rate_a) * 100
        console.print(
            f"[bold]the runs hold different tasks[/]: on the {c.shared} both ran, "
            f"{pct(c.shared_rate_a)} -> {pct(c.shared_rate_b)} ({d:+.1f} points)"
        )
    console.print(f"mean steps {c.mean_steps[0]} -> {c.mean_steps[1]}; mean seconds {c.mean_seconds[0]} -> {c.mean_seconds[1]}")
    cats = Table(title="by category")
    for col in ("category", "A", "B"):
        cats.add_column(col)
    for cat, (ra, rb) in c.by_category.items():
        cats.add_row(cat, pct(ra), pct(rb))
    console.print(cats)
    flips = [ch for ch in c.changes if ch.flip != "same"]
    if not flips:
        console.print("no task changed its result")
        return
    table = Table(title=f"{len(c.fixed)} fixed, {len(c.broken)} broken, {len(c.new)} new, {len(c.removed)} removed")
    for col in ("task", "change", "A", "B", "steps", "seconds"):
        table.add_column(col)
    def num(x: float | None, fmt: str = "{}") -> str:
        return "-" if x is None else fmt.format(x)

    for ch in flips:
        style = {"fixed": "green", "broken": "red"}.get(ch.flip, "yellow")
        table.add_row(
            escape(ch.task_id), f"[{style}]{ch.flip}[/]", ch.before or "-", ch.after or "-",
            f"{num(ch.steps_before)} -> {num(ch.steps_after)}",
            f"{num(ch.seconds_before, '{:.1f}')} -> {num(ch.seconds_after, '{:.1f}')}",
        )  # fmt: skip
    console.print(table)
