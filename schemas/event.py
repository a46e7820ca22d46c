"""The order-change event contract: what upstream systems publish.

``{"event_id": "...", "order_id": 5001, "occurred_at": "2026-11-26T10:00:00Z", "changes": {...}}``

Validation follows Sellercloud's Update Order documentation, so an event that passes here is a
request the API accepts: ints are ints (never bools), enums are the API's names, an address is
complete, Country and State are two-letter codes and State is required for US and CA.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
)

from schemas import enums
from schemas.aliased import Aliased, AliasedSchema, declare
from schemas.fields import (
    DateTime,
    EnumName,
    StrictBoolean,
    StrictInteger,
    Text,
    TwoLetterCode,
)
from schemas.plans import AliasedPlan, Unplanned

STATE_REQUIRED_FOR = ("US", "CA")


def NonBlankText(**kwargs: Any) -> Text:  # noqa: N802 (used like a field class)
    return Text(required_text=True, **kwargs)


ADDRESS_FIELDS = (
    Aliased("first_name", "FirstName", NonBlankText, required=True),
    Aliased("middle_name", "MiddleName", Text),
    Aliased("last_name", "LastName", NonBlankText, required=True),
    Aliased("zip_code", "ZipCode", NonBlankText, required=True),
    Aliased("city", "City", NonBlankText, required=True),
    Aliased(
        "country",
        "Country",
        lambda **kw: TwoLetterCode(example="US", **kw),
        required=True,
        description="ISO 3166-1 alpha-2 country code.",
    ),
    Aliased("business", "Business", Text),
    Aliased("address_line_1", "AddressLine1", NonBlankText, required=True),
    Aliased("address_line_2", "AddressLine2", Text),
    Aliased("fax", "Fax", Text),
    Aliased("region", "Region", Text),
    Aliased(
        "state",
        "State",
        lambda **kw: TwoLetterCode(example="NY", **kw),
        description="Two-letter state or province code; required when country is US or CA.",
    ),
    Aliased("phone", "Phone", Text),
)


class _AddressRules(AliasedSchema):
    def rules(self, data: dict[str, Any]) -> None:
        # Sellercloud refuses a US or Canadian address without its state or province.
        country = self.value(data, "country", "Country")
        if country in STATE_REQUIRED_FOR and self.value(data, "state", "State") is None:
            key = "State" if "Country" in data else "state"
            raise ValidationError(
                f"Required when country is {country} (a two-letter code such as NY or ON).",
                field_name=key,
            )


# from_dict keeps the base class; typed so, its rules and key checks stay visible to mypy.
AddressSchema = cast(
    type[_AddressRules], _AddressRules.from_dict(declare(ADDRESS_FIELDS), name="Address")
)


def _address(**kwargs: Any) -> fields.Nested:
    return fields.Nested(AddressSchema, **kwargs)


CHANGE_FIELDS = (
    Aliased("company_id", "CompanyId", StrictInteger),
    Aliased("customer_id", "CustomerId", StrictInteger),
    Aliased(
        "order_source",
        "OrderSource",
        lambda **kw: EnumName("OrderSource", enums.ORDER_SOURCE, **kw),
    ),
    Aliased(
        "order_sub_type",
        "OrderSubType",
        lambda **kw: EnumName(
            "OrderSubType", enums.ORDER_SUB_TYPE, enums.ORDER_SUB_TYPE_ALIASES, **kw
        ),
    ),
    Aliased("sales_rep_1", "SalesRep1", StrictInteger),
    Aliased(
        "currency_code",
        "CurrencyCode",
        lambda **kw: EnumName("CurrencyCode", enums.CURRENCY_CODE, **kw),
    ),
    Aliased("disable_inventory_count", "DisableInventoryCount", StrictBoolean),
    Aliased(
        "shipping_address",
        "ShippingAddress",
        _address,
        description="A full address: it replaces the order's whole shipping address.",
    ),
    Aliased(
        "billing_address",
        "BillingAddress",
        _address,
        description="A full address: it replaces the order's whole billing address.",
    ),
)


class _ChangesRules(AliasedSchema):
    def rules(self, data: dict[str, Any]) -> None:
        # An event that changes nothing would be an empty PUT.
        if all(value is None for value in data.values()):
            raise ValidationError("Must contain at least one non-null field to change.")


ChangesSchema = cast(
    type[_ChangesRules], _ChangesRules.from_dict(declare(CHANGE_FIELDS), name="Changes")
)


@dataclass(frozen=True)
class OrderChange:
    """A validated event: ``changes`` holds only the fields that change, by snake_case name."""

    event_id: str
    order_id: int
    occurred_at: dt.datetime
    changes: dict[str, Any]


class OrderChangeEventSchema(Schema):
    class Meta:
        unknown = RAISE

    event_id = NonBlankText(
        required=True,
        max_length=200,
        metadata={"description": "Unique per event; the key for de-duplication."},
    )
    order_id = StrictInteger(
        required=True, minimum=1, metadata={"description": "Sellercloud order id (int32)."}
    )
    occurred_at = DateTime(
        required=True,
        metadata={
            "description": "When the change happened upstream: an RFC 3339 date-time with its "
            "offset, such as 2026-11-26T10:00:00Z or 2026-11-26T12:00:00+02:00."
        },
    )
    changes = fields.Nested(ChangesSchema, required=True)

    @post_load
    def _to_order_change(self, data: dict[str, Any], **_: Any) -> OrderChange:
        return OrderChange(**data)


_TOP_LEVEL = ("event_id", "order_id", "occurred_at", "changes")
_CHANGE_NAMES = frozenset(n for spec in CHANGE_FIELDS for n in (spec.snake, spec.pascal))
_ADDRESS_NAMES = frozenset(n for spec in ADDRESS_FIELDS for n in (spec.snake, spec.pascal))
_ADDRESS_KEYS = frozenset(
    n
    for spec in CHANGE_FIELDS
    if spec.snake in ("shipping_address", "billing_address")
    for n in (spec.snake, spec.pascal)
)
Shape = tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]


def _shape(payload: dict[str, Any]) -> Shape:
    """Which declared change and address fields an event gives (unknown keys stay unknown)."""
    changes = payload.get("changes")
    if not isinstance(changes, dict):
        return (), ()
    given = tuple(sorted(k for k in changes if k in _CHANGE_NAMES))
    addresses = tuple(
        (k, tuple(sorted(a for a in changes[k] if a in _ADDRESS_NAMES)))
        for k in given
        if k in _ADDRESS_KEYS and isinstance(changes[k], dict)
    )
    return given, addresses


# Marshmallow visits every declared field on each load, given or not, and with both spellings
# declared an event would pay for about 50 fields to load the 15 it carries. A schema limited to
# the fields given (``only``) loads the same data with the same errors in a third of the time;
# one is kept per shape of input, and building one per event would cost more than the load.
@functools.lru_cache(maxsize=256)
def _schema_for(shape: Shape) -> OrderChangeEventSchema:
    given, addresses = shape
    nested = dict(addresses)
    only = list(_TOP_LEVEL)
    for key in given:
        fields_given = nested.get(key, ())
        if fields_given:
            only += [f"changes.{key}.{name}" for name in fields_given]
        else:
            only.append(f"changes.{key}")
    return OrderChangeEventSchema(only=only)


@functools.lru_cache(maxsize=256)
def _plan_for(shape: Shape) -> Callable[[dict[str, Any]], OrderChange] | None:
    """The load plan for events of this shape, or None when the shape alone is invalid."""
    given, addresses = shape
    nested: dict[str, AliasedPlan] = {}
    for key, keys in addresses:
        address = AliasedPlan.build(AddressSchema(), keys, {})
        if address is None:
            return None
        nested[key] = address
    changes_plan = AliasedPlan.build(ChangesSchema(), given, nested)
    if changes_plan is None:
        return None
    top = OrderChangeEventSchema().fields
    event_id, order_id, occurred_at = top["event_id"], top["order_id"], top["occurred_at"]

    def load(payload: dict[str, Any]) -> OrderChange:
        if len(payload) != len(_TOP_LEVEL) or not all(k in payload for k in _TOP_LEVEL):
            raise Unplanned  # unknown or missing keys
        try:
            return OrderChange(
                event_id.deserialize(payload["event_id"], "event_id", payload),
                order_id.deserialize(payload["order_id"], "order_id", payload),
                occurred_at.deserialize(payload["occurred_at"], "occurred_at", payload),
                changes_plan.load(payload["changes"]),
            )
        except ValidationError as exc:
            raise Unplanned from exc

    return load


def load_event(payload: Any) -> OrderChange:
    """Validate one decoded event; raises ``marshmallow.ValidationError`` naming each bad field."""
    if not isinstance(payload, dict):
        raise ValidationError({"_schema": ["An event must be a JSON object."]})
    shape = _shape(payload)
    plan = _plan_for(shape)
    if plan is not None:
        try:
            return plan(payload)
        except Unplanned:
            pass  # the schema reports what is wrong
    result: OrderChange = _schema_for(shape).load(payload)
    return result
