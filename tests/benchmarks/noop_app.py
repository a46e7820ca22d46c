"""A Celery app with one task that does nothing: the ceiling for any Celery pipeline here.

Same broker, pool, concurrency, prefetch and delivery guarantees (late acks, persistent
messages, publisher confirms) as the worker. The worker process writes the time of its first and
last completion to ``BENCH_RESULT`` once ``BENCH_EXPECT`` tasks have run.

    celery -A tests.benchmarks.noop_app worker -P threads -c 16
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from kombu import Queue

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


@signals.task_success.connect
def _count(**_: Any) -> None:
    with _lock:
        _times.append(time.time())
        if len(_times) == int(os.environ.get("BENCH_EXPECT", "0")):
            first, last = min(_times), max(_times)
            result = {"count": len(_times), "first": first, "last": last}
            Path(os.environ["BENCH_RESULT"]).write_text(json.dumps(result))
