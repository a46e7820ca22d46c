"""Dead-letter operations on the database: select, summarise, replay, export and purge entries.

Replay republishes each entry's event and marks the entry replayed only after the broker
confirmed the event, in one transaction that holds the entry (``DeadLetterDB.claim_next``): two
replays never take the same entry, and a replay killed at any instant leaves each entry either
still dead or republished and marked; at worst an event is sent twice, never lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from marshmallow import ValidationError

from schemas.errors import describe_errors
from schemas.event import load_event
from worker.deadletter.entries import HISTORY_HEADER, replay_step
from worker.deadletter.groups import error_group
from worker.deadletter.selection import Selection, parse_time
from worker.deadletter.store.db import DeadLetterDB, replay_detail
from worker.deadletter.store.tables import DEAD
from worker.deadletter.summary import Summary
from worker.publisher import EventPublisher
from worker.settings import BrokerSettings

__all__ = [
    "Outcome",
    "Selection",
    "Summary",
    "error_group",
    "merge_patch",
    "parse_time",
    "purge",
    "replay",
    "replay_message",
    "select",
    "summarize",
]

# Called with how many more entries were done, to drive a progress bar.
OnRead = Callable[[int], None]


def select(
    db: DeadLetterDB,
    selection: Selection,
    *,
    state: str | None = DEAD,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Matching entries, oldest first."""
    for stored in db.iter_entries(selection, state, limit):
        yield stored.entry


def summarize(
    db: DeadLetterDB, selection: Selection, *, state: str | None = DEAD, limit: int | None = None
) -> Summary:
    return db.summary(selection, state, limit)


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


def _send(sender: EventPublisher, message: ReplayMessage, event_id: str | None, live: bool) -> None:
    """Publish a replayed event, as a bulk event unless ``live``; returns once confirmed. Bulk
    events wait in their own queue, so a replay of thousands never delays a live change."""
    headers = {HISTORY_HEADER: json.dumps(message.history, separators=(",", ":"))}
    sender.publish_raw(
        message.body,
        event_id,
        content_type=message.content_type,
        headers=headers,
        bulk=not live,
    )


def replay(
    settings: BrokerSettings,
    db: DeadLetterDB,
    selection: Selection,
    *,
    user: str,
    patch: Any = None,
    rate: float | None = None,
    dry_run: bool = False,
    limit: int | None = None,
    live: bool = False,
    progress: OnRead | None = None,
) -> Outcome:
    """Republish the selected dead entries' events to the normal flow (as bulk events unless
    ``live``), marking each entry replayed once the broker confirmed its event."""
    outcome = Outcome()
    if dry_run:
        for stored in db.iter_entries(selection, DEAD):
            try:
                replay_message(stored.entry, patch)
                outcome.done.append(stored.id)
            except ValueError as exc:
                outcome.failed.append({"id": stored.id, "error": str(exc)})
            if progress:
                progress(1)
            if limit is not None and len(outcome.done) >= limit:
                break
        return outcome
    pacer = Pacer(rate)
    detail = {**replay_detail(patch, selection), "live": live}
    audit_seq: list[int] = []
    cursor = None
    with EventPublisher(settings) as sender:
        while limit is None or len(outcome.done) < limit:
            pacer.wait()
            with db.claim_next(selection, cursor, user, detail, audit_seq) as claim:
                if claim is None:
                    break
                cursor = claim.cursor
                entry_id = claim.stored.id
                try:
                    message = replay_message(claim.entry, patch)
                except ValueError as exc:
                    outcome.failed.append({"id": entry_id, "error": str(exc)})
                else:
                    _send(sender, message, str(claim.entry.get("event_id") or "") or None, live)
                    claim.replayed(message.history[-1])
            if claim.done:
                outcome.done.append(entry_id)
            if progress:
                progress(1)
    return outcome


def purge(
    db: DeadLetterDB,
    selection: Selection,
    *,
    user: str,
    state: str | None = DEAD,
    limit: int | None = None,
    progress: OnRead | None = None,
) -> Outcome:
    """Delete the selected entries for good."""
    return Outcome(done=db.purge(selection, user, state, limit, progress))
