"""Which entries an operation applies to: the filter vocabulary of ``order-sync dlq`` and the
console, matched in memory (``Selection.matches``) or in the database (``store.query``)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from worker.deadletter.groups import group_key


def parse_time(value: str) -> dt.datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def format_time(value: dt.datetime) -> str:
    """A UTC time as entries write it: ``2026-11-27T03:00:00.123Z``."""
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Selection:
    """Which entries an operation applies to; an empty selection matches every entry."""

    reasons: frozenset[str] = frozenset()
    order_ids: frozenset[int] = frozenset()
    ids: frozenset[str] = frozenset()
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error_contains: str | None = None
    #: Only entries of this error group (``groups.group_key``).
    groups: frozenset[str] = frozenset()

    @property
    def is_everything(self) -> bool:
        return self == Selection()

    def as_dict(self) -> dict[str, Any]:
        """The selection as JSON, for the audit trail; empty filters left out."""
        out: dict[str, Any] = {}
        for name in ("reasons", "order_ids", "ids", "groups"):
            values = getattr(self, name)
            if values:
                out[name] = sorted(values)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = format_time(value)
        if self.error_contains:
            out["error_contains"] = self.error_contains
        return out

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.reasons and entry.get("reason") not in self.reasons:
            return False
        if self.order_ids and entry.get("order_id") not in self.order_ids:
            return False
        if self.ids and entry.get("id") not in self.ids:
            return False
        if (
            self.error_contains
            and self.error_contains.lower() not in str(entry.get("error", "")).lower()
        ):
            return False
        if self.groups and (
            group_key(str(entry.get("reason", "")), str(entry.get("error", ""))) not in self.groups
        ):
            return False
        if self.since or self.until:
            try:
                when = parse_time(str(entry.get("dead_lettered_at")))
            except ValueError:
                return False
            if (self.since and when < self.since) or (self.until and when > self.until):
                return False
        return True
