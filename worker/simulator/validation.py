"""Model validation of Update Order bodies, reported the way ASP.NET reports ModelState errors.

The structural rules come from the published Swagger model, converted to a draft-07 JSON Schema;
the rules the Update Order page states in prose (full addresses, country and state codes) are
checked by hand afterwards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any, Final

import jsonschema  # type: ignore[import-untyped, unused-ignore]

SWAGGER_RESOURCE: Final = "swagger-update-order.json"
REQUEST_DEFINITION: Final = "SellerCloud.Delta.Models.ClientAPI.Order.UpdateOrderRequest"
ADDRESS_DEFINITION: Final = (
    "SellerCloud.Delta.Models.ClientAPI.Common.AddressWithSeparateAddrLinesDto"
)
ROOT_KEY: Final = "request"

INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
REQUIRED_ADDRESS_FIELDS: Final = (
    "FirstName",
    "LastName",
    "ZipCode",
    "City",
    "Country",
    "AddressLine1",
)
STATE_REQUIRED_IN: Final = frozenset({"US", "CA"})
NO_FIELDS: Final = "The request has no fields to update."
EMPTY_BODY: Final = "A non-empty request body is required."

_TWO_LETTERS = re.compile(r"[A-Z]{2}")
_DEFINITION_REF = "#/definitions/"
# Swagger keywords that mean something to a validator; descriptions and x-* extensions are dropped.
_KEPT = ("type", "enum", "required", "properties", "items", "$ref", "format", "title")


def load_swagger() -> dict[str, Any]:
    """The Swagger extract shipped beside this module."""
    text = resources.files(__package__).joinpath(SWAGGER_RESOURCE).read_text(encoding="utf-8")
    swagger: dict[str, Any] = json.loads(text)
    return swagger


def short_name(definition: str) -> str:
    """``SellerCloud.Delta....UpdateOrderRequest`` -> ``UpdateOrderRequest``."""
    return definition.rsplit(".", 1)[-1]


def draft7_schema(swagger: Mapping[str, Any], root: str = REQUEST_DEFINITION) -> dict[str, Any]:
    """A self-contained draft-07 schema for Swagger definition ``root``.

    Every property also accepts null (null means "no change" to the API), objects reject unknown
    members, and ``format: int32`` becomes an explicit range because JSON Schema ignores it.
    """
    definitions: dict[str, Any] = {}
    for name, definition in swagger["definitions"].items():
        short = short_name(name)
        if short in definitions:
            raise ValueError(f"two Swagger definitions shorten to {short!r}")
        definitions[short] = {**_convert(definition), "title": short}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$ref": _DEFINITION_REF + short_name(root),
        "definitions": definitions,
    }


def _convert(node: Mapping[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        ref: str = node["$ref"]
        if not ref.startswith(_DEFINITION_REF):
            raise ValueError(f"unsupported reference {ref!r}")
        # Draft 7 ignores keywords beside $ref, so a referenced object is made nullable on the
        # definition itself (its "type" gains "null").
        return {"$ref": _DEFINITION_REF + short_name(ref.removeprefix(_DEFINITION_REF))}
    schema = {key: node[key] for key in _KEPT if key in node}
    if "type" in schema:
        schema["type"] = [schema["type"], "null"]
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]
    low_high = INT_RANGES.get(schema.pop("format", ""))
    if low_high is not None:
        schema["minimum"], schema["maximum"] = low_high
    if "properties" in schema:
        schema["properties"] = {k: _convert(v) for k, v in schema["properties"].items()}
        schema["additionalProperties"] = False
    if "items" in schema:
        schema["items"] = _convert(schema["items"])
    return schema


def _is_strict_integer(_checker: object, instance: object) -> bool:
    # Json.NET refuses 1.0 and true for an int field; draft 7 alone would accept 1.0.
    return isinstance(instance, int) and not isinstance(instance, bool)


@cache
def _validator() -> Any:
    schema = draft7_schema(load_swagger())
    base = jsonschema.Draft7Validator
    base.check_schema(schema)
    strict = jsonschema.validators.extend(
        base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_strict_integer)
    )
    return strict(schema)


@cache
def _address_properties() -> tuple[str, ...]:
    request = load_swagger()["definitions"][REQUEST_DEFINITION]["properties"]
    target = _DEFINITION_REF + ADDRESS_DEFINITION
    return tuple(name for name, spec in request.items() if spec.get("$ref") == target)


def validate_update_order(body: object) -> dict[str, list[str]]:
    """ModelState-style errors for an Update Order body (already parsed from JSON); {} = valid."""
    if body is None:
        return {ROOT_KEY: [EMPTY_BODY]}
    errors: dict[str, list[str]] = {}

    def add(key: str, text: str) -> None:
        messages = errors.setdefault(key, [])
        if text not in messages:
            messages.append(text)

    schema_errors = list(_validator().iter_errors(body))
    # A value of the wrong type also misses the enum; one message about the type is enough.
    mistyped = {tuple(e.absolute_path) for e in schema_errors if e.validator == "type"}
    for error in schema_errors:
        if error.validator == "enum" and tuple(error.absolute_path) in mistyped:
            continue
        for key, text in _describe(error):
            add(key, text)
    if isinstance(body, dict):
        for name in _address_properties():
            address = body.get(name)
            if isinstance(address, dict):
                for key, text in _address_errors(f"{ROOT_KEY}.{name}", address):
                    add(key, text)
        if all(value is None for value in body.values()):
            add(ROOT_KEY, NO_FIELDS)
    return errors


def _key(path: Iterable[object]) -> str:
    return ".".join([ROOT_KEY, *(str(part) for part in path)])


def _describe(error: Any) -> Iterator[tuple[str, str]]:
    """Turn one jsonschema error into (ModelState key, message) pairs."""
    path = list(error.absolute_path)
    key = _key(path)
    field = str(path[-1]) if path else ROOT_KEY
    instance = error.instance
    kind = error.validator
    if kind == "additionalProperties":
        known = error.schema.get("properties", {})
        type_name = error.schema.get("title", "object")
        for name in sorted(set(instance) - set(known)):
            yield (
                _key([*path, name]),
                f"Could not find member '{name}' on object of type '{type_name}'.",
            )
    elif kind == "type":
        expected = [str(t) for t in _as_list(error.validator_value) if t != "null"]
        text = (
            f"Error converting value {_show(instance)} to type '{'/'.join(expected)}' for {field}."
        )
        if "enum" in error.schema and isinstance(instance, str):
            text += " Enum fields take the integer value, not the name."
        yield key, text
    elif kind == "enum":
        yield key, f"The value {_show(instance)} is not a defined {field} value."
    elif kind in ("minimum", "maximum"):
        yield key, f"The value {_show(instance)} is outside the Int32 range for {field}."
    elif kind == "required":
        for name in error.validator_value:
            if name not in instance:
                yield _key([*path, name]), f"The {name} field is required."
    else:
        yield key, str(error.message)


def _address_errors(prefix: str, address: Mapping[str, object]) -> Iterator[tuple[str, str]]:
    """The Update Order page's address rules: a full address replaces the stored one."""
    for name in REQUIRED_ADDRESS_FIELDS:
        if _blank(address.get(name)):
            yield f"{prefix}.{name}", f"The {name} field is required."
    country = address.get("Country")
    if isinstance(country, str) and not _blank(country) and not _TWO_LETTERS.fullmatch(country):
        yield (
            f"{prefix}.Country",
            f"The Country field must be a two-letter country code such as 'US'; got {country!r}.",
        )
    state = address.get("State")
    if isinstance(state, str) and not _blank(state) and not _TWO_LETTERS.fullmatch(state):
        yield (
            f"{prefix}.State",
            f"The State field must be a two-letter state or province code; got {state!r}.",
        )
    if country in STATE_REQUIRED_IN and _blank(state):
        yield f"{prefix}.State", f"The State field is required when Country is {country}."


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _show(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)
