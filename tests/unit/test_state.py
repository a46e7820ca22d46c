"""The shared store's operations behave the same on Redis and on the embedded SQLite file;
the fleet rate limiter and per-field merging on top of them.

Orders wait for their turn in the keys ``worker.coordination.orders`` uses (``KEYS``, ``JOIN``):
an event is absorbed into its order's pending hash, the order waits in its lane's due set, and a
turn (``next_due``) locks it and reads what is pending until ``settle_turn`` ends it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from schemas.event import OrderChange, load_event
from tests.unit.shared_stores import FrozenClock, fresh_stores, sqlite_clock
from worker.coordination import sqlite_store
from worker.coordination.orders import BULK, DUE, JOIN, KEYS, LIVE, OrderCoordinator
from worker.coordination.rate import Rate, parse_rate
from worker.coordination.ratelimit import FleetRateLimiter
from worker.coordination.redis_store import RedisStore
from worker.coordination.sqlite_store import SqliteStore
from worker.coordination.store import Backlog, Entry, Store, StoreUnavailable, Turn
from worker.sellercloud.errors import RateLimited

REDIS_URL = "redis://127.0.0.1:6379/12"
# Every lane without a hold: live first (the dispatcher's usual turn), or bulk first.
LIVE_FIRST = [(DUE[LIVE], 0.0), (DUE[BULK], 0.0)]
BULK_FIRST = [(DUE[BULK], 0.0), (DUE[LIVE], 0.0)]
# How far the store's clock (Redis: its server's) and this process's may be apart when a test
# compares a due time with ``time.time()``: one machine, one clock, a little rounding.
TOLERANCE = 0.05


def _wait_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment`` (never less, however noisy)."""
    while (left := moment - time.monotonic()) > 0:
        threading.Event().wait(left)


def _pause() -> None:
    """Long enough for the store's clock to move on: two due times never tie."""
    threading.Event().wait(0.003)


def _value(event_id: str) -> str:
    return f"event {event_id}"


def absorb(
    store: Store, event_id: str, order: int = 1, lane: str = LIVE, *, even_if_done: bool = False
) -> str | None:
    """Keep event ``event_id`` with ``order``'s pending ones, as ``OrderCoordinator.absorb``."""
    entry = Entry(KEYS.done + event_id, KEYS.pending + str(order), event_id, _value(event_id))
    return store.absorb(entry, JOIN[lane], str(order), KEYS, even_if_done=even_if_done)


def take(
    store: Store,
    owner: str = "me",
    queues: list[tuple[str, float]] | None = None,
    lock_ttl: float = 60.0,
    only: int | None = None,
) -> Turn | None:
    member = None if only is None else str(only)
    return store.next_due(LIVE_FIRST if queues is None else queues, KEYS, owner, lock_ttl, member)


def settle(
    store: Store,
    turn: Turn | None,
    owner: str = "me",
    settled: dict[str, str] | None = None,
    *,
    ttl: float = 3600.0,
    versions: dict[str, str] | None = None,
    failures: int = 0,
    due_in: float = 0.0,
    clear: str | None = None,
) -> None:
    assert turn is not None
    store.settle_turn(
        turn, owner, KEYS, settled or {}, ttl, versions or {}, failures, due_in, clear
    )


def settle_all(
    store: Store, turn: Turn | None, owner: str = "me", outcome: str = "applied"
) -> None:
    assert turn is not None
    settle(store, turn, owner, dict.fromkeys(turn.fields, outcome))


def waiting(store: Store) -> dict[str, int]:
    """Lane -> orders in its due set."""
    found = store.backlog(list(KEYS.due), KEYS.events)
    return {lane: found.members[DUE[lane]] for lane in (LIVE, BULK)}


def pending_events(store: Store) -> int:
    return store.backlog(list(KEYS.due), KEYS.events).fields


def oldest(store: Store, lane: str = LIVE) -> float | None:
    return store.backlog(list(KEYS.due), KEYS.events).oldest[DUE[lane]]


def lock_is_free(store: Store, order: int) -> bool:
    if not store.claim(KEYS.lock + str(order), "probe", ttl=5):
        return False
    store.release(KEYS.lock + str(order), "probe")
    return True


# Values and locks ----------------------------------------------------------------------------


def test_claim_is_exclusive_until_released_or_expired(store: Store) -> None:
    assert store.claim("lock", "a", ttl=5)
    assert not store.claim("lock", "b", ttl=5)
    assert not store.release("lock", "b")  # not the owner
    assert store.release("lock", "a")
    assert store.claim("lock", "b", ttl=0.05)
    threading.Event().wait(0.1)
    assert store.claim("lock", "c", ttl=5)  # the holder's claim ran out


def test_values_last_their_lifetime_and_delete_removes_values_and_hashes(store: Store) -> None:
    assert store.get("missing") is None
    store.put("k", "v")
    store.put("short", "v", ttl=0.05)
    assert store.get("k") == "v"
    threading.Event().wait(0.1)
    assert store.get("short") is None
    assert store.get("k") == "v"  # no lifetime: kept
    store.hash_put(KEYS.versions + "1", {"a": "1", "b": "2"}, ttl=60)
    store.hash_put(KEYS.versions + "1", {"b": "3"}, ttl=60)
    assert absorb(store, "e") is None
    turn = take(store)
    assert turn is not None and turn.versions == {"a": "1", "b": "3"}
    store.delete("k", KEYS.versions + "1", "never-set")
    assert store.get("k") is None
    assert store.release(KEYS.lock + "1", "me")
    again = take(store, only=1)
    assert again is not None and again.versions == {}


# absorb --------------------------------------------------------------------------------------


def test_absorb_skips_an_event_that_already_ended_unless_even_if_done(store: Store) -> None:
    store.put(KEYS.done + "a", "dead_lettered:0", ttl=60)
    assert absorb(store, "a") == "dead_lettered:0"
    assert store.backlog(list(KEYS.due), KEYS.events) == Backlog(
        {DUE[LIVE]: 0, DUE[BULK]: 0}, 0, {DUE[LIVE]: None, DUE[BULK]: None}
    )
    assert not store.due(LIVE_FIRST)  # nothing joined: no order waits
    assert absorb(store, "b") is None
    assert absorb(store, "a", even_if_done=True) == "dead_lettered:0"
    turn = take(store)
    assert turn is not None
    assert turn.fields == {"a": _value("a"), "b": _value("b")}
    assert turn.done == {"a": "dead_lettered:0"}


def test_the_events_counter_counts_each_new_field_once(store: Store) -> None:
    absorb(store, "a")
    absorb(store, "a")  # a redelivery: the same field
    absorb(store, "b", lane=BULK)
    absorb(store, "c", order=2, lane=BULK)
    absorb(store, "a", even_if_done=True)  # still the same field
    store.put(KEYS.done + "d", "applied")
    absorb(store, "d")  # ended: not kept, not counted
    assert pending_events(store) == 3
    turn = take(store)
    assert turn is not None and sorted(turn.fields) == ["a", "b"]


def test_a_live_event_joins_live_and_takes_its_order_out_of_bulk(store: Store) -> None:
    absorb(store, "a", lane=BULK)
    assert waiting(store) == {LIVE: 0, BULK: 1}
    absorb(store, "b", lane=LIVE)
    assert waiting(store) == {LIVE: 1, BULK: 0}
    turn = take(store, queues=BULK_FIRST)
    assert turn is not None
    assert (turn.member, turn.due_key) == ("1", DUE[LIVE])
    assert sorted(turn.fields) == ["a", "b"]  # one turn for all of the order's events


def test_a_bulk_event_does_not_join_bulk_while_its_order_waits_live(store: Store) -> None:
    absorb(store, "a", lane=LIVE)
    absorb(store, "b", lane=BULK)
    assert waiting(store) == {LIVE: 1, BULK: 0}
    assert take(store, queues=[(DUE[BULK], 0.0)]) is None
    turn = take(store, queues=BULK_FIRST)
    assert turn is not None
    assert turn.due_key == DUE[LIVE] and sorted(turn.fields) == ["a", "b"]


def test_an_order_keeps_the_due_time_of_its_first_pending_event(store: Store) -> None:
    absorb(store, "a", order=2)
    first = oldest(store)
    _pause()
    absorb(store, "b", order=1)
    _pause()
    absorb(store, "c", order=2)  # order 2 already waits: since "a"
    absorb(store, "d", order=2, lane=BULK)  # and in live, where it stays
    assert oldest(store) == first
    assert waiting(store) == {LIVE: 2, BULK: 0}
    turns = [take(store), take(store)]
    assert [t.member for t in turns if t is not None] == ["2", "1"]


# due and next_due ----------------------------------------------------------------------------


def test_an_order_is_not_due_until_it_has_waited_its_hold(store: Store) -> None:
    absorb(store, "a")
    absorbed = time.monotonic()
    held = [(DUE[LIVE], 60.0)]
    assert not store.due(held)
    assert take(store, queues=held) is None
    assert waiting(store) == {LIVE: 1, BULK: 0}  # not taken, not dropped
    _wait_until(absorbed + 0.15)
    assert store.due([(DUE[LIVE], 0.1)])
    turn = take(store, queues=[(DUE[LIVE], 0.1)])
    assert turn is not None and turn.member == "1"


def test_live_orders_go_before_bulk_ones_unless_the_queues_put_bulk_first(store: Store) -> None:
    absorb(store, "a", order=1, lane=BULK)  # has waited longest, but in bulk
    _pause()
    absorb(store, "b", order=2, lane=LIVE)
    _pause()
    absorb(store, "c", order=3, lane=BULK)
    taken = [take(store) for _ in range(4)]
    assert [(t.member, t.due_key) if t else None for t in taken] == [
        ("2", DUE[LIVE]),
        ("1", DUE[BULK]),
        ("3", DUE[BULK]),
        None,
    ]
    absorb(store, "d", order=4, lane=LIVE)
    _pause()
    absorb(store, "e", order=5, lane=BULK)
    taken = [take(store, queues=BULK_FIRST) for _ in range(2)]
    assert [t.member if t else None for t in taken] == ["5", "4"]


def test_the_longest_waiting_order_of_a_lane_goes_first(store: Store) -> None:
    for order in (3, 1, 2):
        absorb(store, f"e{order}", order=order)
        _pause()
    taken = [take(store) for _ in range(3)]
    assert [t.member if t else None for t in taken] == ["3", "1", "2"]


def test_a_locked_order_is_skipped_and_the_next_due_one_taken(store: Store) -> None:
    absorb(store, "a", order=1)
    _pause()
    absorb(store, "b", order=2)
    assert store.claim(KEYS.lock + "1", "someone", ttl=60)
    turn = take(store, "me")
    assert turn is not None and turn.member == "2"
    assert take(store, "you") is None  # 1 is someone's, 2 is mine
    assert store.get(KEYS.lock + "1") == "someone"  # their lock untouched
    assert store.release(KEYS.lock + "1", "someone")
    turn = take(store, "you")
    assert turn is not None and turn.member == "1"


def test_an_order_found_with_nothing_pending_leaves_its_due_set(store: Store) -> None:
    absorb(store, "a", order=1)
    _pause()
    absorb(store, "b", order=2)
    store.delete(KEYS.pending + "1")  # as if its events were settled elsewhere
    turn = take(store)
    assert turn is not None and turn.member == "2"  # 1 was found empty and passed over
    assert waiting(store) == {LIVE: 1, BULK: 0}  # only 2 (locked) is left
    assert lock_is_free(store, 1)  # and 1 was not left locked
    assert take(store, only=1) is None


def test_a_turn_reads_events_done_values_versions_and_failures_and_removes_nothing(
    store: Store,
) -> None:
    absorb(store, "a")
    absorb(store, "b")
    store.put(KEYS.done + "a", "applied", ttl=60)  # it ended after it was absorbed
    store.hash_put(KEYS.versions + "1", {"customer_id": "v1"}, ttl=60)
    store.hash_put(KEYS.failures, {"1": "2", "7": "5"}, ttl=60)
    turn = take(store)
    assert turn == Turn(
        member="1",
        due_key=DUE[LIVE],
        fields={"a": _value("a"), "b": _value("b")},
        done={"a": "applied"},
        versions={"customer_id": "v1"},
        failures=2,
    )
    assert pending_events(store) == 2
    assert waiting(store) == {LIVE: 1, BULK: 0}
    assert store.release(KEYS.lock + "1", "me")
    again = take(store, only=1)
    assert again is not None and again.fields == turn.fields


def test_only_takes_that_order_due_or_not_unless_it_is_locked_or_waits_nowhere(
    store: Store,
) -> None:
    absorb(store, "a", order=1)
    absorb(store, "b", order=2, lane=BULK)
    held = [(DUE[LIVE], 60.0), (DUE[BULK], 60.0)]
    assert take(store, queues=held) is None
    turn = take(store, queues=held, only=2)
    assert turn is not None and (turn.member, turn.due_key) == ("2", DUE[BULK])
    assert take(store, "you", queues=held, only=2) is None  # locked now
    assert take(store, "you", queues=held, only=3) is None  # waits nowhere


# settle_turn ---------------------------------------------------------------------------------


def test_settling_deletes_the_settled_events_and_records_outcomes_and_versions(
    store: Store,
) -> None:
    for event_id in ("a", "b", "c"):
        absorb(store, event_id)
    turn = take(store)
    settle(store, turn, settled={"a": "applied", "b": "stale"}, versions={"customer_id": "va"})
    assert [store.get(KEYS.done + e) for e in "abc"] == ["applied", "stale", None]
    assert pending_events(store) == 1
    again = take(store)
    assert again is not None
    assert (again.fields, again.done, again.versions) == (
        {"c": _value("c")},
        {},
        {"customer_id": "va"},
    )
    settle(store, again, settled={"c": "applied"}, versions={"company_id": "vc"})
    assert absorb(store, "a") == "applied"  # ended: not kept again
    absorb(store, "d")
    last = take(store)
    assert last is not None and last.fields == {"d": _value("d")}
    assert last.versions == {"customer_id": "va", "company_id": "vc"}  # merged


def test_done_keys_and_versions_last_the_lifetime_settling_gives_them(store: Store) -> None:
    absorb(store, "a")
    turn = take(store)
    settle(store, turn, settled={"a": "applied"}, ttl=1.0, versions={"customer_id": "va"})
    settled_at = time.monotonic()
    assert store.get(KEYS.done + "a") == "applied"
    assert absorb(store, "a") == "applied"  # a redelivery within the window
    _wait_until(settled_at + 1.1)
    assert store.get(KEYS.done + "a") is None
    assert absorb(store, "a") is None  # the window is over: kept as new
    again = take(store)
    assert again is not None and again.versions == {}  # gone too


def test_failures_are_kept_per_order_until_a_settle_forgets_them(store: Store) -> None:
    absorb(store, "a", order=1)
    absorb(store, "b", order=2)
    turn = take(store, only=1)
    assert turn is not None and turn.failures == 0
    settle(store, turn, failures=2)  # the call failed twice in a row: nothing settled
    turn = take(store, only=1)
    assert turn is not None and turn.failures == 2 and turn.fields == {"a": _value("a")}
    other = take(store, only=2)
    assert other is not None and other.failures == 0  # another order's count is its own
    settle(store, turn, failures=0)
    turn = take(store, only=1)
    assert turn is not None and turn.failures == 0


def test_settling_deletes_clear_when_given(store: Store) -> None:
    assert not store.note_failure(
        "streak", "1", threshold=5, window=60, gate_key="g", gate_value="x"
    )
    assert store.members("streak") == ["1"]
    absorb(store, "a")
    absorb(store, "b")
    settle(store, take(store), settled={"a": "applied"})
    assert store.members("streak") == ["1"]
    settle(store, take(store), settled={"b": "applied"}, clear="streak")
    assert store.members("streak") == []


def test_a_settle_releases_the_lock_only_if_it_is_still_ours(store: Store) -> None:
    absorb(store, "a")
    mine = take(store, "me", lock_ttl=0.2)
    taken_at = time.monotonic()
    assert mine is not None
    _wait_until(taken_at + 0.3)  # my lock ran out (a stall, say) and the order went on
    theirs = take(store, "you", lock_ttl=60)
    assert theirs is not None and theirs.fields == mine.fields
    absorb(store, "b")  # arrives during their turn
    settle(store, mine, "me", {"a": "applied"})  # late
    assert store.get(KEYS.done + "a") == "applied"  # what my call did is recorded
    assert store.get(KEYS.lock + "1") == "you"  # their lock stands
    assert not store.due(LIVE_FIRST)  # and the order waits for their turn, not due at once
    settle(store, theirs, "you", {"a": "applied"})
    assert pending_events(store) == 1  # "a" counted off once
    last = take(store, "me")
    assert last is not None and last.fields == {"b": _value("b")}


def test_with_nothing_left_the_order_leaves_every_due_set(store: Store) -> None:
    absorb(store, "a", order=1, lane=LIVE)
    absorb(store, "b", order=2, lane=BULK)
    turn = take(store, only=2)
    assert turn is not None and turn.due_key == DUE[BULK]
    absorb(store, "b", order=2, lane=LIVE)  # redelivered to the live queue: moves to live
    assert waiting(store) == {LIVE: 2, BULK: 0}
    settle_all(store, turn)
    settle_all(store, take(store, only=1))
    assert waiting(store) == {LIVE: 0, BULK: 0}
    assert pending_events(store) == 0
    assert not store.due(LIVE_FIRST)
    assert lock_is_free(store, 1) and lock_is_free(store, 2)
    assert take(store, only=1) is None and take(store, only=2) is None


def test_with_events_left_the_order_is_due_again_after_due_in(store: Store) -> None:
    absorb(store, "a")
    turn = take(store)
    before = time.time()
    settle(store, turn, failures=1, due_in=30)
    after = time.time()
    assert not store.due(LIVE_FIRST)
    assert lock_is_free(store, 1)
    due_at = oldest(store)
    assert due_at is not None and before + 30 - TOLERANCE <= due_at <= after + 30 + TOLERANCE
    settle(store, take(store, only=1), failures=2, due_in=0.2)
    settled_at = time.monotonic()
    _wait_until(settled_at + 0.3)
    assert store.due(LIVE_FIRST)
    again = take(store)
    assert again is not None and again.fields == {"a": _value("a")} and again.failures == 2


def test_an_event_that_arrived_during_the_turn_makes_the_order_due_at_once(store: Store) -> None:
    absorb(store, "a", order=1)
    _pause()
    absorb(store, "x", order=2)
    turn = take(store)
    assert turn is not None and turn.member == "1"
    absorb(store, "b", order=1)
    settle(store, turn, settled={"a": "applied"})
    assert store.due(LIVE_FIRST)
    assert waiting(store) == {LIVE: 2, BULK: 0}
    # Due from the settle on: after order 2, which has waited since before the turn.
    taken = [take(store), take(store)]
    assert [t.member if t else None for t in taken] == ["2", "1"]
    assert taken[1] is not None and taken[1].fields == {"b": _value("b")}


def test_a_live_event_during_a_bulk_turn_leaves_the_order_locked_out_until_it_ends(
    store: Store,
) -> None:
    absorb(store, "a", lane=BULK)
    turn = take(store)
    assert turn is not None and turn.due_key == DUE[BULK]
    absorb(store, "b", lane=LIVE)  # the order moves to live, but its turn is not over
    assert waiting(store) == {LIVE: 1, BULK: 0}
    assert not store.due(LIVE_FIRST)  # a dispatcher would spend a rate-limit slot for nothing
    assert take(store, "you") is None
    settle(store, turn, settled={"a": "applied"})
    assert store.due(LIVE_FIRST)
    again = take(store, "you")
    assert again is not None
    assert (again.due_key, again.fields) == (DUE[LIVE], {"b": _value("b")})


def test_a_live_event_does_not_cut_short_the_wait_before_a_bulk_orders_retry(
    store: Store,
) -> None:
    absorb(store, "a", lane=BULK)
    settle(store, take(store), failures=1, due_in=30)
    absorb(store, "b", lane=LIVE)
    assert waiting(store) == {LIVE: 1, BULK: 0}
    assert not store.due(LIVE_FIRST)  # still waits out its retry's 30 s, now in live


# A holder that vanished ------------------------------------------------------------------------


def test_a_taken_order_is_not_due_while_its_lock_lasts(store: Store) -> None:
    absorb(store, "a")
    assert take(store, "me", lock_ttl=60) is not None
    absorb(store, "b")
    assert not store.due(LIVE_FIRST)
    assert take(store, "you") is None
    assert take(store, "you", only=1) is None
    assert waiting(store) == {LIVE: 1, BULK: 0}


def test_a_lock_that_runs_out_makes_the_order_due_again_after_its_lease(store: Store) -> None:
    absorb(store, "a")
    before = time.time()
    mine = take(store, "me", lock_ttl=0.3)
    after = time.time()
    taken_at = time.monotonic()
    assert mine is not None
    due_at = oldest(store)  # the lease: due again when the lock runs out
    assert due_at is not None and before + 0.3 - TOLERANCE <= due_at <= after + 0.3 + TOLERANCE
    _wait_until(taken_at + 0.4)  # the holder vanished
    assert store.due(LIVE_FIRST)
    theirs = take(store, "you")
    assert theirs is not None and theirs.fields == mine.fields


def test_sqlite_holds_retries_and_leases_end_exactly_on_the_stores_clock() -> None:
    with sqlite_clock(FrozenClock()) as clock, fresh_stores("sqlite") as (store,):
        absorb(store, "a")
        started = clock.now
        clock.advance(5)
        absorb(store, "b")
        assert oldest(store) == started  # since its first event
        held = [(DUE[LIVE], 5.01)]
        assert not store.due(held) and take(store, queues=held) is None
        clock.advance(0.02)
        assert store.due(held)
        mine = take(store, "me", queues=held, lock_ttl=75)
        assert mine is not None and oldest(store) == clock.now + 75
        clock.advance(74.99)
        assert not store.due(LIVE_FIRST) and take(store, "you") is None
        clock.advance(0.02)
        theirs = take(store, "you")
        assert theirs is not None
        settle(store, theirs, "you", failures=1, due_in=30)
        clock.advance(29.99)
        assert not store.due(LIVE_FIRST) and take(store, "me") is None
        clock.advance(0.02)
        assert take(store, "me") is not None


# backlog -----------------------------------------------------------------------------------------


def test_backlog_counts_orders_per_lane_events_and_the_longest_wait(store: Store) -> None:
    assert store.backlog(list(KEYS.due), KEYS.events) == Backlog(
        {DUE[LIVE]: 0, DUE[BULK]: 0}, 0, {DUE[LIVE]: None, DUE[BULK]: None}
    )
    before = time.time()
    absorb(store, "a", order=1)
    after = time.time()
    absorb(store, "b", order=1)
    _pause()
    absorb(store, "c", order=2, lane=BULK)
    absorb(store, "d", order=3, lane=BULK)
    found = store.backlog(list(KEYS.due), KEYS.events)
    assert found.members == {DUE[LIVE]: 1, DUE[BULK]: 2}
    assert found.fields == 4
    live, bulk = found.oldest[DUE[LIVE]], found.oldest[DUE[BULK]]
    assert live is not None and before - TOLERANCE <= live <= after + TOLERANCE
    assert bulk is not None and bulk > live
    backlog = OrderCoordinator(store, 3600, 60).backlog()
    assert backlog == found


# The rate limit --------------------------------------------------------------------------------


def test_concurrent_reservations_each_get_their_own_slot(store: Store) -> None:
    # Slots 1000 s apart: however slowly the threads run, all twenty reservations happen within
    # the first slot's interval, so the slots are exactly first, first + 1000, ... (a slot only
    # moves to "now" once "now" has passed it).
    interval = 1000.0
    waits: list[float] = []
    threads = [
        threading.Thread(
            target=lambda: waits.append(store.take_slot("pause", "slot", interval, 1e6)[1])
        )
        for _ in range(20)
    ]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended = time.time()
    # The first slot was taken between started and ended; the next free one is twenty intervals
    # after it. A lost update (two callers handed the same slot) would leave it one short.
    first = float(store.get("slot") or 0) - 20 * interval
    assert started - 0.01 <= first <= ended + 0.01
    assert sorted(round(w / interval) for w in waits) == list(range(20))


def test_taking_a_slot_honours_a_pause_and_never_reserves_one_too_far(store: Store) -> None:
    assert store.take_slot("pause", "slot", None, 5) == ("free", 0.0)
    pause_until = time.time() + 30
    store.put("pause", str(pause_until), ttl=31)
    assert store.take_slot("pause", "slot", 1.0, 5) == ("paused", pause_until)
    store.put("pause", str(time.time() - 1), ttl=5)  # over, by the caller's clock
    # Slots 200 s apart, none further than 500 s away: a stall of up to 100 s changes nothing.
    began = time.time()
    assert store.take_slot("pause", "slot", 200.0, 500)[0] == "reserved"
    assert store.take_slot("pause", "slot", 200.0, 500)[0] == "reserved"  # 200 s away
    assert store.take_slot("pause", "slot", 200.0, 500)[0] == "reserved"  # 400 s away
    state, seconds = store.take_slot("pause", "slot", 200.0, 500)
    assert state == "full"  # 600 s away: not taken
    assert 600 - (time.time() - began) - 0.01 <= seconds <= 600
    state, again = store.take_slot("pause", "slot", 200.0, 500)
    assert state == "full" and again <= seconds  # still 600 s on: nothing was taken


def test_taking_a_slot_counts_each_call_that_may_go_in_count_key(store: Store) -> None:
    def calls() -> int:
        return int(store.get("calls") or 0)

    assert store.take_slot("pause", "slot", None, 5, count_key="calls") == ("free", 0.0)
    assert calls() == 1
    for _ in range(3):  # now, 200 s and 400 s away
        assert store.take_slot("pause", "slot", 200.0, 500, count_key="calls")[0] == "reserved"
    assert calls() == 4
    assert store.take_slot("pause", "slot", 200.0, 500, count_key="calls")[0] == "full"
    assert store.take_slot("pause", "slot", None, 5)[0] == "free"  # no count_key: not counted
    assert calls() == 4
    store.put("gate", "closed")
    assert store.take_slot("pause", "slot", None, 5, "gate", "calls") == ("gated", 0.0)
    store.put("pause", str(time.time() + 30), ttl=31)
    assert store.take_slot("pause", "slot", None, 5, count_key="calls")[0] == "paused"
    assert calls() == 4  # calls that may not go are not counted


def test_redis_outage_is_store_unavailable() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        dead.get("anything")
    with pytest.raises(StoreUnavailable):
        absorb(dead, "a")


def test_each_thread_and_each_forked_child_has_its_own_connection() -> None:
    store = RedisStore(REDIS_URL)

    def connection_id() -> int:
        store.put("k", "v")  # connects this thread, if it has not yet
        return int(store._client.client_id())

    mine = connection_id()
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(connection_id()))
    thread.start()
    thread.join()
    assert other and other[0] != mine
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connection, never return into pytest
        try:
            os.write(write, str(connection_id()).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert int(os.read(read, 64)) != mine
    assert connection_id() == mine  # the parent's own is untouched
    store.close()


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10800/h", Rate(10800, 3600)), ("3/s", Rate(3, 1)), ("50/10s", Rate(50, 10)), ("0", None)],
)
def test_parse_rate(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "3", "3/x", "0/s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="10800/h"):
        parse_rate(text)


def test_sellercloud_budget_is_spaced_with_headroom() -> None:
    rate = parse_rate("10800/h")
    assert rate is not None
    assert rate.interval == pytest.approx(1 / 2.7)


def test_limiter_sleeps_for_its_slot_and_refuses_far_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store's clock stands still: four callers at the same moment.
    monkeypatch.setattr(sqlite_store, "time", SimpleNamespace(time=lambda: 1_000_000.0))
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    slept: list[float] = []
    limiter = FleetRateLimiter(store, Rate(1, 2), sleep=slept.append)  # one call per 2.2 s
    limiter.wait()  # the first slot is now: no sleep
    assert slept == []
    limiter.wait()
    assert slept == [pytest.approx(20 / 9)]
    limiter.wait()  # the slot after that is 4.4 s away: still slept
    assert slept == [pytest.approx(20 / 9), pytest.approx(40 / 9)]
    with pytest.raises(RateLimited):
        limiter.wait()  # 6.7 s away: the event should rather come back later
    assert len(slept) == 2


def test_a_pause_after_429_stops_every_caller(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    limiter = FleetRateLimiter(store, None)
    began = dt.datetime.now(dt.UTC)
    until = began + dt.timedelta(seconds=30)
    seconds = limiter.pause_fleet(until, 1.0)
    assert 30 - (dt.datetime.now(dt.UTC) - began).total_seconds() <= seconds <= 30
    other = FleetRateLimiter(store, None)
    with pytest.raises(RateLimited) as caught:
        other.wait()
    assert caught.value.reset_at is not None


# Orders: turns and per-field merging -----------------------------------------------------------


def _event(event_id: str, minute: int, order: int = 1, **changes: object) -> OrderChange:
    return load_event(
        {
            "event_id": event_id,
            "order_id": order,
            "occurred_at": f"2026-11-26T10:{minute:02d}:00Z",
            "changes": changes,
        }
    )


def test_merge_takes_the_newest_value_per_field_and_skips_stale_ones(store: Store) -> None:
    coordinator = OrderCoordinator(store, 3600, 60)
    for event_id, minute, changes in [
        ("b", 20, {"customer_id": 2}),
        ("a", 10, {"customer_id": 1, "company_id": 1}),
        ("c", 30, {"sales_rep_1": 3}),
    ]:
        assert coordinator.absorb(_event(event_id, minute, **changes), {"body": "{}"}, LIVE) is None
    turn = coordinator.next_turn("me", {LIVE: 0.0, BULK: 0.0})
    assert turn is not None and (turn.order_id, turn.lane) == (1, LIVE)
    assert [e.event_id for e in turn.events] == ["a", "b", "c"]  # oldest first
    merge = coordinator.merge(turn.events, turn.versions)
    assert merge.changes == {"customer_id": 2, "company_id": 1, "sales_rep_1": 3}
    coordinator.settle(turn, "me", "applied", merge.versions)
    assert coordinator.outcome("a") == "applied"
    assert not coordinator.due({LIVE: 0.0, BULK: 0.0})  # nothing left
    assert lock_is_free(store, 1)  # settling released the lock

    assert coordinator.absorb(_event("d", 15, customer_id=9, company_id=9), {}, BULK) is None
    turn = coordinator.next_turn("me", {LIVE: 0.0, BULK: 0.0})
    assert turn is not None and turn.lane == BULK
    late = coordinator.merge(turn.events, turn.versions)
    assert late.changes == {"company_id": 9}  # 10:15 beats 10:10 but not 10:20
    assert late.stale == [("d", "customer_id")]


def test_a_finished_event_is_not_absorbed_again_unless_replayed_after_dead_lettering(
    store: Store,
) -> None:
    coordinator = OrderCoordinator(store, 3600, 60)
    store.put("order-sync:done:a", "applied")
    store.put("order-sync:done:x", "dead_lettered:0")
    assert coordinator.absorb(_event("a", 1, customer_id=1), {}, LIVE) == "applied"
    assert coordinator.absorb(_event("x", 2, customer_id=2), {}, LIVE) == "dead_lettered"
    assert not coordinator.due({LIVE: 0.0, BULK: 0.0})
    replay = {"history": [{"replayed_at": "2026-11-26T11:00:00Z"}]}
    assert coordinator.absorb(_event("x", 2, customer_id=2), replay, LIVE) is None
    turn = coordinator.next_turn("me", {LIVE: 0.0, BULK: 0.0})
    assert turn is not None
    assert [e.event_id for e in turn.events] == ["x"]  # the replay is due; "a" never joined
    assert turn.finished == {}
    coordinator.settle(turn, "me", "dead_lettered")
    assert store.get("order-sync:done:x") == "dead_lettered:1"  # failed at its first replay


def test_a_turn_clears_events_that_ended_meanwhile_without_sending_them(store: Store) -> None:
    coordinator = OrderCoordinator(store, 3600, 60)
    coordinator.absorb(_event("a", 1, customer_id=1), {}, LIVE)
    coordinator.absorb(_event("b", 2, customer_id=2), {}, LIVE)
    store.put("order-sync:done:a", "applied")  # it ended while it still waited
    turn = coordinator.next_turn("me", {LIVE: 0.0})
    assert turn is not None
    assert [e.event_id for e in turn.events] == ["b"]
    assert turn.finished == {"a": "applied"}
    coordinator.settle(turn, "me", "applied", {"customer_id": "2026-11-26T10:02:00+00:00 b"})
    assert coordinator.backlog().fields == 0
    assert not coordinator.due({LIVE: 0.0, BULK: 0.0})
    assert coordinator.outcome("a") == "applied" and coordinator.outcome("b") == "applied"
