"""One static HTML page per trajectory: what the agent saw, thought, called and got, step by step.

Self-contained (inline CSS, no JavaScript, images linked relatively from ``media/``), so the run
directory can be zipped or served as is. Every piece of text from the run is escaped. Thinking
is collapsed with ``<details>``. Scripted runs are marked in the header as not model results.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from .messages import AudioPart, ImagePart, TextPart, ToolMessage
from .trajectory import StepRecord, Trajectory, load_trajectory

__all__ = ["render_trajectory_html"]

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:16px 24px}
header h1{margin:0 0 6px;font-size:18px}
header .meta span{margin-right:18px;color:#c9d1db}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600}
header .badge.scripted{background:#f2c94c;color:#3b2f00}header .badge.model{background:#6fcf97;color:#0d3b22}
header .badge.stop{background:#56ccf2;color:#06303d}.badge.warn{background:#eb5757;color:#fff}
main{padding:16px 24px;max-width:1200px}
section.step{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:0 0 16px;padding:12px 16px}
section.step h2{font-size:15px;margin:0 0 8px}
pre{white-space:pre-wrap;word-break:break-word;background:#f1f3f6;padding:8px;border-radius:6px;margin:4px 0}
.err{border-left:4px solid #eb5757}.ok{border-left:4px solid #27ae60}
img{max-width:100%;border:1px solid #ccd3db;border-radius:4px;margin:4px 0}
.label{font-weight:600;color:#4f5b67;margin-top:8px}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #dde2e8;padding:2px 8px;text-align:left}
details summary{cursor:pointer;color:#4f5b67}
"""


def render_trajectory_html(trajectory_dir: str | os.PathLike[str]) -> Path:
    """Write ``index.html`` into the run directory and return its path."""
    traj = load_trajectory(trajectory_dir)
    out = traj.dir / "index.html"
    page = _page(traj)
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _page(traj: Trajectory) -> str:
    meta = traj.meta
    kind = (
        '<span class="badge scripted">SCRIPTED POLICY, NOT A MODEL</span>'
        if meta.scripted
        else '<span class="badge model">model</span>'
    )
    stop = meta.stop_reason or ("unfinished (killed or still running)" if meta.status == "running" else "?")
    head = [
        f"<h1>{_e(meta.instruction or '(no text instruction)')}</h1>",
        '<div class="meta">',
        f"{kind} <span>model: {_e(meta.model)}</span>",
        f'<span class="badge stop">stop: {_e(stop)}</span>',
        f"<span>steps: {len(traj.steps)}</span>",
        f"<span>started: {_e(meta.started_at)}</span>",
    ]
    if meta.seconds is not None:
        head.append(f"<span>{meta.seconds:.2f} s</span>")
    if meta.usage.total_tokens:
        head.append(f"<span>tokens: {meta.usage.prompt_tokens} in / {meta.usage.completion_tokens} out</span>")
    head.append("</div>")
    if meta.answer is not None:
        head.append(f"<div><b>answer:</b> {_e(meta.answer)}</div>")
    if meta.answer_audio:
        head.append(f'<audio controls src="{_e(meta.answer_audio)}"></audio>')
    if meta.error:
        head.append(f'<div><span class="badge warn">error</span> {_e(meta.error)}</div>')
    for w in traj.warnings:
        head.append(f'<div><span class="badge warn">note</span> {_e(w)}</div>')
    body = [_step(s) for s in traj.steps]
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(meta.instruction[:80] or meta.run_id)} · omni-agent</title>"
        f"<style>{_CSS}</style></head><body>"
        f"<header>{''.join(head)}</header><main>"
        f"<details><summary>tools ({len(meta.tools)})</summary><pre>{_e(json.dumps(meta.tools, indent=1))}</pre></details>"
        f"{''.join(body)}</main></body></html>\n"
    )


def _media(parts: list[Any]) -> str:
    out = []
    for p in parts:
        if isinstance(p, ImagePart) and p.path:
            out.append(f'<img src="{_e(p.path)}" alt="screenshot" loading="lazy">')
        elif isinstance(p, AudioPart) and p.path:
            out.append(f'<audio controls src="{_e(p.path)}"></audio>')
    return "".join(out)


def _inputs(step: StepRecord) -> str:
    """New user-side input of the step: instruction, observations (tool results are shown below)."""
    out = []
    for m in step.new_messages:
        if isinstance(m, ToolMessage) or m.role == "assistant":
            continue
        text = "".join(p.text for p in m.content if isinstance(p, TextPart))
        if step.step > 1:  # later observations are shown under the step that produced them
            if text:
                out.append(f'<div class="label">{_e(m.role)}</div><pre>{_e(text)}</pre>')
            continue
        out.append(f'<div class="label">{_e(m.role)}</div>')
        if text:
            out.append(f"<pre>{_e(text)}</pre>")
        out.append(_media(list(m.content)))
    return "".join(out)


def _step(step: StepRecord) -> str:
    parts = [f'<section class="step" id="step-{step.step}">']
    status = "" if step.complete else ' <span class="badge warn">did not finish</span>'
    parts.append(f"<h2>Step {step.step} · {_e(step.outcome)}{status}</h2>")
    parts.append(_inputs(step))
    if step.thinking:
        parts.append(f"<details><summary>thinking</summary><pre>{_e(step.thinking)}</pre></details>")
    if step.visible_text:
        parts.append(f'<div class="label">model</div><pre>{_e(step.visible_text)}</pre>')
    if step.raw_text:
        parts.append(f"<details><summary>raw model text</summary><pre>{_e(step.raw_text)}</pre></details>")
    for p in step.parse_problems:
        cls = "err" if p.fatal else ""
        parts.append(f'<pre class="{cls}">parse {_e(p.kind)}: {_e(p.message)}</pre>')
    validations = {v.call_id: v for v in step.validations}
    decisions = {d.call_id: d for d in step.decisions}
    results = {r.call_id: r for r in step.results}
    for call in step.calls:
        parts.append(f'<div class="label">call {_e(call.name)}</div>')
        parts.append(f"<pre>{_e(json.dumps(call.arguments, ensure_ascii=False, indent=1))}</pre>")
        v = validations.get(call.id)
        if v is not None and not v.ok:
            parts.append(f'<pre class="err">invalid: {_e(v.message)}</pre>')
        d = decisions.get(call.id)
        if d is not None and d.action != "allow":
            verdict = "" if d.approved is None else (" · approved" if d.approved else " · not approved")
            parts.append(f"<div>policy: {_e(d.action)} — {_e(d.reason)}{_e(verdict)}</div>")
        r = results.get(call.id)
        if r is not None:
            parts.append(f'<pre class="{"err" if r.is_error else "ok"}">{_e(r.text)}</pre>{_media(r.images)}')
    if step.observation:
        parts.append('<div class="label">observation after the step</div>')
        text = "".join(p.text for p in step.observation if isinstance(p, TextPart))
        if text:
            parts.append(f"<pre>{_e(text)}</pre>")
        parts.append(_media(step.observation))
    if step.error:
        parts.append(f'<pre class="err">{_e(step.error)}</pre>')
    if step.timings:
        cells = "".join(f"<th>{_e(k)}</th>" for k in step.timings)
        vals = "".join(f"<td>{v * 1000:.1f} ms</td>" for v in step.timings.values())
        parts.append(f"<table><tr>{cells}</tr><tr>{vals}</tr></table>")
    parts.append("</section>")
    return "".join(parts)
