"""Reading what a page or a form sends: every value is checked, and anything wrong is named in
one clear message (``BadInput``) before anything is read or changed."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from worker.deadletter.selection import Selection, parse_time

#: Entry states as the store names them (``dead``: waiting for an operator), and "all".
STATES = ("dead", "archived", "replayed", "all")
DEFAULT_STATE = "dead"
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_IDS = 1000
MAX_PATCH_BYTES = 64 * 1024
MAX_NOTE = 2000
MAX_TEXT = 500


Args = MultiDict[str, str]


class BadInput(ValueError):
    """What was wrong with a request, one sentence per problem; nothing was done."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Filter:
    """A dead-letter list as a page asks for it: a selection, a state and a page."""

    selection: Selection = field(default_factory=Selection)
    state: str = DEFAULT_STATE
    offset: int = 0
    limit: int = DEFAULT_PAGE_SIZE
    problems: list[str] = field(default_factory=list, compare=False)

    def query(self, **changes: Any) -> dict[str, Any]:
        """The filter as query parameters (for links and hidden form fields)."""
        values: dict[str, Any] = {
            "reason": sorted(self.selection.reasons),
            "order_id": ",".join(str(i) for i in sorted(self.selection.order_ids)) or None,
            "error_contains": self.selection.error_contains,
            "group": sorted(self.selection.groups),
            "since": _iso(self.selection.since),
            "until": _iso(self.selection.until),
            "state": self.state if self.state != DEFAULT_STATE else None,
            "offset": self.offset or None,
            "limit": self.limit if self.limit != DEFAULT_PAGE_SIZE else None,
        }
        values.update(changes)
        return {key: value for key, value in values.items() if value not in (None, "", [])}

    @property
    def is_everything(self) -> bool:
        return self.selection.is_everything

    @property
    def group(self) -> str | None:
        """The one error group the filter is about, if it is about one."""
        return next(iter(self.selection.groups)) if len(self.selection.groups) == 1 else None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _text(args: Args, name: str, label: str, problems: list[str]) -> str | None:
    value = str(args.get(name) or "").strip()
    if len(value) > MAX_TEXT:
        problems.append(f"{label} is longer than {MAX_TEXT} characters.")
        return None
    return value or None


def _time(args: Args, name: str, label: str, problems: list[str]) -> dt.datetime | None:
    value = _text(args, name, label, problems)
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        problems.append(f"{label} {value!r} is not a time such as 2026-11-27T03:00:00Z.")
        return None


def order_ids(raw: str, problems: list[str], label: str = "Order id") -> frozenset[int]:
    found = set()
    for part in re.split(r"[\s,]+", raw.strip()):
        if not part:
            continue
        if not part.isdigit() or len(part) > 18:
            problems.append(f"{label} {part!r} is not a whole number such as 5004.")
            continue
        found.add(int(part))
    return frozenset(found)


def _int(args: Args, name: str, default: int, label: str, problems: list[str]) -> int:
    raw = str(args.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit() or len(raw) > 9:
        problems.append(f"{label} {raw!r} is not a whole number of 0 or more.")
        return default
    return int(raw)


def entry_filter(args: Args, *, strict: bool = True) -> Filter:
    """The filter a list page or a bulk action names; ``BadInput`` if any part is wrong
    (unless ``strict`` is off: then the problems are kept on the filter for the page to show)."""
    problems: list[str] = []
    reasons = frozenset(
        part for raw in args.getlist("reason") for part in re.split(r"[\s,]+", raw) if part
    )
    for reason in reasons:
        if not re.fullmatch(r"[a-z_]{1,40}", reason):
            problems.append(f"Reason {reason[:40]!r} is not a reason word such as api_rejected.")
    ids = frozenset(i.strip() for i in args.getlist("id") if i.strip())
    for entry_id in ids:
        if not ID_PATTERN.match(entry_id):
            problems.append(f"Entry id {entry_id[:40]!r} is not an entry id.")
    groups = frozenset(g.strip() for g in args.getlist("group") if g.strip())
    for group in groups:
        if not re.fullmatch(r"[0-9a-f]{1,64}", group):
            problems.append(f"Group {group[:40]!r} is not a group key (hex digits).")
    selection = Selection(
        groups=groups,
        reasons=reasons,
        order_ids=order_ids(str(args.get("order_id") or ""), problems),
        ids=ids,
        since=_time(args, "since", "Since", problems),
        until=_time(args, "until", "Until", problems),
        error_contains=_text(args, "error_contains", "Error text", problems),
    )
    state = str(args.get("state") or DEFAULT_STATE)
    if state not in STATES:
        problems.append(f"State {state[:20]!r} is not one of {', '.join(STATES)}.")
        state = DEFAULT_STATE
    limit = _int(args, "limit", DEFAULT_PAGE_SIZE, "Page size", problems)
    if limit not in PAGE_SIZES:
        problems.append(f"Page size {limit} is not one of {', '.join(map(str, PAGE_SIZES))}.")
        limit = DEFAULT_PAGE_SIZE
    if selection.since and selection.until and selection.since > selection.until:
        problems.append("Since is after until: no entry could match.")
    found = Filter(
        selection=selection,
        state=state,
        offset=_int(args, "offset", 0, "Offset", problems),
        limit=limit,
        problems=problems,
    )
    if problems and strict:
        raise BadInput(problems)
    return found


def checked_ids(form: Args) -> list[str]:
    """The entries ticked on a list page (``entry`` fields)."""
    ids = [i.strip() for i in form.getlist("entry") if i.strip()]
    bad = [i for i in ids if not ID_PATTERN.match(i)]
    if bad:
        raise BadInput([f"Entry id {bad[0][:40]!r} is not an entry id."])
    if len(ids) > MAX_IDS:
        raise BadInput([f"At most {MAX_IDS} entries can be ticked at once; use the filter."])
    return list(dict.fromkeys(ids))


def patch(raw: str | None, *, required: bool = True) -> dict[str, Any] | None:
    """A JSON merge patch for an event's ``changes``: a JSON object, or ``BadInput``."""
    text = (raw or "").strip()
    if not text:
        if required:
            raise BadInput(['The patch is empty: give a JSON object such as {"state": "NY"}.'])
        return None
    if len(text.encode()) > MAX_PATCH_BYTES:
        raise BadInput([f"The patch is larger than {MAX_PATCH_BYTES // 1024} KiB."])
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise BadInput([f"The patch is not JSON: {exc}."]) from exc
    if not isinstance(value, dict):
        raise BadInput(
            ['The patch must be a JSON object (a merge patch of the changes), such as {"a": 1}.']
        )
    return value


def note(form: Mapping[str, Any]) -> str:
    text = str(form.get("note") or "").strip()
    if not text:
        raise BadInput(["The note is empty."])
    if len(text) > MAX_NOTE:
        raise BadInput([f"The note is longer than {MAX_NOTE} characters."])
    return text


def history_query(args: Args) -> tuple[int | None, str | None]:
    """An order id or an event id to look up; ``BadInput`` if the order id is not a number."""
    problems: list[str] = []
    raw_order = str(args.get("order_id") or "").strip()
    order_id: int | None = None
    if raw_order:
        ids = order_ids(raw_order, problems)
        if len(ids) > 1:
            problems.append("Give one order id.")
        order_id = next(iter(ids), None)
    event_id = _text(args, "event_id", "Event id", problems)
    if order_id is not None and event_id is not None:
        problems.append("Give an order id or an event id, not both.")
    if problems:
        raise BadInput(problems)
    return order_id, event_id
