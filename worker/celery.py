"""The Celery application: ``celery -A worker worker`` finds ``app`` here, by Celery's convention.

This is the one module that builds the app (and, with metrics on, prepares their storage), so
it is imported only by what runs a worker or beat. Each setting that is not Celery's default
says why it is set.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from typing import Any

from worker.observability.storage import use_multiprocess_storage
from worker.settings import metrics_requested

# Before anything imports prometheus_client, which picks its storage at import: with the
# prefork pool the children's counts must land in files the main process can sum.
if metrics_requested(os.environ):
    use_multiprocess_storage(os.environ)

import structlog
from celery import Celery, signals
from celery.apps import worker as celery_worker_program
from celery.apps.worker import Worker as CeleryWorker
from celery.utils.nodenames import default_nodename, host_format

from worker.apply import runtime
from worker.broker.connection import (
    TopologyMismatch,
    check_topology_when_reachable,
    redacted,
    transport_options,
    warn_if_embedded,
)
from worker.broker.delayed import DelaysInBroker
from worker.broker.topology import QUEUE_TYPE, TASKS_QUEUE
from worker.coordination.backlog import BacklogReport, backlog_report
from worker.coordination.gate import GateState
from worker.coordination.redis_store import RedisStore
from worker.intake.consumer import EventConsumerStep
from worker.observability import endpoint
from worker.observability.logs import configure_logging, wants_json
from worker.outbox.tasks import beat_schedule as outbox_beat_schedule
from worker.settings import ConfigError, broker_settings, log_settings, worker_settings

log = structlog.get_logger(__name__)

BROKER = broker_settings()


class StructuredWorker(CeleryWorker):
    """Celery's worker program, but in JSON mode every line it writes is one JSON object."""

    def __init__(self, app: Any = None, hostname: str | None = None, **kwargs: Any) -> None:
        # Celery names every worker celery@<host> unless told otherwise, and on RabbitMQ a second
        # worker of that name on the same host dies at once (its control queue is exclusive).
        # The process id makes each plain start's name its own; another -n/--hostname stays.
        if not hostname or hostname == host_format(default_nodename(None)):  # type: ignore[arg-type]
            hostname = f"order-sync-{os.getpid()}@{socket.gethostname()}"
        super().__init__(app=app, hostname=hostname, **kwargs)

    def emit_banner(self) -> None:
        if not wants_json(log_settings()):
            super().emit_banner()

    def install_platform_tweaks(self, worker: Any) -> None:
        super().install_platform_tweaks(worker)
        if wants_json(log_settings()):
            # Celery's SIGTERM handler prints a plain-text line; ours logs it instead.
            celery_worker_program.install_worker_term_handler(worker, verbose=False)  # type: ignore[attr-defined]


class OrderSyncCelery(DelaysInBroker, Celery):
    @property
    def Worker(self) -> Any:  # noqa: N802 (Celery's attribute name)
        return self.subclass_with_self(StructuredWorker)


app = OrderSyncCelery("order_sync", include=["worker.apply.tasks", "worker.outbox.tasks"])
app.conf.update(
    broker_url=BROKER.url,
    broker_transport_options=transport_options(BROKER),
    # Keep trying to reach the broker forever, also at start (None means no limit).
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    # JSON only: a pickled message could run code on the worker.
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    event_serializer="json",
    # Outcomes live in Sellercloud, the logs and the dead-letter queue; no result backend to run.
    task_ignore_result=True,
    # Ack after the task has applied or dead-lettered the event, never before.
    task_acks_late=True,
    # A pool child killed mid-task (OOM, SIGKILL) gets its message redelivered instead of acked.
    task_reject_on_worker_lost=True,
    # Tasks running when the broker connection drops are redelivered after the reconnect either
    # way, and a thread cannot be cancelled; trying only logs a traceback per task.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    task_default_queue=TASKS_QUEUE.name,
    task_queues=[TASKS_QUEUE],
    # ORDER_SYNC_QUEUE_TYPE: with quorum, any queue Celery declares by itself is one too, and a
    # countdown waits in the broker (native delayed delivery) instead of in a worker.
    task_default_queue_type=QUEUE_TYPE,
    task_create_missing_queue_type=QUEUE_TYPE,
    # The delay queues hold waiting retries: replicated, so a node's loss keeps them.
    broker_native_delayed_delivery_queue_type="quorum",
    # Quorum queues refuse a global prefetch limit: Celery then sets it per consumer.
    worker_detect_quorum_queues=True,
    # Sets the delay queues up on the live connection, not on every node of a failover URL.
    worker_consumer="worker.broker.delayed:OrderSyncConsumer",
    # A worker that fails over faster than the lost node drops its exclusive control queue gets
    # RESOURCE_LOCKED (a channel error): retry the start as after a lost connection, not exit.
    broker_channel_error_retry=True,
    task_default_delivery_mode="persistent",
    # Each PUT waits on the network, so threads beat processes; 16 keeps the API busy without
    # crowding the per-IP rate limit.
    worker_pool="threads",
    worker_concurrency=16,
    # Four messages per slot: enough to hide broker round trips, few enough to share fairly.
    worker_prefetch_multiplier=4,
    # After a reconnect Celery would shrink the prefetch and restore it from the ack path; with
    # the threads pool that runs basic.qos from a pool thread while the main thread reads the
    # same connection, and the consumer hangs for good.
    worker_enable_prefetch_count_reduction=False,
    # Logging is ours (structlog); Celery must neither replace handlers nor wrap stdout.
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    # The embedded broker polls files; remote control would add fanout files for every worker
    # that ever ran.
    worker_enable_remote_control=not BROKER.is_embedded,
    beat_schedule=outbox_beat_schedule(),
)
app.steps["consumer"].add(EventConsumerStep)
app.steps["consumer"].add("worker.deadletter.consumer:DeadLetterIngestStep")


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    # Connecting to this signal is what stops Celery from configuring logging itself.
    configure_logging(log_settings())


def _gate_state() -> GateState | None:
    # At each scrape, not now: the runtime (and its client) must be built after the pool size
    # is known, below.
    return runtime.current().gate.state()


def _backlog() -> BacklogReport:
    rt = runtime.current()
    return backlog_report(rt.coordinator, rt.fleet.rate_limit)


@functools.cache
def _dead_letter_db() -> Any:
    # Opened at the first scrape and kept for the process's life.
    from worker.deadletter.store.db import DeadLetterDB

    return DeadLetterDB.open()


def _dead_letter_counts() -> dict[str, int]:
    counts: dict[str, int] = _dead_letter_db().counts_by_reason()
    return counts


@signals.worker_init.connect
def _check_settings(sender: Any = None, **_: Any) -> None:
    """Stop at start, with one clear message, when the Sellercloud settings are wrong."""
    try:
        checked = worker_settings()
        settings, fleet, port = checked.api, checked.fleet, checked.metrics_port
    except ConfigError as exc:
        log.critical("worker cannot start", error=str(exc))
        sys.exit(2)
    if port is not None:
        endpoint.serve(port, BROKER, _gate_state, _backlog, _dead_letter_counts)
    if sender is not None:
        runtime.pool_size = int(getattr(sender, "concurrency", 10) or 10)
    warn_if_embedded(BROKER)
    if fleet.redis_url:
        store = RedisStore(fleet.redis_url)
        if store.keeps_data() is False:
            log.warning(
                "Redis keeps nothing on disk (appendonly no): events waiting for their turn "
                "would be lost if it restarted; run it with appendonly yes",
            )
        store.close()
    try:
        check_topology_when_reachable(BROKER)
    except TopologyMismatch as exc:
        log.critical("worker cannot start", error=str(exc))
        sys.exit(2)
    if (
        BROKER.url.startswith("redis")
        and settings.retry_backoff_max >= BROKER.redis_visibility_timeout
    ):
        log.warning(
            "ORDER_SYNC_RETRY_BACKOFF_MAX is not below ORDER_SYNC_REDIS_VISIBILITY_TIMEOUT: "
            "Redis would hand out waiting retries twice",
            retry_backoff_max=settings.retry_backoff_max,
            visibility_timeout=BROKER.redis_visibility_timeout,
        )
    log.info(
        "worker configured",
        broker=redacted(BROKER.url),
        sellercloud=settings.base_url,
        max_retries=settings.max_retries,
        shared_store="redis" if fleet.redis_url else f"sqlite {fleet.store_path}",
        rate_limit=str(fleet.rate_limit) if fleet.rate_limit else "off",
        metrics_port=port,
        queue_type=QUEUE_TYPE,
    )


@signals.worker_shutting_down.connect
def _log_shutdown(sig: str = "", how: str = "", **_: Any) -> None:
    log.info("worker shutting down", signal=sig, how=how)
