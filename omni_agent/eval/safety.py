"""What an eval episode may do to the host: the shell in the sandbox, "ask" denied, denials shown.

A model under evaluation is untrusted code with a shell. By default (``host_mode="sandboxed"``)
an episode's shell runs in the bubblewrap sandbox (:mod:`omni_agent.tools.sandbox`: only the
episode workspace is writable; the network reaches only the episode's own local web app, through
:mod:`omni_agent.tools.sandbox_bridge`, and nothing else), and every "ask" of the policy (a dangerous-looking
command, a dangerous tool, a shell call after untrusted content) is denied unless the task file
lists the tool in ``approve_tools``. Each denial, and each refusal the sandbox printed into a
command's output, is recorded in the episode result, so the report says why a call did nothing.
``--unsafe-host`` (``host_mode="host"``) is the explicit way back to the old behaviour: shell on
the host, every "ask" approved.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..messages import AssistantMessage, ToolCall, ToolMessage

__all__ = [
    "SANDBOXED_SHELL",
    "Denial",
    "EpisodeApprover",
    "HostMode",
    "HostSafetyError",
    "episode_tool_options",
    "sandbox_refusals",
]

HostMode = Literal["sandboxed", "host"]
"""sandboxed: the default (sandboxed shell, "ask" denied); host: ``--unsafe-host``."""

SANDBOXED_SHELL = "bubblewrap"

_SANDBOX_MARKERS = re.compile(
    r"Read-only file system|Network is unreachable|Could not resolve host|Temporary failure in name resolution"
    r"|Name or service not known|Failed to connect to|Operation not permitted"
)
"""Phrases the tools print when the sandbox stops them (EROFS, no network, dropped capabilities)."""


class Denial(BaseModel):
    """One call the episode did not let do what it asked."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    reason: str
    by: Literal["policy", "sandbox"]
    """policy: the call was not run ("ask" denied); sandbox: it ran and the sandbox refused."""


class HostSafetyError(Exception):
    """A task asks for something only ``--unsafe-host`` allows (e.g. ``sandbox: none``)."""


class EpisodeApprover:
    """The approver of a sandboxed episode: yes only for the task's ``approve_tools``; every
    other "ask" is a no, recorded as a :class:`Denial`."""

    def __init__(self, approve_tools: Collection[str]) -> None:
        self.approve_tools = frozenset(approve_tools)
        self.denials: list[Denial] = []

    def __call__(self, call: ToolCall, reason: str) -> bool:
        if call.name in self.approve_tools:
            return True
        self.denials.append(Denial(tool=call.name, arguments=dict(call.arguments), reason=reason, by="policy"))
        return False


def episode_tool_options(
    options: dict[str, Any], *, host_mode: HostMode, local_ports: tuple[int, ...] = ()
) -> dict[str, Any]:
    """The task's tool options with the sandbox the host mode demands; ``local_ports`` (the
    episode's own web app) stay reachable from the sandbox, no other address does."""
    options = dict(options)
    if host_mode == "host":
        return options
    asked = options.get("sandbox", SANDBOXED_SHELL)
    if asked != SANDBOXED_SHELL:
        raise HostSafetyError(
            f"the task sets tool_options.sandbox={asked!r}, which runs the model's commands on this machine: "
            "run it with --unsafe-host if you mean that"
        )
    options["sandbox"] = SANDBOXED_SHELL
    if local_ports:
        options["local_ports"] = tuple(local_ports)
    return options


def sandbox_refusals(messages: Iterable[Any], *, shell_tools: Collection[str]) -> list[Denial]:
    """Shell calls whose output shows the sandbox refusing (read-only file system, no network)."""
    calls: dict[str, ToolCall] = {}
    found: list[Denial] = []
    for message in messages:
        if isinstance(message, AssistantMessage):
            calls.update((c.id, c) for c in message.tool_calls)
        elif isinstance(message, ToolMessage) and message.result.name in shell_tools:
            text = "\n".join(getattr(p, "text", "") for p in message.result.content)
            lines = [ln.strip() for ln in text.splitlines() if _SANDBOX_MARKERS.search(ln)]
            if lines:
                call = calls.get(message.result.call_id)
                found.append(
                    Denial(
                        tool=message.result.name,
                        arguments=dict(call.arguments) if call else {},
                        reason="the sandbox refused: " + "; ".join(dict.fromkeys(lines))[:500],
                        by="sandbox",
                    )
                )
    return found
