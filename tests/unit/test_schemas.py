"""The event contract: what loads, what is refused (naming the field), and the PUT body built."""

from __future__ import annotations

import calendar
import copy
import datetime as dt
import json
import re
import sys
import unicodedata
from typing import Any

import jsonschema
import pytest
from marshmallow import ValidationError

from schemas.errors import describe_errors, flatten_errors
from schemas.event import ADDRESS_FIELDS, load_event
from schemas.fields import CONTROL_CHARACTERS, DATE_TIME, WHITESPACE
from schemas.jsonschema import event_json_schema
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
        ({"event_id": ""}, "event_id", "Must not be blank"),
        ({"event_id": " \u3000"}, "event_id", "Must not be blank"),
        ({"event_id": "x" * 201}, "event_id", "Longer than maximum length 200"),
        ({"event_id": "evt\x00"}, "event_id", "Must not contain control characters"),
        ({"event_id": 12}, "event_id", "Not a valid string"),
        ({"order_id": 0}, "order_id", "greater than or equal to 1"),
        ({"order_id": False}, "order_id", "Not a valid integer"),
        ({"occurred_at": "2026-11-26T10:00:00"}, "occurred_at", "with a time zone"),
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


# Text fields: every one refuses control characters, naming itself.

TEXT_FIELDS = [spec.snake for spec in ADDRESS_FIELDS if spec.snake not in ("country", "state")]
CONTROLS = ["\x00", "\t", "\n", "\r", "\x0b", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]


@pytest.mark.parametrize("name", TEXT_FIELDS)
@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_control_character_in_any_text_field_is_refused_by_name(name: str, control: str) -> None:
    errors = errors_of(event(shipping_address={**ADDRESS, name: f"Ada{control}Lovelace"}))
    assert errors == {
        f"changes.shipping_address.{name}": (
            "Must not contain control characters (such as NUL, tab or newline)."
        )
    }


def test_control_characters_are_refused_under_sellercloud_names_and_in_event_ids() -> None:
    pascal = {spec.pascal: ADDRESS[spec.snake] for spec in ADDRESS_FIELDS if ADDRESS[spec.snake]}
    errors = errors_of(event(BillingAddress={**pascal, "City": "Buffalo\n"}))
    assert "control characters" in errors["changes.BillingAddress.City"]
    errors = errors_of({**event(customer_id=1), "event_id": "evt-1\r\n"})
    assert "control characters" in errors["event_id"]


@pytest.mark.parametrize(
    "text",
    ["Zoë Ñúñez", "北京市朝阳区", "Ada\u00a0Lovelace", "Suite\u20283", "Ada 🧮", "O'Brien & Co."],
)
def test_text_other_than_control_characters_loads_unchanged(text: str) -> None:
    loaded = load_event(event(shipping_address={**ADDRESS, "business": text, "city": text}))
    assert loaded.changes["shipping_address"]["business"] == text
    assert loaded.changes["shipping_address"]["city"] == text


def test_the_published_character_classes_are_the_ones_the_workers_use() -> None:
    every = [chr(c) for c in range(sys.maxunicode + 1)]
    controls = re.compile(f"[{CONTROL_CHARACTERS}]")
    assert {c for c in every if controls.match(c)} == {
        c for c in every if unicodedata.category(c) == "Cc"
    }
    assert not any(c.isprintable() for c in every if controls.match(c))  # Text's shortcut
    whitespace = re.compile(f"[{WHITESPACE}]")
    assert {c for c in every if whitespace.match(c)} == {
        c for c in every if c.isspace() and not controls.match(c)
    }


# occurred_at: an RFC 3339 date-time, the JSON Schema's date-time format.


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T10:00:00Z", dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)),
        ("2026-11-26t10:00:00z", dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)),
        ("2026-11-26T12:00:00+02:00", dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)),
        ("2026-11-26T04:30:00-05:30", dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)),
        ("2026-11-26T10:00:00-00:00", dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)),
        ("2026-11-26T10:00:00.5Z", dt.datetime(2026, 11, 26, 10, 0, 0, 500000, tzinfo=dt.UTC)),
        (
            "2026-11-26T10:00:00.123456789Z",  # cut to microseconds, as fromisoformat does
            dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=dt.UTC),
        ),
        ("2024-02-29T23:59:59+23:59", dt.datetime(2024, 2, 29, 0, 0, 59, tzinfo=dt.UTC)),
        ("2000-02-29T00:00:00Z", dt.datetime(2000, 2, 29, tzinfo=dt.UTC)),
        ("0001-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
        ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)),
    ],
)
def test_rfc3339_date_times_load(text: str, expected: dt.datetime) -> None:
    loaded = load_event({**event(customer_id=1), "occurred_at": text}).occurred_at
    assert loaded == expected
    assert loaded.utcoffset() is not None
    if text == text.upper():  # Python 3.11's fromisoformat takes no lower-case t or z
        assert loaded == dt.datetime.fromisoformat(text)  # what it takes, it reads alike


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T10:00:00",  # no offset
        "2026-11-26 10:00:00Z",  # a space for the T (RFC 3339 allows it by agreement only)
        "2026-11-26\x0010:00:00Z",  # fromisoformat takes any character there
        "2026-11-26T10:00Z",  # no seconds
        "2026-11-26T10Z",
        "20261126T100000Z",  # ISO 8601 basic format
        "2026-W48-4T10:00:00Z",  # week date
        "2026-11-26T10:00:00+0200",
        "2026-11-26T10:00:00+02",
        "2026-11-26T10:00:00+02:00:30",
        "2026-11-26T10:00:00+24:00",
        "2026-11-26T10:00:00,5Z",
        "2026-11-26T10:00:00.Z",
        "2026-11-26T23:59:60Z",  # leap second: Python has none
        "2026-11-26T24:00:00Z",
        "2026-02-29T10:00:00Z",
        "1900-02-29T10:00:00Z",
        "2026-04-31T10:00:00Z",
        "2026-13-01T10:00:00Z",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-26T10:00:00Z",  # fullwidth digits
        "2026-11-26T10:00:00Z\n",
        " 2026-11-26T10:00:00Z",
        "2026-11-26",
        "",
    ],
)
def test_other_date_times_are_refused(text: str) -> None:
    errors = errors_of({**event(customer_id=1), "occurred_at": text})
    assert errors == {
        "occurred_at": (
            "Not a valid date-time: RFC 3339 with a time zone, such as 2026-11-26T10:00:00Z "
            "or 2026-11-26T12:00:00+02:00."
        )
    }


def test_the_date_time_expression_knows_the_calendar() -> None:
    """Every month's last days, in every year the workers take, leap years by the Gregorian
    rule: the expression (the JSON Schema's pattern too) agrees with Python's calendar."""
    expression = re.compile(DATE_TIME)
    wrong = []
    for year in range(10_000):
        for month in range(1, 13):
            last = calendar.monthrange(year or 2000, month)[1] if year else 0
            for day in (1, 28, 29, 30, 31):
                text = f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z"
                if (expression.fullmatch(text) is not None) != (day <= last):
                    wrong.append(text)
    assert wrong == []


# The published JSON Schema


def test_the_json_schema_refuses_all_null_changes_and_control_characters() -> None:
    validator = jsonschema.Draft7Validator(event_json_schema())
    assert validator.is_valid(event(customer_id=1))
    assert not validator.is_valid(event(customer_id=None, billing_address=None))
    assert not validator.is_valid(event())
    for name in TEXT_FIELDS:
        assert not validator.is_valid(event(shipping_address={**ADDRESS, name: "Ada\n"}))
        assert not validator.is_valid(event(shipping_address={**ADDRESS, name: "Ada\x00"}))


def test_the_json_schema_keeps_no_bookkeeping_keys_for_publishers_to_trip_on() -> None:
    text = json.dumps(event_json_schema())
    assert '"snake_name"' not in text
    assert '"required_field"' not in text
