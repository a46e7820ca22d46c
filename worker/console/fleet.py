"""The overview's figures: queue depths, the oldest waiting event, the fleet's state (gate, rate
budget, token age), the backlog waiting for the API budget (orders, events, calls in the last
minute, when it will be done), workers that answer a ping, and events applied and dead-lettered
per minute. Each figure is read on its own: one that fails shows why, the others still show."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from worker.settings import BrokerSettings

#: A worker that does not answer a ping within this long is not counted.
PING_SECONDS = 1.0
#: Workers seen are asked again at most this often (a ping costs up to PING_SECONDS).
PING_CACHE_SECONDS = 10.0
MINUTES = 15

PerMinute = Callable[[int], list[dict[str, Any]]]


@dataclass
class _PingCache:
    at: float = 0.0
    names: list[str] | None = None
    note: str = ""
    asking: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


class Fleet:
    def __init__(self, broker: BrokerSettings, per_minute: PerMinute | None = None) -> None:
        self.broker = broker
        self.per_minute = per_minute
        self._ping = _PingCache()
        self._pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="console-fleet")

    def workers(self) -> tuple[list[str] | None, str]:
        """Workers that answered the latest ping. Only the first call waits for one; later
        ones show the latest answer and, when it is older than PING_CACHE_SECONDS, ask again in
        the background, so no page waits for a ping."""
        if self.broker.is_embedded:
            return None, "not asked: workers on the embedded broker take no remote commands"
        cache = self._ping
        with cache.lock:
            first = cache.at == 0.0
            stale = time.monotonic() - cache.at >= PING_CACHE_SECONDS
            if stale and not cache.asking:
                cache.asking = True
                job = self._pool.submit(self._ask)
            else:
                job = None
        if first and job is not None:
            job.result()
        return cache.names, cache.note

    def _ask(self) -> None:
        cache = self._ping
        try:
            from worker.celery import app

            replies = app.control.ping(timeout=PING_SECONDS) or []
            names: list[str] | None = sorted(name for reply in replies for name in reply)
            note = f"answered a ping within {PING_SECONDS:g} s"
        except Exception as exc:
            names, note = None, f"unavailable: {_describe(exc)}"
        with cache.lock:
            cache.names, cache.note = names, note
            cache.at = time.monotonic()
            cache.asking = False

    def snapshot(self, dead_letters: Callable[[], int]) -> dict[str, Any]:
        from worker.observability import fleet_status

        jobs: dict[str, Future[Any]] = {
            "queues": self._pool.submit(fleet_status.queue_depths),
            "oldest_waiting": self._pool.submit(fleet_status.oldest_waiting),
            "state": self._pool.submit(fleet_status.fleet_state),
            "backlog": self._pool.submit(fleet_status.backlog),
            "workers": self._pool.submit(self.workers),
            "dead_letters": self._pool.submit(dead_letters),
        }
        out: dict[str, Any] = {"as_of": dt.datetime.now(dt.UTC)}
        for name, job in jobs.items():
            try:
                out[name] = job.result()
            except Exception as exc:
                out[name] = None
                out[f"{name}_error"] = _describe(exc)
        workers = out.pop("workers") or (None, out.pop("workers_error", ""))
        out["workers"], out["workers_note"] = workers
        state = out.get("state") or {}
        out["state"] = state
        out["paused"] = bool(state) and state.get("calls", "open") != "open"
        out["per_minute"], out["rates_note"] = self._rates()
        out["peak_per_minute"] = max(
            (max(r["applied"], r["dead_lettered"]) for r in out["per_minute"]), default=0
        )
        return out

    def _rates(self) -> tuple[list[dict[str, Any]], str]:
        if self.per_minute is None:
            return [], "Per-minute figures need the order history, which is not available."
        try:
            return self.per_minute(MINUTES), ""
        except Exception as exc:
            return [], f"Per-minute figures unavailable: {_describe(exc)}"

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
