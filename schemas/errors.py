"""Turn marshmallow's nested error dicts into ``field.path: message`` lines people can act on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

SCHEMA_KEY = "_schema"


def flatten_errors(messages: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Yield ``(dotted.field.path, message)`` pairs; schema-level errors name their parent."""
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            if key == SCHEMA_KEY:
                yield from flatten_errors(value, path)
            else:
                yield from flatten_errors(value, f"{path}.{key}" if path else str(key))
    elif isinstance(messages, list | tuple):
        for message in messages:
            yield from flatten_errors(message, path)
    else:
        yield (path or "event", str(messages))


def describe_errors(messages: Any) -> str:
    """One line: ``changes.shipping_address.state: Required ...; order_id: Not a valid integer.``"""
    return "; ".join(f"{path}: {message}" for path, message in flatten_errors(messages))
