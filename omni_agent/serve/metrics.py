"""Prometheus metrics of one server, shared by Chat Completions, Realtime and the engine.

Each ``ServeMetrics`` owns its own registry (not prometheus-client's global one), so several
apps in one process (tests, benchmarks) never collide. ``GET /metrics`` renders it as text.
The gauges return to zero when nothing runs: a test reads them to prove nothing leaked.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class ServeMetrics:
    """Counters, gauges and histograms of requests, tokens, batches, KV memory and latency."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("omni_requests", "Requests answered, by endpoint and HTTP status", ["endpoint", "status"], registry=r)
        self.in_flight = Gauge("omni_requests_in_flight", "Requests being answered now", ["endpoint"], registry=r)
        self.prompt_tokens = Counter("omni_prompt_tokens", "Prompt tokens processed (reused KV included)", registry=r)
        self.reused_tokens = Counter("omni_reused_prompt_tokens", "Prompt tokens served from a session's KV prefix", registry=r)
        self.completion_tokens = Counter("omni_completion_tokens", "Tokens generated", registry=r)
        self.decode_steps = Counter("omni_decode_steps", "Decode steps run by the engine", registry=r)
        self.shared_steps = Counter("omni_shared_decode_steps", "Decode steps that served more than one request", registry=r)
        self.batch_size = Histogram("omni_batch_size", "Requests in each decode step", buckets=_BATCH_BUCKETS, registry=r)
        self.max_batch_size = Gauge("omni_max_batch_size", "Largest decode batch seen", registry=r)
        self.active_sequences = Gauge("omni_active_sequences", "Requests prefilling or decoding now", registry=r)
        self.waiting_sequences = Gauge("omni_waiting_sequences", "Requests queued for the engine", registry=r)
        self.kv_bytes = Gauge("omni_kv_cache_bytes", "KV cache bytes held (running requests and kept sessions)", registry=r)
        self.kv_budget = Gauge("omni_kv_cache_budget_bytes", "KV cache budget", registry=r)
        self.kv_sessions = Gauge("omni_kv_cache_sessions", "Sessions whose KV prefix is kept", registry=r)
        self.refused = Counter("omni_refused_requests", "Requests refused by the KV budget", registry=r)
        self.model_loads = Counter("omni_model_loads", "Times this server loaded a model", registry=r)
        self.ttft = Histogram(
            "omni_time_to_first_token_seconds", "Request in -> first generated token", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.ttfa = Histogram(
            "omni_time_to_first_audio_seconds", "Request in -> first audio sample out", buckets=_LATENCY_BUCKETS, registry=r
        )

    def observe_batch(self, size: int) -> None:
        """One decode step over ``size`` requests."""
        self.decode_steps.inc()
        self.batch_size.observe(size)
        if size > 1:
            self.shared_steps.inc()
        if size > self.max_batch_size._value.get():  # noqa: SLF001 - prometheus has no public getter
            self.max_batch_size.set(size)

    # -- the hooks serve/realtime.py calls (one Realtime response = one request) --------------
    def request_started(self, endpoint: str) -> None:
        self.in_flight.labels(endpoint=endpoint).inc()

    def request_finished(self, endpoint: str, status: str = "200") -> None:
        self.in_flight.labels(endpoint=endpoint).dec()
        self.requests.labels(endpoint=endpoint, status=status).inc()

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_first_audio(self, seconds: float) -> None:
        self.ttfa.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the Prometheus text exposition."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """One sample's current value (0.0 when absent): for tests, health and benchmarks."""
        got = self.registry.get_sample_value(name, labels or {})
        return float(got) if got is not None else 0.0

    def snapshot(self) -> dict[str, Any]:
        """The headline numbers as a dict (``GET /health`` shows them)."""
        return {
            "requests_in_flight": sum(
                s.value for m in self.in_flight.collect() for s in m.samples if s.name == "omni_requests_in_flight"
            ),
            "active_sequences": self.value("omni_active_sequences"),
            "kv_cache_bytes": self.value("omni_kv_cache_bytes"),
            "kv_cache_sessions": self.value("omni_kv_cache_sessions"),
            "model_loads": self.value("omni_model_loads_total"),
        }
