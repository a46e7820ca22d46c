"""A Celery app with two tasks that bound any Celery pipeline here.

``bench.noop`` does nothing: the ceiling. ``bench.put`` does only the hand-written consumer's
work (the PUT, with a ``requests.Session`` per thread): what one Celery task per event costs
before any guarantee is added. Same broker, pool, concurrency, prefetch and delivery guarantees
(late acks, persistent messages, publisher confirms) as the worker. The worker process writes
the time of its first and last completion to ``BENCH_RESULT`` once ``BENCH_EXPECT`` tasks have
run.

    celery -A tests.benchmarks.noop_app worker -P threads -c 16
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import requests
from celery import Celery, signals
from kombu import Queue

from tests.benchmarks.put_body import body_of

QUEUE = Queue("bench.noop", durable=True)

app = Celery("bench_noop", broker=os.environ.get("CELERY_BROKER_URL"))
app.conf.update(
    broker_transport_options={"confirm_publish": True},
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_default_delivery_mode="persistent",
    task_default_queue=QUEUE.name,
    task_queues=[QUEUE],
    worker_prefetch_multiplier=4,
    worker_enable_prefetch_count_reduction=False,
    worker_hijack_root_logger=False,
)

_lock = threading.Lock()
_times: list[float] = []


@app.task(name="bench.noop")
def noop(payload: dict[str, Any]) -> None:
    """Nothing: what is measured is Celery and the broker."""


_local = threading.local()
_token: list[str] = []


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        base = os.environ["SELLERCLOUD_BASE_URL"]
        with _lock:
            if not _token:
                credentials = {
                    "Username": os.environ["SELLERCLOUD_USERNAME"],
                    "Password": os.environ["SELLERCLOUD_PASSWORD"],
                }
                reply = requests.post(f"{base}/token", json=credentials, timeout=10)
                _token.append(reply.json()["access_token"])
        session = _local.session = requests.Session()
        session.headers["Authorization"] = f"Bearer {_token[0]}"
    return session


@app.task(name="bench.put")
def put(payload: dict[str, Any]) -> None:
    """The hand-written consumer's PUT, as a Celery task."""
    base = os.environ["SELLERCLOUD_BASE_URL"]
    response = _session().put(
        f"{base}/Orders/{payload['order_id']}", json=body_of(payload["changes"]), timeout=10
    )
    response.raise_for_status()


@signals.after_setup_logger.connect
def _quiet(**_: Any) -> None:
    # As in the worker (worker/logs.py): no "received" and "succeeded" lines per task.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@signals.task_success.connect
def _count(**_: Any) -> None:
    with _lock:
        _times.append(time.time())
        if len(_times) == int(os.environ.get("BENCH_EXPECT", "0")):
            first, last = min(_times), max(_times)
            result = {"count": len(_times), "first": first, "last": last}
            Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
