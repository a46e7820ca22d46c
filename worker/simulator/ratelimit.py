"""The per-source call budget Sellercloud enforces (10,800 calls an hour), as a sliding window."""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SPEC = re.compile(r"(\d+)\s*/\s*(\d*)\s*([smhd])", re.IGNORECASE)


@dataclass(frozen=True)
class RateLimit:
    """At most ``calls`` calls in any ``per_seconds`` long window."""

    calls: int
    per_seconds: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.per_seconds <= 0:
            raise ValueError("a rate limit needs at least one call per positive period")

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Read ``"10800/h"``, ``"3/s"``, ``"100/m"`` or ``"5/10s"``; else raise ``ValueError``."""
        match = _SPEC.fullmatch(text.strip())
        if match is None:
            raise ValueError(
                f"not a rate limit: {text!r} (expected CALLS/UNIT, e.g. 10800/h or 3/s)"
            )
        calls, count, unit = match.groups()
        return cls(int(calls), (int(count) if count else 1) * _UNITS[unit.lower()])

    def __str__(self) -> str:
        for unit, seconds in _UNITS.items():
            if self.per_seconds == seconds:
                return f"{self.calls}/{unit}"
        return f"{self.calls}/{self.per_seconds:g}s"


class SlidingWindow:
    """Admits calls while the window has room. Not thread-safe: the owner holds its own lock."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._admitted: deque[float] = deque()

    def acquire(self, now: float) -> float | None:
        """Admit a call at ``now`` (monotonic seconds) and return None, or return the seconds
        until a slot frees up.

        Refused calls do not take a slot, so a client that waits out the reset time gets through.
        """
        horizon = now - self.limit.per_seconds
        while self._admitted and self._admitted[0] <= horizon:
            self._admitted.popleft()
        if len(self._admitted) < self.limit.calls:
            self._admitted.append(now)
            return None
        return self._admitted[0] + self.limit.per_seconds - now
