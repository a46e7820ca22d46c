"""Schemas whose fields answer to a snake_case name and to their Sellercloud (PascalCase) name.

Publishers may write ``customer_id`` or ``CustomerId``; both load to ``customer_id``. A null or
absent field means "no change" and is dropped from the loaded data. Each field's metadata keeps
both names so the Update Order body and the JSON Schema are built from the same declaration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validates_schema

SNAKE = "snake_name"
PASCAL = "x-sellercloud-name"
REQUIRED = "required_field"


@dataclass(frozen=True)
class Aliased:
    """One field of the contract: its two names, whether it is required, how to build it."""

    snake: str
    pascal: str
    make: Callable[..., fields.Field[Any]]
    required: bool = False
    description: str = ""


def declare(specs: Iterable[Aliased]) -> dict[str, fields.Field[Any]]:
    """Both spellings of every field, ready for ``Schema.from_dict``."""
    declared: dict[str, fields.Field[Any]] = {}
    for spec in specs:
        metadata = {SNAKE: spec.snake, PASCAL: spec.pascal, REQUIRED: spec.required}
        if spec.description:
            metadata["description"] = spec.description
        for name in (spec.snake, spec.pascal):
            declared[name] = spec.make(
                allow_none=not spec.required, data_key=name, metadata=dict(metadata)
            )
    return declared


class AliasedSchema(Schema):
    class Meta:
        unknown = RAISE

    @functools.cached_property
    def _specs(self) -> dict[str, fields.Field[Any]]:
        """The snake_case field of each pair, keyed by its snake_case name.

        From every declared field: a schema loading ``only`` the fields given still has to
        report the required ones that were not.
        """
        declared = self.declared_fields
        return {name: f for name, f in declared.items() if f.metadata.get(SNAKE) == name}

    # Runs on the raw input even when some fields failed, so one pass reports every problem.
    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_spelling_and_required_fields(
        self, _data: dict[str, Any], original: Any, **_: Any
    ) -> None:
        if isinstance(original, dict):
            self.check_keys(original)

    @validates_schema
    def _rules(self, data: dict[str, Any], **_: Any) -> None:
        self.rules(data)

    def check_keys(self, original: dict[str, Any]) -> None:
        """Each field given under one spelling only; every required field given. Depends on
        the keys alone, which lets a load plan run it once per shape of input."""
        errors: dict[str, list[str]] = {}
        declared = self.declared_fields
        speaks_sellercloud = any(
            key in declared and declared[key].metadata.get(PASCAL) == key for key in original
        )
        for snake, field in self._specs.items():
            pascal = field.metadata[PASCAL]
            if snake in original and pascal in original:
                errors[pascal] = [f"Given both as {snake!r} and {pascal!r}; send one of them."]
            elif field.metadata[REQUIRED] and snake not in original and pascal not in original:
                errors[pascal if speaks_sellercloud else snake] = [
                    "Missing data for required field."
                ]
        if errors:
            raise ValidationError(errors)

    def rules(self, data: dict[str, Any]) -> None:
        """Checks across the loaded values (keys as given), once every field loaded; a
        subclass raises ValidationError for what it refuses."""

    @staticmethod
    def value(data: dict[str, Any], snake: str, pascal: str) -> Any:
        """A field's loaded value under whichever spelling was given (before normalising)."""
        return data[snake] if snake in data else data.get(pascal)

    @post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            self.declared_fields[key].metadata[SNAKE]: value
            for key, value in data.items()
            if value is not None
        }
