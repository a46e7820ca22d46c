"""The retry backoff, as properties: exponential with full jitter, so every wait lies in
``[0, min(backoff_max, base * 2**failures)]`` and the whole of that range is used."""

from __future__ import annotations

import random
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.apply.retry import RetryPolicy
from worker.sellercloud.errors import ApiUnavailable

# Whatever the settings allow (ORDER_SYNC_RETRY_BACKOFF and _MAX are at least 0.001).
bases = st.floats(0.001, 1e4, allow_nan=False, allow_infinity=False)
caps = st.floats(0.001, 1e6, allow_nan=False, allow_infinity=False)
# Any number of failures ORDER_SYNC_MAX_RETRIES allows (it has no upper bound).
failure_counts = st.integers(0, 5000)


class _OpenGate:
    """A fleet whose gate never closes: these tests are about one event's own retries."""

    def note_failure(self, order_id: int, error: Exception) -> bool:
        return False

    def refuse_credentials(self, error: Exception) -> bool:
        return False


OPEN_GATE = _OpenGate()


def ceiling(base: float, cap: float, failures: int) -> float:
    """``min(cap, base * 2**failures)``, computed exactly (no overflow however many failures)."""
    exact = Fraction(base) * 2**failures
    return cap if exact >= Fraction(cap) else float(exact)


@settings(max_examples=300, deadline=None)
@given(failures=failure_counts, base=bases, cap=caps, share=st.floats(0, 1))
def test_the_wait_is_a_draw_from_zero_to_the_capped_exponential(
    failures: int, base: float, cap: float, share: float
) -> None:
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return low + (high - low) * share

    wait = RetryPolicy(15, base, cap, uniform=uniform).backoff(failures)
    top = ceiling(base, cap, failures)
    assert draws == [(0, top)]  # one draw, over the whole range
    assert wait == top * share  # the draw is the wait: nothing added, nothing clamped
    assert 0 <= wait <= top <= cap


@settings(max_examples=100, deadline=None)
@given(failures=failure_counts, base=bases, cap=caps)
def test_both_ends_of_the_range_are_reachable(failures: int, base: float, cap: float) -> None:
    top = ceiling(base, cap, failures)
    lowest = RetryPolicy(15, base, cap, uniform=lambda low, high: low).backoff(failures)
    highest = RetryPolicy(15, base, cap, uniform=lambda low, high: high).backoff(failures)
    assert (lowest, highest) == (0, top)


@settings(max_examples=50, deadline=None)
@given(failures=st.integers(0, 40), base=bases, cap=caps, seed=st.integers(0, 2**32))
def test_real_draws_are_jittered_over_the_whole_range(
    failures: int, base: float, cap: float, seed: int
) -> None:
    policy = RetryPolicy(15, base, cap, uniform=random.Random(seed).uniform)
    top = ceiling(base, cap, failures)
    waits = [policy.backoff(failures) for _ in range(200)]
    assert all(0 <= wait <= top for wait in waits)
    assert len(set(waits)) > 150  # not a constant, nor a handful of values
    # Full jitter: the low and the high quarter of the range are both used (a miss has odds of
    # about 2 * 0.75**200, and the seeded draws make any outcome repeatable).
    assert min(waits) < top / 4 and max(waits) > top * 3 / 4


@settings(max_examples=100, deadline=None)
@given(
    failures=st.integers(0, 60),
    base=bases,
    cap=caps,
    retries=st.integers(0, 60),
    share=st.floats(0, 1),
)
def test_the_policy_waits_within_the_bounds(
    failures: int, base: float, cap: float, retries: int, share: float
) -> None:
    policy = RetryPolicy(retries, base, cap, uniform=lambda low, high: low + (high - low) * share)
    later = policy.after_api_error(ApiUnavailable("502"), failures, 7, lambda *_: 0.0, OPEN_GATE)
    if failures >= retries:
        assert later is None  # retries used up: dead-letter
    else:
        assert later is not None and later.counted
        assert 0 <= later.countdown <= ceiling(base, cap, failures)


def test_a_very_long_run_of_failures_still_waits_at_most_the_maximum() -> None:
    policy = RetryPolicy(2000, 2.0, 600.0, uniform=lambda low, high: high)
    assert policy.backoff(1024) == 600.0
    later = policy.after_api_error(ApiUnavailable("502"), 1500, 7, lambda *_: 0.0, OPEN_GATE)
    assert later is not None and later.countdown == 600.0
