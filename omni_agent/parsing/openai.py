"""Tool calls in the OpenAI ``tool_calls`` structure that HTTP servers (vLLM, llama.cpp...) return.

Each item is ``{"id": "...", "type": "function", "function": {"name": ..., "arguments": "<JSON
string>"}}``. Servers differ: arguments may already be an object, may be an empty string, or
may be almost-JSON (they pass through the model's text); the call id is kept so the tool result
can be matched to it. Problems are data, as in :func:`~omni_agent.parsing.qwen.parse_output`.
"""

from __future__ import annotations

from typing import Any

from ..messages import ToolCall
from .qwen import call_from_payload, internal_error
from .types import ParseProblem

__all__ = ["calls_from_openai"]


def calls_from_openai(tool_calls: Any) -> tuple[list[ToolCall], list[ParseProblem]]:
    """Convert an OpenAI ``tool_calls`` list into ToolCalls and problems. Never raises.

    A missing or empty id gets a fresh one; a duplicate id is replaced by a fresh one (results
    are matched by id) and noted.
    """
    if tool_calls is None:
        return [], []
    if not isinstance(tool_calls, (list, tuple)):
        return [], [
            ParseProblem(kind="invalid_json", message=f"tool_calls must be a list, got {type(tool_calls).__name__}")
        ]
    calls: list[ToolCall] = []
    problems: list[ParseProblem] = []
    seen_ids: set[str] = set()
    for index, item in enumerate(tool_calls):
        try:
            call, more = _one_call(item, index, seen_ids)
        except Exception as exc:  # a converter bug must not take the agent down: report it as data
            call, more = None, [internal_error(exc)]
        problems.extend(more)
        if call is not None:
            seen_ids.add(call.id)
            calls.append(call)
    return calls, problems


def _one_call(item: Any, index: int, seen_ids: set[str]) -> tuple[ToolCall | None, list[ParseProblem]]:
    if not isinstance(item, dict):
        return None, [
            ParseProblem(
                kind="invalid_json",
                message=f"tool_calls[{index}] must be an object, got {type(item).__name__}",
                snippet=repr(item)[:200],
            )
        ]
    problems: list[ParseProblem] = []
    raw_id = item.get("id")
    call_id = raw_id if isinstance(raw_id, str) and raw_id.strip() else None
    if call_id in seen_ids:
        problems.append(
            ParseProblem(
                kind="repaired_json",
                message=f"tool_calls[{index}] repeats the id {call_id!r}; it was given a fresh one (duplicate_id)",
                fatal=False,
            )
        )
        call_id = None
    payload = {k: v for k, v in item.items() if k not in ("id", "type", "index")}
    call, more = call_from_payload(payload, call_id=call_id, arguments_are_text=True)
    return call, problems + more
