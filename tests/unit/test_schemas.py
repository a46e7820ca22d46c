"""The event contract: what loads, what is refused (naming the field), and the PUT body built."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from marshmallow import ValidationError

from schemas.errors import describe_errors, flatten_errors
from schemas.event import load_event
from schemas.sellercloud import update_order_body

ADDRESS = {
    "first_name": "Ada",
    "middle_name": None,
    "last_name": "Lovelace",
    "zip_code": "14201",
    "city": "Buffalo",
    "country": "US",
    "business": "Engines Ltd",
    "address_line_1": "12 Analytical Row",
    "address_line_2": "Suite 3",
    "fax": "555-0100",
    "region": "Erie",
    "state": "NY",
    "phone": "555-0101",
}


def event(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": changes,
    }


def errors_of(payload: Any) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        load_event(payload)
    joined: dict[str, str] = {}
    for path, message in flatten_errors(caught.value.messages):
        joined[path] = f"{joined[path]} {message}" if path in joined else message
    return joined


def test_every_field_maps_to_the_sellercloud_body() -> None:
    loaded = load_event(
        event(
            company_id=1,
            customer_id=7,
            order_source="Amazon",
            order_sub_type="Prime",
            sales_rep_1=0,
            currency_code="EUR",
            disable_inventory_count=True,
            shipping_address=ADDRESS,
            billing_address={**ADDRESS, "country": "gb", "state": None},
        )
    )
    body = update_order_body(loaded.changes)
    assert body == {
        "CompanyId": 1,
        "CustomerId": 7,
        "OrderSource": 4,
        "OrderSubType": 7,
        "SalesRep1": 0,
        "CurrencyCode": 3,
        "DisableInventoryCount": True,
        "ShippingAddress": {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "ZipCode": "14201",
            "City": "Buffalo",
            "Country": "US",
            "Business": "Engines Ltd",
            "AddressLine1": "12 Analytical Row",
            "AddressLine2": "Suite 3",
            "Fax": "555-0100",
            "Region": "Erie",
            "State": "NY",
            "Phone": "555-0101",
        },
        "BillingAddress": {
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "ZipCode": "14201",
            "City": "Buffalo",
            "Country": "GB",
            "Business": "Engines Ltd",
            "AddressLine1": "12 Analytical Row",
            "AddressLine2": "Suite 3",
            "Fax": "555-0100",
            "Region": "Erie",
            "Phone": "555-0101",
        },
    }
    assert loaded.order_id == 5001
    assert loaded.occurred_at.utcoffset() is not None


def test_sellercloud_names_are_accepted_unchanged() -> None:
    pascal = event(
        CustomerId=7,
        OrderSubType="eBayGuaranteedDelivery",
        ShippingAddress={
            "FirstName": "Ada",
            "LastName": "Lovelace",
            "ZipCode": "H2X 1Y4",
            "City": "Montreal",
            "Country": "CA",
            "State": "QC",
            "AddressLine1": "1 Rue",
        },
    )
    body = update_order_body(load_event(pascal).changes)
    assert body["CustomerId"] == 7
    assert body["OrderSubType"] == 3  # the docs' newer name for eBayNow
    assert body["ShippingAddress"]["State"] == "QC"


def test_null_and_absent_fields_are_left_out_of_the_body() -> None:
    loaded = load_event(event(customer_id=None, company_id=3, billing_address=None))
    assert update_order_body(loaded.changes) == {"CompanyId": 3}


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"customer_id": True}, "changes.customer_id", "Not a valid integer"),
        ({"customer_id": "7"}, "changes.customer_id", "Not a valid integer"),
        ({"customer_id": 7.0}, "changes.customer_id", "Not a valid integer"),
        ({"company_id": 2**31}, "changes.company_id", "less than or equal to 2147483647"),
        ({"sales_rep_1": -1}, "changes.sales_rep_1", "greater than or equal to 0"),
        ({"disable_inventory_count": "true"}, "changes.disable_inventory_count", "boolean"),
        ({"disable_inventory_count": 1}, "changes.disable_inventory_count", "boolean"),
        ({"order_source": "eBay"}, "changes.order_source", "not a Sellercloud OrderSource"),
        ({"order_source": 4}, "changes.order_source", "Not a valid string"),
        ({"currency_code": "usd"}, "changes.currency_code", "CurrencyCode"),
        ({"colour": "red"}, "changes.colour", "Unknown field"),
        ({"customer_id": 1, "CustomerId": 1}, "changes.CustomerId", "send one of them"),
        ({}, "changes", "at least one non-null field"),
        ({"customer_id": None}, "changes", "at least one non-null field"),
    ],
)
def test_bad_changes_name_the_field(changes: dict[str, Any], field: str, fragment: str) -> None:
    errors = errors_of(event(**changes))
    assert field in errors, errors
    assert fragment in errors[field]


@pytest.mark.parametrize(
    ("address", "field", "fragment"),
    [
        ({**ADDRESS, "state": None}, "state", "Required when country is US"),
        ({**ADDRESS, "country": "CA", "state": None}, "state", "Required when country is CA"),
        ({**ADDRESS, "country": "USA"}, "country", "two-letter code"),
        ({**ADDRESS, "country": "U1"}, "country", "two-letter code"),
        ({**ADDRESS, "state": "New York"}, "state", "two-letter code"),
        ({**ADDRESS, "first_name": "  "}, "first_name", "blank"),
        ({**ADDRESS, "last_name": None}, "last_name", "may not be null"),
        ({k: v for k, v in ADDRESS.items() if k != "city"}, "city", "Missing data"),
        ({**ADDRESS, "zip": "1"}, "zip", "Unknown field"),
        ({**ADDRESS, "city": "x" * 501}, "city", "Longer than maximum length 500"),
    ],
)
def test_bad_addresses_name_the_field(address: dict[str, Any], field: str, fragment: str) -> None:
    errors = errors_of(event(shipping_address=address))
    key = f"changes.shipping_address.{field}"
    assert key in errors, errors
    assert fragment in errors[key]


def test_a_sellercloud_style_address_gets_errors_in_its_own_names() -> None:
    errors = errors_of(event(ShippingAddress={"FirstName": "Ada", "Country": "US"}))
    assert "changes.ShippingAddress.LastName" in errors
    assert "changes.ShippingAddress.AddressLine1" in errors


def test_state_is_optional_outside_us_and_canada() -> None:
    loaded = load_event(event(shipping_address={**ADDRESS, "country": "DE", "state": None}))
    assert "state" not in loaded.changes["shipping_address"]


@pytest.mark.parametrize(
    ("top", "field", "fragment"),
    [
        ({"event_id": ""}, "event_id", "Length must be between 1"),
        ({"event_id": 12}, "event_id", "Not a valid string"),
        ({"order_id": 0}, "order_id", "greater than or equal to 1"),
        ({"order_id": False}, "order_id", "Not a valid integer"),
        ({"occurred_at": "2026-11-26T10:00:00"}, "occurred_at", "aware"),
        ({"occurred_at": "yesterday"}, "occurred_at", "Not a valid"),
        ({"source": "erp"}, "source", "Unknown field"),
        ({"changes": None}, "changes", "may not be null"),
        ({"changes": []}, "changes", "Invalid input type"),
    ],
)
def test_bad_envelopes_name_the_field(top: dict[str, Any], field: str, fragment: str) -> None:
    payload = {**event(customer_id=1), **top}
    errors = errors_of(payload)
    assert field in errors, errors
    assert fragment in errors[field]


def test_missing_envelope_fields_are_each_reported() -> None:
    errors = errors_of({"changes": {"customer_id": 1}})
    assert {"event_id", "order_id", "occurred_at"} <= errors.keys()


def test_non_objects_are_refused_with_a_clear_message() -> None:
    assert errors_of([1, 2]) == {"event": "An event must be a JSON object."}


def test_loading_does_not_modify_the_input() -> None:
    payload = event(shipping_address=copy.deepcopy(ADDRESS), customer_id=None)
    before = copy.deepcopy(payload)
    load_event(payload)
    assert payload == before


def test_describe_errors_is_one_readable_line() -> None:
    with pytest.raises(ValidationError) as caught:
        load_event(event(customer_id="x", shipping_address={**ADDRESS, "state": None}))
    line = describe_errors(caught.value.messages)
    assert "changes.customer_id: Not a valid integer." in line
    assert "changes.shipping_address.state: Required when country is US" in line
