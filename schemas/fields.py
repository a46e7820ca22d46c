"""Strict marshmallow fields for the event contract.

marshmallow's stock fields are lenient in ways the Sellercloud API is not: ``Integer(strict=True)``
still takes ``True`` (a bool is an ``Integral``), ``Boolean`` takes ``"yes"`` and ``1``. Each field
here also knows its JSON Schema form, so the published contract is generated from the same code
that validates.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from marshmallow import fields, validate

INT32_MAX = 2**31 - 1

#: Unicode's control characters (general category Cc): the C0 controls U+0000-U+001F (NUL, tab,
#: newline, escape, ...), DEL U+007F and the C1 controls U+0080-U+009F. No field of the contract
#: is multi-line text, so a text field refuses every one of them, tab and newline included.
CONTROL_CHARACTERS = r"\u0000-\u001f\u007f-\u009f"  # regex escapes: Python's and ECMA 262's
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
#: What ``str.isspace()`` counts as whitespace, besides the control characters (refused anyway).
#: Spelled out for the JSON Schema's pattern: ``\s`` means something else in each regex dialect
#: (JavaScript's includes U+FEFF, Python's U+001C-U+001F and U+0085).
WHITESPACE = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: Name of the JSON Schema definition every text field refers to, to refuse control characters.
CONTROL_CHARACTERS_DEFINITION = "ControlCharacters"


def control_characters_definition() -> dict[str, Any]:
    """A string holding at least one control character; text fields are ``not`` this.

    Said as "contains one" rather than with an anchored pattern such as ``^[^...]*$``: in
    Python, Java, .NET and PCRE ``$`` also matches before a final newline, so those validators
    would let ``"Ada\\n"`` through; an unanchored search means the same in every dialect.
    """
    return {
        "type": "string",
        "pattern": f"[{CONTROL_CHARACTERS}]",
        "description": "Holds a control character: U+0000-U+001F or U+007F-U+009F.",
    }


def _no_control_characters() -> dict[str, Any]:
    return {"not": {"$ref": f"#/definitions/{CONTROL_CHARACTERS_DEFINITION}"}}


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
    """A string with a length cap, so a runaway upstream cannot push megabytes into a PUT, and
    no control characters (see ``CONTROL_CHARACTERS``): a NUL or an escape sequence in a name
    would reach Sellercloud, its database and every label printed from it."""

    default_error_messages = {
        "too_long": validate.Length.message_max,
        "control": "Must not contain control characters (such as NUL, tab or newline).",
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
        # isprintable() is False for every control character (and for some other characters,
        # such as U+00A0): the expression decides only then, and names are mostly printable.
        if not text.isprintable() and _CONTROL.search(text):
            raise self.make_error("control")
        if self.required_text and (not text or text.isspace()):
            raise self.make_error("blank")
        return text

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": ["string", "null"] if self.allow_none else "string"}
        schema["maxLength"] = self.max_length
        if self.required_text:
            schema["pattern"] = f"[^{WHITESPACE}]"  # a character that is not whitespace
        schema.update(_no_control_characters())
        return schema


_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"  # 0001-9999, as Python's
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:[.][0-9]+)?"
_OFFSET = "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
#: RFC 3339 ``date-time`` (``2026-11-26T10:00:00Z``, ``2026-11-26T12:00:00.5+02:00``), real
#: calendar dates only (February 29 in leap years), without leap seconds (Python has none).
#: The workers and the JSON Schema check this same expression; it is plain enough for any
#: regex dialect (classes, groups, alternation, counted repeats).
DATE_TIME = f"{_DATE}[Tt]{_TIME}{_OFFSET}"
_DATE_TIME = re.compile(DATE_TIME)


class DateTime(_SkipsEmptyValidation, fields.AwareDateTime):
    """An RFC 3339 date-time with its offset (``DATE_TIME``): the JSON Schema ``date-time``
    format, which publishers' validators and code generators know.

    Not ``datetime.fromisoformat`` alone: what it takes changes from one Python version to the
    next, and it takes much that no other language reads the same way (any character between
    date and time, NUL included; ``+0200``; week dates; no seconds).
    """

    default_error_messages = {
        "rfc3339": (
            "Not a valid date-time: RFC 3339 with a time zone, such as 2026-11-26T10:00:00Z "
            "or 2026-11-26T12:00:00+02:00."
        )
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.datetime:
        if not isinstance(value, str) or _DATE_TIME.fullmatch(value) is None:
            raise self.make_error("rfc3339")
        # The expression fixed every position; what follows the seconds is a fraction, the
        # offset, or both.
        rest = value[19:]
        fraction, offset = "", rest
        if rest.startswith("."):
            digits = len(rest) - len(rest[1:].lstrip("0123456789"))
            fraction, offset = rest[1:digits], rest[digits:]
        if offset in ("Z", "z"):
            zone = dt.UTC
        else:
            minutes = int(offset[1:3]) * 60 + int(offset[4:6])
            zone = dt.timezone(dt.timedelta(minutes=-minutes if offset[0] == "-" else minutes))
        return dt.datetime(
            int(value[0:4]),
            int(value[5:7]),
            int(value[8:10]),
            int(value[11:13]),
            int(value[14:16]),
            int(value[17:19]),
            int(fraction[:6].ljust(6, "0")),  # cut to microseconds, as fromisoformat does
            tzinfo=zone,
        )

    def _jsonschema_type_mapping(self) -> dict[str, Any]:
        return {
            "type": "string",
            "format": "date-time",
            # The format alone is not enough: validators differ on it (leap seconds, a space
            # for the T, the calendar) and many only annotate with it.
            "pattern": f"^{DATE_TIME}$",
            **_no_control_characters(),  # for "$", which can match before a final newline
        }


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
            # The lengths too: in Python's and Java's regexes "$" also matches before a final
            # newline, so the pattern alone would let "US\n" through.
            "minLength": 2,
            "maxLength": 2,
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
