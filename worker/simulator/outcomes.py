"""Scripted outcomes: what the simulator does instead of (or before) answering a call normally."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OutcomeKind = Literal["status", "drop", "slow"]

# A forced 2xx/3xx would look like success without doing the work, which no test wants.
MIN_FORCED_STATUS = 400
MAX_FORCED_STATUS = 599
# Long enough for any client read timeout; short enough that a typo cannot wedge a worker thread.
MAX_SLOW_MS = 600_000


@dataclass(frozen=True)
class Outcome:
    """One forced outcome: an HTTP status, a dropped connection, or a delayed normal answer."""

    kind: OutcomeKind
    # The status code for "status", the delay in milliseconds for "slow", 0 for "drop".
    value: int = 0

    @classmethod
    def parse(cls, raw: object) -> Outcome:
        """Read ``500``, ``"500"``, ``"drop"`` or ``"slow:MS"``; raise ``ValueError`` otherwise."""
        if isinstance(raw, Outcome):
            return raw
        if isinstance(raw, bool):
            raise ValueError(f"not an outcome: {raw!r}")
        if isinstance(raw, int):
            return cls._status(raw)
        if not isinstance(raw, str):
            raise ValueError(f"not an outcome: {raw!r}")
        text = raw.strip().lower()
        if text == "drop":
            return cls("drop")
        if text.startswith("slow:"):
            delay = text.removeprefix("slow:")
            if not delay.isdigit() or int(delay) > MAX_SLOW_MS:
                raise ValueError(f"slow needs a delay of 0..{MAX_SLOW_MS} ms, got {raw!r}")
            return cls("slow", int(delay))
        if text.isdigit():
            return cls._status(int(text))
        raise ValueError(f"not an outcome: {raw!r} (use a status code, 'drop' or 'slow:MS')")

    @classmethod
    def _status(cls, status: int) -> Outcome:
        if not MIN_FORCED_STATUS <= status <= MAX_FORCED_STATUS:
            raise ValueError(
                f"forced status must be {MIN_FORCED_STATUS}..{MAX_FORCED_STATUS}, got {status}"
            )
        return cls("status", status)

    def to_json(self) -> int | str:
        """The spelling ``parse`` accepts, for the control API."""
        if self.kind == "status":
            return self.value
        if self.kind == "slow":
            return f"slow:{self.value}"
        return "drop"
