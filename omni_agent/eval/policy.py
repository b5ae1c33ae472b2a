"""The reference policy: replays a task's reference solution as a model would write it.

Each reference step becomes one assistant turn of raw Qwen text (``<tool_call>`` blocks made
by :func:`omni_agent.prompting.render_tool_call`), replayed by :class:`ScriptedModel`, so the
calls go through the same streaming parser, validator, policy and tools as a real model's.
It is labelled scripted everywhere ("scripted policy, not a model"): a report of a reference
run can never pass for a model result.
"""

from __future__ import annotations

from typing import Any

from ..models.scripted import ScriptedModel
from ..prompting import render_tool_call
from .task import Task, substitute

__all__ = ["REFERENCE_MODEL", "is_reference", "reference_model", "reference_outputs"]

REFERENCE_MODEL = "reference"
"""The ``--model`` value that selects each task's reference solution."""

REFERENCE_ALIASES = frozenset({"reference", "scripted"})


def is_reference(model: str | None) -> bool:
    return (model or "").strip() in REFERENCE_ALIASES


def reference_outputs(task: Task, values: dict[str, Any]) -> list[str]:
    """The reference solution as raw assistant texts, setup values filled in."""
    outputs = []
    for step in task.reference:
        if step.answer is not None:
            text = substitute(step.answer, values)
            outputs.append(f"{substitute(step.text, values)}\n\n{text}" if step.text else text)
            continue
        blocks = [render_tool_call(c.name, substitute(c.arguments, values)) for c in step.calls]
        if step.text:
            blocks.insert(0, substitute(step.text, values))
        outputs.append("\n".join(blocks))
    return outputs


def reference_model(task: Task, values: dict[str, Any]) -> ScriptedModel:
    """A scripted model replaying ``task``'s reference solution (labelled scripted)."""
    return ScriptedModel(reference_outputs(task, values), name=f"reference:{task.id}")
