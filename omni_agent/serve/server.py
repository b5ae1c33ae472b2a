"""Running the app: in the foreground (``omni-agent serve``) or on a background thread (evals,
tests, benchmarks), and building the backend a model spec asks for."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ..exceptions import ModelUnavailableError, UserError
from ..models.base import Model
from .backend import SerialBackend, ServeBackend
from .metrics import ServeMetrics

__all__ = ["BackgroundServer", "backend_for_model", "load_backend", "serve_forever"]

GRACEFUL_SHUTDOWN_S = 30.0
"""How long Ctrl-C waits for in-flight requests before closing their connections."""


def backend_for_model(model: Model, *, metrics: ServeMetrics, max_sessions: int = 64,
                      kv_budget_bytes: int | None = None, engine: str = "auto") -> ServeBackend:
    """The engine a local Qwen model gets: ``auto`` -> the fast engine (``fast_engine``) for
    Qwen3-Omni on CUDA, the plain batched engine otherwise; ``fast`` / ``batched`` ask for one
    (``fast`` also runs on CPU, eagerly); ``serial`` (and any non-local model) one request at a time."""
    from ..runtime import QwenOmniModel

    if engine not in ("auto", "fast", "batched", "serial"):
        raise UserError(f"engine must be auto, fast, batched or serial, got {engine!r}")
    if isinstance(model, QwenOmniModel) and engine != "serial":
        options = {"metrics": metrics, "max_sessions": max_sessions, "kv_budget_bytes": kv_budget_bytes}
        if engine == "fast" or (engine == "auto" and _fast_by_default(model)):
            from .fast_engine import FastBatchedEngine

            engine = FastBatchedEngine(model, **options)
            engine.warm_up()  # every decode graph captured before the first request (CUDA; no-op on CPU)
            return engine
        from .engine import BatchedEngine

        return BatchedEngine(model, **options)
    if engine in ("batched", "fast"):
        raise UserError(f"the {engine} engine needs a local qwen-omni: / qwen-vl: model, not {model.info.label}")
    return SerialBackend(model)


def _fast_by_default(model: Any) -> bool:
    """Qwen3-Omni on CUDA: the fast engine's row cache, batched graphs and Triton kernels pay off."""
    if model.family.key != "qwen3_omni":
        return False
    weight = getattr(getattr(getattr(model.model, "thinker", None), "lm_head", None), "weight", None)
    return weight is not None and weight.device.type == "cuda"


def load_backend(spec: str, *, metrics: ServeMetrics, **options: Any) -> ServeBackend:
    """Load the model once (counted in ``omni_model_loads_total``) and wrap it in a backend."""
    from ..models.spec import load_model

    model = load_model(spec)
    metrics.model_loads.inc()
    return backend_for_model(model, metrics=metrics, **options)


def _uvicorn_config(app: Any, host: str, port: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        ws_max_size=16 * 2**20,
    )


def serve_forever(app: Any, *, host: str, port: int) -> None:
    """Serve until Ctrl-C / SIGTERM; uvicorn then stops accepting, drains, and runs the app's
    shutdown (which closes the backend)."""
    import uvicorn

    try:
        uvicorn.Server(_uvicorn_config(app, host, port)).run()
    except KeyboardInterrupt:  # uvicorn re-raises the signal after its clean shutdown
        pass


class BackgroundServer:
    """The app on 127.0.0.1 (a free port) in a thread of this process, with its own event loop.

    ``with BackgroundServer(app) as server: server.base_url`` -> ``http://127.0.0.1:PORT/v1``.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.app = app
        self._server = uvicorn.Server(_uvicorn_config(app, host, port))
        self._server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._thread: threading.Thread | None = None
        self.host = host
        self.port = port

    def start(self, timeout_s: float = 30.0) -> "BackgroundServer":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._server.serve()), name="omni-serve", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s * 100)):
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise ModelUnavailableError(f"the server on {self.host}:{self.port} failed to start")
            deadline.wait(0.01)
        else:
            raise ModelUnavailableError(f"the server did not start within {timeout_s:g} s")
        sockets = self._server.servers[0].sockets
        self.port = int(sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self, timeout_s: float = GRACEFUL_SHUTDOWN_S + 5) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
