"""What waits for the API budget, and when it will be done: the figures behind
``order-sync status``'s backlog lines and the ``order_sync_backlog_*`` metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass

from worker.coordination.orders import DUE, LANES, OrderCoordinator
from worker.coordination.rate import Rate
from worker.coordination.ratelimit import calls_last_minute


@dataclass(frozen=True)
class BacklogReport:
    orders: dict[str, int]  # lane -> orders waiting for a turn
    events: int  # the events they hold, all lanes
    waited_seconds: dict[str, float | None]  # lane -> how long its longest-waiting order waited
    calls_last_minute: int  # the fleet's calls to Sellercloud in the last full minute
    # Orders / the rate limit's pace (or, with no limit, last minute's pace); None: unknown.
    drain_seconds: float | None

    @property
    def total_orders(self) -> int:
        return sum(self.orders.values())


def backlog_report(
    coordinator: OrderCoordinator, rate: Rate | None, now: float | None = None
) -> BacklogReport:
    now = time.time() if now is None else now
    found = coordinator.backlog()
    orders = {lane: found.members[DUE[lane]] for lane in LANES}
    waited = {}
    for lane in LANES:
        since = found.oldest[DUE[lane]]
        waited[lane] = None if since is None else round(max(0.0, now - since), 1)
    calls = calls_last_minute(coordinator.store, now)
    total = sum(orders.values())
    if total == 0:
        drain: float | None = 0.0
    elif rate is not None:
        drain = total * rate.interval
    else:
        drain = total * 60.0 / calls if calls else None
    return BacklogReport(orders, found.fields, waited, calls, drain)
