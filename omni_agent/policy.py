"""Which calls may run: allow, ask the user, or deny.

A :class:`Policy` looks at one validated call before it runs. "ask" goes to an :class:`Approver`
(a callable ``(call, reason) -> bool | Awaitable[bool]``); without one, asking means no, so an
unattended run never does something dangerous silently. A denied call becomes an error tool
result ("denied by policy: <reason>") and the run goes on: the model can pick another way.

The default rules (:class:`DefaultPolicy`), in order:

1. a tool in ``deny`` -> "deny";
2. ``tool.assess(arguments)`` returns a reason (e.g. ``rm -rf /`` for the shell) -> "ask", even
   for tools allowed up front: it flags *these arguments*, not the tool;
3. a tool in ``allow_up_front`` -> "allow";
4. ``tool.risk == "dangerous"`` -> "ask";
5. once the run has taken in untrusted content (a web page, a downloaded file), tools of kind
   ``shell``, ``file_write`` or ``javascript`` -> "ask" (a prompt injection must not reach them
   unchecked);
6. otherwise "allow".
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from .messages import ToolCall
from .tool import Tool

__all__ = [
    "Approval",
    "Approver",
    "Authorization",
    "ConsoleApprover",
    "Decision",
    "DefaultPolicy",
    "Policy",
    "PolicyState",
    "UNTRUSTED_SENSITIVE_KINDS",
    "allow_all",
    "ask_approver",
    "authorize",
    "console_approver",
    "default_approver",
    "deny_all",
    "get_approval",
]

UNTRUSTED_SENSITIVE_KINDS = frozenset({"shell", "file_write", "javascript"})
"""Tool kinds that ask for confirmation once untrusted content has entered the run."""


class Decision(BaseModel):
    """The policy's verdict on one call."""

    action: Literal["allow", "ask", "deny"]
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class PolicyState:
    """What the policy may know about the run so far."""

    run_id: str = ""
    step: int = 0
    untrusted_content_seen: bool = False


@runtime_checkable
class Policy(Protocol):
    def decide(self, call: ToolCall, tool: Tool, state: PolicyState) -> Decision: ...


Approver = Callable[[ToolCall, str], "bool | Approval | Awaitable[bool | Approval]"]
"""Answers an "ask": True runs the call; an :class:`Approval` may also change its arguments.
May be sync or async."""


class Approval(BaseModel):
    """An approver's answer that can edit the call: it runs with ``arguments`` (validated again)."""

    approved: bool
    arguments: dict[str, Any] | None = None
    """Replacement arguments chosen by the user; None keeps the model's."""


class DefaultPolicy:
    """The rules in the module docstring; ``allow_up_front`` / ``deny`` hold tool names."""

    def __init__(self, *, allow_up_front: Collection[str] = frozenset(), deny: Collection[str] = frozenset()) -> None:
        self.allow_up_front = frozenset(allow_up_front)
        self.deny = frozenset(deny)

    def decide(self, call: ToolCall, tool: Tool, state: PolicyState) -> Decision:
        if tool.name in self.deny:
            return Decision(action="deny", reason=f"the tool {tool.name!r} is disabled for this run")
        if tool.assess is not None:
            try:
                concern = tool.assess(dict(call.arguments))
            except Exception as exc:  # a broken check must fail closed (ask), not crash the run
                concern = f"the risk check of {tool.name} failed ({type(exc).__name__}: {exc})"
            if concern:
                return Decision(action="ask", reason=concern)
        if tool.name in self.allow_up_front:
            return Decision(action="allow", reason="allowed up front")
        if tool.risk == "dangerous":
            return Decision(action="ask", reason=f"{tool.name} is marked dangerous")
        if state.untrusted_content_seen and tool.kind in UNTRUSTED_SENSITIVE_KINDS:
            return Decision(
                action="ask",
                reason=f"the run has read untrusted content and {tool.name} is a {tool.kind} tool",
            )
        return Decision(action="allow")


def deny_all(call: ToolCall, reason: str) -> bool:
    """The approver of unattended runs: every "ask" becomes "no"."""
    return False


def allow_all(call: ToolCall, reason: str) -> bool:
    """Approves everything (for trusted sandboxes and tests only)."""
    return True


async def ask_approver(approver: Approver, call: ToolCall, reason: str) -> tuple[bool, str]:
    """Ask and return (approved, note). An approver that raises counts as "no" (note says why)."""
    approval, note = await get_approval(approver, call, reason)
    return approval.approved, note


async def get_approval(approver: Approver, call: ToolCall, reason: str) -> tuple[Approval, str]:
    """Ask and return the answer as an :class:`Approval`, with a note when the approver failed."""
    try:
        answer = approver(call, reason)
        if inspect.isawaitable(answer):
            answer = await answer
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken approver must fail closed, not crash the run
        return Approval(approved=False), f"the approver failed ({type(exc).__name__}: {exc})"
    if isinstance(answer, Approval):
        return answer, ""
    return Approval(approved=bool(answer)), ""


class Authorization(BaseModel):
    """The outcome of policy + approver for one call."""

    action: Literal["allow", "ask", "deny"]
    reason: str = ""
    approved: bool | None = None
    """The approver's answer when the policy asked; None otherwise."""
    arguments: dict[str, Any] | None = None
    """Arguments the approver replaced the model's with (to be validated again); None: unchanged."""

    @property
    def allowed(self) -> bool:
        return self.action == "allow" or self.approved is True

    def denial(self) -> str:
        """The error text the model gets for a call that may not run."""
        why = self.reason or "not allowed"
        return f"denied by policy: {why}" + (" (the user did not approve)" if self.action == "ask" else "")


async def authorize(policy: Policy, approver: Approver, call: ToolCall, tool: Tool, state: PolicyState) -> Authorization:
    """Ask the policy about one call, and the approver when the policy says "ask". Fails closed:
    a policy that raises denies, an approver that raises says no."""
    try:
        decision = policy.decide(call, tool, state)
    except Exception as exc:  # a broken custom policy must not run the call (nor crash the run)
        decision = Decision(action="deny", reason=f"the policy failed ({type(exc).__name__}: {exc})")
    if decision.action != "ask":
        return Authorization(action=decision.action, reason=decision.reason)
    approval, note = await get_approval(approver, call, decision.reason)
    reason = f"{decision.reason}; {note}" if note else decision.reason
    edited = approval.arguments if approval.approved and approval.arguments != call.arguments else None
    return Authorization(action="ask", reason=reason, approved=approval.approved, arguments=edited)


class ConsoleApprover:
    """Asks on the terminal with rich's ``Confirm`` (default: no). For interactive CLI use only.

    The prompt blocks on stdin, so it runs in a worker thread; a lock keeps two questions from
    interleaving.
    """

    def __init__(self, console: object | None = None) -> None:
        self._console = console
        self._lock = asyncio.Lock()

    async def __call__(self, call: ToolCall, reason: str) -> bool:
        async with self._lock:
            return await asyncio.to_thread(self._ask, call, reason)

    def _ask(self, call: ToolCall, reason: str) -> bool:
        import json

        from rich.console import Console
        from rich.markup import escape
        from rich.prompt import Confirm

        console = self._console if isinstance(self._console, Console) else Console(stderr=True)
        args = json.dumps(call.arguments, ensure_ascii=False)
        if len(args) > 400:
            args = args[:380] + "…"
        console.print(f"[bold yellow]confirm[/] {escape(call.name)}({escape(args)})")
        console.print(f"  [yellow]why:[/] {escape(reason)}")
        try:
            return Confirm.ask("  run it?", default=False, console=console)
        except EOFError:
            return False


def console_approver(console: object | None = None) -> ConsoleApprover:
    """A :class:`ConsoleApprover` printing on ``console`` (a rich Console; default stderr)."""
    return ConsoleApprover(console)


def default_approver() -> Approver:
    """The console approver when stdin is a terminal, else :func:`deny_all`."""
    return ConsoleApprover() if sys.stdin is not None and sys.stdin.isatty() else deny_all
