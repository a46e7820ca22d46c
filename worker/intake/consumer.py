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

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message

from worker.apply import runtime
from worker.apply.tasks import APPLY_ORDER_EVENT, dead_letter, reprs
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENTS_QUEUE
from worker.coordination.gate import GateState
from worker.coordination.store import StoreUnavailable
from worker.deadletter.entries import EventContext, replay_history
from worker.intake import envelope as intake
from worker.intake.celery_hooks import PoolHandOff, task_message
from worker.intake.gatekeeper import Gatekeeper
from worker.observability import health, metrics

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
        self.pool = PoolHandOff()
        self.reading = True
        self.gatekeeper = Gatekeeper(
            self.set_reading,
            lambda entry: dead_letter(self.app, entry),
            heartbeat=lambda: self.pool.call_soon(health.WORKER.beat),
        )

    @property
    def prefetch(self) -> int:
        return max(READ_AHEAD, self.pool.prefetch)

    def start(self, c: Any) -> None:
        self.app = c.app
        self.pool = PoolHandOff.of(c)
        super().start(c)
        # After a reconnect every consumer reads again; the gatekeeper stops them if need be.
        self.reading = True
        health.WORKER.connection(True)
        self.gatekeeper.start()

    def stop(self, c: Any) -> None:
        # The connection is lost or the worker stops; Celery reconnects and starts us again.
        health.WORKER.connection(False)
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        health.WORKER.connection(False)
        self.gatekeeper.stop()
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

    def set_reading(self, gate: GateState | None) -> None:
        """Read the events and task queues while the fleet's gate is open, else stop;
        thread-safe."""
        health.WORKER.paused = gate.kind if gate else None
        reading = gate is None
        if reading != self.reading:
            self.reading = reading
            self.pool.call_soon(self._read_queues, reading)

    def _read_queues(self, reading: bool) -> None:
        # On the event loop: the connection is not shared across threads.
        consumers = [*(self.consumers or []), self.pool.task_consumer]
        for consumer in filter(None, consumers):
            if reading:
                consumer.consume()
            else:
                consumer.cancel()
        if reading:
            log.info("the fleet resumed: reading the queues again")
        else:
            log.warning("the fleet is paused: not reading the queues until it resumes")

    def submit(self, message: Message) -> None:
        self.announcers.submit(self.forward_or_give_back, message)

    def forward_or_give_back(self, message: Message) -> None:
        # An error here would otherwise vanish into the thread pool and leave the message
        # unacked, holding a prefetch slot until the connection closes.
        try:
            self.forward(message)
        except Exception:
            log.exception("event could not be handed to the pool; returned to the events queue")
            self.pool.call_soon_ack(message.requeue)

    def forward(self, message: Message) -> None:
        props: dict[str, Any] = message.properties or {}
        envelope = intake.envelope(
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
            self.pool.call_soon_ack(message.ack)
            return
        self.pool.call_soon(self.hand_over, self.as_request(message, envelope, validated))

    @staticmethod
    def announce(envelope: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """Validate the event and put it in its order's pending set now, ahead of its task.

        Returns how the event already ended, if it did, and the validated event for its task,
        so the schema runs once per event. An invalid event, or a store that did not answer,
        gives (None, None): the task works it out from the envelope and decides.
        """
        try:
            event = intake.prepare(envelope, EventContext())
            finished = runtime.current().coordinator.announce(event, envelope)
        except intake.EventRejected:  # the task dead-letters it, saying why
            return None, None
        except StoreUnavailable as exc:
            log.warning("event not announced: shared store unavailable", error=str(exc))
            return None, None
        except Exception:
            log.exception("event not announced to its order; its task handles it alone")
            return None, None
        if finished is not None:
            metrics.EVENTS_SKIPPED.labels(why=metrics.SKIPPED_DUPLICATE).inc()
            log.info("event already handled", outcome=finished)
        return finished, intake.as_validated(event)

    def as_request(
        self, message: Message, envelope: dict[str, Any], event: dict[str, Any] | None
    ) -> Message:
        """The event as a message of ``order_sync.apply_order_event``, delivered as the event's
        own message: acking or rejecting the request acks or rejects the event."""
        return task_message(
            self.app,
            APPLY_ORDER_EVENT,
            args=(envelope,),
            kwargs={"event": event} if event else {},
            delivered_as=message,
            **reprs(envelope, event),
        )

    def hand_over(self, request: Message) -> None:
        try:
            self.pool.handle_task(request)
        except Exception:
            log.exception("event could not be handed to the pool; returned to the events queue")
            request.reject_log_error(log, (Exception,), requeue=True)
