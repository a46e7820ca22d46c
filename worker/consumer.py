"""The worker's consumer of upstream events.

Upstream systems publish plain JSON, which Celery would discard as an unknown message on a task
queue. This consumer step reads the events queue and turns each message into an
``order_sync.apply_order_event`` task, keeping the body exactly as received. The raw message is
acked only after the broker confirmed the task, so a crash in between duplicates, never loses.
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message

from worker import metrics, pipeline, runtime
from worker.deadletter import replay_history
from worker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE, TASKS_QUEUE

log = structlog.get_logger(__name__)

# Enough to keep the forwarding loop busy without hoarding events another worker could take.
EVENT_PREFETCH = 64


class EventConsumerStep(bootsteps.ConsumerStep):
    """Started (and restarted after every reconnect) with the worker's consumer."""

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # Declared by the worker too, so a worker started first keeps events published later.
        DEAD_LETTER_QUEUE(channel).declare()
        return [
            Consumer(
                channel,
                queues=[EVENTS_QUEUE],
                on_message=self.forward,
                prefetch_count=EVENT_PREFETCH,
            )
        ]

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
            message.ack()
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
            message.requeue()
            return
        message.ack()

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
