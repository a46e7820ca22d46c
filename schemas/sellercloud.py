"""The body of Sellercloud's Update Order call (``PUT {base}/Orders/{id}``), built from an event.

The body conforms to the published Swagger model: PascalCase names, enums as their int32 values,
and only the fields that change (an absent field means "no change" to the API).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from marshmallow import fields

from schemas.aliased import PASCAL, SNAKE
from schemas.event import AddressSchema, ChangesSchema
from schemas.fields import EnumName

# For each loaded (snake_case) name: its body name, and how its value is sent (None: as is).
Converters = dict[str, tuple[str, Callable[[Any], Any] | None]]


def _converters(
    declared: Mapping[str, fields.Field[Any]], nested: Converters | None = None
) -> Converters:
    """Worked out once per schema: every event's body goes through them."""
    converters: Converters = {}
    for field in declared.values():
        convert: Callable[[Any], Any] | None = None
        if isinstance(field, fields.Nested):
            convert = functools.partial(_convert, converters=nested or {})
        elif isinstance(field, EnumName):
            convert = field.to_sellercloud
        converters[field.metadata[SNAKE]] = (field.metadata[PASCAL], convert)
    return converters


def _convert(source: Mapping[str, Any], converters: Converters) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name, value in source.items():
        pascal, convert = converters[name]
        body[pascal] = value if convert is None else convert(value)
    return body


_CHANGES = _converters(ChangesSchema().fields, nested=_converters(AddressSchema().fields))


def update_order_body(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The PUT body for a validated event's ``changes`` (snake_case keys, as loaded)."""
    return _convert(changes, _CHANGES)
