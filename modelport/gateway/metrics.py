"""Prometheus metrics of the gateway: requests by model and status, time to first token, tokens per
second, rejections by reason, announced changes heard, and (read from Redis at scrape time) queue depth
and live workers per model.

With several gateway processes (``modelport gateway --workers N``) counters live in
``PROMETHEUS_MULTIPROC_DIR`` and every process's scrape reports the sum.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from modelport.broker.limits import BudgetAlert
from modelport.gateway.usage import Outcome
from modelport.protocol.spend import MICROS

log = logging.getLogger(__name__)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("modelport_requests", "Model requests by model, HTTP status and endpoint (chat, "
                                "completions, embeddings, responses)", ["model", "status", "endpoint"],
                                registry=self.registry)
        self.rejected = Counter("modelport_rejected_requests", "Requests refused before reaching a worker",
                                ["reason"], registry=self.registry)
        self.ttft = Histogram("modelport_time_to_first_token_seconds", "From request to first token",
                              ["model"], registry=self.registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.announcements = Counter("modelport_announcements_heard", "Announced directory changes this gateway "
                                     "acted on (its authorisation cache dropped)", registry=self.registry)
        self.budget_alerts = Counter("modelport_budget_alerts", "Budgets reaching 80 % or 100 % of their period's "
                                     "amount", ["scope", "budget", "level"], registry=self.registry)
        self.tokens_per_second = Histogram("modelport_tokens_per_second", "Completion tokens per second of generation",
                                           ["model"], registry=self.registry,
                                           buckets=(1, 5, 10, 20, 50, 100, 200, 500, 1000, 5000))

    def observe(self, outcome: Outcome) -> None:
        """Timing of a request that reached a worker (its count is taken by the access log)."""
        if outcome.ttft_s is None:
            return
        self.ttft.labels(outcome.model).observe(outcome.ttft_s - outcome.started_at)
        generating = outcome.ended_at - outcome.ttft_s
        if outcome.completion_tokens > 1 and generating > 0:
            self.tokens_per_second.labels(outcome.model).observe(outcome.completion_tokens / generating)

    def budget_alert(self, alert: BudgetAlert) -> None:
        """A budget reached 80 % or 100 %: a structured warning for the logs and a count for alerting."""
        log.warning("budget_alert %s", json.dumps({
            "event": "budget_alert", "subject": alert.subject.name, "label": alert.subject.label,
            "budget": alert.budget, "level": alert.level, "spent": alert.spent / MICROS,
            "limit": alert.limit / MICROS}))
        self.budget_alerts.labels(alert.subject.name.split(":")[0], alert.budget, str(alert.level)).inc()

    def exposition(self, queue_stats: Mapping[str, tuple[int, Mapping[str, int]]]) -> bytes:
        """The text exposition: this process's (or all processes') counters, plus per-model queue gauges."""
        scrape = CollectorRegistry()
        depth = Gauge("modelport_queue_depth", "Outstanding jobs per model: waiting in its fair "
                      "queue, queued for a worker or running (what its workers' autoscaler reads)", ["model"],
                      registry=scrape)
        live = Gauge("modelport_live_workers", "Workers with a fresh heartbeat per model", ["model"], registry=scrape)
        deployed = Gauge("modelport_deployment_live_workers", "Workers with a fresh heartbeat per deployment",
                         ["model", "deployment"], registry=scrape)
        for model, (outstanding, workers) in queue_stats.items():
            depth.labels(model).set(outstanding)
            live.labels(model).set(sum(workers.values()))
            for deployment, count in workers.items():
                deployed.labels(model, deployment).set(count)
        if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
            totals = CollectorRegistry()
            MultiProcessCollector(totals)  # type: ignore[no-untyped-call]
            return generate_latest(totals) + generate_latest(scrape)
        return generate_latest(self.registry) + generate_latest(scrape)
