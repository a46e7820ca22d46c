"""Probing a closed gate: the fleet's one call to see whether Sellercloud is back.

An outage is probed with real work: the waiting events of an order that failed, sent as one
PUT, so the first success also applies them; each probe takes another of the orders that failed
(``FleetGate.probe_order``). With no such order waiting, or for refused
credentials, the probe is a token request. Either way the call goes through the closed gate
(``limiter.probing``) and through the retry policy like any other, so a probe that fails never
spends an event's retry.
"""

from __future__ import annotations

from worker.apply.retry import RetryLater
from worker.apply.runtime import Runtime
from worker.apply.sync import STALE, WAITING, DeadLetter, take_turn
from worker.coordination.gate import CREDENTIALS, FleetPaused, GateState
from worker.coordination.orders import LANES
from worker.coordination.store import StoreUnavailable
from worker.sellercloud.errors import CredentialsRefused, SellercloudError

ProbeFailures = (FleetPaused, RetryLater, SellercloudError, StoreUnavailable)


def probe(rt: Runtime, state: GateState, owner: str, dead_letter: DeadLetter) -> None:
    """One call for the fleet; returns if Sellercloud answered, raises what kept it from it."""
    with rt.limiter.probing():
        waiting = rt.gate.probe_order(state) if state.kind != CREDENTIALS else None
        if waiting is not None and _send_waiting(rt, waiting, owner, dead_letter):
            return
        try:
            rt.client.login()
        except CredentialsRefused as refused:
            rt.gate.refuse_credentials(refused)
            raise


def _send_waiting(rt: Runtime, order_id: int, owner: str, dead_letter: DeadLetter) -> bool:
    """Send what waits for ``order_id`` as one PUT; False if nothing waits or it is busy."""
    turn = rt.coordinator.next_turn(owner, {lane: 0.0 for lane in LANES}, only=order_id)
    if turn is None:
        return False
    outcome = take_turn(rt, turn, owner, dead_letter, slot_at=None)
    if outcome == WAITING:
        raise RetryLater(0.0, counted=False, reason="probe", error="the probe's call failed")
    return outcome != STALE  # stale: nothing was new, so no call was made
