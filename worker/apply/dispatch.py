"""Each worker's dispatcher: spends the fleet's API budget one order turn at a time.

Events wait in the shared store, not in the broker or in a worker (``worker.intake`` acks each
once it is stored), so a backlog of any size and any duration holds nothing unacknowledged. A
thread in the worker's main process repeats:

1. is an order due? (live first; bulk first on every n-th turn, its minimum share)
2. wait for the fleet's next rate-limit slot;
3. only then lock the order that has waited longest and take everything pending for it, so
   events that arrived during the wait go in the same PUT;
4. hand the turn to one of the worker's sender threads, which sends it and settles it.

Under a rate limit, an order whose events are still being read from the broker (its queue has
a backlog) waits for the read to finish, up to ``ORDER_SYNC_BACKLOG_HOLD`` seconds: a backlog
waiting at start costs one PUT per order, not one per event the first turns happened to see.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from worker.apply import runtime
from worker.apply.runtime import Runtime
from worker.apply.sync import DeadLetter, take_turn
from worker.coordination.gate import FleetPaused
from worker.coordination.orders import BULK, LANES, LIVE, OrderTurn
from worker.coordination.store import StoreUnavailable
from worker.sellercloud.errors import RateLimited

log = structlog.get_logger(__name__)

# With nothing due, how often to look again (a local event also wakes the dispatcher at once).
IDLE_SECONDS = 0.2
# After the store or the rate limit said no, how long to wait before asking again, at most.
BACKOFF_SECONDS = 1.0

#: Lane -> whether its queue in the broker still holds a backlog being read.
IntakeBehind = Callable[[], dict[str, bool]]


class Dispatcher:
    def __init__(
        self,
        senders: int,
        intake_behind: IntakeBehind,
        dead_letter: DeadLetter,
    ) -> None:
        self.senders = max(1, senders)
        self.intake_behind = intake_behind
        self.dead_letter = dead_letter
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.turns = 0
        self._free = threading.Semaphore(self.senders)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        # Its threads start with the first turn handed to it.
        self._pool = ThreadPoolExecutor(self.senders, thread_name_prefix="order-sender")
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No new turns; turns being sent finish (a turn cut short is due again later)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def wake(self) -> None:
        """An event just joined its order: look for a due order now. Thread-safe."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            if not self._free.acquire(timeout=BACKOFF_SECONDS):
                continue
            handed = False
            try:
                handed = self._one_turn(runtime.current())
            except FleetPaused:
                self._stopped.wait(BACKOFF_SECONDS)  # the gatekeeper probes; nothing to do
            except RateLimited as limited:
                self._stopped.wait(_seconds_until(limited))
            except StoreUnavailable as exc:
                log.warning("dispatcher: shared store unavailable", error=str(exc))
                self._stopped.wait(BACKOFF_SECONDS)
            except Exception:
                log.exception("dispatcher: turn failed")
                self._stopped.wait(BACKOFF_SECONDS)
            finally:
                if not handed:
                    self._free.release()

    def holds(self, rt: Runtime) -> dict[str, float]:
        """Lane -> seconds an order must have waited for its turn, in the order lanes are
        served this turn."""
        fleet = rt.fleet
        behind = self.intake_behind() if fleet.rate_limit is not None else {}
        hold = {lane: fleet.backlog_hold if behind.get(lane) else 0.0 for lane in LANES}
        every = max(1, round(1 / fleet.bulk_share))
        order = (BULK, LIVE) if self.turns % every == every - 1 else (LIVE, BULK)
        return {lane: hold[lane] for lane in order}

    def _one_turn(self, rt: Runtime) -> bool:
        """One turn handed to a sender; False if none was due."""
        # Nothing waiting at all is the idle worker's answer, found without asking the broker
        # how far behind its reading is.
        if not rt.coordinator.due(dict.fromkeys(LANES, 0.0)) or not rt.coordinator.due(
            self.holds(rt)
        ):
            self._wake.wait(IDLE_SECONDS)
            self._wake.clear()
            return False
        rt.limiter.wait()  # this call's slot: sleeps until it comes
        slot_at = time.time()
        # The holds again: the reading may have caught up (or fallen behind) during the wait.
        turn = rt.coordinator.next_turn(self.owner, self.holds(rt))
        if turn is None:  # another worker took it meanwhile; the slot goes unused
            return False
        self.turns += 1
        self._pool.submit(self._send, rt, turn, slot_at)
        return True

    def _send(self, rt: Runtime, turn: OrderTurn, slot_at: float) -> None:
        try:
            take_turn(rt, turn, self.owner, self.dead_letter, slot_at=slot_at)
        except FleetPaused:
            pass  # back in line; the dispatcher sees the closed gate at its next slot
        except StoreUnavailable:
            pass  # said by the turn; its order is due again once its lock runs out
        except Exception:
            log.exception("order turn failed; its events wait for another turn")
        finally:
            structlog.contextvars.clear_contextvars()
            self._free.release()


def _seconds_until(limited: RateLimited) -> float:
    if limited.reset_at is None:
        return BACKOFF_SECONDS
    wait = limited.reset_at.timestamp() - time.time()
    return min(max(wait, 0.05), BACKOFF_SECONDS)
