"""Load plans: the same validation as a schema's ``load``, for input of a shape seen before.

marshmallow spends most of a load in its own machinery around the fields (an error store, a
getter per field, hook lookups, processors), not in the fields. A plan is built once per shape
of input (which declared keys it gives) and keeps only the work that depends on the values: each
given field's own ``deserialize`` and the schema's value rules (``AliasedSchema.rules``). Checks
that depend on the keys alone (one spelling, required fields) run once, when the plan is built.

A plan never reports an error itself. Any problem raises ``Unplanned`` and the caller loads the
input with marshmallow, which reports it; so every error comes from the schema, and a plan's
result equals the schema's (the unit tests hold the two equal over generated events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields

from schemas.aliased import SNAKE, AliasedSchema


class Unplanned(Exception):
    """The plan cannot vouch for this input; load it with the schema instead."""


@dataclass(frozen=True)
class Step:
    key: str  # as given: either spelling
    snake: str  # as loaded
    field: fields.Field[Any]
    nested: AliasedPlan | None  # for a nested schema given as an object


@dataclass(frozen=True)
class AliasedPlan:
    schema: AliasedSchema
    steps: tuple[Step, ...]

    @classmethod
    def build(
        cls, schema: AliasedSchema, keys: tuple[str, ...], nested: Mapping[str, AliasedPlan]
    ) -> AliasedPlan | None:
        """A plan for input giving exactly ``keys`` (declared ones), or None when those keys
        alone make any such input invalid (marshmallow then reports why)."""
        try:
            schema.check_keys(dict.fromkeys(keys))
        except ValidationError:
            return None
        given = set(keys)
        steps = tuple(  # in declared order, as the schema loads them
            Step(key, field.metadata[SNAKE], field, nested.get(key))
            for key, field in schema.fields.items()
            if key in given
        )
        return cls(schema, steps)

    def load(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or len(value) != len(self.steps):
            raise Unplanned  # not an object, or a key the plan was not built for (unknown)
        loaded: dict[str, Any] = {}
        for step in self.steps:
            raw = value[step.key]
            if step.nested is not None:
                loaded[step.key] = step.nested.load(raw)
            else:
                try:
                    loaded[step.key] = step.field.deserialize(raw, step.key, value)
                except ValidationError as exc:
                    raise Unplanned from exc
        try:
            self.schema.rules(loaded)
        except ValidationError as exc:
            raise Unplanned from exc
        return {step.snake: loaded[step.key] for step in self.steps if loaded[step.key] is not None}
