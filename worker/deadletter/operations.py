"""Dead-letter operations: select, summarise, replay, export and purge entries.

Every operation reads the queue through ``queue.deliveries``: entries it does not act on
stay where they were, and an entry is removed only after what replaces it (the republished
event) was confirmed by the broker. A replay killed at any instant therefore leaves each entry
either still dead-lettered or republished; at worst an event is sent twice, never lost.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kombu import Connection
from marshmallow import ValidationError

from schemas.errors import describe_errors
from schemas.event import load_event
from worker.broker.connection import connect
from worker.deadletter.entries import HISTORY_HEADER, replay_step
from worker.deadletter.queue import Delivery, deliveries
from worker.publisher import EventPublisher
from worker.settings import BrokerSettings

# Called with how many more entries were read, to drive a progress bar.
OnRead = Callable[[int], None]


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Selection:
    """Which entries an operation applies to; an empty selection matches every entry."""

    reasons: frozenset[str] = frozenset()
    order_ids: frozenset[int] = frozenset()
    ids: frozenset[str] = frozenset()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error_contains: str | None = None

    @property
    def is_everything(self) -> bool:
        return self == Selection()

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.reasons and entry.get("reason") not in self.reasons:
            return False
        if self.order_ids and entry.get("order_id") not in self.order_ids:
            return False
        if self.ids and entry.get("id") not in self.ids:
            return False
        if (
            self.error_contains
            and self.error_contains.lower() not in str(entry.get("error", "")).lower()
        ):
            return False
        if self.since or self.until:
            try:
                when = parse_time(str(entry.get("dead_lettered_at")))
            except ValueError:
                return False
            if (self.since and when < self.since) or (self.until and when > self.until):
                return False
        return True


def _selected(
    stream: Iterable[Delivery], selection: Selection, progress: OnRead | None
) -> Iterator[Delivery]:
    for delivery in stream:
        if progress:
            progress(1)
        if delivery.entry is not None and selection.matches(delivery.entry):
            yield delivery


def select(
    connection: Connection,
    selection: Selection,
    *,
    limit: int | None = None,
    progress: OnRead | None = None,
) -> Iterator[dict[str, Any]]:
    """Matching entries, oldest first; nothing is consumed or reordered."""
    with deliveries(connection) as (_, stream):
        for count, delivery in enumerate(_selected(stream, selection, progress), start=1):
            assert delivery.entry is not None  # noqa: S101 (_selected guarantees it)
            yield delivery.entry
            if limit is not None and count >= limit:
                return


def depth(connection: Connection) -> int:
    with deliveries(connection) as (waiting, _):
        return waiting


# Summary ---------------------------------------------------------------------------------------

# Ids and counts, not short numbers: "HTTP 400" and "HTTP 503" are different failures.
_NUMBERS = re.compile(r"\d{4,}")


def error_group(error: str) -> str:
    """An error message with its ids blanked, so one failure mode is one group."""
    return _NUMBERS.sub("N", error)


@dataclass
class Group:
    count: int = 0
    oldest: str | None = None
    newest: str | None = None

    def add(self, entry: dict[str, Any]) -> None:
        self.count += 1
        when = entry.get("dead_lettered_at")
        if isinstance(when, str):
            self.oldest = when if self.oldest is None else min(self.oldest, when)
            self.newest = when if self.newest is None else max(self.newest, when)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "oldest": self.oldest, "newest": self.newest}


@dataclass
class Summary:
    total: int = 0
    by_reason: dict[str, Group] = field(default_factory=dict)
    by_error: dict[tuple[str, str], Group] = field(default_factory=dict)

    def add(self, entry: dict[str, Any]) -> None:
        reason = str(entry.get("reason", "unknown"))
        self.total += 1
        self.by_reason.setdefault(reason, Group()).add(entry)
        key = (reason, error_group(str(entry.get("error", ""))))
        self.by_error.setdefault(key, Group()).add(entry)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": {r: g.as_dict() for r, g in self.ranked(self.by_reason)},
            "by_error": [
                {"reason": reason, "error": error, **group.as_dict()}
                for (reason, error), group in self.ranked(self.by_error)
            ],
        }

    @staticmethod
    def ranked(groups: dict[Any, Group]) -> list[tuple[Any, Group]]:
        return sorted(groups.items(), key=lambda item: (-item[1].count, str(item[0])))


def summarize(entries: Iterable[dict[str, Any]]) -> Summary:
    summary = Summary()
    for entry in entries:
        summary.add(entry)
    return summary


# Replay ----------------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


@dataclass(frozen=True)
class ReplayMessage:
    body: str | bytes
    content_type: str
    history: list[dict[str, Any]]


def replay_message(entry: dict[str, Any], patch: Any = None) -> ReplayMessage:
    """The event to send again for an entry; raises ValueError if it cannot be replayed."""
    history = [*entry.get("history", []), replay_step(entry, patch)]
    event = entry.get("event")
    if event is None:
        if patch is not None:
            raise ValueError("the entry kept no JSON event (only its raw body) to patch")
        raw = entry.get("raw_body")
        if not isinstance(raw, str):
            raise ValueError("the entry kept neither an event nor a raw body")
        if entry.get("raw_body_encoding") == "base64":
            import base64

            return ReplayMessage(base64.b64decode(raw), "application/octet-stream", history)
        content_type = str(entry.get("content_type") or "application/json")
        return ReplayMessage(raw, content_type, history)
    if patch is not None:
        if not isinstance(event, dict):
            raise ValueError("the event is not a JSON object, so its changes cannot be patched")
        event = {**event, "changes": merge_patch(event.get("changes"), patch)}
        try:
            load_event(event)
        except ValidationError as exc:
            raise ValueError(f"patched event is invalid: {describe_errors(exc.messages)}") from exc
    return ReplayMessage(json.dumps(event, separators=(",", ":")), "application/json", history)


@dataclass
class Outcome:
    """What an operation did: ids acted on, and ids it could not act on with the reason."""

    done: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"done": len(self.done), "failed": self.failed, "ids": self.done}


class Pacer:
    """Spaces actions to at most ``rate`` per second (None: as fast as possible)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if self.next_at > now:
            time.sleep(self.next_at - now)
        self.next_at = max(now, self.next_at) + self.interval


def replay(
    settings: BrokerSettings,
    selection: Selection,
    *,
    patch: Any = None,
    rate: float | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    progress: OnRead | None = None,
) -> Outcome:
    """Republish the selected entries' events to the normal flow, then remove the entries."""
    outcome = Outcome()
    pacer = Pacer(rate)
    # Two connections: waiting for a publish confirm must not read the deliveries being held.
    with (
        EventPublisher(settings) as sender,
        connect(settings) as connection,
        deliveries(connection) as (_, stream),
    ):
        for delivery in _selected(stream, selection, progress):
            entry = delivery.entry
            assert entry is not None  # noqa: S101 (_selected guarantees it)
            entry_id = str(entry.get("id"))
            try:
                message = replay_message(entry, patch)
            except ValueError as exc:
                outcome.failed.append({"id": entry_id, "error": str(exc)})
                continue
            if not dry_run:
                pacer.wait()
                sender.publish_raw(
                    message.body,
                    str(entry.get("event_id") or "") or None,
                    content_type=message.content_type,
                    headers={HISTORY_HEADER: json.dumps(message.history, separators=(",", ":"))},
                )
                delivery.remove()
            outcome.done.append(entry_id)
            if limit is not None and len(outcome.done) >= limit:
                break
    return outcome


def purge(
    connection: Connection,
    selection: Selection,
    *,
    limit: int | None = None,
    progress: OnRead | None = None,
) -> Outcome:
    """Delete the selected entries for good."""
    outcome = Outcome()
    with deliveries(connection) as (_, stream):
        for delivery in _selected(stream, selection, progress):
            assert delivery.entry is not None  # noqa: S101 (_selected guarantees it)
            delivery.remove()
            outcome.done.append(str(delivery.entry.get("id")))
            if limit is not None and len(outcome.done) >= limit:
                break
    return outcome
