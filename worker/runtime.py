"""Per-process state: the settings and the one pooled Sellercloud client of this process.

Built on first use in each process, so a prefork child never shares a connection pool (or a
token lock) with its parent.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from worker.sellercloud.client import SellercloudClient
from worker.settings import ApiSettings, api_settings


@dataclass(frozen=True)
class Runtime:
    settings: ApiSettings
    client: SellercloudClient


_lock = threading.Lock()
_by_pid: dict[int, Runtime] = {}
pool_size = 10  # set from the worker's concurrency at start


def current() -> Runtime:
    pid = os.getpid()
    found = _by_pid.get(pid)
    if found is not None:
        return found
    with _lock:
        if pid not in _by_pid:
            settings = api_settings()
            client = SellercloudClient(
                settings.base_url,
                settings.username,
                settings.password,
                timeout=settings.http_timeout,
                pool_size=pool_size,
            )
            _by_pid.clear()  # entries of a parent process are useless in a child
            _by_pid[pid] = Runtime(settings, client)
        return _by_pid[pid]
