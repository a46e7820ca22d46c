"""The worker's consumer of upstream events.

Upstream systems publish plain JSON, which Celery would discard as an unknown message on a task
queue. This consumer step reads the events queue and hands each message to the worker as an
``order_sync.apply_order_event`` request whose delivery is the event's own message: the body is
kept exactly as received, the pool runs it like any task, and Celery acks the event's message
(late, as for every task of ours) once it is applied, dead-lettered or queued for a retry. A
crash before that leaves the event in its queue.

The reader runs ahead of the pool: each event is validated and announced to its order as soon as
it arrives, so the task that next writes the order finds every event the worker holds for it and
sends them as one PUT. Announcing waits on the store, so a few threads do it, off the consumer's
event loop; requests are handed to the pool back on the loop, as Celery hands its own.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message
from kombu.serialization import dumps
from kombu.utils.uuid import uuid

from worker import metrics, pipeline, runtime
from worker.deadletter import replay_history
from worker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE

log = structlog.get_logger(__name__)

# Events a worker holds unacked, at least: under a backlog, how far its reader runs ahead of its
# pool, and so how many events of one order can share a PUT. A pool given more of its own queue
# (concurrency x worker_prefetch_multiplier) is given as many events.
READ_AHEAD = 256
# Each announce spends most of its time waiting for the store.
ANNOUNCERS = 4


class EventConsumerStep(bootsteps.ConsumerStep):
    """Started (and restarted after every reconnect) with the worker's consumer."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.announcers = ThreadPoolExecutor(ANNOUNCERS, thread_name_prefix="event-announcer")
        self.app: Any = None
        self.prefetch = READ_AHEAD
        self.call_soon: Callable[..., Any] = lambda function, *args: function(*args)
        self.call_soon_ack: Callable[..., Any] = lambda ack: ack()
        self.handle_task: Callable[[Message], Any] = lambda request: None

    def start(self, c: Any) -> None:
        self.app = c.app
        self.prefetch = max(READ_AHEAD, int(c.initial_prefetch_count or 0))
        # Thread-safe: runs the call on the consumer's event loop.
        self.call_soon = c.call_soon
        self.call_soon_ack = c.call_soon_ack
        # What the worker does with a message from its own task queue: reserve the request and
        # run it in the pool, acking or rejecting the message as the task's settings say. Not
        # thread-safe: called on the event loop only.
        self.handle_task = c.create_task_handler()
        super().start(c)

    def shutdown(self, c: Any) -> None:
        super().shutdown(c)
        # Events not yet handed to the pool go back to the queue unacked.
        self.announcers.shutdown(wait=False, cancel_futures=True)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # Declared by the worker too, so a worker started first keeps events published later.
        DEAD_LETTER_QUEUE(channel).declare()
        return [
            Consumer(
                channel,
                queues=[EVENTS_QUEUE],
                on_message=self.submit,
                prefetch_count=self.prefetch,
            )
        ]

    def submit(self, message: Message) -> None:
        self.announcers.submit(self.forward_or_give_back, message)

    def forward_or_give_back(self, message: Message) -> None:
        # An error here would otherwise vanish into the thread pool and leave the message
        # unacked, holding a prefetch slot until the connection closes.
        try:
            self.forward(message)
        except Exception:
            log.exception("event could not be handed to the pool; returned to the events queue")
            self.call_soon_ack(message.requeue)

    def forward(self, message: Message) -> None:
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
        self.call_soon(self.hand_over, self.as_request(message, envelope, validated))

    @staticmethod
    def announce(envelope: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """Validate the event and put it in its order's pending set now, ahead of its task.

        Returns how the event already ended, if it did, and the validated event for its task,
        so the schema runs once per event. An invalid event, or a store that did not answer,
        gives (None, None): the task works it out from the envelope.
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

    def as_request(
        self, message: Message, envelope: dict[str, Any], event: dict[str, Any] | None
    ) -> Message:
        """The event as a message of ``order_sync.apply_order_event``, delivered as the event's
        own message: acking or rejecting the request acks or rejects the event."""
        from worker.tasks import APPLY_ORDER_EVENT, reprs

        task = self.app.amqp.as_task_v2(
            uuid(),
            APPLY_ORDER_EVENT,
            args=(envelope,),
            kwargs={"event": event} if event else {},
            **reprs(envelope, event),
        )
        content_type, encoding, body = dumps(task.body, serializer="json")
        return Message(
            body=body,
            delivery_tag=message.delivery_tag,
            content_type=content_type,
            content_encoding=encoding,
            delivery_info=message.delivery_info,
            properties=task.properties,
            headers=task.headers,
            accept=["application/json"],
            channel=message.channel,
        )

    def hand_over(self, request: Message) -> None:
        try:
            self.handle_task(request)
        except Exception:
            log.exception("event could not be handed to the pool; returned to the events queue")
            request.reject_log_error(log, (Exception,), requeue=True)
