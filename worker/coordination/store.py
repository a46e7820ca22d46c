"""The few atomic operations the fleet coordinates with (``backends`` opens a store).

Keys and hash fields are strings, values are strings (JSON where structured). Every operation
is atomic on its own; the hot path's few compound steps are operations of their own, one round
trip each, and anything else is built from a lock (``claim``/``release``).
``StoreUnavailable`` means the store could not be reached: callers retry later and never act
without it, so an outage delays events but never reorders or loses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The shared store did not answer; the operation did not happen."""


@dataclass(frozen=True)
class Lock:
    """A lock held in the store: ``key`` holds ``owner`` for ``ttl`` seconds unless renewed."""

    key: str
    owner: str
    ttl: float


@dataclass(frozen=True)
class Entry:
    """A field to set in a hash (``hash_key``, whose lifetime becomes ``ttl``) unless
    ``done_key`` holds a value: the work the entry stands for has already ended."""

    done_key: str
    hash_key: str
    field: str
    value: str
    ttl: float


@dataclass(frozen=True)
class Taken:
    """What a take (``take_all_if_locked``, ``add_and_claim``) removed from a hash, and what it
    read alongside."""

    fields: dict[str, str]
    done: dict[str, str]  # field -> value at ``done_prefix + field``, for those that have one
    versions: dict[str, str]


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

    # Each of the next four is one round trip: they are what one event costs on the hot path.
    def add_unless_done(self, entry: Entry, *, even_if_done: bool = False) -> str | None:
        """Read ``entry.done_key``; unless it holds a value (or ``even_if_done``), set the
        entry's field. Returns ``done_key``'s value."""

    def add_and_claim(
        self,
        entry: Entry,
        lock: Lock,
        done_prefix: str,
        versions_key: str,
        *,
        even_if_done: bool = False,
    ) -> tuple[str | None, Taken | None]:
        """``add_unless_done``, then try to claim ``lock``; once claimed, take what
        ``take_all_if_locked`` would from the entry's hash. Returns ``done_key``'s value and
        what was taken (None unless the lock was claimed)."""

    def take_all_if_locked(
        self, lock: Lock, hash_key: str, done_prefix: str, versions_key: str
    ) -> Taken | None:
        """Renew ``lock``; if it is still ours, take every field of ``hash_key``, with the
        value at ``done_prefix + field`` of each, and read the whole ``versions_key`` hash.
        None if the lock is no longer ours."""

    def settle(
        self,
        done: dict[str, str],
        ttl: float,
        versions_key: str,
        versions: dict[str, str],
        hash_key: str,
        lock: Lock,
        clear: str | None = None,
    ) -> bool:
        """Set each ``done`` key and merge ``versions`` into ``versions_key`` (all with lifetime
        ``ttl``), delete ``clear`` if given; then release ``lock`` if ``hash_key`` is empty.

        True when the lock holder is finished: nothing is left in ``hash_key`` and the lock is
        released, or the lock is no longer its own. False means more arrived meanwhile.
        """

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
    ) -> tuple[str, float]:
        """The fleet's rate limit before one call, in one round trip.

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
