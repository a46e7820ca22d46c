"""Per-field newest-wins, as properties: whatever events an order gets, in whatever order they
arrive and however the fleet's workers interleave, the order ends with each field's newest value
and no PUT ever writes a value older than one already written.

"Newest" is the greatest ``occurred_at`` instant (the same instant may be written in any time
zone), ties broken by the greater ``event_id``: within one turn (``next_turn`` hands the events
over sorted by ``(when, event_id)`` and ``merge`` lets the later one win) and across turns (a
field's version is ``"<occurred_at> <event_id>"``).

Through the real stores, several workers (coordinators on store objects of their own, one store)
interleave absorbing events and taking turns in any order: every event is settled exactly once,
as applied or stale, and nothing is left waiting, locked or counted.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from schemas.event import OrderChange, load_event
from tests.unit.shared_stores import BACKENDS, Stores, fresh_stores
from worker.coordination.orders import (
    BULK,
    DUE,
    KEYS,
    LIVE,
    OrderCoordinator,
    OrderTurn,
    PendingEvent,
)
from worker.coordination.store import Backlog

ORDER = 1
ORDERS = (1, 2)
FIELDS = ("customer_id", "company_id", "sales_rep_1")
BASE = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


@st.composite
def event_sets(draw: st.DrawFn, order: int = ORDER, max_size: int = 6) -> list[OrderChange]:
    """Events for one order: few distinct instants (ties are common), each instant written in
    some time zone, each event changing some fields to a value only it carries. Event ids start
    with the order's, so those of different orders never meet."""
    ids = draw(
        st.lists(
            st.text("abxyz", min_size=1, max_size=2), min_size=1, max_size=max_size, unique=True
        )
    )
    events = []
    for index, suffix in enumerate(ids):
        event_id = f"{order}{suffix}"
        instant = BASE + dt.timedelta(minutes=draw(st.integers(0, 3)))
        zone = dt.timezone(dt.timedelta(hours=draw(st.integers(-2, 2))))
        names = draw(st.sets(st.sampled_from(FIELDS), min_size=1))
        payload = {
            "event_id": event_id,
            "order_id": order,
            "occurred_at": instant.astimezone(zone).isoformat(),
            "changes": {name: 100 + index for name in sorted(names)},
        }
        events.append(load_event(payload))
    return events


def pending(event: OrderChange) -> PendingEvent:
    """The event as the store keeps it (what ``OrderCoordinator.absorb`` stores)."""
    return PendingEvent(event.event_id, event.occurred_at.isoformat(), event.changes, {})


def oldest_first(events: list[PendingEvent]) -> list[PendingEvent]:
    """The order a turn hands events to ``merge`` in."""
    return sorted(events, key=lambda e: (e.when, e.event_id))


def newest_values(events: list[OrderChange]) -> dict[str, set[Any]]:
    """For each field: the values of the events with its newest instant (one, unless tied)."""
    newest: dict[str, set[Any]] = {}
    for name in FIELDS:
        writers = [e for e in events if name in e.changes]
        if writers:
            latest = max(e.occurred_at for e in writers)
            newest[name] = {e.changes[name] for e in writers if e.occurred_at == latest}
    return newest


def newest_by_id(events: list[OrderChange]) -> dict[str, Any]:
    """For each field: the value of the greatest ``(occurred_at, event_id)``."""
    winners: dict[str, Any] = {}
    for name in FIELDS:
        writers = [e for e in events if name in e.changes]
        if writers:
            winner = max(writers, key=lambda e: (e.occurred_at, e.event_id))
            winners[name] = winner.changes[name]
    return winners


def assert_newest_per_field(api: dict[str, Any], events: list[OrderChange]) -> None:
    newest = newest_values(events)
    assert api.keys() == newest.keys()
    for name, values in newest.items():
        assert api[name] in values, f"{name}: {api[name]} is not the newest value {values}"


def parse_version(version: str) -> tuple[dt.datetime, str]:
    """A field's version as the store keeps it: ``"<occurred_at> <event_id>"``."""
    occurred_at, _, event_id = version.partition(" ")
    return dt.datetime.fromisoformat(occurred_at), event_id


class Api:
    """The order as Sellercloud holds it, and a check on every PUT: never an older version."""

    def __init__(self) -> None:
        self.order: dict[str, Any] = {}
        self.written: dict[str, tuple[dt.datetime, str]] = {}

    def put(self, changes: dict[str, Any], versions: dict[str, str]) -> None:
        assert changes.keys() == versions.keys()
        for name, version in versions.items():
            when = parse_version(version)
            previous = self.written.get(name)
            assert previous is None or when >= previous, (
                f"{name}: a value of {when} written over one of {previous}"
            )
            self.written[name] = when
        self.order.update(changes)


# OrderCoordinator.merge on its own ---------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(events=event_sets(), data=st.data())
def test_one_turn_merges_to_the_newest_value_per_field_and_skips_exactly_the_stale(
    events: list[OrderChange], data: st.DataObject
) -> None:
    # Versions already applied, per field: any of the instants the events use, or none.
    applied = {
        name: (BASE + dt.timedelta(minutes=minute)).isoformat()
        for name in FIELDS
        if (minute := data.draw(st.one_of(st.none(), st.integers(0, 3)), label=name)) is not None
    }
    arrived = data.draw(st.permutations([pending(e) for e in events]), label="arrival")
    merge = OrderCoordinator.merge(oldest_first(arrived), applied)

    for name in FIELDS:
        floor = parse_version(applied[name]) if name in applied else None
        fresh = [
            e
            for e in events
            if name in e.changes and (floor is None or (e.occurred_at, e.event_id) >= floor)
        ]
        if fresh:
            winner = max(fresh, key=lambda e: (e.occurred_at, e.event_id))
            assert merge.changes[name] == winner.changes[name]
            assert parse_version(merge.versions[name]) == (winner.occurred_at, winner.event_id)
        else:
            assert name not in merge.changes and name not in merge.versions
    stale = {
        (e.event_id, name)
        for e in events
        for name in e.changes
        if name in applied and e.occurred_at < dt.datetime.fromisoformat(applied[name])
    }
    assert sorted(merge.stale) == sorted(stale)
    assert merge.event_ids == [e.event_id for e in oldest_first(arrived)]


@settings(max_examples=200, deadline=None)
@given(events=event_sets(), data=st.data())
def test_turn_after_turn_in_any_arrival_order_ends_with_the_newest_value_per_field(
    events: list[OrderChange], data: st.DataObject
) -> None:
    arrival = data.draw(st.permutations(events), label="arrival")
    # After which arrivals a holder takes what is pending (always after the last).
    cuts = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    cuts[-1] = True
    api, versions, batch = Api(), dict[str, str](), list[PendingEvent]()
    for arrived, cut in zip(arrival, cuts, strict=True):
        batch.append(pending(arrived))
        if cut:
            merge = OrderCoordinator.merge(oldest_first(batch), versions)
            api.put(merge.changes, merge.versions)
            versions.update(merge.versions)  # what settling stores
            batch = []
    assert_newest_per_field(api.order, events)


# Through the real stores, with the fleet's workers interleaved -------------------------------

LANES = (LIVE, BULK)
LOCK_TTL = 600.0  # no holder vanishes here: no lock may run out during an example


@dataclass(frozen=True)
class Worker:
    coordinator: OrderCoordinator
    owner: str


class Fleet:
    """Workers sharing one store, and a model of what the store should hold: per order, the
    events absorbed and not yet settled, its lane, and its failed turns in a row. Every step
    checks the store's answer against the model."""

    def __init__(self, stores: Stores, events: list[OrderChange]) -> None:
        self.workers = [
            Worker(OrderCoordinator(store, dedup_window=3600, lock_ttl=LOCK_TTL), f"worker-{n}")
            for n, store in enumerate(stores)
        ]
        self.events = events
        self.api = {order: Api() for order in ORDERS}
        self.turns: list[tuple[Worker, OrderTurn]] = []  # taken, not yet settled
        self.settled: list[str] = []  # each event id, each time a turn settled it
        self.outcomes: dict[str, str] = {}
        self.pending: dict[int, set[str]] = {order: set() for order in ORDERS}
        self.lane: dict[int, str | None] = dict.fromkeys(ORDERS)
        self.failed = dict.fromkeys(ORDERS, 0)
        self.seen: set[str] = set()  # what happened, for hypothesis' statistics

    def absorb(self, worker: Worker, change: OrderChange, lane: str) -> None:
        order = change.order_id
        if self.turns and any(turn.order_id == order for _, turn in self.turns):
            self.seen.add("an event arrived during its order's turn")
        done = worker.coordinator.absorb(change, {}, lane)
        assert done == self.outcomes.get(change.event_id)  # ended (redelivered), or kept
        if done is not None:
            self.seen.add("a redelivery of a settled event skipped")
            return
        self.pending[order].add(change.event_id)
        if lane == LIVE and self.lane[order] == BULK:
            self.seen.add("a live event moved its order out of bulk")
        if lane == LIVE or self.lane[order] is None:
            self.lane[order] = lane

    def begin(self, worker: Worker, lanes: tuple[str, ...]) -> OrderTurn | None:
        """``worker`` takes a turn (lanes served in ``lanes`` order), if an order is due."""
        holds = dict.fromkeys(lanes, 0.0)
        locked = {turn.order_id for _, turn in self.turns}
        free = [o for o in ORDERS if self.pending[o] and o not in locked]
        due = worker.coordinator.due(holds)
        turn = worker.coordinator.next_turn(worker.owner, holds)
        # Due exactly when an order waits unlocked: never a slot spent on a turn not there.
        assert due == bool(free)
        if turn is None:
            assert not free
            self.seen.add("no turn due" if not locked else "no turn due but one under way")
            return None
        order = turn.order_id
        assert order in free  # never an order another turn holds
        first_lane = next(lane for lane in lanes if any(self.lane[o] == lane for o in free))
        assert turn.lane == self.lane[order] == first_lane
        assert {e.event_id for e in turn.events} == self.pending[order]  # all, once each
        assert turn.finished == {}
        assert turn.failures == self.failed[order]
        self.turns.append((worker, turn))
        self.seen.add(f"a turn in {turn.lane}")
        if len(turn.events) > 1:
            self.seen.add("several events in one turn")
        return turn

    def probe(self, worker: Worker, order: int) -> OrderTurn | None:
        """``worker`` takes ``order``'s turn, due or not, as a probe of a closed gate does."""
        locked = {turn.order_id for _, turn in self.turns}
        turn = worker.coordinator.next_turn(worker.owner, dict.fromkeys(LANES, 0.0), only=order)
        if not self.pending[order] or order in locked:  # nothing to send, or another's turn
            assert turn is None
            return None
        assert turn is not None and turn.order_id == order
        assert {e.event_id for e in turn.events} == self.pending[order]
        assert turn.lane == self.lane[order] and turn.failures == self.failed[order]
        self.turns.append((worker, turn))
        self.seen.add("a probe took a turn")
        return turn

    def finish(self, index: int, fails: bool) -> None:
        """End the ``index``-th turn taken: its PUT applied (or stale), or failed (retried)."""
        worker, turn = self.turns.pop(index)
        order = turn.order_id
        if fails:
            self.seen.add("a turn failed")
            self.failed[order] += 1
            worker.coordinator.settle(turn, worker.owner, None, failures=self.failed[order])
            return
        merge = OrderCoordinator.merge(turn.events, turn.versions)
        if merge.stale:
            self.seen.add("a stale field skipped")
        outcome = "stale"
        if merge.changes:
            self.api[order].put(merge.changes, merge.versions)
            outcome = "applied"
        worker.coordinator.settle(turn, worker.owner, outcome, merge.versions)
        self.failed[order] = 0
        for e in turn.events:
            self.settled.append(e.event_id)
            self.outcomes[e.event_id] = outcome
            self.pending[order].discard(e.event_id)
        if not self.pending[order]:
            self.lane[order] = None

    def drain(self, arrivals: list[tuple[OrderChange, str]]) -> None:
        """Settle the turns under way, absorb what is still to arrive, and take turns until
        none is due."""
        while self.turns:
            self.finish(0, fails=False)
        for change, lane in arrivals:
            self.absorb(self.workers[0], change, lane)
        for n in range(4 * len(ORDERS)):
            if self.begin(self.workers[n % len(self.workers)], LANES) is None:
                return
            self.finish(0, fails=False)
        raise AssertionError(f"still due after every order had its turn: {self.pending}")

    def check_the_end(self) -> None:
        for order in ORDERS:
            mine = [e for e in self.events if e.order_id == order]
            assert self.api[order].order == newest_by_id(mine), f"order {order}"
        assert Counter(self.settled) == Counter(e.event_id for e in self.events)
        outcome = self.workers[0].coordinator.outcome
        assert {e.event_id: outcome(e.event_id) for e in self.events} == self.outcomes
        assert set(self.outcomes.values()) <= {"applied", "stale"}
        for worker in self.workers:
            coordinator = worker.coordinator
            assert coordinator.backlog() == Backlog(
                dict.fromkeys(KEYS.due, 0), 0, dict.fromkeys(KEYS.due, None)
            )
            assert not coordinator.due(dict.fromkeys(LANES, 0.0))
        store = self.workers[-1].coordinator.store
        for order in ORDERS:
            assert store.get(KEYS.lock + str(order)) is None
            for lane in LANES:  # nothing to take even for a probe, which ignores due times
                assert store.next_due([(DUE[lane], 0.0)], KEYS, "probe", 5, str(order)) is None


@st.composite
def fleet_events(draw: st.DrawFn) -> list[OrderChange]:
    return [e for order in ORDERS for e in draw(event_sets(order, max_size=4))]


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=250, deadline=None)
@given(events=fleet_events(), data=st.data())
def test_any_interleaving_of_workers_settles_each_event_once_with_the_newest_values(
    backend: str, events: list[OrderChange], data: st.DataObject
) -> None:
    # Each event is delivered once or twice (a redelivery), to either lane, in any order; up to
    # three workers absorb deliveries, take turns (the next due, or one order's, as a probe)
    # and end them (applied, or failed and retried) in whatever interleaving is drawn, a turn's
    # end coming after any other steps.
    copies = [e for e in events for _ in range(data.draw(st.integers(1, 2), label="copies"))]
    arrivals = [
        (copy, data.draw(st.sampled_from(LANES), label="lane"))
        for copy in data.draw(st.permutations(copies), label="arrival")
    ]
    workers = data.draw(st.integers(1, 3), label="workers")
    with fresh_stores(backend, workers) as stores:
        fleet = Fleet(stores, events)
        for _ in range(60):
            if not arrivals and not fleet.turns and not any(fleet.pending.values()):
                break
            steps = ["absorb"] if arrivals else []
            steps += ["turn", "probe"] + (["end"] if fleet.turns else [])
            step = data.draw(st.sampled_from(steps), label="step")
            worker = fleet.workers[data.draw(st.integers(0, workers - 1), label="worker")]
            if step == "absorb":
                fleet.absorb(worker, *arrivals.pop(0))
            elif step == "turn":
                lanes = data.draw(st.sampled_from([LANES, LANES[::-1]]), label="lanes")
                fleet.begin(worker, lanes)
            elif step == "probe":
                fleet.probe(worker, data.draw(st.sampled_from(ORDERS), label="order"))
            else:
                index = data.draw(st.integers(0, len(fleet.turns) - 1), label="which turn")
                fleet.finish(index, fails=data.draw(st.booleans(), label="fails"))
        fleet.drain(arrivals)
        fleet.check_the_end()
        for seen in sorted(fleet.seen):
            event(seen)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tie_in_occurred_at_ends_alike_whatever_the_arrival_order(backend: str) -> None:
    # The same instant, written in two time zones.
    a = load_event(
        {
            "event_id": "a",
            "order_id": ORDER,
            "occurred_at": "2026-11-26T11:00:00+01:00",
            "changes": {"customer_id": 1},
        }
    )
    b = load_event(
        {
            "event_id": "b",
            "order_id": ORDER,
            "occurred_at": "2026-11-26T10:00:00Z",
            "changes": {"customer_id": 2},
        }
    )
    ends = []
    for arrival in ([a, b], [b, a]):  # one after the other: a turn each
        with fresh_stores(backend) as stores:
            fleet = Fleet(stores, [a, b])
            worker = fleet.workers[0]
            for change in arrival:
                fleet.absorb(worker, change, LIVE)
                assert fleet.begin(worker, LANES) is not None
                fleet.finish(0, fails=False)
            fleet.check_the_end()
            ends.append(fleet.api[ORDER].order)
            first, second = arrival  # the second turn's event is stale unless it is "b"
            late = "applied" if second is b else "stale"
            assert fleet.outcomes == {first.event_id: "applied", second.event_id: late}
    together = OrderCoordinator.merge(oldest_first([pending(b), pending(a)]), {}).changes
    assert ends == [together, together] == [newest_by_id([a, b])] * 2
