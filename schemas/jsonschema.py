"""The event contract as JSON Schema, generated from the marshmallow schemas.

marshmallow-jsonschema renders the fields; the rules that live in schema-level validators (one
spelling per field, required address fields under either spelling, State for US and CA, at least
one non-null change) are added here from the same field declarations, so nothing is maintained
by hand. tests/unit/test_jsonschema_agreement.py holds the result to the workers' verdicts over
generated events, with ajv (as a Node.js publisher validates) and with Python's jsonschema.
"""

from __future__ import annotations

import itertools
from typing import Any

from marshmallow import Schema
from marshmallow_jsonschema import JSONSchema

from schemas.aliased import PASCAL, REQUIRED, SNAKE
from schemas.event import STATE_REQUIRED_FOR, AddressSchema, ChangesSchema, OrderChangeEventSchema
from schemas.fields import CONTROL_CHARACTERS_DEFINITION, control_characters_definition

SCHEMA_ID = "https://sellercloud-order-sync.invalid/schemas/order-change-event.json"


def _either(snake: str, pascal: str) -> dict[str, Any]:
    return {"anyOf": [{"required": [snake]}, {"required": [pascal]}]}


def _aliased_rules(schema: Schema) -> dict[str, Any]:
    rules: list[dict[str, Any]] = []
    dependencies: dict[str, Any] = {}
    for name, field in schema.fields.items():
        if field.metadata.get(SNAKE) != name:
            continue
        pascal = field.metadata[PASCAL]
        dependencies[name] = {"not": {"required": [pascal]}}
        if field.metadata[REQUIRED]:
            rules.append(_either(name, pascal))
    extra: dict[str, Any] = {"dependencies": dependencies}
    if rules:
        extra["allOf"] = rules
    return extra


def _any_case(code: str) -> list[str]:
    """Every spelling of a code in upper and lower case: the workers upper-case it on load."""
    return [
        "".join(letters) for letters in itertools.product(*((c.upper(), c.lower()) for c in code))
    ]


def _state_rule() -> dict[str, Any]:
    needs_state = {"enum": [name for code in STATE_REQUIRED_FOR for name in _any_case(code)]}
    return {
        "if": {
            "anyOf": [
                {"properties": {key: needs_state}, "required": [key]}
                for key in ("country", "Country")
            ]
        },
        "then": {
            "anyOf": [
                {"required": [key], "properties": {key: {"type": "string"}}}
                for key in ("state", "State")
            ]
        },
    }


def _not_all_null() -> dict[str, Any]:
    """At least one field not null: ``{}`` and ``{"customer_id": null}`` change nothing."""
    return {
        "not": {
            "description": "Every field null (or none given): nothing to change.",
            "additionalProperties": {"type": "null"},
        }
    }


def _drop_bookkeeping(definition: dict[str, Any]) -> None:
    """Keep ``x-sellercloud-name`` for publishers; the rest is only for our own code (and ajv's
    strict mode, a publisher's default, refuses a schema with keywords it does not know)."""
    for prop in definition["properties"].values():
        for schema in (prop, *prop.get("anyOf", ())):  # a nullable nested object: in anyOf
            schema.pop(SNAKE, None)
            schema.pop(REQUIRED, None)


def event_json_schema() -> dict[str, Any]:
    """JSON Schema (draft-07) for one order-change event."""
    document: dict[str, Any] = JSONSchema(props_ordered=True).dump(OrderChangeEventSchema())
    definitions = document["definitions"]

    address = definitions[AddressSchema.__name__]
    address.update(_aliased_rules(AddressSchema()))
    address["allOf"] = [*address.get("allOf", []), _state_rule()]

    changes = definitions[ChangesSchema.__name__]
    changes.update(_aliased_rules(ChangesSchema()))
    changes["minProperties"] = 1
    changes.update(_not_all_null())

    _drop_bookkeeping(address)
    _drop_bookkeeping(changes)
    definitions[CONTROL_CHARACTERS_DEFINITION] = control_characters_definition()

    document["$id"] = SCHEMA_ID
    document["title"] = "Order-change event"
    document["description"] = (
        "Published as a persistent application/json message to the topic exchange "
        "'order-events' with routing key 'order.changed' for a live change, or "
        "'order.changed.bulk' for a bulk one (a re-sync, a replay, a catch-up: live changes "
        "go first); the body is the same for both. Each field of 'changes' may be "
        "written in snake_case or in Sellercloud's PascalCase; null or absent means no change."
    )
    return document
