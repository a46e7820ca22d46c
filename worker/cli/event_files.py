"""Reading events from files: one JSON object, several, a JSON array, or JSON Lines.

Each event is labelled ``file:line`` so errors point to where it starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_DECODER = json.JSONDecoder()


class UnreadableInput(ValueError):
    """The text is not a sequence of JSON values; the message names the file and line."""


def iter_json_values(text: str, source: str) -> Iterator[tuple[str, Any]]:
    """Yield ``("source:line", value)`` for each JSON value; arrays are flattened one level."""
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return
        line = text.count("\n", 0, position) + 1
        try:
            value, position = _DECODER.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise UnreadableInput(
                f"{source}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
            ) from exc
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield f"{source}:{line}[{index}]", item
        else:
            yield f"{source}:{line}", value
