"""The HTML report of a suite run: ``index.html`` plus one page per episode.

``index.html`` states the policy first and in colour (a scripted run carries a yellow "scripted
policy, not a model" banner, so it can never pass for a model result), then the summary, the
success rate by category and a table of episodes linking to their pages. An episode page shows
its checks and errors, and the step-by-step trajectory (screenshots, model text, calls, results,
timings) rendered by :func:`omni_agent.html_report.render_trajectory_html`. Static files, no
JavaScript, every value escaped: the run directory can be zipped or served as is.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from .results import EpisodeResult, read_results

__all__ = ["write_report"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:16px 24px}header h1{margin:0 0 6px;font-size:20px}
.banner{padding:10px 24px;font-weight:700;font-size:15px}
.banner.scripted{background:#f2c94c;color:#3b2f00}.banner.model{background:#6fcf97;color:#0d3b22}
main{padding:16px 24px;max-width:1300px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:16px}
.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:10px 16px;min-width:120px}
.card b{display:block;font-size:22px}
table{border-collapse:collapse;background:#fff;margin-bottom:16px}
td,th{border:1px solid #dde2e8;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#eef1f4}
.passed{color:#1e7e45;font-weight:600}.failed{color:#c0392b;font-weight:600}.error{color:#b7791f;font-weight:600}
pre{white-space:pre-wrap;word-break:break-word;background:#f1f3f6;padding:8px;border-radius:6px}
.screens{display:flex;gap:10px;flex-wrap:wrap;margin-bottom:12px}
.screens figure{margin:0;background:#fff;border:1px solid #dde2e8;border-radius:6px;padding:4px}
.screens img{width:260px;display:block}.screens figcaption{font-size:12px;color:#5b6570}
iframe{width:100%;height:1400px;border:1px solid #dde2e8;border-radius:8px;background:#fff}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _banner(summary: dict[str, Any]) -> str:
    if summary.get("scripted"):
        return (
            '<div class="banner scripted">Policy: ' + _e(summary.get("policy")) + " &mdash; SCRIPTED POLICY, NOT A MODEL: "
            "these results check the harness and the tasks, they say nothing about any model.</div>"
        )
    return '<div class="banner model">Model: ' + _e(summary.get("policy")) + "</div>"


def _page(title: str, body: str, banner: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>{banner}{body}</body></html>"
    )


def _episode_page(run_dir: Path, result: EpisodeResult, summary: dict[str, Any]) -> str:
    rel_index = "../../index.html"
    traj_link = ""
    if result.trajectory:
        traj_dir = run_dir / result.trajectory
        try:
            from ..html_report import render_trajectory_html

            page = render_trajectory_html(traj_dir)
            rel = os.path.relpath(page, run_dir / "episodes" / result.episode_id)
            traj_link = (
                _screens(traj_dir, run_dir / "episodes" / result.episode_id)
                + f'<p><a href="{_e(rel)}">open the trajectory on its own page</a></p>'
                f'<iframe src="{_e(rel)}" title="trajectory"></iframe>'
            )
        except Exception as exc:  # a damaged trajectory still gets an episode page
            traj_link = f"<p class=error>trajectory could not be rendered: {_e(exc)}</p>"
    checks = "".join(
        f"<tr><td class={'passed' if c.passed else 'failed'}>{'pass' if c.passed else 'FAIL'}</td>"
        f"<td>{_e(c.name)}</td><td>{_e(c.type)}</td><td>{_e(c.error or c.detail)}</td></tr>"
        for c in result.checks
    )
    rows = [
        ("status", f"<span class={result.status}>{_e(result.status)}</span>"),
        ("category", _e(result.category)),
        ("policy / model", _e(result.model or summary.get("policy"))),
        ("answer", f"<pre>{_e(result.answer)}</pre>" if result.answer is not None else "(none)"),
        ("stop reason", _e(result.stop_reason)),
        ("steps", _e(result.steps)),
        ("agent seconds", _e(f"{result.seconds:.2f}")),
        ("total seconds", _e(f"{result.total_seconds:.2f}")),
        ("timings", _e(", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items()))),
        ("tokens", _e(f"{result.prompt_tokens} prompt / {result.completion_tokens} completion")),
        ("attempts", _e(result.attempts)),
    ]
    if result.metrics:
        rows.append(("metrics", _e(json.dumps(result.metrics))))
    rows.append(("host", _e("sandboxed shell, asks denied" if result.host_mode == "sandboxed" else "--unsafe-host: shell on the host, asks approved")))
    if result.denials:
        denied = "".join(
            f"<li><b>{_e(d.tool)}</b> {_e(json.dumps(d.arguments, ensure_ascii=False)[:300])}: "
            f"{'denied by policy' if d.by == 'policy' else 'refused by the sandbox'} ({_e(d.reason)})</li>"
            for d in result.denials
        )
        rows.append(("denied", f"<ul>{denied}</ul>"))
    if result.error:
        rows.append(("error", f"<pre>{_e(result.error)}</pre> stage: {_e(result.error_stage)}"))
    if result.attempt_errors:
        rows.append(("earlier attempts", "<pre>" + _e("\n".join(result.attempt_errors)) + "</pre>"))
    table = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    body = (
        f"<header><h1>Episode {_e(result.episode_id)}</h1><a style='color:#9cf' href='{rel_index}'>&larr; suite report</a></header>"
        f"<main><table>{table}</table><h2>Checks</h2>"
        f"<table><tr><th></th><th>check</th><th>type</th><th>detail</th></tr>{checks}</table>"
        f"<h2>Steps</h2>{traj_link or '<p>no trajectory (the episode did not reach the agent run)</p>'}</main>"
    )
    return _page(f"{result.episode_id} - {result.status}", body, _banner(summary))


def _screens(traj_dir: Path, page_dir: Path) -> str:
    """A strip of the screenshots the agent was shown, step by step, on the episode page itself:
    the trajectory below sits in an iframe, whose lazily loaded images only appear once scrolled
    to (and never in a full-page capture of this page)."""
    from ..messages import ImagePart
    from ..trajectory import load_trajectory

    seen: dict[str, int] = {}
    for step in load_trajectory(traj_dir).steps:
        parts: list[Any] = list(step.observation)
        for message in step.new_messages:
            content = getattr(message, "content", None)
            parts += content if isinstance(content, list) else []
            result = getattr(message, "result", None)
            parts += list(getattr(result, "content", None) or []) if result is not None else []
        for part in parts:
            if isinstance(part, ImagePart) and part.path and part.path not in seen:
                seen[part.path] = step.step
    if not seen:
        return ""
    figures = []
    for path, step in seen.items():
        rel = os.path.relpath(traj_dir / path, page_dir)
        figures.append(
            f'<figure><a href="{_e(rel)}"><img src="{_e(rel)}" alt="screenshot before step {step}"></a>'
            f"<figcaption>seen at step {step}</figcaption></figure>"
        )
    return f"<h3>Screens the agent saw</h3><div class=screens>{''.join(figures)}</div>"


def _index(results: list[EpisodeResult], summary: dict[str, Any]) -> str:
    n = summary.get("episodes", len(results))
    cards = [
        ("success rate", f"{summary.get('success_rate', 0) * 100:.1f}%"),
        ("episodes", f"{n} / {summary.get('expected_episodes', n)}"),
        ("passed", summary.get("passed", 0)),
        ("failed", summary.get("failed", 0)),
        ("errors", summary.get("errors", 0)),
        ("mean steps", summary.get("mean_steps", 0)),
        ("mean seconds", summary.get("mean_seconds", 0)),
        ("tokens", f"{summary.get('prompt_tokens', 0)} / {summary.get('completion_tokens', 0)}"),
    ]
    cards += [(k.replace("_", " "), v) for k, v in summary.get("metrics", {}).items()]
    card_html = "".join(f"<div class=card>{_e(k)}<b>{_e(v)}</b></div>" for k, v in cards)
    cats = "".join(
        f"<tr><td>{_e(c)}</td><td>{s['passed']} / {s['episodes']}</td><td>{s['success_rate'] * 100:.1f}%</td>"
        f"<td>{s['failed']}</td><td>{s['errors']}</td></tr>"
        for c, s in summary.get("by_category", {}).items()
    )
    rows = []
    for r in sorted(results, key=lambda r: r.episode_id):
        failing = [c.name for c in r.checks if not c.passed]
        note = r.error or ("failed: " + "; ".join(failing) if failing else "")
        if r.denials:
            note = f"{len(r.denials)} denied ({r.denials[0].tool}: {r.denials[0].reason}) " + note
        rows.append(
            f"<tr><td><a href='episodes/{_e(r.episode_id)}/index.html'>{_e(r.episode_id)}</a></td>"
            f"<td>{_e(r.category)}</td><td class={r.status}>{_e(r.status)}</td><td>{r.steps}</td>"
            f"<td>{r.total_seconds:.2f}</td><td>{r.prompt_tokens + r.completion_tokens}</td><td>{r.attempts}</td>"
            f"<td>{_e(note[:300])}</td></tr>"
        )
    machine = summary.get("machine", {})
    complete = "" if summary.get("complete", True) else "<p class=error>INCOMPLETE RUN: resume it with --resume.</p>"
    body = (
        f"<header><h1>Suite {_e(summary.get('suite'))}</h1><div>{_e(summary.get('finished_at'))} &middot; "
        f"{_e(summary.get('workers'))} worker(s) &middot; {_e(machine.get('nproc'))} cores, {_e(machine.get('cpu'))}</div></header>"
        f"<main>{complete}<div class=cards>{card_html}</div>"
        f"<h2>By category</h2><table><tr><th>category</th><th>passed</th><th>rate</th><th>failed</th><th>errors</th></tr>{cats}</table>"
        f"<h2>Episodes</h2><table><tr><th>episode</th><th>category</th><th>status</th><th>steps</th><th>seconds</th>"
        f"<th>tokens</th><th>attempts</th><th>notes</th></tr>{''.join(rows)}</table></main>"
    )
    return _page(f"{summary.get('suite')} - {summary.get('policy')}", body, _banner(summary))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """(Re)write the report of a run directory from its results and summary; returns index.html."""
    root = Path(run_dir)
    summary = json.loads((root / "summary.json").read_text(encoding="utf-8"))
    results = read_results(root / "results.jsonl")
    for r in results:
        _write(root / "episodes" / r.episode_id / "index.html", _episode_page(root, r, summary))
    index = root / "index.html"
    _write(index, _index(results, summary))
    return index
