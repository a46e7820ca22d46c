"""A rate such as ``10800/h``: what ``ORDER_SYNC_RATE_LIMIT`` says and the fleet's limiter keeps."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADROOM = 0.9
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Rate:
    calls: int
    per_seconds: float

    def __str__(self) -> str:
        return f"{self.calls}/{self.per_seconds:g}s"

    @property
    def interval(self) -> float:
        """Seconds between two calls, with headroom."""
        return self.per_seconds / (self.calls * HEADROOM)


def parse_rate(text: str) -> Rate | None:
    """``10800/h``, ``3/s``, ``50/10s``; ``0`` or ``off`` turns the limit off (None)."""
    value = text.strip().lower()
    if value in ("0", "off", "none"):
        return None
    match = re.fullmatch(r"(\d+)\s*/\s*(\d*)\s*([smh])", value)
    if not match or int(match[1]) == 0:
        raise ValueError(f"{text!r} is not a rate such as 10800/h or 3/s (0 turns it off)")
    return Rate(int(match[1]), float(match[2] or 1) * _UNITS[match[3]])
