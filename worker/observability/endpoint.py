"""The worker's HTTP endpoint on ``ORDER_SYNC_METRICS_PORT``: ``/metrics``, ``/livez``,
``/readyz``.

Serves the counts of every process of the worker, summed (see ``storage``), the depth of each of
our queues, asked of the broker at scrape time, whether the fleet is paused, read from its
store, and the worker's own liveness and readiness (``health``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.broker.connection import connect, queue_depths
from worker.coordination.backlog import BacklogReport
from worker.coordination.gate import KINDS, GateState
from worker.deadletter.reasons import REASONS
from worker.observability import health
from worker.observability.metrics import (
    BACKLOG_DRAIN_SECONDS,
    BACKLOG_EVENTS,
    BACKLOG_ORDERS,
    DEAD_LETTERS,
    DEAD_LETTERS_WAITING,
    FLEET_PAUSED,
    FLEET_PAUSED_SECONDS,
    QUEUE_MESSAGES,
)
from worker.observability.storage import MULTIPROC_ENV
from worker.settings import BrokerSettings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class QueueDepthCollector(Collector):
    """``order_sync_queue_messages{queue}``, asked of the broker at each scrape."""

    def __init__(self, broker: BrokerSettings) -> None:
        self.broker = broker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            QUEUE_MESSAGES, "Messages waiting in each queue.", labels=["queue"]
        )
        try:
            with connect(self.broker) as connection:
                for queue, count in queue_depths(connection).items():
                    family.add_metric([queue], float(count))
        except Exception:  # noqa: S110 (a scrape must not fail because the broker is down)
            pass
        yield family


class FleetGateCollector(Collector):
    """Whether the fleet is paused, and for how long, read from its store at each scrape."""

    def __init__(self, gate_state: Callable[[], GateState | None]) -> None:
        self.gate_state = gate_state  # the worker's own FleetGate.state: no new connection

    def collect(self) -> Iterator[GaugeMetricFamily]:
        paused = GaugeMetricFamily(
            FLEET_PAUSED, "1 for what paused the fleet's calls to Sellercloud.", labels=["kind"]
        )
        seconds = GaugeMetricFamily(
            FLEET_PAUSED_SECONDS, "Seconds the fleet has been paused (0 while calls flow)."
        )
        try:
            state = self.gate_state()
        except Exception:  # a scrape must not fail because the store is down: no sample then
            return
        for kind in KINDS:
            paused.add_metric([kind], 1.0 if state and state.kind == kind else 0.0)
        seconds.add_metric([], max(0.0, time.time() - state.since) if state else 0.0)
        yield paused
        yield seconds


class BacklogCollector(Collector):
    """What waits for the API budget (orders per lane, events, time to drain), read from the
    fleet's store at each scrape."""

    def __init__(self, backlog: Callable[[], BacklogReport]) -> None:
        self.backlog = backlog

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            report = self.backlog()
        except Exception:  # a scrape must not fail because the store is down: no sample then
            return
        orders = GaugeMetricFamily(
            BACKLOG_ORDERS, "Orders waiting for their turn for the API budget.", labels=["lane"]
        )
        for lane, count in report.orders.items():
            orders.add_metric([lane], float(count))
        yield orders
        yield GaugeMetricFamily(
            BACKLOG_EVENTS, "Events the waiting orders hold.", value=float(report.events)
        )
        if report.drain_seconds is not None:
            yield GaugeMetricFamily(
                BACKLOG_DRAIN_SECONDS,
                "Estimated seconds until every waiting order has had its turn.",
                value=report.drain_seconds,
            )


class DeadLetterCollector(Collector):
    """Dead-letter entries waiting for an operator, per reason, read from the project's
    database at each scrape (the queue itself is emptied into it as entries arrive)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts = self.counts()
        except Exception:  # a scrape must not fail because the database is down: no sample
            return
        family = GaugeMetricFamily(
            DEAD_LETTERS_WAITING,
            "Dead-letter entries waiting for an operator (not replayed or archived).",
            labels=["reason"],
        )
        for reason in REASONS:
            family.add_metric([reason], float(counts.get(reason, 0)))
        yield family


def serve(
    port: int,
    broker: BrokerSettings,
    gate_state: Callable[[], GateState | None],
    backlog: Callable[[], BacklogReport],
    dead_letters: Callable[[], dict[str, int]],
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Serve every process's metrics, summed, on ``port`` (call once, in the main process)."""
    # A labelled series exists only once touched; alerts on increase() need it from the start.
    for reason in REASONS:
        DEAD_LETTERS.labels(reason=reason)
    registry = REGISTRY
    if environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(QueueDepthCollector(broker))
    registry.register(FleetGateCollector(gate_state))
    registry.register(BacklogCollector(backlog))
    registry.register(DeadLetterCollector(dead_letters))
    server = make_server("", port, app(registry, health.WORKER), _Server, _QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-endpoint", daemon=True).start()


def app(registry: CollectorRegistry, worker: health.WorkerHealth) -> WSGIApplication:
    metrics_app: WSGIApplication = make_wsgi_app(registry)
    checks = {"/livez": worker.live, "/readyz": worker.ready}

    def route(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        check = checks.get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics_app(environ, start_response)
        ok, why = check()
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "text/plain; charset=utf-8")],
        )
        return [f"{'ok' if ok else 'not ok'}: {why}\n".encode()]

    return route


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds are not news."""
