"""The retry policy's table, decision by decision (worker/apply/retry.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.apply.retry import (
    FLEET_PAUSED,
    RETRY_REASONS,
    STORE_RETRY_SECONDS,
    STORE_UNAVAILABLE,
    DeadLetterNow,
    RetryLater,
    RetryPolicy,
)
from worker.coordination.gate import FleetPaused
from worker.coordination.store import StoreUnavailable
from worker.deadletter.entries import EventContext
from worker.deadletter.reasons import INTERNAL_ERROR, INVALID_EVENT
from worker.intake.envelope import EventRejected
from worker.sellercloud import errors as api

# The top of the jitter range, so every wait is predictable.
POLICY = RetryPolicy(max_retries=3, backoff_base=2.0, backoff_max=60.0, uniform=lambda a, b: b)
ENV = {"body": "{}", "body_encoding": "utf-8", "history": []}


def never_paused(until: dt.datetime | None, wait: float) -> float:
    raise AssertionError("the fleet must not pause for this")


class Gate:
    """The fleet's gate as the policy sees it: open until ``closed``; records what it is told."""

    def __init__(self, closes_after: int | None = None) -> None:
        self.closes_after = closes_after
        self.failures: list[int] = []
        self.refused: list[Exception] = []

    def note_failure(self, order_id: int, error: Exception) -> bool:
        self.failures.append(order_id)
        return self.closes_after is not None and len(self.failures) >= self.closes_after

    def refuse_credentials(self, error: Exception) -> bool:
        self.refused.append(error)
        return True


OPEN = Gate()


def test_a_429_from_the_api_pauses_the_whole_fleet_and_counts_nothing() -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    paused: list[tuple[dt.datetime | None, float]] = []

    def pause(until: dt.datetime | None, wait: float) -> float:
        paused.append((until, wait))
        return 30.0

    error = api.RateLimited("HTTP 429", status_code=429, reset_at=reset)
    later = POLICY.after_api_error(error, 5, 7, pause, OPEN)
    assert later == RetryLater(30.0, counted=False, reason="rate_limited", error="HTTP 429")
    assert paused == [(reset, 60.0)]


def test_our_own_full_rate_limit_waits_for_its_slot_without_pausing_the_fleet() -> None:
    reset = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=100)
    error = api.RateLimited("rate limit reached by the fleet", reset_at=reset)
    later = POLICY.after_api_error(error, 0, 7, never_paused, OPEN)
    assert later is not None and not later.counted
    assert 99 < later.countdown <= 100


@pytest.mark.parametrize(
    "error",
    [api.ApiUnavailable("HTTP 503", status_code=503), api.AuthenticationFailed("token refused")],
)
def test_transient_failures_are_counted_until_the_budget_is_spent(error: Exception) -> None:
    assert isinstance(error, api.ApiUnavailable | api.AuthenticationFailed)
    for failures in range(3):
        later = POLICY.after_api_error(error, failures, 7, never_paused, OPEN)
        assert later is not None and later.counted and later.reason == error.reason
        assert later.countdown == min(60.0, 2.0 * 2**failures)
    assert POLICY.after_api_error(error, 3, 7, never_paused, OPEN) is None


@pytest.mark.parametrize(
    "error", [api.RequestRejected("HTTP 409", status_code=409), api.OrderNotFound("HTTP 404")]
)
def test_a_refused_request_is_never_retried(error: api.RequestRejected) -> None:
    assert POLICY.after_api_error(error, 0, 7, never_paused, OPEN) is None


def test_a_transient_failure_that_closes_the_gate_hands_the_event_back_uncounted() -> None:
    gate = Gate(closes_after=1)
    error = api.ApiUnavailable("HTTP 503", status_code=503)
    decision = POLICY.after_api_error(error, 0, 7, never_paused, gate)
    assert isinstance(decision, FleetPaused) and gate.failures == [7]
    # Even with the retries used up: an outage dead-letters nothing.
    assert isinstance(POLICY.after_api_error(error, 3, 8, never_paused, gate), FleetPaused)


def test_refused_credentials_pause_the_fleet_at_once() -> None:
    gate = Gate()
    error = api.CredentialsRefused("token endpoint refused the credentials: HTTP 400")
    decision = POLICY.after_api_error(error, 0, 7, never_paused, gate)
    assert isinstance(decision, FleetPaused) and gate.refused == [error]
    assert gate.failures == []


def test_a_refused_request_says_nothing_about_an_outage() -> None:
    gate = Gate(closes_after=1)
    POLICY.after_api_error(
        api.RequestRejected("HTTP 400", status_code=400), 0, 7, never_paused, gate
    )
    assert gate.failures == []


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
        STORE_UNAVAILABLE,
        FLEET_PAUSED,
        api.RateLimited("x").reason,
        api.ApiUnavailable("x").reason,
        api.AuthenticationFailed("x").reason,
    }
    assert reasons == set(RETRY_REASONS)
