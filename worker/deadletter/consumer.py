"""The worker's dead-letter ingester: a consumer step reading ``order-sync.dead-letters`` into
the database (``ingest.Ingester``), started again by Celery after every reconnect."""

from __future__ import annotations

from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Message

from worker.broker.topology import DEAD_LETTER_QUEUE
from worker.deadletter.ingest import Ingester
from worker.deadletter.store.db import DeadLetterDB

log = structlog.get_logger(__name__)

#: Messages the ingester holds unacknowledged at most: one database batch's worth is plenty for
#: a queue that sees failures only.
PREFETCH = 200


class DeadLetterIngestStep(bootsteps.ConsumerStep):
    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.call_soon_ack: Any = None
        self.ingester = Ingester(DeadLetterDB.open, self._ack)

    def start(self, c: Any) -> None:
        # Acks must run on the consumer's event loop; the ingester's thread asks for them.
        self.call_soon_ack = c.call_soon_ack
        super().start(c)
        self.ingester.start()

    def shutdown(self, c: Any) -> None:
        super().shutdown(c)
        # Messages not stored yet go back to the queue unacknowledged with the connection.
        self.ingester.stop()

    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [
            Consumer(
                channel,
                queues=[DEAD_LETTER_QUEUE],
                on_message=self.ingester.put,
                prefetch_count=PREFETCH,
            )
        ]

    def _ack(self, message: Message) -> None:
        def ack() -> None:
            try:
                message.ack()
            except Exception as exc:
                # Its channel closed (a reconnect): the message is delivered again, and stored
                # once.
                log.info("dead letter not acknowledged; it comes again", error=str(exc))

        self.call_soon_ack(ack)
