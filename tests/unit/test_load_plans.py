"""Load plans give exactly what the schema gives: the same data, in the same order, or the
schema's own errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from schemas.event import (
    ADDRESS_FIELDS,
    CHANGE_FIELDS,
    OrderChange,
    OrderChangeEventSchema,
    _plan_for,
    _shape,
    load_event,
)
from schemas.plans import Unplanned
from worker.cli.demo import ADDRESS

FULL_SCHEMA = OrderChangeEventSchema()

odd_values: st.SearchStrategy[Any] = st.sampled_from(
    [None, True, 0, -1, 2**31, 1.5, "", " ", "x" * 501, "Amazon", "US", "us", "ny", [], {}]
)
address_values = st.one_of(
    st.sampled_from(["Ada", "1 Main St", "NY", "ON", "CA", "US", "DE", "12345"]), odd_values
)  # for a required field, drawn rarely: many are wrong for it


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from([False] * 19 + [True]).flatmap(lambda odd: odd_values if odd else good)


change_values: dict[str, st.SearchStrategy[Any]] = {
    "company_id": mostly(st.integers(min_value=1, max_value=99)),
    "customer_id": mostly(st.integers(min_value=1, max_value=99)),
    "order_source": mostly(st.sampled_from(["Amazon", "eBayOrder", "Website"])),
    "order_sub_type": mostly(st.sampled_from(["Sample", "eBayGuaranteedDelivery"])),
    "sales_rep_1": mostly(st.integers(min_value=0, max_value=9)),
    "currency_code": mostly(st.sampled_from(["USD", "EUR", "CAD"])),
    "disable_inventory_count": mostly(st.booleans()),
}


def rarely(draw: st.DrawFn, one_in: int = 25) -> bool:
    """Faults are rare, so that many whole events are valid and the plan is exercised."""
    return bool(draw(st.sampled_from([False] * (one_in - 1) + [True])))


def spelled(spec: Any, pascal: bool) -> str:
    return str(spec.pascal if pascal else spec.snake)


@st.composite
def addresses(draw: st.DrawFn) -> Any:
    if rarely(draw):
        return draw(odd_values)
    address: dict[str, Any] = {}
    for spec in ADDRESS_FIELDS:
        good = ADDRESS.get(spec.snake)
        if good is None and draw(st.booleans()):
            continue  # optional fields come and go
        if good is not None and rarely(draw, 50):
            continue  # a required field left out
        pascal = draw(st.booleans())
        if good is None:
            value = draw(mostly(st.sampled_from(["Suite 3", "555-0100", "Erie"])))
        else:
            value = draw(address_values) if rarely(draw, 50) else good
        address[spelled(spec, pascal)] = value
        if rarely(draw, 100):
            address[spelled(spec, not pascal)] = value  # both spellings
    if rarely(draw, 50):
        address["unknown_field"] = "x"
    return address


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for spec in CHANGE_FIELDS:
        if draw(st.booleans()):
            continue
        pascal = draw(st.booleans())
        if spec.snake.endswith("_address"):
            value = draw(addresses())
        else:
            value = draw(change_values[spec.snake])
        changes[spelled(spec, pascal)] = value
        if rarely(draw, 100):
            changes[spelled(spec, not pascal)] = value
    if rarely(draw, 50):
        changes["Unknown"] = 1
    event: dict[str, Any] = {
        "event_id": "evt-1" if not rarely(draw) else draw(st.sampled_from(["", " ", None, 7])),
        "order_id": 5001 if not rarely(draw) else draw(st.sampled_from([0, True, "5001", 2**31])),
        "occurred_at": "2026-11-26T10:00:00Z"
        if not rarely(draw)
        else draw(st.sampled_from(["2026-11-26T10:00:00", "x", None])),
        "changes": draw(odd_values) if rarely(draw, 50) else changes,
    }
    for key in list(event):
        if rarely(draw, 100):
            del event[key]
    if rarely(draw, 50):
        event["extra"] = 1
    return event


def plan_result(event: dict[str, Any]) -> OrderChange | None:
    plan = _plan_for(_shape(event))
    if plan is None:
        return None
    try:
        return plan(event)
    except Unplanned:
        return None


@settings(max_examples=400)
@given(events())
def test_a_plan_loads_what_the_schema_loads_or_leaves_the_event_to_it(
    event: dict[str, Any],
) -> None:
    try:
        expected = FULL_SCHEMA.load(event)
    except ValidationError as refused:
        assert plan_result(event) is None
        with pytest.raises(ValidationError) as caught:
            load_event(event)
        assert caught.value.messages == refused.messages
        return
    loaded = load_event(event)
    assert loaded == expected
    assert list(loaded.changes) == list(expected.changes)  # the PUT body's order too
    for name, value in loaded.changes.items():
        if isinstance(value, dict):
            assert list(value) == list(expected.changes[name])


def test_well_formed_events_take_the_plan_in_either_spelling() -> None:
    snake = {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": 7, "currency_code": "USD", "shipping_address": ADDRESS},
    }
    pascal = {
        **snake,
        "changes": {
            "CustomerId": 7,
            "CurrencyCode": "USD",
            "ShippingAddress": {
                spec.pascal: ADDRESS[spec.snake] for spec in ADDRESS_FIELDS if spec.snake in ADDRESS
            },
        },
    }
    for event in (snake, pascal):
        planned = plan_result(event)
        assert planned is not None
        assert planned == FULL_SCHEMA.load(event)


def test_a_shape_that_is_invalid_by_its_keys_alone_has_no_plan() -> None:
    both = {"event_id": "e", "order_id": 1, "occurred_at": "2026-11-26T10:00:00Z"}
    assert _plan_for(_shape({**both, "changes": {"customer_id": 1, "CustomerId": 1}})) is None
    missing_city = {k: v for k, v in ADDRESS.items() if k != "city"}
    assert _plan_for(_shape({**both, "changes": {"shipping_address": missing_city}})) is None
