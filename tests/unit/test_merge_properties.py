"""Per-field newest-wins, as properties: whatever events an order gets, in whatever order they
arrive and however the fleet's workers interleave, the order ends with each field's newest value
and no PUT ever writes a value older than one already written.

"Newest" is the greatest ``occurred_at`` instant (the same instant may be written in any time
zone), ties broken by the greater ``event_id``: within one holder's round (``_round`` sorts by
``(when, event_id)`` and ``merge`` lets the later one win) and across rounds (a field's version
is ``"<occurred_at> <event_id>"``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from schemas.event import OrderChange, load_event
from tests.unit.shared_stores import BACKENDS, fresh_stores
from worker.coordination.orders import OrderCoordinator, PendingEvent, Round
from worker.coordination.store import Store

ORDER = 1
FIELDS = ("customer_id", "company_id", "sales_rep_1")
BASE = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)
LOCK = f"order-sync:lock:{ORDER}"


@st.composite
def event_sets(draw: st.DrawFn, max_size: int = 6) -> list[OrderChange]:
    """Events for one order: few distinct instants (ties are common), each instant written in
    some time zone, each event changing some fields to a value only it carries."""
    ids = draw(
        st.lists(
            st.text("abxyz", min_size=1, max_size=2), min_size=1, max_size=max_size, unique=True
        )
    )
    events = []
    for index, event_id in enumerate(ids):
        instant = BASE + dt.timedelta(minutes=draw(st.integers(0, 3)))
        zone = dt.timezone(dt.timedelta(hours=draw(st.integers(-2, 2))))
        names = draw(st.sets(st.sampled_from(FIELDS), min_size=1))
        payload = {
            "event_id": event_id,
            "order_id": ORDER,
            "occurred_at": instant.astimezone(zone).isoformat(),
            "changes": {name: 100 + index for name in sorted(names)},
        }
        events.append(load_event(payload))
    return events


def pending(event: OrderChange) -> PendingEvent:
    """The event as the store keeps it (what ``OrderCoordinator.begin`` stores)."""
    return PendingEvent(event.event_id, event.occurred_at.isoformat(), event.changes, {})


def oldest_first(events: list[PendingEvent]) -> list[PendingEvent]:
    """The order a holder's round hands events to ``merge`` in."""
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
def test_one_round_merges_to_the_newest_value_per_field_and_skips_exactly_the_stale(
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
def test_rounds_of_merges_in_any_arrival_order_end_with_the_newest_value_per_field(
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


# Through a real store, with the fleet's workers interleaved ---------------------------------


@dataclass
class Task:
    """One delivery of an event to a worker, stepped one store round trip at a time, as
    ``worker.apply.sync.sync_event`` and the consumer's ``announce`` run it."""

    event: OrderChange
    owner: str
    state: str  # announce, begin, send, settle, take, finish, done
    taken: Round | None = None
    sent: tuple[str, dict[str, str]] = ("stale", {})
    outcomes: dict[str, str] = field(default_factory=dict)
    result: str | None = None


class Fleet:
    def __init__(self, coordinator: OrderCoordinator, api: Api) -> None:
        self.coordinator = coordinator
        self.api = api
        self.failures_left = 0
        self.seen: set[str] = set()  # what happened, for hypothesis' statistics

    def step(self, task: Task, fail_put: bool = False) -> None:
        coordinator, event = self.coordinator, task.event
        if task.state == "announce":  # the consumer, ahead of the task
            done = coordinator.announce(event, {})
            task.state, task.result = ("done", done) if done else ("begin", None)
        elif task.state == "begin":
            done, first = coordinator.begin(event, {}, task.owner)
            if done is not None:
                task.state, task.result = "done", done
            elif first is not None:
                task.state, task.taken = "send", first
            else:  # another worker holds the order; the task comes back later (order_busy)
                self.seen.add("order busy")
        elif task.state == "send":
            assert task.taken is not None
            events, applied = task.taken
            assert [e.event_id for e in events] == [e.event_id for e in oldest_first(events)]
            merge = coordinator.merge(events, applied) if events else None
            if merge is not None and merge.stale:
                self.seen.add("stale field skipped")
            if merge is None or not merge.changes:
                task.sent = ("stale", {})
            elif fail_put and self.failures_left > 0:
                # A transient API error: the events go back, the lock is let go, retry later.
                self.failures_left -= 1
                self.seen.add("PUT failed")
                coordinator.put_back(ORDER, events)
                coordinator.unlock(ORDER, task.owner)
                task.state = "begin"
                return
            else:
                self.seen.add("several events in one PUT" if len(events) > 1 else "PUT")
                self.api.put(merge.changes, merge.versions)
                task.sent = ("applied", merge.versions)
            task.state = "settle"
        elif task.state == "settle":
            assert task.taken is not None
            events = task.taken[0]
            outcome, versions = task.sent
            over = coordinator.settle(ORDER, task.owner, events, outcome, versions)
            task.outcomes.update((e.event_id, outcome) for e in events)
            task.state = "finish" if over else "take"
            if not over:
                self.seen.add("another round")
        elif task.state == "take":
            task.taken = coordinator.take(ORDER, task.owner)
            task.state = "finish" if task.taken is None else "send"
        elif task.state == "finish":
            result = task.outcomes.get(event.event_id) or coordinator.outcome(event.event_id)
            task.state, task.result = ("begin", None) if result is None else ("done", result)


def run_fleet(
    store: Store, tasks: list[Task], data: st.DataObject | None, failures: int, window: int = 1
) -> Api:
    """Step ``tasks`` until all are done: ``data`` draws which of the first ``window`` unfinished
    ones (in order of arrival) takes its next step; without it, each in turn."""
    api = Api()
    fleet = Fleet(OrderCoordinator(store, dedup_window=3600, lock_ttl=600), api)
    fleet.failures_left = failures
    for steps in range(5000):
        running = [t for t in tasks if t.state != "done"]
        if not running:
            if data is not None:
                for seen in sorted(fleet.seen):
                    event(seen)
            return api
        if data is not None and steps < 80:
            chosen = data.draw(st.sampled_from(running[:window]), label="step")
            fail_put = chosen.state == "send" and data.draw(st.booleans(), label="put fails")
            fleet.step(chosen, fail_put)
        else:
            # Then fair: a holder first (it always gets on), else whoever waits longest.
            holders = [t for t in running if t.state not in ("announce", "begin")]
            fleet.step((holders or running)[0])
    raise AssertionError(f"the fleet never finished: {[(t.owner, t.state) for t in tasks]}")


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=100, deadline=None)
@given(events=event_sets(), data=st.data())
def test_any_interleaving_of_workers_ends_with_the_newest_value_per_field(
    backend: str, events: list[OrderChange], data: st.DataObject
) -> None:
    # Each event is delivered once or twice (a redelivery), in any order, some announced by the
    # consumer first; up to four workers at a time step through them in any interleaving.
    copies = [e for e in events for _ in range(data.draw(st.integers(1, 2), label="copies"))]
    deliveries = data.draw(st.permutations(copies), label="arrival")
    tasks = [
        Task(copy, f"worker-{n}", "announce" if data.draw(st.booleans(), label="ann") else "begin")
        for n, copy in enumerate(deliveries)
    ]
    window = data.draw(st.integers(1, 4), label="workers at once")
    failures = data.draw(st.integers(0, 2), label="failed PUTs")
    with fresh_stores(backend) as (store,):
        api = run_fleet(store, tasks, data, failures, window)
        assert_newest_per_field(api.order, events)
        for task in tasks:
            assert task.result in ("applied", "stale")
        assert {OrderCoordinator(store, 3600, 600).outcome(e.event_id) for e in events} <= {
            "applied",
            "stale",
        }
        assert store.get(LOCK) is None  # the last holder let go of the order


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_tie_in_occurred_at_ends_alike_whatever_the_arrival_order(backend: str) -> None:
    at = "2026-11-26T10:00:00Z"
    a = load_event(
        {"event_id": "a", "order_id": ORDER, "occurred_at": at, "changes": {"customer_id": 1}}
    )
    b = load_event(
        {"event_id": "b", "order_id": ORDER, "occurred_at": at, "changes": {"customer_id": 2}}
    )
    ends = []
    for arrival in ([a, b], [b, a]):  # one after the other: two rounds
        with fresh_stores(backend) as (store,):
            tasks = [Task(e, f"worker-{e.event_id}", "begin") for e in arrival]
            ends.append(run_fleet(store, tasks, None, 0).order)
    together = OrderCoordinator.merge(oldest_first([pending(b), pending(a)]), {}).changes
    assert ends == [together, together] == [newest_by_id([a, b])] * 2
