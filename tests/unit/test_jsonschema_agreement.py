"""The published JSON Schema refuses what the workers refuse, and accepts what they accept.

Events are generated (valid ones, and ones broken in each way the contract can be broken) and
each gets three verdicts: the workers' (``load_event`` on the decoded JSON, as the intake does),
ajv's (what a Node.js publisher would run, from ``tests/js``: one node process for the whole
corpus) and Python's ``jsonschema``'s (so the check holds where there is no Node.js). They must
agree on every event.

The one difference left is JSON Schema's own definition of ``integer``, which takes ``7.0``
(and JavaScript cannot tell ``7.0`` from ``7``); the workers refuse a number written with a
fraction. ``test_integral_floats_are_the_one_known_difference`` holds it in place, and the
generator writes floats with a fraction only.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shutil
import string
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from schemas import enums
from schemas.errors import describe_errors
from schemas.event import (
    ADDRESS_FIELDS,
    CHANGE_FIELDS,
    STATE_REQUIRED_FOR,
    OrderChangeEventSchema,
    load_event,
)
from schemas.fields import INT32_MAX
from schemas.jsonschema import event_json_schema
from worker.cli.demo import ADDRESS

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "tests" / "js"
EVENTS = 1000  # drawn per test run: about 900 distinct, besides the KEPT cases
SHOWN = 10  # disagreements printed when there are any

CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]
WHITESPACE = [" ", "\u00a0", "\u1680", "\u2003", "\u2028", "\u2029", "\u202f", "\u3000"]
# Anything but controls (refused): whitespace, characters outside the BMP and lone surrogates
# (which JSON can carry as escapes) included, for the length and blank checks.
CHARACTERS = st.characters(exclude_categories=["Cc"])
ORDER_SOURCES = list(enums.ORDER_SOURCE)
ORDER_SUB_TYPES = [*enums.ORDER_SUB_TYPE, *enums.ORDER_SUB_TYPE_ALIASES]
CURRENCIES = list(enums.CURRENCY_CODE)
ENUMS = {
    "order_source": ORDER_SOURCES,
    "order_sub_type": ORDER_SUB_TYPES,
    "currency_code": CURRENCIES,
}
INTEGERS = ("company_id", "customer_id", "sales_rep_1")
ADDRESSES = ("shipping_address", "billing_address")
SPECS = {spec.snake: spec for spec in (*CHANGE_FIELDS, *ADDRESS_FIELDS)}
SNAKE_OF = {name: spec.snake for spec in SPECS.values() for name in (spec.snake, spec.pascal)}
CHANGE_NAMES = [name for spec in CHANGE_FIELDS for name in (spec.snake, spec.pascal)]
TEXT_LIMITS = {"event_id": 200} | {
    spec.snake: 500 for spec in ADDRESS_FIELDS if spec.snake not in ("country", "state")
}


# Valid parts (strategies built once: building them per draw was most of the time spent)


def text(min_size: int = 0, max_size: int = 30) -> st.SearchStrategy[str]:
    return st.text(CHARACTERS, min_size=min_size, max_size=max_size)


def long_text(limit: int) -> st.SearchStrategy[str]:
    """Up to the limit exactly, in characters outside the BMP too (two UTF-16 units each)."""
    return st.builds(
        lambda char, size: char * size,
        st.sampled_from(["a", "é", "北", "🧮"]),
        st.integers(limit - 3, limit),
    )


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in n draws (``st.integers`` would favour its bounds, and hypothesis
    draws the first of a ``sampled_from`` more often than the others)."""
    return st.sampled_from([False] * (n - 1) + [True])


def nonblank(limit: int) -> st.SearchStrategy[str]:
    return (text(1) | long_text(limit)).filter(lambda t: not t.isspace())


NONBLANK = {200: nonblank(200), 500: nonblank(500)}
OPTIONAL_TEXT = st.none() | text() | long_text(500)
codes = st.text(string.ascii_letters, min_size=2, max_size=2)
OPTIONAL_CODE = st.none() | codes
countries = st.sampled_from(["US", "us", "Us", "CA", "cA", "DE", "gb", "MX"]) | codes
DIGITS = st.text("0123456789", min_size=1, max_size=9)
OFFSETS = st.sampled_from([0, 60, -300, 330]) | st.integers(-(24 * 60 - 1), 24 * 60 - 1)


@st.composite
def date_times(draw: st.DrawFn) -> str:
    """RFC 3339, in every form it allows that the workers take."""
    moment = draw(st.datetimes())  # 0001 to 9999
    fraction = "." + draw(DIGITS) if draw(st.booleans()) else ""
    zone = draw(st.sampled_from(["Z", "z", ""]))
    if not zone:
        minutes = draw(OFFSETS)
        sign = "-" if minutes < 0 or (minutes == 0 and draw(st.booleans())) else "+"
        zone = f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    t = draw(st.sampled_from("Tt"))
    date = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"  # %Y: no zeros before 1000
    return f"{date}{t}{moment:%H:%M:%S}{fraction}{zone}"


@st.composite
def addresses(draw: st.DrawFn) -> dict[str, Any]:
    country = draw(countries)
    address: dict[str, Any] = {}
    for spec in ADDRESS_FIELDS:
        name = spec.pascal if draw(st.booleans()) else spec.snake
        if spec.snake == "country":
            address[name] = country
        elif spec.snake == "state":
            if country.upper() in STATE_REQUIRED_FOR:
                address[name] = draw(codes)
            elif draw(st.booleans()):
                address[name] = draw(OPTIONAL_CODE)
        elif spec.required:
            address[name] = draw(NONBLANK[500])
        elif draw(st.booleans()):
            address[name] = draw(OPTIONAL_TEXT)
    return address


CHANGE_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(INTEGERS, st.integers(0, INT32_MAX)),
    **{name: st.sampled_from(names) for name, names in ENUMS.items()},
    "disable_inventory_count": st.booleans(),
    **dict.fromkeys(ADDRESSES, addresses()),
}
NULLABLE_CHANGE_VALUES = {name: st.none() | value for name, value in CHANGE_VALUES.items()}
DATE_TIMES = date_times()


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for spec in CHANGE_FIELDS:
        if draw(one_in(3)):  # a third of the fields are given
            name = spec.pascal if draw(st.booleans()) else spec.snake
            changes[name] = draw(NULLABLE_CHANGE_VALUES[spec.snake])
    if all(value is None for value in changes.values()):
        spec = draw(st.sampled_from(CHANGE_FIELDS))
        changes.pop(spec.snake, None)
        changes[spec.pascal] = draw(CHANGE_VALUES[spec.snake])
    return {
        "event_id": draw(NONBLANK[200]),
        "order_id": draw(st.integers(1, INT32_MAX)),
        "occurred_at": draw(DATE_TIMES),
        "changes": changes,
    }


# Ways to break an event. Each changes the event in place and says what it did; the verdicts
# are compared whatever the change made of the event (some leave it valid).

Path_ = tuple[str, ...]


def places(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every key path in an event, objects included."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from places(item, (*path, key))


def objects(event: Any) -> list[Path_]:
    """The root and every object in it."""
    return [()] + [p for p in places(event) if isinstance(get(event, p), dict)]


def get(event: Any, path: Path_) -> Any:
    for key in path:
        event = event[key]
    return event


def put(event: Any, path: Path_, value: Any) -> None:
    get(event, path[:-1])[path[-1]] = value


def field_of(path: Path_) -> str:
    return SNAKE_OF.get(path[-1], path[-1])


def strings(event: Any) -> list[Path_]:
    return [p for p in places(event) if isinstance(get(event, p), str)]


class Nothing(Exception):
    """An earlier fault left nothing for this one to break."""


def pick(draw: st.DrawFn, candidates: list[Path_]) -> Path_:
    if not candidates:
        raise Nothing
    return draw(st.sampled_from(candidates))


def changes_of(event: dict[str, Any]) -> dict[str, Any]:
    changes = event.get("changes")
    if not isinstance(changes, dict):
        raise Nothing
    return changes


other_types = st.sampled_from([True, False, 0, 7, -1, "", "7", "true", [], [1], {}, {"a": 1}])
fractional = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
Fault = Callable[[st.DrawFn, dict[str, Any]], str]


def wrong_type(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, list(places(event)))
    put(event, path, draw(other_types | fractional))
    return field_of(path)


def missing(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, list(places(event)))
    del get(event, path[:-1])[path[-1]]
    return field_of(path)


def unknown(draw: st.DrawFn, event: dict[str, Any]) -> str:
    where = pick(draw, objects(event))
    near_misses = ["zip", "customerId", "Customer_Id", "CUSTOMER_ID", "state ", "colour", ""]
    near_misses += ["__proto__", "constructor", "toString", "hasOwnProperty"]  # JavaScript's
    name = draw(st.sampled_from(near_misses) | text(1, 10))
    get(event, where)[name] = draw(st.none() | other_types)
    return f"{name!r} in {field_of(where) if where else 'the event'}"


def null(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, list(places(event)))
    put(event, path, None)
    return field_of(path)


def all_null_changes(draw: st.DrawFn, event: dict[str, Any]) -> str:
    names = draw(st.lists(st.sampled_from(CHANGE_NAMES), max_size=4, unique=True))
    event["changes"] = dict.fromkeys(names)
    return ", ".join(names) or "{}"


def both_spellings(draw: st.DrawFn, event: dict[str, Any]) -> str:
    target = get(event, pick(draw, objects(event)[1:]))
    key = draw(st.sampled_from([key for key in target if key in SNAKE_OF] or [None]))
    if key is None:
        raise Nothing
    spec = SPECS[SNAKE_OF[key]]
    other = spec.pascal if key == spec.snake else spec.snake
    target[other] = copy.deepcopy(target[key]) if draw(st.booleans()) else None
    return spec.snake


def control_character(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, strings(event))
    value = get(event, path)
    at = draw(st.integers(0, len(value)))
    control = draw(st.sampled_from(CONTROLS))
    put(event, path, value[:at] + control + value[at:])
    return f"U+{ord(control):04X} in {field_of(path)}"


def length(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, [p for p in strings(event) if field_of(p) in TEXT_LIMITS])
    limit = TEXT_LIMITS[field_of(path)]
    char = draw(st.sampled_from(["x", "é", "🧮", "\u3000"]))
    size = draw(st.sampled_from([limit, limit + 1]) | st.integers(limit - 2, limit + 200))
    put(event, path, char * size)
    return f"{size} x {char!r} for {field_of(path)} (at most {limit})"


def blank(draw: st.DrawFn, event: dict[str, Any]) -> str:
    path = pick(draw, [p for p in strings(event) if field_of(p) in TEXT_LIMITS])
    # U+FEFF and U+200B are not whitespace: "blank" must mean the same to every validator.
    spaces = draw(st.text(st.sampled_from([*WHITESPACE, "\ufeff", "\u200b"]), max_size=4))
    put(event, path, spaces)
    return f"{spaces!r} for {field_of(path)}"


def bad_enum(draw: st.DrawFn, event: dict[str, Any]) -> str:
    name = draw(st.sampled_from(["order_source", "OrderSubType", "currency_code", "CurrencyCode"]))
    good = draw(st.sampled_from(ENUMS[SNAKE_OF[name]]))
    value = draw(
        st.sampled_from(
            [good.lower(), good.upper(), f"{good} ", f" {good}", good[:-1], "", "eBay", "usd"]
        )
        | st.sampled_from(ORDER_SOURCES + ORDER_SUB_TYPES + CURRENCIES)  # another enum's name
        | st.integers(0, 200)  # the enum's value, not its name
    )
    changes_of(event)[name] = value
    return f"{value!r} for {SNAKE_OF[name]}"


@st.composite
def odd_date_times(draw: st.DrawFn) -> str:
    """Near misses: each part drawn from right and wrong values."""

    def part(*choices: str) -> str:
        return draw(st.sampled_from(choices))

    year = part("2026", "2024", "1900", "2000", "0000", "0001", "9999", "10000", "26")
    month = part("01", "02", "04", "12", "00", "13", "1")
    day = part("01", "28", "29", "30", "31", "32", "00")
    separator = part("T", "t", " ", "_", "\x00", "", "TT")
    hour = part("00", "10", "23", "24", "7")
    minute = part("00", "59", "60")
    second = part(":00", ":59", ":60", "", ":5")
    fraction = part("", ".5", ".123456789", ",5", ".", ".5.5")
    zone = part("Z", "z", "+02:00", "-05:30", "+23:59", "+24:00", "+0200", "+02", "", "UTC")
    tail = part("", "", "", "\n", " ", "\u2028")
    return f"{year}-{month}-{day}{separator}{hour}:{minute}{second}{fraction}{zone}{tail}"


def bad_date(draw: st.DrawFn, event: dict[str, Any]) -> str:
    event["occurred_at"] = draw(
        odd_date_times()
        | st.sampled_from(
            [
                "20261126T100000Z",
                "2026-W48-4T10:00:00Z",
                "2026-330T10:00:00Z",
                "2026-11-26",
                "10:00:00Z",
                "\uff12\uff10\uff12\uff16-11-26T10:00:00Z",
                "yesterday",
                "",
            ]
        )
    )
    return repr(event["occurred_at"])


def bad_integer(draw: st.DrawFn, event: dict[str, Any]) -> str:
    name = draw(st.sampled_from(["order_id", "customer_id", "CompanyId", "sales_rep_1"]))
    value = draw(
        st.sampled_from([-1, 0, 1, INT32_MAX, INT32_MAX + 1, 2**53 + 1, 10**30, -(10**30)])
        | st.integers()
    )
    (event if name == "order_id" else changes_of(event))[name] = value
    return f"{value} for {SNAKE_OF.get(name, name)}"


def bad_code(draw: st.DrawFn, event: dict[str, Any]) -> str:
    address_name = draw(st.sampled_from(["shipping_address", "BillingAddress"]))
    changes = changes_of(event)
    address = changes.get(address_name)
    if not isinstance(address, dict):
        address = changes[address_name] = draw(CHANGE_VALUES["shipping_address"])
    field = draw(st.sampled_from(["country", "Country", "state", "State"]))
    value = draw(
        st.sampled_from(["USA", "U", "U1", "12", "ÜS", "US\n", "U S", "", "us", "Ca", "cA"])
        | st.none()
        | codes
    )
    if draw(st.booleans()):
        address[field] = value
        return f"{value!r} for {field}"
    for spelling in ("state", "State"):
        address.pop(spelling, None)  # a US or Canadian address without its state?
    return "no state"


def not_an_object(draw: st.DrawFn, event: dict[str, Any]) -> str:
    where = pick(draw, objects(event)[1:])
    value = draw(st.sampled_from([[], ["a"], "object", 1, True]))
    put(event, where, value)
    return f"{value!r} for {field_of(where)}"


VALID_EVENTS = valid_events()
FAULTS: list[Fault] = [
    wrong_type,
    missing,
    unknown,
    null,
    all_null_changes,
    both_spellings,
    control_character,
    length,
    blank,
    bad_enum,
    bad_date,
    bad_integer,
    bad_code,
    not_an_object,
]


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, str]:
    """(what was done to the event, the event as JSON text): about a third are left valid,
    the others get one or two faults, each as often as the others."""
    # Hypothesis draws the first of a choice more often than the rest; a seeded Random picks
    # evenly, for the choices that shape the corpus.
    rng = draw(st.randoms(use_true_random=True))
    event = draw(VALID_EVENTS)
    labels = []
    if rng.choice([True, True, False]):
        for fault in rng.sample(FAULTS, rng.choice([1, 1, 2])):
            with contextlib.suppress(Nothing):
                labels.append(f"{fault.__name__}: {fault(draw, event)}")
    if rng.choice(range(60)) == 0:
        outer = draw(st.sampled_from([[event], "event", 1, None]))
        return "the event is not an object", json.dumps(outer)
    return "; ".join(labels) or "valid", json.dumps(event)


# Cases found worth keeping, compared on every run whatever the generator draws: each is where
# a validator could read the contract differently.

_ADDRESS = ADDRESS


def _event(changes: Any = None, **top: Any) -> dict[str, Any]:
    return {
        "event_id": "evt-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": 7} if changes is None else changes,
        **top,
    }


def _address(without: str = "", **fields: Any) -> dict[str, Any]:
    address = {k: v for k, v in {**_ADDRESS, **fields}.items() if k != without}
    return _event({"shipping_address": address})


KEPT: list[tuple[str, Any]] = [
    ("valid", _event()),
    ("valid address", _address()),
    ("all null", _event({"customer_id": None, "ShippingAddress": None})),
    ("empty changes", _event({})),
    ("NUL in a name", _address(first_name="Ada\x00")),
    ("tab in a line", _address(address_line_2="Suite\t3")),
    ("newline at the end", _address(city="Buffalo\n")),
    ("CR LF at the end", _address(city="Buffalo\r\n")),
    ("DEL", _address(business="Engines\x7f")),
    ("C1 NEL", _address(phone="555\x85")),
    ("line separator (not a control)", _address(city="Buffalo\u2028")),
    ("BOM alone (not whitespace)", _address(city="\ufeff")),
    ("ideographic space alone", _address(city="\u3000")),
    ("NBSP alone", _address(first_name="\u00a0")),
    ("lone surrogate", _address(city="\ud800")),
    ("500 astral characters", _address(business="🧮" * 500)),
    ("501 astral characters", _address(business="🧮" * 501)),
    ("event_id with a space first", _event(event_id=" evt-1")),
    ("event_id of 200", _event(event_id="é" * 200)),
    ("event_id of 201", _event(event_id="é" * 201)),
    ("country Us, no state", _address(country="Us", state=None)),
    ("country cA, state absent", _address(country="cA", without="state")),
    ("country US with a newline", _address(country="US\n")),
    ("state ny", _address(state="ny")),
    ("country with a non-ASCII letter", _address(country="ÜS")),
    ("both spellings", _event({"customer_id": 1, "CustomerId": None})),
    ("unknown __proto__", _event({"customer_id": 1, "__proto__": 1})),
    ("unknown constructor", _event({"customer_id": 1, "constructor": None})),
    ("enum with a space", _event({"currency_code": "USD "})),
    ("enum alias", _event({"order_sub_type": "eBayGuaranteedDelivery"})),
    ("int32 max", _event({"company_id": INT32_MAX})),
    ("int32 max + 1", _event({"company_id": INT32_MAX + 1})),
    ("huge integer", _event({"company_id": 10**30})),
    ("a fraction", _event({"company_id": 7.5})),
    ("bool for an integer", _event({"company_id": True})),
    *(
        (f"occurred_at {text!r}", _event(occurred_at=text))
        for text in [
            "2026-11-26t10:00:00z",
            "2026-11-26T10:00:00.123456789+02:00",
            "2024-02-29T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "1900-02-29T10:00:00Z",
            "2000-02-29T10:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-11-26 10:00:00Z",
            "2026-11-26T10:00Z",
            "2026-11-26T10:00:00+0200",
            "2026-11-26T23:59:60Z",
            "2026-11-26T10:00:00",
            "2026-11-26T10:00:00Z\n",
            "2026-11-26T10:00:00Z\u2028",
        ]
    ),
    ("not an object", [_event()]),
]


# Verdicts


def workers_verdict(line: str) -> tuple[bool, str]:
    """What the intake makes of the event: decoded JSON, then the workers' own load."""
    try:
        load_event(json.loads(line))
    except ValidationError as refused:
        return False, describe_errors(refused.messages)
    return True, ""


@pytest.fixture(scope="module")
def corpus() -> list[tuple[str, str]]:
    generated: list[tuple[str, str]] = []

    @settings(
        max_examples=EVENTS,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def collect(case: tuple[str, str]) -> None:
        generated.append(case)

    collect()
    distinct: dict[str, str] = {}  # hypothesis draws some events more than once
    for label, line in [(f"kept: {label}", json.dumps(event)) for label, event in KEPT]:
        distinct.setdefault(line, label)
    for label, line in generated:
        distinct.setdefault(line, label)
    return [(label, line) for line, label in distinct.items()]


@pytest.fixture(scope="module")
def verdicts(corpus: list[tuple[str, str]]) -> list[tuple[bool, str]]:
    return [workers_verdict(line) for _, line in corpus]


@pytest.fixture(scope="module")
def schema_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "order-change-event.json"
    path.write_text(json.dumps(event_json_schema(), indent=2), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ajv() -> Path:
    """tests/js with its node_modules, installed from the lockfile when missing."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the ajv check needs Node.js 18 or newer")
    if not (JS / "node_modules" / "ajv" / "package.json").exists():
        installed = subprocess.run(
            [npm, "ci", "--prefix", str(JS), "--no-audit", "--no-fund"],
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert installed.returncode == 0, f"npm ci --prefix tests/js failed:\n{installed.stderr}"
    return Path(node)


def ajv_verdicts(node: Path, schema: Path, lines: list[str]) -> list[dict[str, Any]]:
    """One node process for all the events; one verdict per line, in order."""
    ran = subprocess.run(
        [str(node), str(JS / "validate.mjs"), str(schema)],
        input="".join(f"{line}\n" for line in lines),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=100,
    )
    assert ran.returncode == 0, f"validate.mjs failed ({ran.returncode}):\n{ran.stderr}"
    answers = [json.loads(answer) for answer in ran.stdout.splitlines()]
    assert len(answers) == len(lines), ran.stderr
    return answers


def shown(line: str, limit: int = 600) -> str:
    readable = json.dumps(json.loads(line), ensure_ascii=False)  # escapes U+0000-U+001F
    readable = re.sub("[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", readable)
    return readable if len(readable) <= limit else f"{readable[:limit]}... ({len(readable)} chars)"


def disagreements(
    corpus: list[tuple[str, str]],
    workers: list[tuple[bool, str]],
    theirs: list[tuple[bool, str]],
    who: str,
) -> str:
    found = [
        f"- {label}: workers say {'valid' if ours[0] else 'invalid: ' + ours[1]}; "
        f"{who} says {'valid' if other[0] else 'invalid: ' + other[1]}\n  {shown(line)}"
        for (label, line), ours, other in zip(corpus, workers, theirs, strict=True)
        if ours[0] != other[0]
    ]
    if not found:
        return ""
    return (
        f"{who} and the workers disagree on {len(found)} of {len(corpus)} generated events; "
        f"the first {min(SHOWN, len(found))}:\n" + "\n".join(found[:SHOWN])
    )


def test_ajv_says_what_the_workers_say(
    corpus: list[tuple[str, str]],
    verdicts: list[tuple[bool, str]],
    ajv: Path,
    schema_file: Path,
) -> None:
    started = time.perf_counter()
    answers = ajv_verdicts(ajv, schema_file, [line for _, line in corpus])
    theirs = [
        (bool(answer["valid"]), json.dumps(answer.get("errors", []))[:300]) for answer in answers
    ]
    assert not any(answer.get("unparsable") for answer in answers)
    problem = disagreements(corpus, verdicts, theirs, "ajv")
    if problem:
        pytest.fail(problem, pytrace=False)
    print(f"ajv agreed on {len(corpus)} events in {time.perf_counter() - started:.2f} s")


def test_python_jsonschema_says_what_the_workers_say(
    corpus: list[tuple[str, str]], verdicts: list[tuple[bool, str]]
) -> None:
    schema = event_json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.FormatChecker())
    theirs = []
    for _, line in corpus:
        error = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(line)))
        theirs.append((error is None, "" if error is None else error.message[:300]))
    problem = disagreements(corpus, verdicts, theirs, "jsonschema")
    if problem:
        pytest.fail(problem, pytrace=False)


def test_load_plans_give_the_schemas_verdict_on_hostile_events_too(
    corpus: list[tuple[str, str]],
) -> None:
    """``load_event`` takes a fast plan for shapes it has seen; the plan must refuse what the
    schema refuses (control characters, dates) with the schema's own errors."""
    schema = OrderChangeEventSchema()
    for _, line in corpus:
        payload = json.loads(line)
        if not isinstance(payload, dict):
            continue
        try:
            expected = schema.load(payload)
        except ValidationError as refused:
            with pytest.raises(ValidationError) as caught:
                load_event(payload)
            assert caught.value.messages == refused.messages, line
        else:
            assert load_event(payload) == expected, line


def test_the_corpus_is_worth_comparing(
    corpus: list[tuple[str, str]], verdicts: list[tuple[bool, str]]
) -> None:
    """Enough valid and invalid events, and every way of breaking one tried."""
    valid = sum(ok for ok, _ in verdicts)
    assert len(corpus) >= EVENTS * 0.8  # distinct events
    assert valid >= len(corpus) * 0.15, valid
    assert len(corpus) - valid >= len(corpus) * 0.35, valid
    tried = Counter(
        part.split(":")[0] for label, _ in corpus for part in label.split("; ") if ":" in part
    )
    assert {fault.__name__ for fault in FAULTS} <= tried.keys(), tried
    messages = [message for ok, message in verdicts if not ok]
    assert any("control characters" in m for m in messages)
    assert any("at least one non-null field" in m for m in messages)


def test_integral_floats_are_the_one_known_difference() -> None:
    """JSON Schema's ``integer`` is any number without a fractional part, 7.0 included, and
    JSON.parse makes 7 of it anyway; the workers refuse a number written as a float (the
    contract says so). Should either side change, this says where to look."""
    event = {
        "event_id": "e",
        "order_id": 1,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": 7.0},
    }
    assert not workers_verdict(json.dumps(event))[0]
    assert jsonschema.Draft7Validator(event_json_schema()).is_valid(event)
