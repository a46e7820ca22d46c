"""The simplest hand-written consumer, the yardstick for the pipeline's overhead.

One kombu consumer on the events queue, a thread pool doing the PUTs with one
``requests.Session`` per thread, each message acked after its PUT. No validation, retries,
ordering, rate limit or dead letters: what someone would write in an afternoon.

    python -m tests.benchmarks.handwritten CONCURRENCY

reads the broker and the API from the same environment variables as the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from kombu import Connection, Consumer, Message

from tests.benchmarks.plain_put import PlainPut
from worker.broker.topology import EVENTS_QUEUE


def main() -> None:
    concurrency = int(sys.argv[1])
    plain_put = PlainPut()
    finished: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def put(message: Message) -> None:
        plain_put(json.loads(message.body))
        finished.put(message)  # kombu channels are not thread-safe: the main thread acks

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with (
        ThreadPoolExecutor(concurrency) as pool,
        Connection(os.environ["CELERY_BROKER_URL"]) as connection,
    ):
        consumer = Consumer(
            connection.default_channel,
            queues=[EVENTS_QUEUE],
            on_message=lambda message: pool.submit(put, message),
            prefetch_count=concurrency * 4,  # as the worker: four per thread
        )
        with consumer:
            print("handwritten consumer ready.", flush=True)
            while not stop.is_set():
                with contextlib.suppress(socket.timeout):
                    connection.drain_events(timeout=0.005)
                while not finished.empty():
                    finished.get().ack()


if __name__ == "__main__":
    main()
