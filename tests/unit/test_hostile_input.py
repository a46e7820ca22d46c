"""Whatever arrives, decoding and validation either accept it or reject it with a reason;
nothing else escapes, and TLS verification stays on whatever the environment says."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
import requests
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Producer

from schemas.event import ADDRESS_FIELDS
from worker.apply.runtime import Runtime
from worker.apply.sync import absorb_event
from worker.broker.topology import EVENTS_QUEUE
from worker.cli.demo import ADDRESS as DEMO_ADDRESS
from worker.coordination.orders import LIVE
from worker.deadletter.entries import EventContext
from worker.intake import envelope as pipeline
from worker.sellercloud import SellercloudClient

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5)
    ),
    max_leaves=30,
)
CONTRACT_KEYS = ["event_id", "order_id", "occurred_at", "changes"]
CHANGE_KEYS = [
    "customer_id",
    "CustomerId",
    "order_source",
    "currency_code",
    "shipping_address",
    "disable_inventory_count",
    "sales_rep_1",
]


def outcome(body: bytes | str, content_type: str | None = "application/json") -> str:
    env = pipeline.envelope(body, content_type=content_type)
    try:
        pipeline.parse(pipeline.decode(env))
    except pipeline.EventRejected as rejected:
        assert rejected.reason in {
            "invalid_json",
            "invalid_event",
            "too_large",
            "unsupported_content_type",
        }
        assert rejected.error  # always says why
        return rejected.reason
    return "ok"


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_value_is_accepted_or_rejected_with_a_reason(value: Any) -> None:
    outcome(json.dumps(value))


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "event_id": json_values,
            "order_id": st.integers() | json_values,
            "occurred_at": st.sampled_from(["2026-11-26T10:00:00Z", "2026-11-26", "x"])
            | json_values,
            "changes": st.dictionaries(st.sampled_from(CHANGE_KEYS), json_values, max_size=4)
            | json_values,
        },
    )
)
def test_near_miss_events_never_escape_validation(event: dict[str, Any]) -> None:
    result = outcome(json.dumps(event))
    if result == "ok":
        assert set(event) == set(CONTRACT_KEYS)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([None, "application/json", "text/plain", ""]))
def test_any_bytes_with_any_content_type(body: bytes, content_type: str | None) -> None:
    outcome(body, content_type)


# The demo's address, in Sellercloud's spelling (an upstream may publish either).
ADDRESS = {
    spec.pascal: DEMO_ADDRESS[spec.snake] for spec in ADDRESS_FIELDS if spec.snake in DEMO_ADDRESS
}
TEXT_FIELDS = [spec.pascal for spec in ADDRESS_FIELDS if spec.snake not in ("country", "state")]
CONTROL_CHARACTERS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
CONTROL_ERROR = "Must not contain control characters (such as NUL, tab or newline)."


class _NoRuntime:
    """Whatever an event reaches in the runtime (store, lock, rate limiter, Sellercloud
    client) fails the test: an invalid event must be refused before any of them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"an invalid event reached the runtime's {name}")


def rejection(payload: dict[str, Any]) -> pipeline.EventRejected:
    """What the task makes of an event, up to where it would touch the API."""
    body = json.dumps(payload)
    try:
        with pytest.raises(pipeline.EventRejected) as rejected:
            absorb_event(
                cast(Runtime, _NoRuntime()),
                pipeline.envelope(body, content_type="application/json"),
                None,
                EventContext(),
                LIVE,
            )
    finally:
        structlog.contextvars.clear_contextvars()
    return rejected.value


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(TEXT_FIELDS),
    st.text(max_size=20),
    st.sampled_from(CONTROL_CHARACTERS),
    st.text(max_size=20),
)
def test_a_control_character_in_any_text_is_refused_by_field_before_any_api_call(
    field: str, before: str, control: str, after: str
) -> None:
    address = {**ADDRESS, field: f"{before}{control}{after}"}
    event = {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"ShippingAddress": address},
    }
    rejected = rejection(event)
    assert rejected.reason == "invalid_event"
    assert {"field": f"changes.ShippingAddress.{field}", "message": CONTROL_ERROR} in (
        rejected.field_errors
    )


@pytest.mark.parametrize(
    ("top", "field"),
    [
        ({"event_id": "evt\x00-1"}, "event_id"),
        ({"occurred_at": "2026-11-26\x0010:00:00Z"}, "occurred_at"),
        ({"changes": {"currency_code": "USD\x00"}}, "changes.currency_code"),
        (
            {"changes": {"ShippingAddress": {**ADDRESS, "Country": "U\x00"}}},
            "changes.ShippingAddress.Country",
        ),
    ],
)
def test_nul_anywhere_else_is_refused_too(top: dict[str, Any], field: str) -> None:
    event = {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": 7},
        **top,
    }
    rejected = rejection(event)
    assert rejected.reason == "invalid_event"
    assert {problem["field"] for problem in rejected.field_errors} == {field}


def test_a_valid_event_does_reach_the_runtime() -> None:
    """The check above means something: an event that passes goes on to the runtime."""
    event = {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"ShippingAddress": ADDRESS},
    }
    with pytest.raises(AssertionError, match="reached the runtime"):
        rejection(event)


def test_deep_nesting_and_huge_strings() -> None:
    assert outcome("[" * 100_000 + "]" * 100_000) in {"invalid_json", "too_large"}
    huge = json.dumps({"event_id": "x" * 200_000, "order_id": 1})
    assert outcome(huge) == "invalid_event"
    assert outcome(json.dumps({"event_id": "e", "changes": {"customer_id": 10**400}})) == (
        "invalid_event"
    )


def test_pickle_is_never_unpickled() -> None:
    import pickle

    body = pickle.dumps({"event_id": "x"})
    assert outcome(body, "application/x-python-serialize") == "unsupported_content_type"


def test_tls_verification_stays_on_whatever_the_environment_says(monkeypatch: Any) -> None:
    for name in ("CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(name, "")
    client = SellercloudClient("https://tt.api.sellercloud.com/rest/api", "u", "p", timeout=5)
    assert client.session.verify is True
    merged = client.session.merge_environment_settings(
        "https://tt.api.sellercloud.com/rest/api/token", {}, None, None, None
    )
    assert merged["verify"] is True
    assert isinstance(client.session, requests.Session)


def test_a_ca_bundle_and_proxy_from_the_environment_still_apply(monkeypatch: Any) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/company-ca.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "")
    client = SellercloudClient("https://tt.api.sellercloud.com/rest/api", "u", "p", timeout=5)
    assert client.session.verify == "/etc/ssl/company-ca.pem"  # a bundle, still verifying
    assert client.session.proxies["https"] == "http://proxy.internal:3128"


def test_a_deeply_nested_replay_header_is_no_history() -> None:
    from worker.deadletter.entries import HISTORY_HEADER, replay_history

    assert replay_history({HISTORY_HEADER: "[" * 100_000 + "]" * 100_000}) == []
    assert replay_history({HISTORY_HEADER: "not json"}) == []


def test_an_event_that_cannot_be_forwarded_goes_back_to_its_queue(monkeypatch: Any) -> None:
    from kombu import Connection

    from worker.intake.consumer import EventConsumerStep

    with Connection("memory://") as connection:
        queue = EVENTS_QUEUE(connection.default_channel)
        queue.declare()
        Producer(connection.default_channel).publish(
            {"event_id": "e"}, exchange=EVENTS_QUEUE.exchange, routing_key="order.changed"
        )
        message = queue.get(no_ack=False)
        assert message is not None
        step = EventConsumerStep(parent=None)

        def broken(_lane: str, _message: Any) -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(step, "forward", broken)
        step.forward_or_give_back(LIVE, message)
        again = queue.get(no_ack=False)
        assert again is not None and again.body == message.body  # back in the queue
        step.announcers.shutdown()
