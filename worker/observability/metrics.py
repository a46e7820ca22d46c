"""Prometheus metrics of the worker, each declared once here; ``endpoint`` serves them.

Other files (alert rules, the dashboard, the README's table, the deploy checks) name these
metrics; ``deploy/check_refs.py`` imports ``ALL`` from here instead of keeping a copy.

With the prefork pool, ``worker.celery`` switches prometheus_client to multiprocess mode before
anything imports this module, so the children's counts are summed at each scrape.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.metrics import MetricWrapperBase

from worker.sellercloud.client import TOKEN_ENDPOINT

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
#: The bounds of ``EVENTS_PER_PUT``'s buckets; ``order-sync status`` counts PUTs in the same.
EVENTS_PER_PUT_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)
EVENTS_PER_PUT = Histogram(
    "order_sync_events_per_put",
    "Events one applied PUT carried (an order's pending events, merged).",
    buckets=EVENTS_PER_PUT_BUCKETS,
)


# Label values, each a closed set the alert rules and the dashboard may name.
SKIPPED_DUPLICATE, SKIPPED_STALE = "duplicate", "stale"  # EVENTS_SKIPPED{why}
SKIPPED_WHY = (SKIPPED_DUPLICATE, SKIPPED_STALE)
NO_ANSWER = "error"  # API_DURATION{status} when the API did not answer; else the HTTP status
TOKEN_OK, TOKEN_FAILED = "ok", "failed"  # TOKEN_FETCHES{outcome}
TOKEN_OUTCOMES = (TOKEN_OK, TOKEN_FAILED)
# API_DURATION{endpoint} is one of sellercloud.client.ENDPOINTS; RETRIES{reason} one of
# apply.retry.RETRY_REASONS; DEAD_LETTERS{reason} one of deadletter.reasons.REASONS.


def observe_api_call(endpoint: str, status: int | None, seconds: float) -> None:
    label = str(status) if status is not None else NO_ANSWER
    API_DURATION.labels(endpoint=endpoint, status=label).observe(seconds)
    if endpoint == TOKEN_ENDPOINT:
        TOKEN_FETCHES.labels(outcome=TOKEN_OK if status == 200 else TOKEN_FAILED).inc()


#: Every metric of ours, for whoever must know them all (the endpoint, the deploy checks).
ALL: tuple[MetricWrapperBase, ...] = (
    EVENTS_RECEIVED,
    EVENTS_APPLIED,
    EVENTS_SKIPPED,
    STALE_FIELDS,
    RETRIES,
    DEAD_LETTERS,
    API_DURATION,
    TOKEN_FETCHES,
    RATE_LIMIT_WAIT,
    RATE_LIMIT_PAUSES,
    EVENTS_PER_PUT,
)

# Read at each scrape rather than counted (see ``endpoint``): from the broker, and from the
# fleet's store (whether the fleet is paused, coordination.gate).
QUEUE_MESSAGES = "order_sync_queue_messages"
FLEET_PAUSED = "order_sync_fleet_paused"  # {kind}: 1 for what paused the fleet, else 0
FLEET_PAUSED_SECONDS = "order_sync_fleet_paused_seconds"  # 0 while calls flow
DEAD_LETTERS_WAITING = "order_sync_dead_letters_waiting"  # {reason}: dead entries in the database
BACKLOG_ORDERS = "order_sync_backlog_orders"  # {lane}: orders waiting for a turn
BACKLOG_EVENTS = "order_sync_backlog_events"  # events they hold, all lanes
BACKLOG_DRAIN_SECONDS = "order_sync_backlog_drain_seconds"  # estimated, at the rate limit
