"""One raw message before any network call: decoding, limits, dead-letter entries."""

from __future__ import annotations

import json

import pytest

from worker.deadletter import entries
from worker.deadletter.entries import EventContext
from worker.intake import envelope as intake
from worker.sellercloud.errors import ApiUnavailable, RequestRejected

GOOD = {
    "event_id": "evt-1",
    "order_id": 5001,
    "occurred_at": "2026-11-26T10:00:00Z",
    "changes": {"customer_id": 7},
}


def rejected(env: dict) -> intake.EventRejected:
    with pytest.raises(intake.EventRejected) as caught:
        intake.parse(intake.decode(env))
    return caught.value


def test_a_good_event_decodes_and_parses() -> None:
    env = intake.envelope(json.dumps(GOOD).encode(), content_type="application/json")
    assert intake.parse(intake.decode(env)).order_id == 5001
    assert env["size"] == len(json.dumps(GOOD)) and not env["truncated"]


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"not json", "application/json", "invalid_json"),
        (b"\xff\xfe\x00", "application/json", "invalid_json"),
        (b'{"a": 1}', "application/x-python-serialize", "unsupported_content_type"),
        (b'{"a": 1}', "text/plain", "unsupported_content_type"),
        (b"[" * 150_000 + b"]" * 150_000, "application/json", "too_large"),
        (b"[" * 50_000 + b"]" * 50_000, "application/json", "invalid_json"),
        (b"[1, 2]", "application/json", "invalid_event"),
        (b'{"event_id": "x"}', None, "invalid_event"),
    ],
)
def test_bad_bodies_are_rejected_with_their_reason(
    body: bytes, content_type: str | None, reason: str
) -> None:
    assert rejected(intake.envelope(body, content_type=content_type)).reason == reason


def test_json_with_a_charset_and_vendor_types_are_accepted() -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.acme+json"):
        env = intake.envelope(json.dumps(GOOD), content_type=content_type)
        assert intake.decode(env) == GOOD


def test_an_oversized_body_is_cut_before_it_becomes_a_task() -> None:
    huge = json.dumps({**GOOD, "changes": {"x": "é" * 200_000}}).encode()
    env = intake.envelope(huge, content_type="application/json")
    assert env["truncated"] and env["size"] == len(huge)
    assert len(env["body"].encode()) <= intake.KEPT_OF_OVERSIZED + 4
    error = rejected(env)
    assert error.reason == "too_large" and str(len(huge)) in error.error


def test_a_body_that_is_not_utf8_is_kept_as_base64() -> None:
    env = intake.envelope(b"\xff\xfe", content_type="application/json")
    assert (env["body"], env["body_encoding"]) == ("//4=", "base64")


def test_invalid_event_entries_name_each_field() -> None:
    env = intake.envelope(
        json.dumps({**GOOD, "changes": {"customer_id": "7", "colour": 1}}),
        content_type="application/json",
    )
    context = EventContext()
    with pytest.raises(intake.EventRejected) as caught:
        context.payload = intake.decode(env)
        context.note_ids()
        intake.parse(context.payload)
    entry = entries.rejected_entry(env, context, caught.value, attempts=1)
    assert entry["reason"] == "invalid_event"
    assert {e["field"] for e in entry["field_errors"]} == {"changes.customer_id", "changes.colour"}
    assert (entry["event_id"], entry["order_id"]) == ("evt-1", 5001)
    assert "raw_body" not in entry  # the parsed event is kept instead


def test_not_json_entries_keep_the_raw_body() -> None:
    env = intake.envelope(b"order 5 changed", content_type="application/json")
    context = EventContext()
    with pytest.raises(intake.EventRejected) as caught:
        intake.decode(env)
    entry = entries.rejected_entry(env, context, caught.value, attempts=1)
    assert (entry["raw_body"], entry["raw_body_encoding"]) == ("order 5 changed", "utf-8")
    assert entry["event"] is None and entry["order_id"] is None


def test_api_failure_entries_carry_the_request_and_the_answer() -> None:
    context = EventContext(payload=GOOD, event_id="evt-1", order_id=5001, body={"CustomerId": 7})
    env = intake.envelope(json.dumps(GOOD), content_type="application/json")
    rejected_400 = RequestRejected("HTTP 400", status_code=400, response_body='{"Message": "no"}')
    entry = entries.api_failure_entry(env, context, rejected_400, attempts=1)
    assert entry["reason"] == "api_rejected"
    assert entry["response_body"] == {"Message": "no"}
    assert entry["request"] == {"method": "PUT", "path": "/Orders/5001", "body": {"CustomerId": 7}}
    exhausted = entries.api_failure_entry(
        env, context, ApiUnavailable("HTTP 503", status_code=503, response_body="down"), 16
    )
    assert (exhausted["reason"], exhausted["last_error_reason"]) == (
        "retries_exhausted",
        "api_unavailable",
    )
    assert exhausted["response_body"] == "down" and exhausted["attempts"] == 16
