"""OpenAI-compatible chat-completions backend (``vllm serve``, SGLang, llama.cpp, hosted APIs).

The conversation is converted by :mod:`.openai_convert`; this module owns the HTTP side:
timeouts, retries with exponential backoff and jitter where a retry can help (connection
failures, 429 rate limits, 503 unavailable; honouring ``Retry-After``), server-sent-event
streaming, and turning every transport or protocol failure into one clear :class:`ModelError`
subclass. Other server errors (500...) are not retried: the server took the request and failed,
and a retry would regenerate the whole answer to most likely fail the same way.

The answer is passed on as the server sent it: ``text`` may hold ``<think>`` and
``<tool_call>`` blocks (a server started without a tool parser), and native ``tool_calls``
travel unparsed in ``ModelResponse.raw_tool_calls``; the agent parses both with
``omni_agent.parsing`` so every backend goes through the same tolerant parser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Literal

from ..exceptions import ModelError, ModelResponseError, ModelUnavailableError, UserError
from .base import CoordinateSpace, Model, ModelChunk, ModelInfo, ModelRequest, ModelResponse
from .openai_convert import (
    ConversionOptions,
    StreamAssembler,
    body_snippet,
    messages_to_openai,
    response_from_openai,
    server_error_message,
    settings_to_openai,
    tools_to_openai,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAICompatModel", "RetryNotice"]

_RETRY_STATUSES = {429: "rate limited", 503: "unavailable"}
"""The statuses a retry can help with, and what they mean."""
ToolChoice = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class RetryNotice:
    """Passed to ``on_retry`` before each wait, so a display can say why the agent is waiting."""

    attempt: int
    """The attempt that failed (1 = the first request)."""
    max_attempts: int
    delay_s: float
    reason: str


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying."""

    def __init__(self, reason: str, *, retry_after_s: float | None = None, final: ModelError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.final = final


class OpenAICompatModel(Model):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        base_url: The API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: The served model name; ``None`` asks the server (``GET /models``) on first use.
        api_key: Bearer token; defaults to ``$OPENAI_API_KEY``; none is sent when neither is set.
        timeout_s: Longest wait for the server's next bytes: the whole answer when not
            streaming, the next chunk when streaming. Timeouts are not retried (the server took
            the request and is slow; retrying would multiply the wait).
        connect_timeout_s: Longest wait to open a connection (retried).
        max_retries: Retries after the first attempt for 429 / 503 / connection failures.
        backoff_s: First retry delay; doubles each retry, with jitter, capped at ``max_backoff_s``.
            A ``Retry-After`` header replaces it (also capped).
        extra_body: Extra request fields merged last (``{"top_k": 20}``,
            ``{"chat_template_kwargs": {"enable_thinking": False}}``).
        tool_choice: Sent when set. When unset and a vLLM server without a tool parser refuses
            the implied ``"auto"``, the backend switches to ``"none"`` (tools stay in the prompt
            and the calls arrive as ``<tool_call>`` text) and remembers it.
        can_see, can_hear: What the served model accepts; images / audio sent to a model that
            cannot take them are refused with a clear ``UserError``.
        can_speak: The server answers with speech (``omni-agent serve``, vLLM-Omni, Qwen's API):
            a request with ``speak=True`` asks for ``modalities: ["text", "audio"]``; the audio is
            read from ``message.audio``, a second choice (vLLM-Omni) or the stream's audio deltas.
        coordinate_space: The GUI coordinate convention of the served model.
        media_root: Base directory for relative media paths in the conversation.
        video_as: ``"data_url"`` (works with any server) or ``"file_url"`` (a server on this
            machine started with ``--allowed-local-media-path``).
        on_retry: Called with a :class:`RetryNotice` before each retry wait.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        tool_choice: ToolChoice | None = None,
        can_hear: bool = True,
        can_see: bool = True,
        can_speak: bool = False,
        coordinate_space: CoordinateSpace = "relative_1000",
        media_root: str | os.PathLike[str] | None = None,
        image_quality: int = 85,
        video_as: Literal["data_url", "file_url"] = "data_url",
        on_retry: Callable[[RetryNotice], None] | None = None,
    ) -> None:
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise UserError(f"base_url must start with http:// or https://, got {base_url!r}")
        base_url = base_url.rstrip("/")
        if base_url.endswith("/chat/completions"):  # a pasted endpoint instead of the API root
            base_url = base_url[: -len("/chat/completions")]
        for name, value in (("timeout_s", timeout_s), ("connect_timeout_s", connect_timeout_s)):
            if not value > 0:
                raise UserError(f"{name} must be > 0, got {value!r}")
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise UserError("max_retries, backoff_s and max_backoff_s must be >= 0")
        if tool_choice not in (None, "auto", "none", "required"):
            raise UserError(f"tool_choice must be 'auto', 'none' or 'required', got {tool_choice!r}")
        if video_as not in ("data_url", "file_url"):
            raise UserError(f"video_as must be 'data_url' or 'file_url', got {video_as!r}")
        self.base_url = base_url
        self.model = model or None
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
        self.timeout_s = float(timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self.tool_choice: ToolChoice | None = tool_choice
        self._tool_choice_fixed = tool_choice is not None
        self.on_retry = on_retry
        self._media_root = media_root
        self._image_quality = image_quality
        self._video_as = video_as
        self.info = ModelInfo(
            name=self.model or "(served model)",
            backend="openai",
            can_see=can_see,
            can_hear=can_hear,
            can_speak=bool(can_speak),
            coordinate_space=coordinate_space,
            extra={"base_url": self.base_url},
        )
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAICompatModel({self.base_url!r}, {self.model!r})"

    # ------------------------------------------------------------------ public interface

    async def complete(self, request: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        body = await self._body(request, stream=False)
        prepared = time.perf_counter()
        url = self._url("/chat/completions")
        response = await self._send("POST", url, body, stream=False)
        result = _parse_answer(response.content, response.status_code, url)
        finished = time.perf_counter()
        return result.model_copy(
            update={
                "model": result.model or self.model or "",
                "timings": {"preprocess": prepared - started, "request": finished - prepared, "total": finished - started},
            }
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        started = time.perf_counter()
        body = await self._body(request, stream=True)
        prepared = time.perf_counter()
        url = self._url("/chat/completions")
        response = await self._send("POST", url, body, stream=True)
        timings = {"preprocess": prepared - started}
        assembler = StreamAssembler(where=url)
        done = False
        try:
            if "text/event-stream" not in response.headers.get("content-type", ""):
                # A server that ignored ``stream``: the body is one whole answer.
                result = _parse_answer(await response.aread(), response.status_code, url)
                timings["total"] = time.perf_counter() - started
                yield ModelChunk(text=result.text, response=result.model_copy(update={"timings": timings}))
                return
            async for data in _sse_data(response):
                if data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise ModelResponseError(
                        f"malformed JSON in the stream from {url}: {exc}; event starts {body_snippet(data)}"
                    ) from None
                text = assembler.feed(chunk)
                if text:
                    timings.setdefault("first_token", time.perf_counter() - prepared)
                    yield ModelChunk(text=text)
        except _httpx().TimeoutException:
            raise ModelUnavailableError(
                f"{url} stopped sending for {self.timeout_s:g} s (timeout_s) after {assembler.chunks} chunk(s)"
            ) from None
        except _httpx().TransportError as exc:
            raise ModelUnavailableError(
                f"{url} dropped the connection mid-stream after {assembler.chunks} chunk(s): {_describe(exc)}"
            ) from None
        finally:
            await response.aclose()
        if not done and assembler.finish_reason is None:
            raise ModelResponseError(
                f"the stream from {url} ended without [DONE] or a finish_reason after {assembler.chunks} chunk(s)"
            )
        tail, result = assembler.finish()
        timings["total"] = time.perf_counter() - started
        result = result.model_copy(update={"model": result.model or self.model or "", "timings": timings})
        yield ModelChunk(text=tail, response=result)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._http_loop = None

    async def resolve_model_name(self) -> str:
        """The model name to send; asks ``GET /models`` once when none was given."""
        if self.model:
            return self.model
        url = self._url("/models")
        response = await self._send("GET", url, None, stream=False)
        try:
            data = json.loads(response.content)
            names = [m["id"] for m in data["data"] if isinstance(m, dict) and m.get("id")]
        except (ValueError, KeyError, TypeError):
            raise ModelResponseError(f"{url} did not list models: body starts {body_snippet(response.content)}") from None
        if not names:
            raise ModelUnavailableError(f"{url} serves no models; give the name: openai:{self.base_url}#NAME")
        self.model = names[0]
        self.info = dataclasses.replace(self.info, name=self.model)
        return self.model

    # ----------------------------------------------------------------------- request body

    def conversion_options(self) -> ConversionOptions:
        return ConversionOptions(
            media_root=self._media_root,
            image_quality=self._image_quality,
            video_as=self._video_as,
            can_see=self.info.can_see,
            can_hear=self.info.can_hear,
            model_name=f"{self.info.name} at {self.base_url}",
        )

    async def _body(self, request: ModelRequest, *, stream: bool) -> dict[str, Any]:
        model = await self.resolve_model_name()
        body: dict[str, Any] = {"model": model, "messages": messages_to_openai(request.messages, self.conversion_options())}
        body.update(settings_to_openai(request.settings))
        if request.tools:
            body["tools"] = tools_to_openai(request.tools)
            if self.tool_choice is not None:
                body["tool_choice"] = self.tool_choice
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if request.speak and self.info.can_speak:
            body["modalities"] = ["text", "audio"]
            body["audio"] = {"format": "wav" if not stream else "pcm16", **({"voice": request.voice} if request.voice else {})}
        body.update(self.extra_body)
        return body

    def _url(self, path: str) -> str:
        return self.base_url + path

    # -------------------------------------------------------------------------- transport

    def _client(self) -> httpx.AsyncClient:
        """One client per event loop: a client's pooled connections belong to the loop that
        opened them, and ``Agent.run()`` may call ``asyncio.run`` once per run."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            httpx = _httpx()
            headers = {"Accept": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            timeout = httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s)
            self._http = httpx.AsyncClient(timeout=timeout, headers=headers)
            self._http_loop = loop
        return self._http

    async def _send(self, method: str, url: str, body: dict[str, Any] | None, *, stream: bool) -> httpx.Response:
        """One request with retries. Returns a 2xx response (body unread when ``stream``)."""
        attempts = self.max_retries + 1
        attempt = 0
        switched_tool_choice = False
        while True:
            attempt += 1
            try:
                return await self._attempt(method, url, body, stream=stream)
            except _Retryable as failure:
                if attempt >= attempts:
                    raise failure.final from None
                if failure.retry_after_s is not None:
                    delay = min(failure.retry_after_s, self.max_backoff_s)
                else:
                    delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if self.on_retry is not None:
                    self.on_retry(RetryNotice(attempt=attempt, max_attempts=attempts, delay_s=delay, reason=failure.reason))
                await asyncio.sleep(delay)
            except _AutoToolChoiceRefused:
                if switched_tool_choice or body is None:
                    raise
                # vLLM without --enable-auto-tool-choice refuses tools under the implied "auto";
                # with "none" it still renders them into the prompt and the model answers with
                # <tool_call> text, which the agent's parser reads.
                switched_tool_choice = True
                self.tool_choice = "none"
                body = {**body, "tool_choice": "none"}
                attempt -= 1

    async def _attempt(self, method: str, url: str, body: dict[str, Any] | None, *, stream: bool) -> httpx.Response:
        httpx = _httpx()
        client = self._client()
        try:
            request = client.build_request(method, url, json=body)
        except (TypeError, ValueError) as exc:  # NaN or a non-JSON value in extra_body / tool schemas
            raise UserError(f"the request to {url} cannot be encoded as JSON: {exc}") from None
        try:
            response = await client.send(request, stream=stream)
        except httpx.ConnectTimeout:
            raise _Retryable(
                f"connect timed out after {self.connect_timeout_s:g} s",
                final=ModelUnavailableError(
                    f"cannot reach {self.base_url}: connect timed out after {self.connect_timeout_s:g} s "
                    f"({self.max_retries + 1} attempts)"
                ),
            ) from None
        except httpx.TimeoutException:
            raise ModelUnavailableError(
                f"{url} did not answer within {self.timeout_s:g} s (timeout_s); the server may be overloaded "
                "or the answer too long for the timeout"
            ) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            reason = _describe(exc)
            raise _Retryable(
                reason,
                final=ModelUnavailableError(f"cannot reach {self.base_url}: {reason} ({self.max_retries + 1} attempts)"),
            ) from None
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(f"request to {url} failed: {_describe(exc)}") from None

        if response.status_code < 400:
            return response
        try:
            raw = await response.aread()
        except httpx.HTTPError:
            raw = b""
        finally:
            await response.aclose()
        raise self._status_error(response, raw, url, body)

    def _status_error(self, response: httpx.Response, raw: bytes, url: str, body: dict[str, Any] | None) -> Exception:
        status = response.status_code
        try:
            message = server_error_message(json.loads(raw)) or body_snippet(raw)
        except ValueError:
            message = body_snippet(raw) if raw.strip() else response.reason_phrase
        if (
            status == 400
            and not self._tool_choice_fixed
            and body is not None
            and body.get("tools")
            and body.get("tool_choice") != "none"
            and "enable-auto-tool-choice" in message
        ):
            return _AutoToolChoiceRefused(f"{url} rejected the request (HTTP 400): {message}")
        if status in _RETRY_STATUSES:
            what = _RETRY_STATUSES[status]
            return _Retryable(
                f"{what} (HTTP {status}): {message}",
                retry_after_s=_retry_after(response.headers),
                final=ModelUnavailableError(
                    f"{url} {what} (HTTP {status}) after {self.max_retries + 1} attempts: {message}"
                ),
            )
        if status >= 500:
            return ModelError(
                f"{url} failed with a server error (HTTP {status}): {message} (not retried: the server took "
                "the request; see its log)"
            )
        if status in (401, 403):
            return ModelUnavailableError(
                f"{url} refused the credentials (HTTP {status}): {message}; set OPENAI_API_KEY or pass api_key"
            )
        if status == 404:
            return ModelUnavailableError(
                f"{url} answered HTTP 404: {message}; check that base_url ends with the API root "
                f"(usually /v1) and that the server serves model {self.model!r}"
            )
        return ModelError(f"{url} rejected the request (HTTP {status}): {message}")


class _AutoToolChoiceRefused(ModelError):
    """Internal: a vLLM server without a tool parser refused ``tool_choice="auto"``."""


def _parse_answer(raw: bytes, status: int, url: str) -> ModelResponse:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ModelResponseError(f"malformed JSON from {url} (HTTP {status}): {exc}; body starts {body_snippet(raw)}") from None
    return response_from_openai(data, raw=raw, where=url)


def _httpx() -> Any:
    import httpx

    return httpx


def _describe(exc: BaseException) -> str:
    """A short reason for a transport error ("connection refused", not a traceback)."""
    # httpx wraps the OS error a few levels deep ("All connection attempts failed").
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "refused" in lowered or "errno 111" in lowered:
        return "connection refused"
    if "name or service not known" in lowered or "nodename nor servname" in lowered or "getaddrinfo" in lowered:
        return f"host name not resolved ({text})"
    if "disconnected without sending a response" in lowered or "without sending complete message" in lowered:
        return "the server closed the connection without a complete answer"
    return text


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or an HTTP date) or ``retry-after-ms``."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


async def _sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` payloads of a server-sent-event stream.

    Hand-written (a dozen lines) rather than a dependency: chat-completion streams use only
    ``data:`` fields; multi-line data is joined with newlines as the SSE spec says.
    """
    lines: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if lines:
                yield "\n".join(lines)
                lines = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            lines.append(value[1:] if value.startswith(" ") else value)
    if lines:
        yield "\n".join(lines)
