"""The fleet's gate: whether any worker may call Sellercloud now, decided once in the store.

    open             calls flow (the gate key is absent)
    api_unavailable  calls for several different orders failed in a row with transient errors
                     (5xx, timeouts, refused or cut connections, the token endpoint failing): an
                     outage of the API, not of one order. One worker at a time probes, at
                     growing intervals; the first answer opens the gate.
    credentials      the token endpoint refused the username and password. A worker whose
                     password (setting or file) is not the one refused probes with it; a token
                     opens the gate, and so does ``order-sync resume``.
    operator         ``order-sync pause``: only ``order-sync resume`` opens the gate.

While the gate is closed no event spends a retry or is dead-lettered: workers stop reading their
queues and hand back what they hold, so events wait in the broker. A success anywhere in the
fleet ends a streak of failures, so one order that keeps failing while others succeed never
closes the gate: it spends its own retries and is dead-lettered, as before.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import structlog

from worker.coordination.store import Store

log = structlog.get_logger(__name__)

GATE_KEY = "order-sync:gate"
#: The different orders whose calls failed since the last answer from the API.
STREAK_KEY = "order-sync:outage-streak"
PROBE_KEY = "order-sync:probe"

API_UNAVAILABLE = "api_unavailable"
CREDENTIALS = "credentials"
OPERATOR = "operator"
#: Every kind of closed gate (the ``order_sync_fleet_paused{kind}`` label).
KINDS = (API_UNAVAILABLE, CREDENTIALS, OPERATOR)

MIN_PROBE_SPACING = 1.0  # seconds between two probes of the fleet, at the least
FOREVER = 10 * 365 * 86400.0  # a closed gate stays closed until something opens it


class FleetPaused(Exception):
    """The fleet's gate is closed: no call may be made; the event goes back to the broker."""


#: Set when a call of this process met the closed gate, so that its gatekeeper stops the
#: worker reading at once rather than at its next tick (its messages would come right back).
MET_CLOSED_GATE = threading.Event()


@dataclass(frozen=True)
class GateState:
    kind: str
    since: float  # UNIX time the gate closed
    reason: str  # a sentence for operators
    error: str = ""  # the last error seen, for an outage or refused credentials
    order_id: int | None = None  # an order whose events wait: what an outage probe sends
    next_probe_at: float = 0.0
    interval: float = 0.0  # seconds until the probe after next
    probes: int = 0
    by: str = ""  # who closed it (an operator's name, or the worker)

    def dumps(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> GateState:
        fields = json.loads(raw)
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


# A streak of failures older than this no longer counts towards an outage.
OUTAGE_WINDOW = 300.0
FIRST_PROBE = 1.0  # seconds from an outage's start to its first probe


@dataclass(frozen=True)
class GateSettings:
    threshold: int  # different orders failing in a row that make an outage
    max_probe_interval: float
    window: float = OUTAGE_WINDOW  # seconds a streak is remembered without a new failure
    first_probe: float = FIRST_PROBE  # seconds from closing to the first probe


class FleetGate:
    def __init__(
        self, store: Store, settings: GateSettings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock

    def state(self) -> GateState | None:
        raw = self.store.get(GATE_KEY)
        return None if raw is None else GateState.loads(raw)

    def note_failure(self, order_id: int, error: Exception) -> bool:
        """A transient failure of a call for ``order_id``; True if the gate is now closed."""
        now = self.clock()
        closed = GateState(
            API_UNAVAILABLE,
            since=now,
            reason=(
                f"calls for {self.settings.threshold} different orders failed in a row; "
                "Sellercloud looks unavailable"
            ),
            error=str(error),
            order_id=order_id,
            next_probe_at=now + self.settings.first_probe,
            interval=min(self.settings.first_probe * 2, self.settings.max_probe_interval),
        )
        if self.store.note_failure(
            STREAK_KEY,
            str(order_id),
            self.settings.threshold,
            self.settings.window,
            GATE_KEY,
            closed.dumps(),
        ):
            log.error(
                "Sellercloud unavailable: the fleet stops calling it and probes",
                error=str(error),
                first_probe_in=self.settings.first_probe,
            )
            MET_CLOSED_GATE.set()
            return True
        already = self.state() is not None
        if already:
            MET_CLOSED_GATE.set()
        return already

    def close(self, kind: str, reason: str, error: str = "", by: str = "") -> bool:
        """Close the gate unless it already is; True if this call closed it."""
        state = GateState(kind, since=self.clock(), reason=reason, error=error, by=by)
        return self.store.claim(GATE_KEY, state.dumps(), FOREVER)

    def refuse_credentials(self, error: Exception) -> bool:
        """The token endpoint refused the credentials: close the gate for that (over an outage,
        never over an operator's pause). True if this call changed the gate."""
        before = self.state()
        if before is not None and before.kind != API_UNAVAILABLE:
            return False
        reason = (
            "the token endpoint refused the username and password; fix "
            "SELLERCLOUD_PASSWORD(_FILE) or SELLERCLOUD_USERNAME, or run order-sync resume"
        )
        if before is None:
            changed = self.close(CREDENTIALS, reason, str(error))
        else:  # an outage turned out to be the credentials: keep since when calls stopped
            state = GateState(CREDENTIALS, since=before.since, reason=reason, error=str(error))
            self.store.put(GATE_KEY, state.dumps())
            changed = True
        if changed:
            log.error("Sellercloud refused the credentials: the fleet pauses", error=str(error))
        MET_CLOSED_GATE.set()
        return changed

    def pause(self, reason: str, by: str) -> GateState:
        """An operator's pause, over whatever closed the gate before (it is kept in ``error``)."""
        before = self.state()
        state = GateState(
            OPERATOR,
            since=before.since if before else self.clock(),
            reason=reason,
            error=f"{before.kind}: {before.reason}" if before else "",
            by=by,
        )
        self.store.put(GATE_KEY, state.dumps())
        return state

    def open(self) -> None:
        """Let calls flow again, and forget the streak of failures that closed the gate."""
        self.store.delete(GATE_KEY, STREAK_KEY)

    # Probing --------------------------------------------------------------------------------
    def probe_order(self, state: GateState) -> int | None:
        """Which order's waiting changes the next probe sends: each probe takes the next of the
        orders whose failures made the outage, so one order that fails for reasons of its own
        cannot keep the fleet paused."""
        candidates = sorted({int(m) for m in self.store.members(STREAK_KEY) if m.isdigit()})
        if state.order_id is not None and state.order_id not in candidates:
            candidates.insert(0, state.order_id)
        return candidates[state.probes % len(candidates)] if candidates else None

    def probe_turn(self, owner: str, hold: float) -> bool:
        """Take the fleet's one probe turn for up to ``hold`` seconds; False if another has it."""
        return self.store.claim(PROBE_KEY, owner, hold)

    def end_turn(self, owner: str) -> None:
        """Give the turn up, but not at once: the fleet probes at most once a second."""
        if self.store.get(PROBE_KEY) == owner:
            self.store.put(PROBE_KEY, owner, ttl=MIN_PROBE_SPACING)

    def probe_failed(self, probed: GateState, error: str) -> GateState | None:
        """Schedule the next probe, each further away (up to the cap); None if the gate
        changed meanwhile (opened, or paused by an operator)."""
        current = self.state()
        if current is None or current.kind != probed.kind or current.since != probed.since:
            return None
        later = replace(
            current,
            error=error,
            next_probe_at=self.clock() + current.interval,
            interval=min(current.interval * 2, self.settings.max_probe_interval),
            probes=current.probes + 1,
        )
        self.store.put(GATE_KEY, later.dumps())
        return later
