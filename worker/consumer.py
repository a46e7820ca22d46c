"""The worker's consumer of upstream events.

Upstream systems publish plain JSON, which Celery would discard as an unknown message on a task
queue. This consumer step reads the events queue and turns each message into an
``order_sync.apply_order_event`` task, keeping the body exactly as received. The raw message is
acked only after the broker confirmed the task, so a crash in between duplicates, never loses.

Forwarding waits on the shared store and on the broker's confirm, so a few threads do it side by
side, off the consumer's event loop; they ack through Celery's own ``call_soon_ack``, as the
threads pool does for task messages.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message

from worker import metrics, pipeline, runtime
from worker.deadletter import replay_history
from worker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE, TASKS_QUEUE

log = structlog.get_logger(__name__)

# Enough to keep the forwarders busy without hoarding events another worker could take.
EVENT_PREFETCH = 64
# Each forward spends most of its time waiting for the store and the broker's confirm.
FORWARDERS = 4


class EventConsumerStep(bootsteps.ConsumerStep):
    """Started (and restarted after every reconnect) with the worker's consumer."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.forwarders = ThreadPoolExecutor(FORWARDERS, thread_name_prefix="event-forwarder")
        self.call_soon_ack: Callable[..., Any] = lambda ack: ack()

    def start(self, c: Any) -> None:
        self.call_soon_ack = c.call_soon_ack
        super().start(c)

    def shutdown(self, c: Any) -> None:
        super().shutdown(c)
        # Events still being forwarded go back to the queue unacked: their task is queued
        # again by whichever worker reads them next (the task is idempotent).
        self.forwarders.shutdown(wait=False, cancel_futures=True)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # Declared by the worker too, so a worker started first keeps events published later.
        DEAD_LETTER_QUEUE(channel).declare()
        return [
            Consumer(
                channel,
                queues=[EVENTS_QUEUE],
                on_message=self.submit,
                prefetch_count=EVENT_PREFETCH,
            )
        ]

    def submit(self, message: Message) -> None:
        self.forwarders.submit(self.forward_or_give_back, message)

    def forward_or_give_back(self, message: Message) -> None:
        # An error here would otherwise vanish into the thread pool and leave the message
        # unacked, holding a prefetch slot until the connection closes.
        try:
            self.forward(message)
        except Exception:
            log.exception("event could not be forwarded; returned to the events queue")
            self.call_soon_ack(message.requeue)

    def forward(self, message: Message) -> None:
        from worker.tasks import apply_order_event, reprs

        props: dict[str, Any] = message.properties or {}
        envelope = pipeline.envelope(
            message.body or b"",
            content_type=message.content_type,
            message_id=props.get("message_id"),
            correlation_id=props.get("correlation_id"),
            history=replay_history(message.headers),
        )
        metrics.EVENTS_RECEIVED.inc()
        try:
            finished, validated = self.announce(envelope)
        finally:
            structlog.contextvars.clear_contextvars()
        if finished is not None:  # a redelivery or a publisher's retry: nothing left to do
            self.call_soon_ack(message.ack)
            return
        try:
            apply_order_event.apply_async(
                args=(envelope,),
                kwargs={"event": validated} if validated else {},
                queue=TASKS_QUEUE.name,
                **reprs(envelope, validated),
            )
        except Exception as exc:
            log.error("could not queue event; returned to the events queue", error=str(exc))
            self.call_soon_ack(message.requeue)
            return
        self.call_soon_ack(message.ack)

    @staticmethod
    def announce(envelope: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """Validate the event and put it in its order's pending set now, ahead of its task.

        Under a backlog this reader runs far ahead of the pool, so the task that next writes an
        order finds every event waiting for it and sends them as one PUT. Returns how the event
        already ended, if it did, and the validated event for its task, so the schema runs once
        per event. An invalid event, or a store that did not answer, gives (None, None): the
        task works it out from the envelope.
        """
        try:
            event = pipeline.prepare(envelope, pipeline.Progress())
            finished = runtime.current().coordinator.announce(event, envelope)
        except Exception as exc:  # the task handles the event either way
            log.debug("event not announced to its order", error=str(exc))
            return None, None
        if finished is not None:
            metrics.EVENTS_SKIPPED.labels(why="duplicate").inc()
            log.info("event already handled", outcome=finished)
        return finished, pipeline.as_validated(event)
