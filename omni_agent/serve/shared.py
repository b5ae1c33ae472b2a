"""One resident model for a whole evaluation suite: episodes become clients of one server.

``omni-agent eval SUITE --model qwen-omni:PATH`` used to load the checkpoint in every episode's
worker process. ``shared_model_server`` loads it once, serves it on 127.0.0.1 (a free port) for
the life of the suite, and hands back the ``openai:`` spec every episode uses instead. With
``server_url`` (``--server URL``) nothing is loaded: the episodes use that server.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..exceptions import ModelUnavailableError, UserError

__all__ = ["SharedModel", "shared_model_server"]

_LOCAL_SCHEMES = ("qwen-omni:", "qwen-vl:")


@dataclass
class SharedModel:
    """What the episodes use (``episode_spec``) and, when this process serves it, the server."""

    spec: str
    episode_spec: str
    server: Any = None
    metrics: Any = None
    notes: list[str] = field(default_factory=list)

    def metrics_text(self) -> str:
        return self.metrics.render()[0].decode() if self.metrics is not None else ""

    def write_metrics(self, run_dir: Path) -> Path | None:
        """The server's Prometheus metrics at the end of the suite (``server-metrics.txt``):
        ``omni_model_loads_total 1.0`` shows the model was loaded once for all episodes."""
        if self.metrics is None:
            return None
        path = Path(run_dir) / "server-metrics.txt"
        path.write_text(self.metrics_text(), encoding="utf-8")
        return path


def shares(spec: str) -> bool:
    """True for specs whose model this process would load (local checkpoints)."""
    return spec.startswith(_LOCAL_SCHEMES)


def _episode_spec(base_url: str, info: Any) -> str:
    options = f"can_hear={str(info.can_hear).lower()}&can_speak={str(info.can_speak).lower()}"
    options += f"&coordinate_space={info.coordinate_space}&timeout=600"
    return f"openai:{base_url}#{info.name}?{options}"


@contextlib.contextmanager
def shared_model_server(spec: str, *, server_url: str | None = None) -> Iterator[SharedModel]:
    """Serve ``spec`` once for the duration of the block (or point at ``server_url``)."""
    if server_url is not None:
        url = server_url.rstrip("/")
        base = url if url.endswith("/v1") else url + "/v1"
        yield SharedModel(spec=spec, episode_spec=f"openai:{base}")
        return
    if not shares(spec):
        yield SharedModel(spec=spec, episode_spec=spec)
        return
    from .app import create_app
    from .metrics import ServeMetrics
    from .server import BackgroundServer, load_backend

    metrics = ServeMetrics()
    try:
        backend = load_backend(spec, metrics=metrics)
    except UserError:
        raise
    except Exception as exc:
        raise ModelUnavailableError(f"cannot load {spec} to serve it to the suite: {exc}") from exc
    server = BackgroundServer(create_app(backend, metrics=metrics)).start()
    try:
        yield SharedModel(spec=spec, episode_spec=_episode_spec(server.base_url, backend.info), server=server, metrics=metrics)
    finally:
        server.stop()
