"""Prometheus metrics of one gateway app (its own registry, so several apps can coexist)."""

from __future__ import annotations

from mlwarden.core.errors import require


class GatewayMetrics:
    """Counters and histograms exposed on ``GET /metrics``."""

    def __init__(self) -> None:
        require("prometheus_client", "serve")
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("mlwarden_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.refusals = Counter("mlwarden_refusals", "Requests refused, by reason", ["reason"],
                                registry=r)
        self.flags = Counter("mlwarden_flags", "Inputs flagged but served, by check", ["check"],
                             registry=r)
        self.alerts = Counter("mlwarden_alerts", "Attack alerts raised, by detector",
                              ["detector"], registry=r)
        self.inputs = Counter("mlwarden_inputs", "Inputs answered", registry=r)
        self.latency = Histogram(
            "mlwarden_request_seconds", "Time to answer a predict request",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch_size = Histogram("mlwarden_batch_size", "Inputs per model forward pass",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512), registry=r)
        self.ready = Gauge("mlwarden_ready", "1 while the gateway accepts traffic", registry=r)
        self._request_counters: dict[tuple[str, int], object] = {}

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (labelled children are cached: the
        label lookup is a locked dictionary walk, paid once per status instead of per call)."""
        counter = self._request_counters.get((endpoint, status))
        if counter is None:
            counter = self.requests.labels(endpoint, str(status))
            self._request_counters[(endpoint, status)] = counter
        counter.inc()  # type: ignore[attr-defined]
        self.latency.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
