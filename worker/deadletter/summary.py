"""A summary of dead-letter entries: counts by reason and by error group, oldest and newest."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Group:
    count: int = 0
    oldest: str | None = None
    newest: str | None = None

    def merge(self, count: int, oldest: str | None, newest: str | None) -> None:
        self.count += count
        if oldest is not None:
            self.oldest = oldest if self.oldest is None else min(self.oldest, oldest)
        if newest is not None:
            self.newest = newest if self.newest is None else max(self.newest, newest)

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "oldest": self.oldest, "newest": self.newest}


@dataclass
class ErrorGroup(Group):
    """One failure mode: a reason and an error message with its ids blanked."""

    key: str = ""
    note: str | None = None


@dataclass
class Summary:
    total: int = 0
    by_reason: dict[str, Group] = field(default_factory=dict)
    by_error: dict[tuple[str, str], ErrorGroup] = field(default_factory=dict)

    def add_group(
        self,
        *,
        reason: str,
        error: str,
        key: str,
        count: int,
        oldest: str | None,
        newest: str | None,
        note: str | None = None,
    ) -> None:
        self.total += count
        self.by_reason.setdefault(reason, Group()).merge(count, oldest, newest)
        group = self.by_error.setdefault((reason, error), ErrorGroup(key=key, note=note))
        group.merge(count, oldest, newest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "by_reason": {r: g.as_dict() for r, g in self.ranked(self.by_reason)},
            "by_error": [
                {
                    "reason": reason,
                    "error": error,
                    **group.as_dict(),
                    "group": group.key,
                    "note": group.note,
                }
                for (reason, error), group in self.ranked(self.by_error)
            ],
        }

    @staticmethod
    def ranked(groups: dict[Any, Any]) -> list[tuple[Any, Any]]:
        return sorted(groups.items(), key=lambda item: (-item[1].count, str(item[0])))
