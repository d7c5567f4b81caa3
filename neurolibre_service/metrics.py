"""Prometheus metrics, on a registry of the app's own (several apps may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Histogram(
            "neurolibre_http_request_duration_seconds",
            "HTTP requests served, by method, handler and status code",
            ["method", "handler", "code"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "neurolibre_jobs_finished", "Jobs finished, by kind and final status",
            ["kind", "status"], registry=self.registry,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "neurolibre_job_duration_seconds", "Wall time of finished jobs, by kind", ["kind"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600), registry=self.registry,
        )  # fmt: skip
        self.jobs_running = Gauge(
            "neurolibre_jobs_running", "Jobs running now", registry=self.registry
        )
        self.log_subscribers = Gauge(
            "neurolibre_log_subscribers", "Clients following a live log", registry=self.registry
        )
