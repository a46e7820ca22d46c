"""Each worker's gatekeeper: keeps its consumers in step with the fleet's gate, and probes.

A thread in the worker's main process reads the gate once a second (one store read). While
the gate is closed the worker reads neither the events queue nor the task queue, so events wait
in the broker and the worker idles; what it already held comes back to the queues as each
task meets the closed gate. When a probe is due, the first worker to take the fleet's one turn
sends it; when the probe is answered, the gate opens and every worker reads again within a
second.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable

import structlog

from worker.apply import runtime
from worker.apply.probe import ProbeFailures, probe
from worker.apply.sync import DeadLetter
from worker.coordination.gate import API_UNAVAILABLE, CREDENTIALS, MET_CLOSED_GATE, GateState
from worker.coordination.store import StoreUnavailable
from worker.sellercloud.errors import CredentialsRefused

log = structlog.get_logger(__name__)

TICK_SECONDS = 1.0


def _fingerprint(credentials: tuple[str, str]) -> str:
    """Tells two passwords apart in this process's memory; never stored or logged."""
    return hashlib.sha256("\0".join(credentials).encode()).hexdigest()


class Gatekeeper:
    def __init__(
        self,
        set_reading: Callable[[GateState | None], None],
        dead_letter: DeadLetter,
        heartbeat: Callable[[], None] = lambda: None,
        tick: float = TICK_SECONDS,
    ) -> None:
        # Given the gate as it is: read the queues while it is open (None), else stop.
        self.set_reading = set_reading
        self.heartbeat = heartbeat  # every tick, whatever the store says
        self.dead_letter = dead_letter
        self.tick_seconds = tick
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Credentials this worker saw refused: it probes again only with other ones.
        self.refused: str | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gatekeeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            MET_CLOSED_GATE.wait(self.tick_seconds)
            MET_CLOSED_GATE.clear()
            if self._stopped.is_set():
                return
            self.heartbeat()
            try:
                self.tick()
            except StoreUnavailable:
                pass  # the tasks say so; the gate stays as this worker last saw it
            except Exception:
                log.exception("gatekeeper tick failed")

    def tick(self) -> None:
        rt = runtime.current()
        state = rt.gate.state()
        self.set_reading(state)
        if state is None:
            self.refused = None
        elif self._probe_due(state):
            self._probe(state)

    def _probe_due(self, state: GateState) -> bool:
        if state.kind == API_UNAVAILABLE:
            return time.time() >= state.next_probe_at
        if state.kind == CREDENTIALS:
            return _fingerprint(runtime.current().client.credentials()) != self.refused
        return False  # an operator's pause ends only with order-sync resume

    def _probe(self, state: GateState) -> None:
        rt = runtime.current()
        if not rt.gate.probe_turn(self.owner, hold=2 * rt.settings.http_timeout + 5):
            return
        credentials = _fingerprint(rt.client.credentials())
        try:
            probe(rt, state, self.owner, self.dead_letter)
        except ProbeFailures as failed:
            if isinstance(failed, CredentialsRefused):
                self.refused = credentials
            later = rt.gate.probe_failed(state, str(failed))
            log.warning(
                "probe failed: the fleet stays paused",
                kind=state.kind,
                error=str(failed),
                next_probe_in=round(later.next_probe_at - time.time(), 1) if later else None,
            )
            return
        finally:
            rt.gate.end_turn(self.owner)
        rt.gate.open()
        log.info(
            "Sellercloud answered the probe: the fleet resumes",
            kind=state.kind,
            paused_seconds=round(time.time() - state.since, 1),
        )
