"""The core pipeline end to end on RabbitMQ: real workers, the simulator over HTTP."""

from __future__ import annotations

import json

import pytest

from tests.support import Pipeline, make_event
from worker.cli.demo import ADDRESS

pytestmark = pytest.mark.integration


def test_an_event_is_applied_with_exactly_the_fields_that_changed(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker()
    pipeline.publish(
        make_event(5001, customer_id=7, order_source="Amazon", shipping_address=ADDRESS)
    )
    pipeline.wait_applied(5001)
    put = next(r for r in pipeline.state.requests() if r["order_id"] == 5001)
    assert put["body"] == {
        "CustomerId": 7,
        "OrderSource": 4,
        "ShippingAddress": {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "AddressLine1": "12 Analytical Row",
            "City": "Buffalo",
            "ZipCode": "14201",
            "Country": "US",
            "State": "NY",
        },
    }
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0  # the broker's count: bodies of any kind


def test_server_errors_and_dropped_connections_are_retried_then_applied(
    pipeline: Pipeline,
) -> None:
    pipeline.state.script_order(5002, [500, 503, "drop", 502])
    pipeline.start_worker()
    pipeline.publish(make_event(5002))
    pipeline.wait_applied(5002)
    assert pipeline.statuses(5002) == [500, 503, None, 502, 200]
    retries = [r for r in pipeline.log_records() if r["event"] == "event retry scheduled"]
    assert [r["attempt"] for r in retries] == [1, 2, 3, 4]
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0  # the broker's count: bodies of any kind


def test_a_slow_api_times_out_and_is_retried(pipeline: Pipeline) -> None:
    pipeline.env_overrides["ORDER_SYNC_HTTP_TIMEOUT"] = "0.5"
    pipeline.state.script_order(5003, ["slow:1500"])
    pipeline.start_worker()
    pipeline.publish(make_event(5003))
    pipeline.wait_applied(5003)
    retry = next(r for r in pipeline.log_records() if r["event"] == "event retry scheduled")
    assert "timed out" in retry["error"]


def test_retries_run_out_into_the_dead_letter_queue(pipeline: Pipeline) -> None:
    pipeline.env_overrides["ORDER_SYNC_MAX_RETRIES"] = "2"
    pipeline.state.script_order(5004, [500] * 10)
    pipeline.start_worker()
    event = make_event(5004)
    pipeline.publish(event)
    [entry] = pipeline.wait_dead_letters(1)
    assert entry["reason"] == "retries_exhausted"
    assert entry["last_error_reason"] == "api_unavailable"
    assert entry["attempts"] == 3
    assert entry["status_code"] == 500
    assert entry["event"] == event
    assert entry["request"]["body"] == {"CustomerId": 4}
    assert pipeline.statuses(5004) == [500, 500, 500]


def test_a_400_is_dead_lettered_at_once_with_status_and_body(pipeline: Pipeline) -> None:
    pipeline.state.script_order(5005, [400])
    pipeline.start_worker()
    event = make_event(5005, customer_id=9)
    pipeline.publish(event)
    [entry] = pipeline.wait_dead_letters(1)
    assert entry["reason"] == "api_rejected"
    assert entry["status_code"] == 400
    assert isinstance(entry["response_body"], dict)
    assert "ModelState" in entry["response_body"]
    assert entry["order_id"] == 5005
    assert entry["event_id"] == event["event_id"]
    assert entry["attempts"] == 1
    assert entry["request"] == {"method": "PUT", "path": "/Orders/5005", "body": {"CustomerId": 9}}
    for key in ("id", "error", "dead_lettered_at", "first_received_at", "turn_id", "worker"):
        assert entry[key], key
    assert pipeline.statuses(5005) == [400]


def test_an_unknown_order_is_dead_lettered_as_not_found(pipeline: Pipeline) -> None:
    pipeline.state.add_missing([5006])
    pipeline.start_worker()
    pipeline.publish(make_event(5006))
    [entry] = pipeline.wait_dead_letters(1)
    assert (entry["reason"], entry["status_code"]) == ("order_not_found", 404)


def test_bad_input_is_dead_lettered_with_its_reason_and_never_blocks_the_worker(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker()
    invalid = make_event(5007, shipping_address={**ADDRESS, "state": None}, customer_id=True)
    pipeline.publish_raw(__import__("json").dumps(invalid))
    pipeline.publish_raw("order 5008 changed!")
    pipeline.publish_raw(b"\xff\xfe not utf-8", content_type="application/json")
    pipeline.publish_raw('{"a": 1}', content_type="application/x-python-serialize")
    pipeline.publish_raw("[1, 2, 3]")
    pipeline.publish(make_event(5009))  # a good event after the bad ones still flows
    entries = pipeline.wait_dead_letters(5)
    pipeline.wait_applied(5009)
    by_reason: dict[str, list[dict]] = {}
    for entry in entries:
        by_reason.setdefault(entry["reason"], []).append(entry)
    assert sorted(by_reason) == ["invalid_event", "invalid_json", "unsupported_content_type"]

    invalid_events = sorted(by_reason["invalid_event"], key=lambda e: str(e["event"]))
    event_entry = next(e for e in invalid_events if isinstance(e["event"], dict))
    fields = {error["field"] for error in event_entry["field_errors"]}
    assert fields == {"changes.customer_id", "changes.shipping_address.state"}
    assert event_entry["order_id"] == 5007
    assert event_entry["event"] == invalid
    assert any(e["event"] == [1, 2, 3] for e in invalid_events)

    not_json = by_reason["invalid_json"]
    assert {e["raw_body_encoding"] for e in not_json} == {"utf-8", "base64"}
    assert any(e["raw_body"] == "order 5008 changed!" for e in not_json)
    assert by_reason["unsupported_content_type"][0]["raw_body"] == '{"a": 1}'


def test_an_expired_token_is_replaced_and_the_call_repeated(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    pipeline.publish(make_event(5010))
    pipeline.wait_applied(5010)
    pipeline.state.expire_tokens()
    pipeline.publish(make_event(5011))
    pipeline.wait_applied(5011)
    assert pipeline.statuses(5011) == [401, 200]
    assert pipeline.state.token_requests == 2
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0  # the broker's count: bodies of any kind


def test_token_endpoint_trouble_is_retried(pipeline: Pipeline) -> None:
    pipeline.state.script_token([503, "drop"])
    pipeline.start_worker()
    pipeline.publish(make_event(5012))
    pipeline.wait_applied(5012)
    assert pipeline.state.token_requests == 3


def test_events_published_before_any_worker_ran_are_kept(pipeline: Pipeline) -> None:
    pipeline.publish(*(make_event(6000 + i) for i in range(5)))
    pipeline.start_worker()
    pipeline.wait_applied(*(6000 + i for i in range(5)))


def test_an_oversized_message_is_dead_lettered_with_its_start_kept(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker()
    huge = __import__("json").dumps(make_event(5013, customer_id=1) | {"pad": "x" * 1_000_000})
    pipeline.publish_raw(huge)
    pipeline.publish(make_event(5014))
    [entry] = pipeline.wait_dead_letters(1)
    pipeline.wait_applied(5014)
    assert entry["reason"] == "too_large"
    assert str(len(huge)) in entry["error"]
    assert huge.startswith(entry["raw_body"]) and len(entry["raw_body"]) == 4096


def test_wrong_credentials_pause_the_fleet_and_never_leak(pipeline: Pipeline) -> None:
    """Refused credentials pause the fleet (no dead letter for a configuration error), and
    neither password shows in the logs or in what operators read of the pause."""
    import subprocess
    import sys

    from tests.support import PASSWORD, wait_for

    wrong = "Wr0ng-but-still-secret-9c1d"
    pipeline.env_overrides.update(SELLERCLOUD_PASSWORD=wrong, ORDER_SYNC_MAX_RETRIES="1")
    pipeline.start_worker()
    pipeline.publish(make_event(5020))

    def status() -> str:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "status", "--json"],
            env=pipeline.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout

    shown = wait_for(
        lambda: (out := status()) and '"calls": "paused: credentials"' in out and out,
        30,
        "the fleet to pause for the refused credentials",
    )
    assert (
        "invalid_grant" in json.loads(shown)["fleet"]["paused_last_error"]
        or "HTTP 400" in (json.loads(shown)["fleet"]["paused_last_error"])
    )
    assert pipeline.dead_letter_count() == 0
    everything = shown + "\n".join(pipeline.log_lines())
    assert wrong not in everything
    assert PASSWORD not in everything
