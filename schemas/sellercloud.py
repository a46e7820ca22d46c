"""The body of Sellercloud's Update Order call (``PUT {base}/Orders/{id}``), built from an event.

The body conforms to the published Swagger model: PascalCase names, enums as their int32 values,
and only the fields that change (an absent field means "no change" to the API).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import fields

from schemas.aliased import PASCAL
from schemas.event import AddressSchema, ChangesSchema
from schemas.fields import sellercloud_value

_CHANGE_FIELDS = ChangesSchema().fields
_ADDRESS_FIELDS = AddressSchema().fields


def _convert(
    source: Mapping[str, Any], declared: Mapping[str, fields.Field[Any]]
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in source.items():
        field = declared[name]
        if isinstance(field, fields.Nested):
            body[field.metadata[PASCAL]] = _convert(value, _ADDRESS_FIELDS)
        else:
            body[field.metadata[PASCAL]] = sellercloud_value(field, value)
    return body


def update_order_body(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for a validated event's ``changes`` (snake_case keys, as loaded)."""
    return _convert(changes, _CHANGE_FIELDS)
