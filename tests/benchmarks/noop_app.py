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

from celery import Celery, signals
from kombu import Queue

from tests.benchmarks.plain_put import PlainPut

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


_plain_put = PlainPut()


@app.task(name="bench.put")
def put(payload: dict[str, Any]) -> None:
    """The hand-written consumer's PUT, as a Celery task."""
    _plain_put(payload)


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
