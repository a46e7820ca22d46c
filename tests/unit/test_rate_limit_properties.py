"""The fleet's rate limit, as a property: whatever the rate, however calls are spread in time and
however many limiters (one per process of the fleet) share the store, no window of the rate's
length ever holds more reserved calls than the rate allows.

A call happens at the slot it reserved: the store's "now" plus the wait the limiter sleeps. On
SQLite the store's clock is frozen and moved by the test, so slots are known exactly; on Redis
the slot time comes from the server's clock, so it is read back from the slot key (the next
free slot, one interval after the one just reserved) after each call.
"""

from __future__ import annotations

import itertools
import threading
import time

import pytest
import redis
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.unit.shared_stores import BACKENDS, REDIS_URL, FrozenClock, fresh_stores, sqlite_clock
from worker.coordination.rate import Rate
from worker.coordination.ratelimit import LONGEST_SLEEP, SLOT_KEY, FleetRateLimiter
from worker.sellercloud.errors import RateLimited


def assert_no_window_holds_more_than_the_limit(
    slots: list[float], rate: Rate, uncertainty: float = 0.0
) -> None:
    """No ``rate.per_seconds`` window holds more than ``rate.calls`` slots, and (the mechanism)
    consecutive slots are at least one interval apart; each slot may be off by up to
    ``uncertainty``, which shortens the windows and the interval checked by as much."""
    slots = sorted(slots)
    for i, start in enumerate(slots):
        inside = [s for s in slots[i:] if s < start + rate.per_seconds - uncertainty]
        assert len(inside) <= rate.calls, (
            f"{len(inside)} calls within {rate.per_seconds:g} s from {start}: {inside}"
        )
    for earlier, later in itertools.pairwise(slots):
        assert later - earlier >= rate.interval * (1 - 1e-9) - uncertainty


class Recorder:
    """A limiter's ``sleep``: remembers the wait instead of sleeping through it."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def wait(limiter: FleetRateLimiter, recorder: Recorder) -> float | None:
    """One call's ``wait()``: the seconds it slept (0 when none), None when refused."""
    before = len(recorder.waits)
    try:
        limiter.wait()
    except RateLimited:
        return None
    return recorder.waits[-1] if len(recorder.waits) > before else 0.0


# Rates whose windows a burst within LONGEST_SLEEP can fill, so an extra call would show, and
# whose bursts reach LONGEST_SLEEP within a few dozen calls.
rates = st.builds(Rate, st.integers(1, 10), st.sampled_from([0.5, 1.0, 2.0, 3.0, 4.0]))


# Gaps between calls, in intervals of the rate: mostly none (a burst), some shorter than an
# interval, some longer (the next call is due at once).
gaps = st.sampled_from([0.0, 0.0, 0.0, 0.0, 0.1, 0.5, 0.9, 1.0, 1.5, 4.0])


@settings(max_examples=60, deadline=None)
@given(
    rate=rates,
    calls=st.lists(st.tuples(st.integers(0, 2), gaps), min_size=10, max_size=60),
)
def test_sqlite_no_window_ever_holds_more_calls_than_the_limit(
    rate: Rate, calls: list[tuple[int, float]]
) -> None:
    # Three limiters (three processes), each on its own connection to one store; between
    # calls the clock moves on by a drawn gap.
    with sqlite_clock(FrozenClock()) as clock, fresh_stores("sqlite", 3) as stores:
        recorders = [Recorder() for _ in stores]
        limiters = [
            FleetRateLimiter(s, rate, sleep=r) for s, r in zip(stores, recorders, strict=True)
        ]
        slots: list[float] = []
        for who, gap in calls:
            clock.advance(gap * rate.interval)
            waited = wait(limiters[who], recorders[who])
            next_free = float(stores[who].get(SLOT_KEY) or 0)
            if waited is None:
                # Refused only when the next slot is too far to sleep for.
                assert next_free - clock.now > LONGEST_SLEEP
                event("refused")
                continue
            event("waited" if waited else "at once")
            assert 0 <= waited <= LONGEST_SLEEP
            slots.append(clock.now + waited)
            assert next_free == pytest.approx(slots[-1] + rate.interval)
        assert_no_window_holds_more_than_the_limit(slots, rate)


# Redis keeps the next slot as Lua's tostring() writes it: 14 significant digits, so a UNIX time
# to the nearest 0.1 ms. Each slot may be off by half of that; the 10% headroom absorbs it for
# any interval well above a millisecond.
REDIS_QUANTUM = 1e-4


def _server_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


@settings(max_examples=25, deadline=None)
@given(
    # Short windows, so the real time between calls matters: intervals from 4.6 ms up.
    rate=st.builds(Rate, st.integers(1, 12), st.sampled_from([0.05, 0.2, 1.0])),
    calls=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.0, 0.0, 0.001, 0.003, 0.01])),
        min_size=1,
        max_size=40,
    ),
)
def test_redis_no_window_ever_holds_more_calls_than_the_limit(
    rate: Rate, calls: list[tuple[int, float]]
) -> None:
    # The slot's time comes from the server's clock: each call's "now" is bracketed by asking
    # the server its time just before and just after the call. A slot is then known to within
    # that bracket, and the check allows exactly that much (a slow machine loosens the check,
    # it never fails it).
    clock = redis.Redis.from_url(REDIS_URL)
    with fresh_stores("redis", 3) as stores:
        recorders = [Recorder() for _ in stores]
        limiters = [
            FleetRateLimiter(s, rate, sleep=r) for s, r in zip(stores, recorders, strict=True)
        ]
        slots: list[float] = []
        spread = 0.0
        for who, gap in calls:
            if gap:
                time.sleep(gap)
            before = _server_time(clock)
            waited = wait(limiters[who], recorders[who])
            spread = max(spread, _server_time(clock) - before)
            if waited is None:
                # Refused only when the next slot is too far to sleep for.
                assert slots and max(slots) + rate.interval + spread + REDIS_QUANTUM > (
                    before + LONGEST_SLEEP
                )
                event("refused")
                continue
            assert 0 <= waited <= LONGEST_SLEEP
            event("waited" if waited else "at once")
            slots.append(before + waited)  # the earliest the slot can be
    clock.close()
    assert_no_window_holds_more_than_the_limit(slots, rate, spread + REDIS_QUANTUM)


@pytest.mark.parametrize("backend", BACKENDS)
def test_limiters_racing_in_threads_never_exceed_the_limit(backend: str) -> None:
    """Four processes' limiters call at once, five times each: 20 calls in a burst at 3/s."""
    rate = Rate(3, 1.0)  # a slot every 0.37 s: 14 fit within LONGEST_SLEEP, the rest are refused
    clock = FrozenClock()
    with sqlite_clock(clock), fresh_stores(backend, 4) as stores:
        recorders = [Recorder() for _ in stores]
        limiters = [
            FleetRateLimiter(s, rate, sleep=r) for s, r in zip(stores, recorders, strict=True)
        ]
        waits: list[float | None] = []
        start = threading.Barrier(len(limiters))

        def calls(limiter: FleetRateLimiter, recorder: Recorder) -> None:
            start.wait()
            for _ in range(5):
                waits.append(wait(limiter, recorder))

        threads = [
            threading.Thread(target=calls, args=pair)
            for pair in zip(limiters, recorders, strict=True)
        ]
        began = time.time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.time() - began
    # A slot is its call's "now" plus its wait. On SQLite "now" stood still: the waits are the
    # slots, exactly. On Redis each "now" lies within the burst: the waits are the slots, give or
    # take how long the burst took (and as many more slots as that time freed may be taken).
    taken = [w for w in waits if w is not None]
    uncertainty = 0.0 if backend == "sqlite" else took + REDIS_QUANTUM
    fitting = int(LONGEST_SLEEP / rate.interval) + 1  # 14
    assert fitting <= len(taken) <= fitting + uncertainty / rate.interval
    assert_no_window_holds_more_than_the_limit(taken, rate, uncertainty)
