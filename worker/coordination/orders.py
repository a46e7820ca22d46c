"""Ordering, idempotency and turns across the fleet: one PUT per order per turn, newest data
per field.

Each event joins its order's pending set in the shared store, and the order waits in its lane's
due set (live or bulk) from when its first pending event arrived. The API budget is spent one
turn at a time: a turn takes the order that has waited longest (live first), locks it, and
sends everything pending for it, merged field by field (the newest ``occurred_at`` wins, and
fields an already-applied newer event wrote are dropped), as one PUT. Events stay in the store
until their turn settles them, so a worker that dies mid-turn loses nothing: the lock runs out
and the order is due again. Applied event ids are remembered for the de-duplication window.

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
from worker.coordination.store import Backlog, Entry, Keys, Lane, Store, Turn

PREFIX = "order-sync"
DEAD_LETTERED = "dead_lettered"
#: The two lanes an order waits in for its turn: live changes go first, bulk gets a share.
LIVE, BULK = "live", "bulk"
LANES = (LIVE, BULK)


def _key(kind: str, name: object) -> str:
    return f"{PREFIX}:{kind}:{name}"


DUE = {lane: _key("due", lane) for lane in LANES}
LANE_OF = {key: lane for lane, key in DUE.items()}
KEYS = Keys(
    due=tuple(DUE[lane] for lane in LANES),
    lock=_key("lock", ""),
    pending=_key("pending", ""),
    done=_key("done", ""),
    versions=_key("versions", ""),
    failures=f"{PREFIX}:failures",
    events=f"{PREFIX}:backlog-events",
)
#: How a new event's order joins the due sets: a live event takes its order out of bulk.
JOIN = {
    LIVE: Lane(DUE[LIVE], leave=DUE[BULK]),
    BULK: Lane(DUE[BULK], unless_in=DUE[LIVE]),
}


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


@dataclass(frozen=True)
class OrderTurn:
    """An order whose turn for the budget came: its pending events not yet finished (oldest
    first), those already finished (to clear), the versions of the fields already applied,
    and how many of its calls failed in a row."""

    order_id: int
    lane: str
    events: list[PendingEvent]
    finished: dict[str, str]  # event id -> how it ended
    versions: dict[str, str]
    failures: int
    taken: Turn


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
    """The shared store's view of orders: one round trip per event, two per turn."""

    def __init__(self, store: Store, dedup_window: float, lock_ttl: float) -> None:
        self.store = store
        self.dedup_window = dedup_window
        self.lock_ttl = lock_ttl

    # De-duplication ---------------------------------------------------------------------
    def outcome(self, event_id: str, replays: int = 0) -> str | None:
        """How an event ended ("applied", "stale", "dead_lettered"), if it has."""
        return _outcome(self.store.get(_key("done", event_id)), replays)

    # Joining an order's pending set -------------------------------------------------------
    def absorb(self, event: OrderChange, envelope: dict[str, Any], lane: str) -> str | None:
        """Keep the event with its order's pending ones, and the order waiting for its turn in
        ``lane``, unless the event already ended; returns how it ended."""
        pending = PendingEvent(
            event.event_id, event.occurred_at.isoformat(), event.changes, envelope
        )
        entry = Entry(
            _key("done", event.event_id),
            _key("pending", event.order_id),
            event.event_id,
            pending.dumps(),
        )
        member = str(event.order_id)
        done = self.store.absorb(entry, JOIN[lane], member, KEYS)
        outcome = _outcome(done, pending.replays)
        if done is not None and outcome is None:
            # A replay of an event that was dead-lettered: it is due again.
            self.store.absorb(entry, JOIN[lane], member, KEYS, even_if_done=True)
        return outcome

    # Turns ------------------------------------------------------------------------------------
    def due(self, holds: dict[str, float]) -> bool:
        """Whether an order has waited at least its lane's hold (lane -> seconds)."""
        return self.store.due([(DUE[lane], hold) for lane, hold in holds.items()])

    def next_turn(
        self, owner: str, holds: dict[str, float], only: int | None = None
    ) -> OrderTurn | None:
        """Lock the order that has waited longest in the first lane of ``holds`` (lane ->
        seconds it must have waited) that has one, and take its turn; ``only``: that order,
        due or not (a probe). None when no order is due."""
        queues = [(DUE[lane], hold) for lane, hold in holds.items()]
        only_member = None if only is None else str(only)
        turn = self.store.next_due(queues, KEYS, owner, self.lock_ttl, only_member)
        if turn is None:
            return None
        events = [PendingEvent.loads(raw) for raw in turn.fields.values()]
        finished = {}
        fresh = []
        for event in events:
            outcome = _outcome(turn.done.get(event.event_id), event.replays)
            if outcome is None:
                fresh.append(event)
            else:
                finished[event.event_id] = turn.done[event.event_id]
        return OrderTurn(
            order_id=int(turn.member),
            lane=LANE_OF[turn.due_key],
            events=sorted(fresh, key=lambda e: (e.when, e.event_id)),
            finished=finished,
            versions=turn.versions,
            failures=turn.failures,
            taken=turn,
        )

    def settle(
        self,
        turn: OrderTurn,
        owner: str,
        outcome: str | None,
        versions: dict[str, str] | None = None,
        *,
        failures: int = 0,
        due_in: float = 0.0,
        answered: bool = False,
    ) -> None:
        """End a turn: record how its events ended (``outcome``; None: they wait for another
        turn, ``due_in`` seconds from now, after ``failures`` failed calls in a row) and the
        field versions an applied PUT wrote, and release the order. ``answered``: the API
        answered the call, which ends the fleet's streak of failures."""
        settled = dict(turn.finished)
        if outcome is not None:
            dead = outcome == DEAD_LETTERED
            for e in turn.events:
                settled[e.event_id] = f"{outcome}:{e.replays}" if dead else outcome
        self.store.settle_turn(
            turn.taken,
            owner,
            KEYS,
            settled,
            self.dedup_window,
            versions or {},
            failures,
            due_in,
            clear=STREAK_KEY if answered else None,
        )

    def pending_events(self) -> int:
        """Events stored and waiting for their order's turn, fleet-wide."""
        return max(0, int(self.store.get(KEYS.events) or 0))

    def backlog(self) -> Backlog:
        """Orders waiting per lane's due set (``DUE``), and events pending in all."""
        return self.store.backlog(list(KEYS.due), KEYS.events)

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
