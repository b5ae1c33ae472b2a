"""Live web console: watch the screen and the model, approve calls, take over, talk.

``omni-agent console`` (and ``omni-agent run ... --ui``) serve one page on 127.0.0.1 with a
random access token. Modules: :mod:`.server` (wires it up), :mod:`.app` (routes), :mod:`.auth`
(token, Origin), :mod:`.session` (run control, approvals, take-over), :mod:`.frames` (the live
screen), :mod:`.voice` (push-to-talk in, speech out), :mod:`.history` (past runs),
:mod:`.protocol` (the socket's messages), :mod:`.hub` (fan-out to pages), :mod:`.takeover`.
Heavy imports (starlette, uvicorn) happen only when a console starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .server import ConsoleServer
    from .session import ConsoleSession

__all__ = ["ConsoleServer", "ConsoleSession"]


def __getattr__(name: str) -> Any:
    if name == "ConsoleServer":
        from .server import ConsoleServer

        return ConsoleServer
    if name == "ConsoleSession":
        from .session import ConsoleSession

        return ConsoleSession
    raise AttributeError(name)
