"""A ``Selection`` (and a state) as SQL conditions on the entries table, each served by an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func, true, tuple_

from worker.deadletter.selection import Selection
from worker.deadletter.store.tables import entries

#: Oldest first; ``seq`` orders entries dead-lettered in the same millisecond.
ORDER = (entries.c.dead_lettered_at, entries.c.seq)
#: Where a walk through the entries has got to: the ``ORDER`` values of the last one seen.
Cursor = tuple[Any, int]


def where(selection: Selection, state: str | None) -> ColumnElement[bool]:
    """Entries in ``state`` (None: any) that ``selection`` matches."""
    c = entries.c
    clauses: list[ColumnElement[bool]] = []
    if state is not None:
        clauses.append(c.state == state)
    if selection.reasons:
        clauses.append(c.reason.in_(sorted(selection.reasons)))
    if selection.groups:
        clauses.append(c.group_key.in_(sorted(selection.groups)))
    if selection.order_ids:
        clauses.append(c.order_id.in_(sorted(selection.order_ids)))
    if selection.ids:
        clauses.append(c.id.in_(sorted(selection.ids)))
    if selection.since is not None:
        clauses.append(c.dead_lettered_at >= selection.since)
    if selection.until is not None:
        clauses.append(c.dead_lettered_at <= selection.until)
    if selection.error_contains:
        # Case-insensitive on every database (SQLite's LIKE folds ASCII only, PostgreSQL's not at
        # all); %, _ and \ in the text are matched literally.
        needle = selection.error_contains.lower()
        clauses.append(func.lower(c.error).contains(needle, autoescape=True))
    return and_(true(), *clauses)


def after(cursor: Cursor | None) -> ColumnElement[bool]:
    """Entries after ``cursor`` in ``ORDER``."""
    if cursor is None:
        return true()
    return tuple_(*ORDER) > tuple_(*cursor)
