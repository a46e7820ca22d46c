"""Strict marshmallow fields for the event contract.

marshmallow's stock fields are lenient in ways the Sellercloud API is not: ``Integer(strict=True)``
still takes ``True`` (a bool is an ``Integral``), ``Boolean`` takes ``"yes"`` and ``1``. Each field
here also knows its JSON Schema form, so the published contract is generated from the same code
that validates.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate

INT32_MAX = 2**31 - 1


class _SkipsEmptyValidation(fields.Field[Any]):
    """A field that does not run validation when it has no validators.

    marshmallow builds a validator chain for every field on every load, validators or not; with
    the fifteen or so fields of a typical event that was a fifth of the time spent validating.
    """

    def _validate(self, value: Any) -> None:
        if self.validators:
            super()._validate(value)


class StrictInteger(_SkipsEmptyValidation, fields.Integer):
    """A JSON integer that fits Sellercloud's int32; bools and floats are refused."""

    default_error_messages = {"invalid": "Not a valid integer."}

    def __init__(self, *, minimum: int = 0, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=minimum, max=INT32_MAX))
        super().__init__(strict=True, **kwargs)

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": ["integer", "null"] if self.allow_none else "integer"}
        for validator in self.validators:
            if isinstance(validator, validate.Range):
                schema["minimum"] = validator.min
                schema["maximum"] = validator.max
        return schema


class StrictBoolean(_SkipsEmptyValidation, fields.Boolean):
    """Only JSON ``true`` or ``false``; ``"yes"``, ``1`` and ``"true"`` are errors."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        return {"type": ["boolean", "null"] if self.allow_none else "boolean"}


class Text(_SkipsEmptyValidation, fields.String):
    """A string with a length cap, so a runaway upstream cannot push megabytes into a PUT."""

    default_error_messages = {
        "too_long": validate.Length.message_max,
        "blank": "Must not be blank.",
    }

    def __init__(self, *, max_length: int = 500, required_text: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.required_text = required_text
        self.max_length = max_length

    # Checked here rather than by validator objects: an address has a dozen of these fields,
    # and each validator call costs more than both checks together.
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > self.max_length:
            raise self.make_error("too_long", max=self.max_length)
        if self.required_text and (not text or text.isspace()):
            raise self.make_error("blank")
        return text

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": ["string", "null"] if self.allow_none else "string"}
        schema["maxLength"] = self.max_length
        if self.required_text:
            schema["pattern"] = r"\S"
        return schema


class TwoLetterCode(_SkipsEmptyValidation, fields.String):
    """A two-letter code (ISO country, US state, Canadian province), upper-cased on load."""

    default_error_messages = {"code": "Must be a two-letter code, such as {example}."}

    def __init__(self, *, example: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.example = example

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) != 2 or not text.isascii() or not text.isalpha():
            raise self.make_error("code", example=self.example)
        return text.upper()

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        return {
            "type": ["string", "null"] if self.allow_none else "string",
            "pattern": "^[A-Za-z]{2}$",
        }


class EnumName(_SkipsEmptyValidation, fields.String):
    """A Sellercloud enum given by name; the Update Order body carries its integer value."""

    default_error_messages = {
        "unknown": "{input!r} is not a Sellercloud {enum} name (for example {examples})."
    }

    def __init__(
        self,
        enum: str,
        values: Mapping[str, int],
        aliases: Mapping[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.enum = enum
        self.values = {**values, **(aliases or {})}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        name = super()._deserialize(value, attr, data, **kwargs)
        if name not in self.values:
            examples = ", ".join(list(self.values)[:3])
            raise self.make_error("unknown", input=name, enum=self.enum, examples=examples)
        return name

    def to_sellercloud(self, name: str) -> int:
        return self.values[name]

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        names: list[str | None] = list(self.values)
        if self.allow_none:
            names.append(None)
        return {"enum": names}
