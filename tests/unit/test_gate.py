"""The fleet's gate on both stores: an outage is many orders failing, not one; probes are one
at a time; a closed gate stops every call but the probe."""

from __future__ import annotations

import datetime as dt

import pytest

from schemas.event import OrderChange
from worker.coordination.gate import (
    API_UNAVAILABLE,
    CREDENTIALS,
    GATE_KEY,
    OPERATOR,
    FleetGate,
    FleetPaused,
    GateSettings,
)
from worker.coordination.orders import LIVE, OrderCoordinator, OrderTurn
from worker.coordination.rate import Rate
from worker.coordination.ratelimit import FleetRateLimiter
from worker.coordination.store import Store


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def gate_on(store: Store, clock: Clock | None = None) -> FleetGate:
    return FleetGate(store, GateSettings(threshold=3, max_probe_interval=8.0), clock or Clock())


def test_three_different_orders_failing_in_a_row_close_the_gate_once(store: Store) -> None:
    gate = gate_on(store)
    assert not gate.note_failure(1, RuntimeError("503"))
    assert not gate.note_failure(1, RuntimeError("503"))  # the same order again: still one
    assert not gate.note_failure(2, RuntimeError("503"))
    assert gate.note_failure(3, RuntimeError("HTTP 503"))
    state = gate.state()
    assert state is not None and state.kind == API_UNAVAILABLE
    assert (state.error, state.order_id) == ("HTTP 503", 3)
    # Later failures find it closed; none of them closes it again.
    assert gate.note_failure(4, RuntimeError("503"))
    assert gate.state() == state


def turn_of(coordinator: OrderCoordinator, order_id: int) -> OrderTurn:
    """The turn of an order holding one pending event."""
    event = OrderChange(f"e-{order_id}", order_id, dt.datetime.now(dt.UTC), {"customer_id": 1})
    assert coordinator.absorb(event, {}, LIVE) is None
    turn = coordinator.next_turn("me", {LIVE: 0.0}, only=order_id)
    assert turn is not None
    return turn


def test_an_answered_call_ends_the_streak(store: Store) -> None:
    """One order failing while others succeed never makes an outage."""
    gate = gate_on(store)
    coordinator = OrderCoordinator(store, dedup_window=60, lock_ttl=30)
    for order_id in (1, 2, 1, 3, 1, 4):
        assert not gate.note_failure(1 if order_id == 1 else order_id, RuntimeError("503"))
        if order_id != 1:  # another order's call was answered
            coordinator.settle(turn_of(coordinator, order_id), "me", "applied", answered=True)
    assert gate.state() is None
    assert store.get(GATE_KEY) is None


def test_settling_without_an_answer_keeps_the_streak(store: Store) -> None:
    gate = gate_on(store)
    coordinator = OrderCoordinator(store, dedup_window=60, lock_ttl=30)
    gate.note_failure(1, RuntimeError("503"))
    gate.note_failure(2, RuntimeError("503"))
    coordinator.settle(turn_of(coordinator, 9), "me", "stale")  # no call was made
    assert gate.note_failure(3, RuntimeError("503"))


def test_a_closed_gate_stops_every_call_but_the_probe(store: Store) -> None:
    limiter = FleetRateLimiter(store, Rate(1000, 1), sleep=lambda _: None)
    limiter.wait()
    gate_on(store).close(OPERATOR, "maintenance")
    with pytest.raises(FleetPaused):
        limiter.wait()
    with limiter.probing():
        limiter.wait()
    gate_on(store).open()
    limiter.wait()


def test_probes_are_one_at_a_time_and_at_most_one_a_second(store: Store) -> None:
    gate = gate_on(store)
    assert gate.probe_turn("a", hold=30)
    assert not gate.probe_turn("b", hold=30)  # a is still probing
    gate.end_turn("a")
    assert not gate.probe_turn("b", hold=30)  # a's turn ended less than a second ago
    assert store.get("order-sync:probe") == "a"


def test_failed_probes_come_further_apart_up_to_the_cap(store: Store) -> None:
    clock = Clock()
    gate = gate_on(store, clock)
    for order_id in (1, 2, 3):
        gate.note_failure(order_id, RuntimeError("503"))
    state = gate.state()
    assert state is not None and state.next_probe_at == clock.now + 1.0
    waits = []
    for _ in range(6):
        later = gate.probe_failed(state, "still 503")
        assert later is not None
        waits.append(later.next_probe_at - clock.now)
        state = later
    assert waits == [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert state.probes == 6 and state.error == "still 503"


def test_a_probe_result_is_dropped_when_the_gate_changed_meanwhile(store: Store) -> None:
    gate = gate_on(store)
    for order_id in (1, 2, 3):
        gate.note_failure(order_id, RuntimeError("503"))
    probed = gate.state()
    assert probed is not None
    gate.pause("maintenance", by="ops")
    assert gate.probe_failed(probed, "503") is None
    state = gate.state()
    assert state is not None and state.kind == OPERATOR


def test_refused_credentials_take_over_an_outage_but_not_an_operators_pause(store: Store) -> None:
    gate = gate_on(store)
    assert gate.refuse_credentials(RuntimeError("HTTP 400"))
    assert not gate.refuse_credentials(RuntimeError("HTTP 400"))  # one clear error, not many
    state = gate.state()
    assert state is not None and state.kind == CREDENTIALS
    gate.open()
    for order_id in (1, 2, 3):
        gate.note_failure(order_id, RuntimeError("503"))
    assert gate.refuse_credentials(RuntimeError("HTTP 400"))
    state = gate.state()
    assert state is not None and state.kind == CREDENTIALS
    gate.pause("maintenance", by="ops")
    assert not gate.refuse_credentials(RuntimeError("HTTP 400"))
    state = gate.state()
    assert state is not None and state.kind == OPERATOR


def test_opening_forgets_the_streak(store: Store) -> None:
    gate = gate_on(store)
    gate.note_failure(1, RuntimeError("503"))
    gate.note_failure(2, RuntimeError("503"))
    gate.open()
    assert not gate.note_failure(3, RuntimeError("503"))


def test_each_probe_takes_the_next_of_the_orders_that_failed(store: Store) -> None:
    """One order that fails for reasons of its own cannot keep the fleet paused."""
    gate = gate_on(store)
    for order_id in (30, 10, 20):
        gate.note_failure(order_id, RuntimeError("503"))
    state = gate.state()
    assert state is not None and state.order_id == 20
    probed = []
    for _ in range(4):
        probed.append(gate.probe_order(state))
        later = gate.probe_failed(state, "503")
        assert later is not None
        state = later
    assert probed == [10, 20, 30, 10]
