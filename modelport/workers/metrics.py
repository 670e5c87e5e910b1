"""Prometheus metrics of one worker process, served on MODELPORT_METRICS_HOST:MODELPORT_METRICS_PORT
when the port is set (loopback unless the operator opens it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class WorkerMetrics:
    def __init__(self, model: str, deployment: str = "default") -> None:
        self.registry = CollectorRegistry()
        self._model = model
        self._jobs = Counter("modelport_worker_jobs", "Jobs finished, by outcome", ["model", "outcome"],
                             registry=self.registry)
        self._tokens = Counter("modelport_worker_completion_tokens", "Completion tokens produced", ["model"],
                               registry=self.registry)
        self.running = Gauge("modelport_worker_running_jobs", "Jobs being served now", ["model"],
                             registry=self.registry).labels(model)
        self.cooldown = Gauge("modelport_worker_cooldown_seconds", "How long the worker stays away from the queue "
                              "after its upstream failed (0: claiming)", ["model", "deployment"],
                              registry=self.registry).labels(model, deployment)

    def finished(self, outcome: str, completion_tokens: int) -> None:
        self._jobs.labels(self._model, outcome).inc()
        self._tokens.labels(self._model).inc(completion_tokens)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)
