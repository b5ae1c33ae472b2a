"""``omni-agent serve SPEC``: load one model and serve it over the OpenAI API until Ctrl-C."""

from __future__ import annotations

import os
from typing import Optional

import typer

__all__ = ["serve_cmd"]


def serve_cmd(
    spec: str = typer.Argument(..., help="Model spec: qwen-omni:/path (or qwen-vl:/path); openai:/scripted: run serially."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (127.0.0.1 unless you mean to expose it)."),
    port: int = typer.Option(8000, "--port", help="Port to bind (0: any free port)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help="Require 'Authorization: Bearer KEY' on every request but /health (default $OMNI_SERVE_API_KEY)."
    ),
    max_sessions: int = typer.Option(64, "--max-sessions", min=1, help="Sessions whose KV prefix is kept (LRU)."),
    kv_budget_mb: Optional[int] = typer.Option(None, "--kv-budget-mb", min=1, help="KV cache memory budget (default: auto)."),
    engine: str = typer.Option("auto", "--engine", help="auto (fast on CUDA for Qwen3-Omni, else batched) | fast | batched | serial (one request at a time)."),
    media_dir: Optional[str] = typer.Option(None, "--media-dir", help="Allow image file paths under this directory."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name clients use (default: the checkpoint's)."),
) -> None:
    """Serve one resident model over OpenAI Chat Completions and Realtime."""
    from rich.console import Console

    from .app import create_app
    from .chat import ChatLimits
    from .metrics import ServeMetrics
    from .server import load_backend, serve_forever

    key = api_key or os.environ.get("OMNI_SERVE_API_KEY") or None
    metrics = ServeMetrics()
    backend = load_backend(
        spec,
        metrics=metrics,
        max_sessions=max_sessions,
        kv_budget_bytes=kv_budget_mb * 2**20 if kv_budget_mb else None,
        engine=engine,
    )
    app = create_app(backend, api_key=key, metrics=metrics, limits=ChatLimits(media_dir=media_dir), model_name=name)
    served = name or backend.info.name
    Console(stderr=True).print(
        f"serving [bold]{served}[/] ({type(backend).__name__}) on http://{host}:{port}/v1"
        + (" (API key required)" if key else "")
    )
    serve_forever(app, host=host, port=port)
