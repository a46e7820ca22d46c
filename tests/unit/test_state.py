"""The shared store's operations behave the same on Redis and on the embedded SQLite file;
the fleet rate limiter and per-field merging on top of them."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from schemas.event import load_event
from worker.coordination import sqlite_store
from worker.coordination.orders import OrderCoordinator
from worker.coordination.rate import Rate, parse_rate
from worker.coordination.ratelimit import FleetRateLimiter
from worker.coordination.redis_store import RedisStore
from worker.coordination.sqlite_store import SqliteStore
from worker.coordination.store import Entry, Lock, Store, StoreUnavailable
from worker.sellercloud.errors import RateLimited

REDIS_URL = "redis://127.0.0.1:6379/12"


def test_claim_is_exclusive_until_released_or_expired(store: Store) -> None:
    assert store.claim("lock", "a", ttl=5)
    assert not store.claim("lock", "b", ttl=5)
    assert not store.release("lock", "b")  # not the owner
    assert store.release("lock", "a")
    assert store.claim("lock", "b", ttl=0.05)
    threading.Event().wait(0.1)
    assert store.claim("lock", "c", ttl=5)  # the holder's claim ran out


def _wait_until(moment: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``moment`` (never less, however noisy)."""
    while (left := moment - time.monotonic()) > 0:
        threading.Event().wait(left)


def test_only_the_owner_renews_a_lock_by_taking(store: Store) -> None:
    mine, theirs = Lock("lock", "a", ttl=60), Lock("lock", "b", ttl=60)
    for _ in range(20):
        began = time.monotonic()
        assert store.claim("lock", "a", ttl=0.2)
        claimed = time.monotonic()
        renewed = store.take_all_if_locked(mine, "h", "done:", "v")  # renewed for 60 s
        if time.monotonic() - began < 0.2:
            break  # renewed within the claim's lifetime, as this test means to
        # The machine stalled past the first lifetime before renewing: set the stage again.
        store.release("lock", "a")
    else:
        pytest.fail("never managed to renew a lock within 0.2 s of claiming it")
    assert renewed is not None
    assert store.take_all_if_locked(theirs, "h", "done:", "v") is None
    _wait_until(claimed + 0.25)  # the claim's own lifetime is certainly over
    assert not store.claim("lock", "b", ttl=5)  # renewed past its first lifetime
    assert store.release("lock", "a")
    assert store.take_all_if_locked(mine, "h", "done:", "v") is None  # gone: nothing to renew


def test_values_and_hashes(store: Store) -> None:
    assert store.get("missing") is None
    store.put("k", "v", ttl=5)
    assert store.get("k") == "v"
    store.hash_put("h", {"a": "1", "b": "2"}, ttl=5)
    store.hash_put("h", {"b": "3"}, ttl=5)
    store.hash_put("v", {"x": "9"}, ttl=5)
    store.put("done:a", "applied", ttl=5)
    lock = Lock("lock", "me", ttl=5)
    assert store.claim("lock", "me", ttl=5)
    taken = store.take_all_if_locked(lock, "h", "done:", "v")
    assert taken is not None
    assert taken.fields == {"a": "1", "b": "3"}
    assert taken.done == {"a": "applied"}
    assert taken.versions == {"x": "9"}
    again = store.take_all_if_locked(lock, "h", "done:", "v")
    assert again is not None
    assert again.fields == {}  # taken means removed
    assert again.versions == {"x": "9"}  # read, not taken


def test_adding_claims_and_takes_in_one_step(store: Store) -> None:
    lock, theirs = Lock("lock", "me", ttl=5), Lock("lock", "you", ttl=5)

    def entry(name: str, value: str) -> Entry:
        return Entry(f"done:{name}", "h", name, value, ttl=5)

    store.hash_put("v", {"x": "9"}, ttl=5)
    store.put("done:old", "applied", ttl=5)
    assert store.add_unless_done(entry("a", "1")) is None
    store.hash_put("h", {"old": "0"}, ttl=5)
    done, taken = store.add_and_claim(entry("b", "2"), lock, "done:", "v")
    assert done is None and taken is not None
    assert taken.fields == {"a": "1", "old": "0", "b": "2"}
    assert taken.done == {"old": "applied"}
    assert taken.versions == {"x": "9"}
    # The lock is held now: the next event joins the hash and takes nothing.
    assert store.add_and_claim(entry("c", "3"), theirs, "done:", "v") == (None, None)
    store.put("done:d", "dead_lettered:0", ttl=5)
    assert store.add_and_claim(entry("d", "4"), lock, "done:", "v") == (
        "dead_lettered:0",
        None,
    )  # finished: not added
    assert store.add_unless_done(entry("d", "4")) == "dead_lettered:0"
    assert store.add_unless_done(entry("d", "4"), even_if_done=True) == "dead_lettered:0"
    again = store.take_all_if_locked(lock, "h", "done:", "v")
    assert again is not None and again.fields == {"c": "3", "d": "4"}


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


def test_redis_outage_is_store_unavailable() -> None:
    dead = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreUnavailable):
        dead.get("anything")


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


def _event(event_id: str, minute: int, **changes: object) -> object:
    return load_event(
        {
            "event_id": event_id,
            "order_id": 1,
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
        assert coordinator.announce(_event(event_id, minute, **changes), {"body": "{}"}) is None  # type: ignore[arg-type]
    outcome, taken = coordinator.begin(_event("b", 20, customer_id=2), {}, "me")  # type: ignore[arg-type]
    assert outcome is None and taken is not None
    events, versions = taken
    assert [e.event_id for e in events] == ["a", "b", "c"]
    merge = coordinator.merge(events, versions)
    assert merge.changes == {"customer_id": 2, "company_id": 1, "sales_rep_1": 3}
    assert coordinator.settle(1, "me", events, "applied", merge.versions)  # nothing left
    assert coordinator.outcome("a") == "applied"
    assert store.claim("order-sync:lock:1", "next", ttl=5)  # settling released the lock
    store.release("order-sync:lock:1", "next")

    _, taken = coordinator.begin(_event("d", 15, customer_id=9, company_id=9), {}, "me")  # type: ignore[arg-type]
    assert taken is not None
    late = coordinator.merge(*taken)
    assert late.changes == {"company_id": 9}  # 10:15 beats 10:10 but not 10:20
    assert late.stale == [("d", "customer_id")]


def test_a_finished_event_is_not_added_again_unless_replayed_after_dead_lettering(
    store: Store,
) -> None:
    coordinator = OrderCoordinator(store, 3600, 60)
    store.put("order-sync:done:a", "applied")
    store.put("order-sync:done:x", "dead_lettered:0")
    assert coordinator.begin(_event("a", 1, customer_id=1), {}, "me") == ("applied", None)  # type: ignore[arg-type]
    replay = {"history": [{"replayed_at": "2026-11-26T11:00:00Z"}]}
    outcome, taken = coordinator.begin(_event("x", 2, customer_id=2), replay, "me")  # type: ignore[arg-type]
    assert outcome is None and taken is not None
    assert [e.event_id for e in taken[0]] == ["x"]  # the replay is due; "a" never joined


def test_taking_needs_the_lock_and_settling_keeps_it_while_more_is_pending(store: Store) -> None:
    coordinator = OrderCoordinator(store, 3600, 60)
    outcome, first = coordinator.begin(_event("a", 1, customer_id=1), {}, "me")  # type: ignore[arg-type]
    assert outcome is None and first is not None
    assert [e.event_id for e in first[0]] == ["a"]
    assert coordinator.begin(_event("b", 2, customer_id=2), {}, "you") == (None, None)  # type: ignore[arg-type]
    assert coordinator.take(1, "you") is None  # not the holder
    taken = coordinator.take(1, "me")
    assert taken is not None
    assert [e.event_id for e in taken[0]] == ["b"]
    assert coordinator.announce(_event("c", 3, customer_id=3), {}) is None  # type: ignore[arg-type]
    assert not coordinator.settle(1, "me", taken[0], "applied", {"customer_id": "x"})
    assert not store.claim("order-sync:lock:1", "you", ttl=5)  # still held: "c" is pending
    taken = coordinator.take(1, "me")
    assert taken is not None
    assert [e.event_id for e in taken[0]] == ["c"]
    assert taken[1] == {"customer_id": "x"}
    assert coordinator.settle(1, "me", taken[0], "dead_lettered")
    assert store.get("order-sync:done:c") == "dead_lettered:0"
    assert coordinator.take(1, "me") is None  # released


def test_settling_after_the_lock_ran_out_ends_the_round(store: Store) -> None:
    coordinator = OrderCoordinator(store, 3600, lock_ttl=0.05)
    # The next holder's lock lasts: a stall between its steps must not end it too.
    lasting = OrderCoordinator(store, 3600, lock_ttl=60)
    began = time.monotonic()
    _, taken = coordinator.begin(_event("a", 1, customer_id=1), {}, "me")  # type: ignore[arg-type]
    assert taken is not None
    _wait_until(began + 0.1)
    _, theirs = lasting.begin(_event("b", 2, customer_id=2), {}, "you")  # type: ignore[arg-type]
    assert theirs is not None and [e.event_id for e in theirs[0]] == ["b"]
    assert coordinator.settle(1, "me", taken[0], "applied", {})  # "b" is the new holder's
    assert store.get("order-sync:done:a") == "applied"
    assert lasting.take(1, "you") is not None
