"""Ordering and idempotency across the fleet: one writer per order, newest data per field.

Each event joins its order's pending set in the shared store. Whoever holds the order's lock
takes the whole set, merges it field by field (the newest ``occurred_at`` wins), drops fields an
already-applied newer event wrote, and sends one PUT for all of it. Events whose task finds the
lock taken wait for the holder (their task is retried shortly) and end when the holder has
applied or dead-lettered them. Applied event ids are remembered for the de-duplication window.

Field versions are only read and written under the order's lock, so no newer value is ever
overwritten by an older one, whatever order the events arrive in.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from schemas.event import OrderChange
from worker.coordination.gate import STREAK_KEY
from worker.coordination.store import Entry, Lock, Store, Taken

PREFIX = "order-sync"
DEAD_LETTERED = "dead_lettered"


def _key(kind: str, name: object) -> str:
    return f"{PREFIX}:{kind}:{name}"


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    occurred_at: str  # ISO 8601, compared as datetimes
    changes: dict[str, Any]
    envelope: dict[str, Any]

    @property
    def replays(self) -> int:
        return len(self.envelope.get("history") or [])

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.occurred_at)

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> PendingEvent:
        return cls(**json.loads(raw))


# One round of the lock holder: the order's pending events not yet finished, oldest first, and
# the versions (field -> "<occurred_at> <event_id>") of the fields already applied.
Round = tuple[list[PendingEvent], dict[str, str]]


@dataclass
class Merge:
    """What one PUT will carry for an order, and where each part came from."""

    events: list[PendingEvent]
    changes: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # field -> version sent
    stale: list[tuple[str, str]] = field(default_factory=list)  # (event_id, field) skipped

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]


class OrderCoordinator:
    """The shared store's view of orders; four round trips carry one event through it."""

    def __init__(self, store: Store, dedup_window: float, lock_ttl: float) -> None:
        self.store = store
        self.dedup_window = dedup_window
        self.lock_ttl = lock_ttl

    # De-duplication ---------------------------------------------------------------------
    def outcome(self, event_id: str, replays: int = 0) -> str | None:
        """How an event ended ("applied", "stale", "dead_lettered"), if it has."""
        return _outcome(self.store.get(_key("done", event_id)), replays)

    # Joining an order's pending set -------------------------------------------------------
    def announce(self, event: OrderChange, envelope: dict[str, Any]) -> str | None:
        """Add the event to its order's pending set unless it already ended; how it ended."""
        pending, entry = self._pending(event, envelope)
        outcome = _outcome(done := self.store.add_unless_done(entry), pending.replays)
        if done is not None and outcome is None:
            # A replay of an event that was dead-lettered: it is due again.
            self.store.add_unless_done(entry, even_if_done=True)
        return outcome

    def begin(
        self, event: OrderChange, envelope: dict[str, Any], owner: str
    ) -> tuple[str | None, Round | None]:
        """``announce``, and try to take the order's lock; with it, ``take`` at once.

        Returns how the event ended, if it did, and the holder's first round (None unless
        this call took the lock).
        """
        pending, entry = self._pending(event, envelope)
        lock = self._lock(event.order_id, owner)
        take = (_key("done", ""), _key("versions", event.order_id))
        done, taken = self.store.add_and_claim(entry, lock, *take)
        outcome = _outcome(done, pending.replays)
        if done is not None and outcome is None:
            done, taken = self.store.add_and_claim(entry, lock, *take, even_if_done=True)
        return outcome, None if taken is None else _round(taken)

    def _pending(self, event: OrderChange, envelope: dict[str, Any]) -> tuple[PendingEvent, Entry]:
        pending = PendingEvent(
            event.event_id, event.occurred_at.isoformat(), event.changes, envelope
        )
        entry = Entry(
            _key("done", event.event_id),
            _key("pending", event.order_id),
            event.event_id,
            pending.dumps(),
            self.dedup_window,
        )
        return pending, entry

    def put_back(self, order_id: int, events: list[PendingEvent]) -> None:
        if events:
            self.store.hash_put(
                _key("pending", order_id),
                {e.event_id: e.dumps() for e in events},
                ttl=self.dedup_window,
            )

    # The lock holder's round ---------------------------------------------------------------
    def _lock(self, order_id: int, owner: str) -> Lock:
        return Lock(_key("lock", order_id), owner, self.lock_ttl)

    def unlock(self, order_id: int, owner: str) -> None:
        self.store.release(_key("lock", order_id), owner)

    def claim(self, order_id: int, owner: str) -> Round | None:
        """Take the order's lock and its first round, without an event of our own (a probe);
        None if another writer holds it."""
        lock = self._lock(order_id, owner)
        if not self.store.claim(lock.key, lock.owner, lock.ttl):
            return None
        return self.take(order_id, owner)

    def take(self, order_id: int, owner: str) -> Round | None:
        """Renew our lock and take every pending event of the order not already finished,
        oldest first, with the versions of the fields already applied; None if the lock ran
        out and is no longer ours."""
        taken = self.store.take_all_if_locked(
            self._lock(order_id, owner),
            _key("pending", order_id),
            _key("done", ""),
            _key("versions", order_id),
        )
        return None if taken is None else _round(taken)

    def settle(
        self,
        order_id: int,
        owner: str,
        events: list[PendingEvent],
        outcome: str,
        versions: dict[str, str] | None = None,
        *,
        answered: bool = False,
    ) -> bool:
        """Record how ``events`` ended (and the field versions an applied PUT wrote); release
        the lock if nothing else is pending. ``answered``: the API answered the call, which
        ends the fleet's streak of failures. True when the holder's round is over."""
        dead = outcome == DEAD_LETTERED
        done = {
            _key("done", e.event_id): f"{outcome}:{e.replays}" if dead else outcome for e in events
        }
        return self.store.settle(
            done,
            self.dedup_window,
            _key("versions", order_id),
            versions or {},
            _key("pending", order_id),
            self._lock(order_id, owner),
            clear=STREAK_KEY if answered else None,
        )

    # Per-field last writer wins ----------------------------------------------------------
    @staticmethod
    def merge(events: list[PendingEvent], applied: dict[str, str]) -> Merge:
        """One PUT's worth of changes from ``events`` (oldest first); a field whose applied
        version (``applied``: field -> version) is newer than an event is stale for it."""
        merge = Merge(events)
        for event in events:  # oldest first: a newer event overwrites a field
            for name, value in event.changes.items():
                newer_applied = applied.get(name)
                if newer_applied and _order_of(newer_applied) > (event.when, event.event_id):
                    merge.stale.append((event.event_id, name))
                    continue
                merge.changes[name] = value
                merge.versions[name] = f"{event.occurred_at} {event.event_id}"
        return merge


def _order_of(version: str) -> tuple[dt.datetime, str]:
    """A field's version, ``"<occurred_at> <event_id>"``: newer means a later instant, or the
    same instant and a greater event id, as within one round. (Versions written before the
    event id was kept have none: the instant alone.)"""
    occurred_at, _, event_id = version.partition(" ")
    return dt.datetime.fromisoformat(occurred_at), event_id


def _round(taken: Taken) -> Round:
    events = [PendingEvent.loads(raw) for raw in taken.fields.values()]
    fresh = [e for e in events if _outcome(taken.done.get(e.event_id), e.replays) is None]
    return sorted(fresh, key=lambda e: (e.when, e.event_id)), taken.versions


def _outcome(done: str | None, replays: int) -> str | None:
    """The outcome a done key records, if it still counts for a copy replayed ``replays`` times.

    A dead-lettered event counts as unfinished for a replay newer than its last failure.
    """
    if done is None:
        return None
    outcome, _, failed_at_replay = done.partition(":")
    if outcome == DEAD_LETTERED and int(failed_at_replay or 0) < replays:
        return None
    return outcome
