"""The worker's consumer of upstream events, and the start of its dispatcher.

Upstream systems publish plain JSON, which Celery would discard as an unknown message on a task
queue. This consumer step reads the two events queues (live and bulk), validates each event and
keeps it in the shared store with its order's other pending events; the message is acked only
once the store has it. The order then waits for its turn for the API budget
(``worker.apply.dispatch``), so a backlog of any length holds no message unacknowledged.

An event that is invalid, or that the store could not take, is handed to the worker's pool as
an ``order_sync.apply_order_event`` request whose delivery is the event's own message: the task
dead-letters it saying why, or retries it, and Celery acks the message (late, as for every task
of ours) only then. A crash before either leaves the event in its queue.

Validating and storing wait on the store, so a few threads do it, off the consumer's event
loop; acks and hand-overs go back to the loop, as Celery does its own.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message

from worker.apply import runtime
from worker.apply.dispatch import Dispatcher
from worker.apply.sync import absorb_event
from worker.apply.tasks import APPLY_ORDER_EVENT, dead_letter, reprs
from worker.broker.topology import DEAD_LETTER_QUEUE
from worker.coordination.gate import GateState
from worker.coordination.orders import LANES
from worker.coordination.store import StoreUnavailable
from worker.deadletter.entries import EventContext, replay_history
from worker.intake import envelope as intake
from worker.intake.celery_hooks import PoolHandOff, task_message
from worker.intake.gatekeeper import Gatekeeper
from worker.intake.queue_watch import QUEUES, QueueWatch
from worker.observability import health, metrics
from worker.settings import broker_settings

log = structlog.get_logger(__name__)

# Events a worker holds unacked while it stores them: enough to keep the store busy.
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
        self.queue_watch: QueueWatch | None = None
        # Lane -> events read and not yet stored or handed over (see QueueWatch).
        self.in_flight: Counter[str] = Counter()
        self._in_flight_lock = threading.Lock()
        self.dispatcher: Dispatcher | None = None

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
        if self.dispatcher is None:  # one for the worker's life, whatever the reconnects
            # The runtime is built on first use, after the worker's concurrency is known.
            self.queue_watch = QueueWatch(
                broker_settings(),
                lambda: runtime.current().coordinator.pending_events(),  # noqa: PLW0108
                self.in_flight.__getitem__,
            )
            hostname = str(getattr(c, "hostname", ""))

            def dead_letter_of_worker(entry: dict[str, Any]) -> None:
                dead_letter(self.app, {**entry, "worker": hostname})

            self.dispatcher = Dispatcher(
                runtime.pool_size, self.queue_watch.behind, dead_letter_of_worker
            )
            self.dispatcher.start()

    def stop(self, c: Any) -> None:
        # The connection is lost or the worker stops; Celery reconnects and starts us again.
        health.WORKER.connection(False)
        super().stop(c)

    def shutdown(self, c: Any) -> None:
        health.WORKER.connection(False)
        self.gatekeeper.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.queue_watch is not None:
            self.queue_watch.close()
        super().shutdown(c)
        # Events not yet handed to the pool go back to the queue unacked.
        self.announcers.shutdown(wait=False, cancel_futures=True)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # Declared by the worker too, so a worker started first keeps events published later.
        DEAD_LETTER_QUEUE(channel).declare()
        return [
            Consumer(
                channel,
                queues=[QUEUES[lane]],
                on_message=functools.partial(self.submit, lane),
                prefetch_count=self.prefetch,
            )
            for lane in LANES
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

    def submit(self, lane: str, message: Message) -> None:
        with self._in_flight_lock:
            self.in_flight[lane] += 1
        self.announcers.submit(self.forward_or_give_back, lane, message)

    def forward_or_give_back(self, lane: str, message: Message) -> None:
        # An error here would otherwise vanish into the thread pool and leave the message
        # unacked, holding a prefetch slot until the connection closes.
        stored = False
        try:
            stored = self.forward(lane, message)
        except Exception:
            log.exception("event could not be stored; returned to its queue")
            self.pool.call_soon_ack(message.requeue)
        finally:
            with self._in_flight_lock:
                self.in_flight[lane] -= 1
        if stored and self.dispatcher is not None:
            self.dispatcher.wake()

    def forward(self, lane: str, message: Message) -> bool:
        """Store the event and ack it (True), or hand it to the pool as a task (False)."""
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
            stored = self.store(envelope, lane)
        finally:
            structlog.contextvars.clear_contextvars()
        if stored:  # kept for its order's turn, or it already ended: the message is done
            self.pool.call_soon_ack(message.ack)
            return True
        self.pool.call_soon(self.hand_over, self.as_request(message, envelope, lane))
        return False

    @staticmethod
    def store(envelope: dict[str, Any], lane: str) -> bool:
        """Validate the event and keep it with its order for the order's turn (or find that it
        already ended). False when the task must decide: the event is invalid (it is
        dead-lettered, saying why) or the store did not answer (it is retried)."""
        try:
            outcome = absorb_event(runtime.current(), envelope, None, EventContext(), lane)
        except intake.EventRejected:
            return False
        except StoreUnavailable as exc:
            log.warning("event not stored: shared store unavailable", error=str(exc))
            return False
        log.debug("event stored", outcome=outcome, lane=lane)
        return True

    def as_request(self, message: Message, envelope: dict[str, Any], lane: str) -> Message:
        """The event as a message of ``order_sync.apply_order_event``, delivered as the event's
        own message: acking or rejecting the request acks or rejects the event."""
        return task_message(
            self.app,
            APPLY_ORDER_EVENT,
            args=(envelope,),
            kwargs={"lane": lane},
            delivered_as=message,
            **reprs(envelope, None),
        )

    def hand_over(self, request: Message) -> None:
        try:
            self.pool.handle_task(request)
        except Exception:
            log.exception("event could not be handed to the pool; returned to the events queue")
            request.reject_log_error(log, (Exception,), requeue=True)
