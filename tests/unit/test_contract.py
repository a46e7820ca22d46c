"""The published JSON Schema agrees with the marshmallow schemas; the enums with the API docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from marshmallow import ValidationError

from schemas import enums
from schemas.event import load_event
from schemas.jsonschema import event_json_schema
from tests.unit.test_schemas import ADDRESS, event

ROOT = Path(__file__).resolve().parents[2]
# Copies of the API documents the tests compare with, kept in the repository so the tests always
# run; where the documentation folder sits beside the repository, the copies must equal it.
DOCUMENTS = ROOT / "tests" / "data" / "sellercloud"
SHARED = ROOT.parent / "shared" / "sellercloud"
COPIED = ("enums.json", "swagger-update-order.json")

VALID = [
    event(customer_id=7),
    event(CustomerId=7, OrderSource="Local_Store"),
    event(shipping_address=ADDRESS, currency_code="JPY"),
    event(shipping_address={**ADDRESS, "country": "de", "state": None}),
    event(
        ShippingAddress={k.title().replace("_", ""): v for k, v in ADDRESS.items()}
        | {
            "AddressLine1": "1 Main St",
            "AddressLine2": None,
            "ZipCode": "1",
            "FirstName": "A",
            "LastName": "B",
            "MiddleName": None,
        }
    ),
    event(disable_inventory_count=False, order_sub_type="eBayGuaranteedDelivery"),
]

INVALID = [
    event(customer_id=True),
    event(customer_id=2**31),
    event(order_source="eBay"),
    event(colour="red"),
    event(customer_id=1, CustomerId=1),
    event(),
    event(shipping_address={**ADDRESS, "state": None}),
    event(shipping_address={**ADDRESS, "country": "USA"}),
    event(shipping_address={k: v for k, v in ADDRESS.items() if k != "city"}),
    event(shipping_address={**ADDRESS, "first_name": " "}),
    {**event(customer_id=1), "order_id": 0},
    {**event(customer_id=1), "extra": 1},
    {"event_id": "x", "order_id": 1, "changes": {"customer_id": 1}},
]


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = event_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("payload", VALID)
def test_valid_events_pass_both(payload: dict[str, Any], validator: Any) -> None:
    load_event(payload)
    assert list(validator.iter_errors(payload)) == []


@pytest.mark.parametrize("payload", INVALID)
def test_invalid_events_fail_both(payload: dict[str, Any], validator: Any) -> None:
    with pytest.raises(ValidationError):
        load_event(payload)
    assert list(validator.iter_errors(payload)) != []


def test_schema_names_every_sellercloud_field() -> None:
    changes = event_json_schema()["definitions"]["Changes"]["properties"]
    assert {"CustomerId", "customer_id", "ShippingAddress", "shipping_address"} <= changes.keys()
    assert changes["customer_id"]["x-sellercloud-name"] == "CustomerId"


def test_enums_match_the_api_documentation() -> None:
    documented = json.loads((DOCUMENTS / "enums.json").read_text(encoding="utf-8"))
    assert documented["OrderSource"] == enums.ORDER_SOURCE
    assert documented["OrderSubType"] == enums.ORDER_SUB_TYPE
    assert documented["CurrencyCode"] == enums.CURRENCY_CODE
    assert documented["OrderSubTypeAliases"] == enums.ORDER_SUB_TYPE_ALIASES


def test_simulator_uses_the_published_swagger_model() -> None:
    shipped = ROOT / "worker" / "simulator" / "swagger-update-order.json"
    assert json.loads(shipped.read_text(encoding="utf-8")) == json.loads(
        (DOCUMENTS / "swagger-update-order.json").read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("name", COPIED)
def test_the_copied_documents_equal_the_api_documentation(name: str) -> None:
    if not SHARED.exists():
        pytest.skip("the API documentation folder is not beside the repo: nothing to compare")
    assert (DOCUMENTS / name).read_bytes() == (SHARED / name).read_bytes(), (
        f"tests/data/sellercloud/{name} differs from {SHARED / name}: copy it again"
    )


def test_the_schema_tells_publishers_both_routing_keys() -> None:
    from worker.broker.topology import BULK_ROUTING_KEY, EVENT_ROUTING_KEY

    description = event_json_schema()["description"]
    assert f"'{EVENT_ROUTING_KEY}'" in description
    assert f"'{BULK_ROUTING_KEY}'" in description
