"""Per-process state: settings, the shared store, and the one pooled Sellercloud client.

Built on first use in each process, so a prefork child never shares a connection pool, a
store connection or a token lock with its parent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from worker.apply.retry import RetryPolicy
from worker.coordination.backends import open_store
from worker.coordination.gate import FleetGate, GateSettings
from worker.coordination.orders import OrderCoordinator
from worker.coordination.ratelimit import FleetRateLimiter
from worker.coordination.store import Store
from worker.coordination.tokens import SharedTokens
from worker.observability import metrics
from worker.sellercloud.client import SellercloudClient
from worker.settings import (
    ApiSettings,
    ConfigError,
    FleetSettings,
    api_settings,
    credentials,
    fleet_settings,
)


@dataclass(frozen=True)
class Runtime:
    settings: ApiSettings
    fleet: FleetSettings
    store: Store
    coordinator: OrderCoordinator
    limiter: FleetRateLimiter
    client: SellercloudClient
    policy: RetryPolicy
    gate: FleetGate


_lock = threading.Lock()
_by_pid: dict[int, Runtime] = {}
pool_size = 10  # set from the worker's concurrency at start


def _build() -> Runtime:
    settings = api_settings()
    fleet = fleet_settings()
    store = open_store(fleet.redis_url, str(fleet.store_path))
    limiter = FleetRateLimiter(store, fleet.rate_limit)
    client = SellercloudClient(
        settings.base_url,
        settings.username,
        settings.password,
        timeout=settings.http_timeout,
        pool_size=pool_size,
        before_call=limiter.wait,
        observe=metrics.observe_api_call,
        shared_tokens=lambda login: SharedTokens(store, login).fetch,
        credentials=_current_credentials(settings),
    )
    coordinator = OrderCoordinator(store, fleet.dedup_window, fleet.order_lock_ttl)
    policy = RetryPolicy.from_settings(settings)
    gate = FleetGate(store, GateSettings(fleet.outage_threshold, fleet.probe_interval_max))
    return Runtime(settings, fleet, store, coordinator, limiter, client, policy, gate)


def _current_credentials(settings: ApiSettings) -> Callable[[], tuple[str, str]]:
    def current() -> tuple[str, str]:
        try:
            return credentials()
        except ConfigError:  # the password file went missing: keep what the worker started with
            return settings.username, settings.password

    return current


def current() -> Runtime:
    pid = os.getpid()
    found = _by_pid.get(pid)
    if found is not None:
        return found
    with _lock:
        if pid not in _by_pid:
            _by_pid.clear()  # entries of a parent process are useless in a child
            _by_pid[pid] = _build()
        return _by_pid[pid]
