"""Prometheus metrics of the worker, served on ``ORDER_SYNC_METRICS_PORT``.

prometheus_client's multiprocess mode is switched on before it is imported, so with the prefork
pool the children's counts are summed when the main process is scraped, and a restarted child
keeps its history. Queue depths are read from the broker at scrape time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

# Must run before prometheus_client is imported anywhere: it picks its storage at import.
if os.environ.get("ORDER_SYNC_METRICS_PORT") and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="order-sync-metrics-")

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

EVENTS_RECEIVED = Counter("order_sync_events_received", "Raw events taken from the events queue.")
EVENTS_APPLIED = Counter(
    "order_sync_events_applied", "Events applied to Sellercloud (each event of a merged PUT)."
)
EVENTS_SKIPPED = Counter(
    "order_sync_events_skipped",
    "Events not sent: already handled (duplicate) or older than what was applied (stale).",
    ["why"],
)
STALE_FIELDS = Counter(
    "order_sync_stale_fields", "Fields left out because a newer value was already applied."
)
RETRIES = Counter("order_sync_retries", "Events scheduled to be tried again.", ["reason"])
DEAD_LETTERS = Counter("order_sync_dead_letters", "Events dead-lettered.", ["reason"])
API_DURATION = Histogram(
    "order_sync_api_request_duration_seconds",
    "Sellercloud API calls by endpoint and HTTP status ('error': no answer).",
    ["endpoint", "status"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TOKEN_FETCHES = Counter("order_sync_token_fetches", "Token requests to Sellercloud.", ["outcome"])
RATE_LIMIT_WAIT = Counter(
    "order_sync_rate_limit_wait_seconds", "Seconds slept waiting for a rate-limit slot."
)
RATE_LIMIT_PAUSES = Counter(
    "order_sync_rate_limit_pauses", "Times the API answered 429 and the fleet paused."
)


def observe_api_call(endpoint: str, status: int | None, seconds: float) -> None:
    label = str(status) if status is not None else "error"
    API_DURATION.labels(endpoint=endpoint, status=label).observe(seconds)
    if endpoint == "token":
        TOKEN_FETCHES.labels(outcome="ok" if status == 200 else "failed").inc()


class QueueDepthCollector(Collector):
    """``order_sync_queue_messages{queue}``, asked of the broker at each scrape."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from worker.broker import connect, queue_depths
        from worker.settings import broker_settings

        family = GaugeMetricFamily(
            "order_sync_queue_messages", "Messages waiting in each queue.", labels=["queue"]
        )
        try:
            with connect(broker_settings()) as connection:
                for queue, count in queue_depths(connection).items():
                    family.add_metric([queue], float(count))
        except Exception:  # noqa: S110 (a scrape must not fail because the broker is down)
            pass
        yield family


def serve(port: int) -> None:
    """Serve every process's metrics, summed, on ``port`` (call once, in the main process)."""
    from worker.deadletter import REASONS

    # A labelled series exists only once touched; alerts on increase() need it from the start.
    for reason in REASONS:
        DEAD_LETTERS.labels(reason=reason)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueDepthCollector())
    start_http_server(port, registry=registry)
