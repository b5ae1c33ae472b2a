"""Errors the server answers in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

__all__ = ["CapacityError", "RequestError"]


class RequestError(Exception):
    """Something the client can fix (HTTP 4xx); the server goes on serving the others."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str | None = None,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.param = param
        self.kind = kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class CapacityError(RequestError):
    """The KV budget cannot hold this request: refused before any work, never an OOM crash.

    ``retriable`` is True when it would fit once running requests finish (HTTP 503), False when
    it can never fit (HTTP 400, ``context_length_exceeded``)."""

    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(
            message,
            status=503 if retriable else 400,
            code="kv_budget_busy" if retriable else "context_length_exceeded",
            kind="server_overloaded" if retriable else "invalid_request_error",
        )
        self.retriable = retriable
