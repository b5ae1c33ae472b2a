"""The Qwen3 tool-calling prompt format as plain text, shared by every backend and the evals.

The Qwen3 family (Qwen3, Qwen3-VL, Qwen3-Omni) was trained on one format: the tool schemas go
into the system turn under a ``# Tools`` header, calls come back as ``<tool_call>`` blocks and
results go in as ``<tool_response>`` blocks of one user turn. Checkpoints whose chat template
renders tools produce this text themselves; for those that do not (Qwen2.5-Omni, plain
completion servers) these functions produce the same text, byte for byte (a test checks that
our Jinja template and these functions agree).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

__all__ = [
    "TOOLS_HEADER",
    "TOOLS_INSTRUCTION",
    "render_tool_call",
    "render_tool_response",
    "render_tool_responses",
    "system_with_tools",
    "tools_block",
]

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_INSTRUCTION = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def _dumps(value: Any) -> str:
    # Same separators as Jinja's ``tojson`` in transformers' chat-template environment, so the
    # text we inject equals the text a checkpoint's own template renders.
    return json.dumps(value, ensure_ascii=False)


def tools_block(tools: Iterable[Mapping[str, Any]]) -> str:
    """The ``# Tools`` block: one JSON object per tool (OpenAI format) inside ``<tools>``."""
    lines = "".join("\n" + _dumps(dict(tool)) for tool in tools)
    return TOOLS_HEADER + lines + TOOLS_INSTRUCTION


def system_with_tools(system_text: str | None, tools: Iterable[Mapping[str, Any]]) -> str:
    """System text followed by the tools block (what goes between ``<|im_start|>system`` and
    ``<|im_end|>``)."""
    tools = list(tools)
    if not tools:
        return system_text or ""
    prefix = f"{system_text}\n\n" if system_text else ""
    return prefix + tools_block(tools)


def render_tool_call(name: str, arguments: Mapping[str, Any] | str) -> str:
    """One call as the model writes it: ``<tool_call>\\n{"name": .., "arguments": ..}\\n</tool_call>``."""
    args = arguments if isinstance(arguments, str) else _dumps(dict(arguments))
    return '<tool_call>\n{"name": "' + name + '", "arguments": ' + args + "}\n</tool_call>"


def render_tool_response(text: str) -> str:
    """One tool result block (no name or id: the Qwen format matches results by call order)."""
    return f"<tool_response>\n{text}\n</tool_response>"


def render_tool_responses(texts: Iterable[str]) -> str:
    """Consecutive results as they appear in their one user turn, in call order."""
    return "\n".join(render_tool_response(t) for t in texts)
