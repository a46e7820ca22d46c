"""The few atomic operations the fleet coordinates with (``backends`` opens a store).

Keys and hash fields are strings, values are strings (JSON where structured). Every operation
is atomic on its own; the hot path's few compound steps are operations of their own, one round
trip each, and anything else is built from a lock (``claim``/``release``). Times the store keeps for
the fleet (when a member is due) come from the store's clock, so hosts may drift.
``StoreUnavailable`` means the store could not be reached: callers retry later and never act
without it, so an outage delays events but never reorders or loses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The shared store did not answer; the operation did not happen."""


@dataclass(frozen=True)
class Entry:
    """A field to set in a hash (``hash_key``, kept until the field is deleted) unless
    ``done_key`` holds a value: the work the entry stands for has already ended."""

    done_key: str
    hash_key: str
    field: str
    value: str


@dataclass(frozen=True)
class Lane:
    """The sorted set (member -> the time it is due) where a newly pending member waits for
    its turn: ``join`` it unless the member is in ``unless_in``; leave ``leave`` for it."""

    join: str
    unless_in: str | None = None
    leave: str | None = None


@dataclass(frozen=True)
class Turn:
    """A member whose turn came (``next_due``): where it waited, its locked hash's fields, the
    value at ``done_prefix + field`` of each that has one, its versions and its failures."""

    member: str
    due_key: str
    fields: dict[str, str]
    done: dict[str, str]
    versions: dict[str, str]
    failures: int


@dataclass(frozen=True)
class Keys:
    """Where ``next_due`` and ``settle_turn`` find a member's lock, hash and versions: each
    prefix followed by the member; ``failures`` is one hash of member -> failures; ``events``
    counts the fields of every member's hash together; ``due`` lists every due set."""

    due: tuple[str, ...]
    lock: str
    pending: str
    done: str
    versions: str
    failures: str
    events: str


@dataclass(frozen=True)
class Backlog:
    """What waits for a turn: members per sorted set, fields in all their hashes, and when the
    longest-waiting member of each set became due (UNIX time; None when the set is empty)."""

    members: dict[str, int]
    fields: int
    oldest: dict[str, float | None]


class Store(Protocol):
    def claim(self, key: str, value: str, ttl: float) -> bool:
        """Set ``key`` to ``value`` for ``ttl`` seconds unless it exists; True if set."""

    def release(self, key: str, value: str) -> bool:
        """Delete ``key`` if it still holds ``value`` (a lock we own); True if deleted."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl: float | None = None) -> None: ...

    def delete(self, *keys: str) -> None:
        """Delete each key, whatever it holds (a value, a hash, a set)."""

    def members(self, key: str) -> list[str]:
        """The members of a set ``note_failure`` keeps, in no particular order."""

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        """Set fields of a hash and (re)set the whole hash's lifetime."""

    # What one event costs on the hot path: one ``absorb``. What one turn costs: a ``next_due``
    # and a ``settle_turn`` (and the rate limit's ``take_slot``).
    def absorb(
        self, entry: Entry, lane: Lane, member: str, keys: Keys, *, even_if_done: bool = False
    ) -> str | None:
        """Read ``entry.done_key``; unless it holds a value (or ``even_if_done``), set the
        entry's field (counting it in ``keys.events`` if new) and let ``member`` wait in
        ``lane`` from now, or from when it already waited. Returns ``done_key``'s value."""

    def due(self, queues: list[tuple[str, float]]) -> bool:
        """Whether any of the sorted sets ``queues`` (key, hold) has a member that has been due
        for at least its ``hold`` seconds."""

    def next_due(
        self,
        queues: list[tuple[str, float]],
        keys: Keys,
        owner: str,
        lock_ttl: float,
        only: str | None = None,
    ) -> Turn | None:
        """The turn of the first member, in ``queues`` order (key, hold), due for at least its
        hold, whose lock (``keys.lock + member``) is free: the lock is claimed for ``lock_ttl``, the
        member stays due again after ``lock_ttl`` (if its holder vanished), and its hash is
        read with what goes with it (nothing is removed). A member found with an empty hash
        leaves its set. ``only``: that member, due or not. None when nothing is due."""

    def settle_turn(
        self,
        turn: Turn,
        owner: str,
        keys: Keys,
        settled: dict[str, str],
        ttl: float,
        versions: dict[str, str],
        failures: int,
        due_in: float = 0.0,
        clear: str | None = None,
    ) -> None:
        """End a turn: delete the ``settled`` fields (field -> done value) from the member's
        hash, setting each ``keys.done + field`` (lifetime ``ttl``); merge ``versions`` (same
        lifetime); keep ``failures`` (0 forgets them); delete ``clear`` if given. If the lock
        is still ours, release it: with nothing left in the hash the member leaves every due
        set, else it is due again ``due_in`` seconds from now."""

    def backlog(self, due_keys: list[str], events_key: str) -> Backlog:
        """How much waits in the sorted sets ``due_keys``."""

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
        count_key: str | None = None,
    ) -> tuple[str, float]:
        """The fleet's rate limit before one call, in one round trip; a call that may go
        (free or reserved) is counted in ``count_key`` (kept a few minutes) if given.

        ``("gated", 0)`` while ``gate_key`` (if given) holds a value: the fleet is paused;
        ``("paused", until)`` while ``pause_key`` holds a UNIX time still to come; otherwise,
        with no ``interval``, ``("free", 0)``; otherwise ``("full", seconds)`` when the next
        slot (spaced ``interval`` seconds apart) is over ``longest_wait`` away, taking nothing;
        otherwise it reserves that slot: ``("reserved", seconds to wait for it)``.
        """

    def note_failure(
        self,
        streak_key: str,
        member: str,
        threshold: int,
        window: float,
        gate_key: str,
        gate_value: str,
    ) -> bool:
        """Add ``member`` to the set ``streak_key`` (whose lifetime becomes ``window``); when the
        set holds ``threshold`` members or more and ``gate_key`` is unset, set ``gate_key`` to
        ``gate_value``. True if this call set it."""

    def close(self) -> None: ...
