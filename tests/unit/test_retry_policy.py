"""The retry policy's table, decision by decision (worker/apply/retry.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.apply.retry import (
    ORDER_BUSY,
    RETRY_REASONS,
    STORE_RETRY_SECONDS,
    STORE_UNAVAILABLE,
    DeadLetterNow,
    RetryLater,
    RetryPolicy,
)
from worker.coordination.store import StoreUnavailable
from worker.deadletter.entries import EventContext
from worker.deadletter.reasons import INTERNAL_ERROR, INVALID_EVENT
from worker.intake.envelope import EventRejected
from worker.sellercloud.errors import (
    ApiUnavailable,
    AuthenticationFailed,
    OrderNotFound,
    RateLimited,
    RequestRejected,
)

# The top of the jitter range, so every wait is predictable.
POLICY = RetryPolicy(max_retries=3, backoff_base=2.0, backoff_max=60.0, uniform=lambda a, b: b)
ENV = {"body": "{}", "body_encoding": "utf-8", "history": []}


def never_paused(until: dt.datetime | None, wait: float) -> float:
    raise AssertionError("the fleet must not pause for this")


def test_a_429_from_the_api_pauses_the_whole_fleet_and_counts_nothing() -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    paused: list[tuple[dt.datetime | None, float]] = []

    def pause(until: dt.datetime | None, wait: float) -> float:
        paused.append((until, wait))
        return 30.0

    error = RateLimited("HTTP 429", status_code=429, reset_at=reset)
    later = POLICY.after_api_error(error, failures=5, pause_fleet=pause)
    assert later == RetryLater(30.0, counted=False, reason="rate_limited", error="HTTP 429")
    assert paused == [(reset, 60.0)]


def test_our_own_full_rate_limit_waits_for_its_slot_without_pausing_the_fleet() -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=100)
    error = RateLimited("rate limit reached by the fleet", reset_at=reset)
    later = POLICY.after_api_error(error, failures=0, pause_fleet=never_paused)
    assert later is not None and not later.counted
    assert 99 < later.countdown <= 100


@pytest.mark.parametrize(
    "error",
    [ApiUnavailable("HTTP 503", status_code=503), AuthenticationFailed("token refused")],
)
def test_transient_failures_are_counted_until_the_budget_is_spent(error: Exception) -> None:
    assert isinstance(error, ApiUnavailable | AuthenticationFailed)
    for failures in range(3):
        later = POLICY.after_api_error(error, failures, never_paused)
        assert later is not None and later.counted and later.reason == error.reason
        assert later.countdown == min(60.0, 2.0 * 2**failures)
    assert POLICY.after_api_error(error, 3, never_paused) is None


@pytest.mark.parametrize(
    "error", [RequestRejected("HTTP 409", status_code=409), OrderNotFound("HTTP 404")]
)
def test_a_refused_request_is_never_retried(error: RequestRejected) -> None:
    assert POLICY.after_api_error(error, 0, never_paused) is None


def test_another_writer_means_come_back_shortly_uncounted() -> None:
    later = POLICY.order_busy()
    assert (later.counted, later.reason) == (False, ORDER_BUSY)
    assert later.countdown == pytest.approx(2.0 / 4 + 0.2)


def test_a_store_outage_waits_uncounted() -> None:
    decision = POLICY.after_failure(StoreUnavailable("redis down"))
    assert decision == RetryLater(
        STORE_RETRY_SECONDS, counted=False, reason=STORE_UNAVAILABLE, error="redis down"
    )


def test_a_retry_decided_deeper_down_is_kept_as_it_is() -> None:
    later = RetryLater(1.5, counted=True, reason="api_unavailable")
    assert POLICY.after_failure(later) is later


def test_an_event_that_can_never_succeed_is_dead_lettered_with_its_reason() -> None:
    rejected = EventRejected(INVALID_EVENT, "order_id: missing", [{"field": "order_id"}])
    decision = POLICY.after_failure(rejected)
    assert isinstance(decision, DeadLetterNow) and decision.reason == INVALID_EVENT
    entry = decision.make_entry(ENV, EventContext(), 1)
    assert (entry["reason"], entry["error"]) == (INVALID_EVENT, "order_id: missing")
    assert entry["field_errors"] == [{"field": "order_id"}]


def test_a_bug_of_ours_is_dead_lettered_as_internal_error_with_its_traceback() -> None:
    try:
        {}["missing"]  # a real KeyError, with a traceback
    except KeyError as exc:
        decision = POLICY.after_failure(exc)
    assert isinstance(decision, DeadLetterNow) and decision.reason == INTERNAL_ERROR
    entry = decision.make_entry(ENV, EventContext(), 2)
    assert entry["error"] == "KeyError: 'missing'" and entry["attempts"] == 2
    assert "test_a_bug_of_ours" in entry["traceback"]


def test_every_retry_reason_the_policy_gives_is_declared() -> None:
    reasons = {
        POLICY.order_busy().reason,
        STORE_UNAVAILABLE,
        RateLimited("x").reason,
        ApiUnavailable("x").reason,
        AuthenticationFailed("x").reason,
    }
    assert reasons == set(RETRY_REASONS)
