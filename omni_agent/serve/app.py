"""The ASGI app: routes, API-key check, health, metrics and OpenAI-shaped errors.

Importing this module needs the ``serve`` extra (FastAPI, uvicorn, sse-starlette, prometheus-client).

``create_app(backend)`` serves any ``ServeBackend``: the batched engine over a local model, the
serial baseline, or a no-op backend (the overhead benchmark). The Realtime WebSocket route is
mounted from ``omni_agent.serve.realtime`` (``realtime_router``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from .backend import ServeBackend
from .chat import ChatCompletionRequest, ChatLimits, to_model_request
from .completions import CompletionJob
from .errors import RequestError
from .metrics import ServeMetrics

__all__ = ["create_app"]

log = logging.getLogger("omni_agent.serve")
_OPEN_PATHS = frozenset({"/health"})


def create_app(
    backend: ServeBackend,
    *,
    api_key: str | None = None,
    metrics: ServeMetrics | None = None,
    limits: ChatLimits | None = None,
    model_name: str | None = None,
) -> Any:
    """A FastAPI app serving ``backend``; with ``api_key`` every request but ``/health`` needs it."""
    metrics = metrics or ServeMetrics()
    limits = limits or ChatLimits()
    name = model_name or backend.info.name

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        await backend.aclose()  # after uvicorn drained the in-flight requests

    app = FastAPI(title="omni-agent", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.backend = backend
    app.state.metrics = metrics
    app.state.model_name = name

    if api_key is not None:
        app.add_middleware(_ApiKeyCheck, api_key=api_key)

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> Any:
        return _error(exc)

    @app.exception_handler(404)
    async def not_found(request: Request, _: Exception) -> Any:
        return _error(RequestError(f"no route {request.method} {request.url.path}", status=404, code="not_found"))

    @app.exception_handler(405)
    async def wrong_method(request: Request, _: Exception) -> Any:
        return _error(RequestError(f"method {request.method} not allowed on {request.url.path}", status=405))

    @app.exception_handler(Exception)
    async def server_error(_: Request, exc: Exception) -> Any:
        log.exception("request failed")
        return _error(RequestError(f"{type(exc).__name__}: {exc}", status=500, kind="server_error", code="internal_error"))

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok", "model": name, **metrics.snapshot()}

    @app.get("/metrics")
    async def prometheus() -> Any:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [_model_card(name)]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str) -> Any:
        _check_model(model_id, name)
        return _model_card(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await _answer_chat(request, backend=backend, metrics=metrics, limits=limits, name=name)

    _mount_realtime(app, backend, api_key=api_key, metrics=metrics)
    return app


async def _answer_chat(request: Request, *, backend: ServeBackend, metrics: ServeMetrics, limits: ChatLimits, name: str) -> Any:
    """``POST /v1/chat/completions``; every answer, error or not, is counted in ``omni_requests``."""
    started = time.perf_counter()
    try:
        body = _chat_body(await request.body())
        _check_model(body.model, name)
        if _has_media(body):  # decoding images / audio takes milliseconds: off the event loop
            model_request, choice = await asyncio.to_thread(to_model_request, body, limits)
        else:
            model_request, choice = to_model_request(body, limits)
    except RequestError as exc:
        metrics.requests.labels("chat", str(exc.status)).inc()
        raise
    job = CompletionJob(backend=backend, body=body, request=model_request, choice=choice,
                        metrics=metrics, model_name=name, started=started)
    if body.stream:
        return await _streamed(job, metrics)
    status = "500"
    try:
        with metrics.in_flight.labels("chat").track_inprogress():
            result = await job.complete()
        status = "200"
    except RequestError as exc:
        status = str(exc.status)
        raise
    finally:
        metrics.requests.labels("chat", status).inc()
    return JSONResponse(result)


class _ApiKeyCheck:
    """Pure ASGI middleware (cheaper than a decorator middleware): every HTTP request but
    ``/health`` must carry the key (``Authorization: Bearer KEY``, or ``api-key: KEY`` as
    Azure-style clients send it). WebSocket routes check it themselves: browsers cannot set
    headers there and send the key as a subprotocol (``serve/realtime.py``)."""

    def __init__(self, app: Any, *, api_key: str) -> None:
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in _OPEN_PATHS and not self._authorised(scope):
            error = _error(RequestError("missing or invalid API key (Authorization: Bearer KEY)", status=401,
                                        code="invalid_api_key", kind="authentication_error"))
            await error(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorised(self, scope: Any) -> bool:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("authorization", "")
        token = given[7:].strip() if given.lower().startswith("bearer ") else headers.get("api-key", "")
        return hmac.compare_digest(token.encode(), self.api_key)


def _error(exc: RequestError) -> Any:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _has_media(body: ChatCompletionRequest) -> bool:
    return any(
        isinstance(m.get("content"), list) and any(isinstance(p, dict) and p.get("type") != "text" for p in m["content"])
        for m in body.messages
        if isinstance(m, dict)
    )


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "omni-agent"}


def _check_model(requested: str, served: str) -> None:
    if requested != served:
        raise RequestError(f"the model {requested!r} does not exist; this server serves {served!r}",
                           status=404, code="model_not_found", param="model")


def _chat_body(raw: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise RequestError(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError("the body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise RequestError(f"{where}: {first['msg']}", param=where or None) from None


async def _streamed(job: CompletionJob, metrics: ServeMetrics) -> Any:
    """An SSE response; errors before the first chunk are plain HTTP errors, later ones an
    ``error`` event (the HTTP status is already sent)."""
    gauge = metrics.in_flight.labels("chat")
    gauge.inc()
    chunks = job.stream()
    try:
        first = await chunks.__anext__()
    except BaseException as exc:
        gauge.dec()
        await chunks.aclose()
        status = exc.status if isinstance(exc, RequestError) else 500
        metrics.requests.labels("chat", str(status)).inc()
        raise

    async def events() -> AsyncIterator[bytes]:
        status = "200"
        try:
            yield _sse(first)
            async for chunk in chunks:
                yield _sse(chunk)
            yield b"data: [DONE]\n\n"
        except RequestError as exc:
            status = str(exc.status)
            yield _sse(exc.body())
        except Exception as exc:  # the stream is open: report in-band, keep the server up
            log.exception("stream failed")
            status = "500"
            yield _sse(RequestError(f"{type(exc).__name__}: {exc}", status=500, kind="server_error").body())
        except BaseException:  # the client went away (cancelled): free the engine's slot
            status = "499"
            raise
        finally:
            await chunks.aclose()
            gauge.dec()
            metrics.requests.labels("chat", status).inc()

    # Starlette's StreamingResponse watches for the client's disconnect and cancels ``events()``
    # (its ``finally`` frees the engine's slot); sse-starlette's extra ping task cost ~1 ms/request.
    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


def _mount_realtime(app: Any, backend: ServeBackend, *, api_key: str | None, metrics: ServeMetrics) -> None:
    from .realtime import realtime_router

    app.include_router(realtime_router(backend, api_key=api_key, metrics=metrics))
