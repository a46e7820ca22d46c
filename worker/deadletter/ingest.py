"""Moving entries from the dead-letter queue into the database.

Workers keep publishing entries to ``order-sync.dead-letters``; from there they are moved into
``DeadLetterDB``, each message acknowledged only after its row is committed (a crash in between
delivers it again, and the entry's unique id stores it once). Two movers run: a consumer step
inside every worker (``DeadLetterIngestStep``), and ``drain`` in every ``order-sync dlq``
command before it reads, so the commands work with no worker running.

A message that is not one of our entries is kept too, never dropped: a body the broker
dead-lettered itself (an ``x-death`` header: a quorum queue's delivery limit, say) becomes an
entry with reason ``delivery_limit``, anything else one with reason ``unreadable``; the body
is kept as the entry's event (JSON) or raw body, so it can be replayed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
from kombu import Connection, Consumer, Message

from worker.broker.topology import DEAD_LETTER_QUEUE
from worker.deadletter.entries import new_entry
from worker.deadletter.reasons import DELIVERY_LIMIT, UNREADABLE
from worker.deadletter.selection import format_time
from worker.deadletter.store.db import BATCH, DeadLetterDB
from worker.settings import BrokerSettings, DatabaseSettings

log = structlog.get_logger(__name__)

#: How long ``drain`` waits for one more message before it decides the queue is empty (another
#: reader may hold the rest).
IDLE_SECONDS = 1.0
#: The broker's own dead-lettering header (RabbitMQ).
X_DEATH = "x-death"


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _first_death(headers: dict[str, Any]) -> dict[str, Any] | None:
    deaths = headers.get(X_DEATH)
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return {str(_text(k)): _text(v) for k, v in deaths[0].items()}
    return None


def _stable_id(body: bytes, properties: dict[str, Any], death: dict[str, Any] | None) -> str:
    """The same message delivered again gets the same id, so it is stored once."""
    digest = hashlib.sha256(body)
    for part in (properties.get("message_id"), properties.get("timestamp"), death):
        digest.update(b"\0" + json.dumps(part, default=str, sort_keys=True).encode())
    return "msg-" + digest.hexdigest()[:32]


def entry_of(message: Message) -> dict[str, Any]:
    """The entry a dead-letter queue message holds, or one made for a message that is not ours."""
    body: bytes = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("id"), str) and "reason" in parsed:
        return parsed
    headers: dict[str, Any] = message.headers or {}
    properties: dict[str, Any] = message.properties or {}
    death = _first_death(headers)
    if death is not None and death.get("reason") == "delivery_limit":
        reason = DELIVERY_LIMIT
        error = f"the broker dead-lettered it from {death.get('queue')}: delivery limit reached"
    elif death is not None:
        reason = UNREADABLE
        error = f"the broker dead-lettered it from {death.get('queue')} ({death.get('reason')})"
    else:
        reason = UNREADABLE
        error = "a message in the dead-letter queue that is not a dead-letter entry"
    raw: str | None = None
    encoding: str | None = None
    if parsed is None:
        try:
            raw, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            raw, encoding = base64.b64encode(body).decode("ascii"), "base64"
    when = death.get("time") if death else None
    event = parsed if isinstance(parsed, dict) else None
    entry = new_entry(
        reason=reason,
        error=error,
        attempts=int(death.get("count") or 0) if death else 0,
        event=parsed,
        event_id=event.get("event_id") if event else None,
        order_id=event.get("order_id") if event else None,
        raw_body=raw,
        raw_body_encoding=encoding,
        content_type=message.content_type,
        correlation_id=properties.get("correlation_id"),
        x_death=death,
    )
    entry["id"] = _stable_id(body, properties, death)
    if isinstance(when, dt.datetime):
        entry["dead_lettered_at"] = format_time(
            when if when.tzinfo else when.replace(tzinfo=dt.UTC)
        )
    # x-death values may be datetimes: the entry is JSON.
    return json.loads(json.dumps(entry, default=str))  # type: ignore[no-any-return]


def waiting(connection: Connection) -> int:
    """Messages ready in the dead-letter queue (declaring it is harmless: it is durable)."""
    channel: Any = connection.channel()
    try:
        bound: Any = DEAD_LETTER_QUEUE(channel)
        return int(bound.queue_declare().message_count)
    finally:
        channel.close()


def drain(
    connection: Connection,
    db: DeadLetterDB,
    *,
    batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Move every message waiting now into the database, in batches, each acknowledged after
    its batch is committed; how many new entries were stored."""
    channel: Any = connection.channel()
    try:
        bound: Any = DEAD_LETTER_QUEUE(channel)
        ready = int(bound.queue_declare().message_count)
        if not ready:
            return 0
        arrived: queue.SimpleQueue[Message] = queue.SimpleQueue()
        consumer = Consumer(
            channel, [bound], on_message=arrived.put, prefetch_count=batch, no_ack=False
        )
        consumer.consume()
        seen = stored = 0
        while seen < ready:
            held: list[Message] = []
            while len(held) < batch and seen + len(held) < ready:
                if arrived.empty():
                    try:
                        connection.drain_events(timeout=IDLE_SECONDS)
                    except TimeoutError:
                        break
                    continue
                held.append(arrived.get_nowait())
            if not held:
                break
            stored += db.ingest_many(entry_of(m) for m in held)
            for message in held:
                message.ack()
            seen += len(held)
            if progress:
                progress(len(held))
        consumer.cancel()
        return stored
    finally:
        channel.close()


class Ingester:
    """Moves messages handed to it (from any thread) into the database on a thread of its own,
    in batches, and has each acknowledged after its batch is committed; also applies the
    retention period, hourly. A database that fails is retried with backoff; the messages wait
    unacknowledged meanwhile (at most the consumer's prefetch)."""

    EXPIRE_EVERY = 3600.0
    RETRY_MAX = 30.0

    def __init__(self, db_factory: Callable[[], DeadLetterDB], ack: Callable[[Message], None]):
        self.db_factory = db_factory
        self.ack = ack
        self.inbox: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.db: DeadLetterDB | None = None
        self.next_expiry = time.monotonic()

    def start(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=self._run, name="dead-letter-ingester", daemon=True
            )
            self.thread.start()

    def put(self, message: Message) -> None:
        self.inbox.put(message)

    def stop(self) -> None:
        if self.thread is not None:
            self.inbox.put(None)
            self.thread.join(timeout=10)
        if self.db is not None:
            self.db.close()

    def _run(self) -> None:
        while True:
            try:
                first = self.inbox.get(timeout=60)
            except queue.Empty:
                first = ...  # type: ignore[assignment]
            if first is None:
                return
            held = [first] if isinstance(first, Message) else []
            while len(held) < BATCH:
                try:
                    more = self.inbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self.inbox.put(None)  # stop after this batch
                    break
                held.append(more)
            self._store(held)

    def _store(self, held: list[Message]) -> None:
        wait = 1.0
        while True:
            try:
                if self.db is None:
                    self.db = self.db_factory()
                if held:
                    stored = self.db.ingest_many(entry_of(m) for m in held)
                    log.info("dead letters stored", received=len(held), new=stored)
                if time.monotonic() >= self.next_expiry:
                    self.next_expiry = time.monotonic() + self.EXPIRE_EVERY
                    expired = self.db.expire()
                    if expired:
                        log.info("dead letters past their retention deleted", count=expired)
                break
            except Exception as exc:
                log.error(
                    "dead letters not stored: database unavailable; retrying",
                    error=f"{type(exc).__name__}: {exc}",
                    waiting=len(held),
                    retry_in=wait,
                )
                time.sleep(wait)
                wait = min(wait * 2, self.RETRY_MAX)
        for message in held:
            self.ack(message)


def dead_entries(broker: BrokerSettings, database: DatabaseSettings) -> list[dict[str, Any]]:
    """Every dead entry, oldest first, after what waits in the queue was moved into the database
    (for the demo and the tests, which wait for dead letters to appear)."""
    from worker.broker.connection import connect

    with DeadLetterDB.open(settings=database) as db, connect(broker) as connection:
        drain(connection, db)
        return [stored.entry for stored in db.iter_entries()]
