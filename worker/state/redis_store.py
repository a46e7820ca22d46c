"""The shared store on Redis: one server for every worker of the fleet, on every host.

Time for rate-limit slots comes from the Redis server, so hosts with drifting clocks still space
their calls correctly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import redis

from worker.state.store import StoreUnavailable

T = TypeVar("T")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_TAKE_ALL = """
local all = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return all
"""
# GCRA: keep the time of the next free slot; each caller reserves one and waits until it.
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local keep_ms = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', keep_ms)
return tostring(slot - now)
"""


class RedisStore:
    def __init__(self, url: str) -> None:
        # Short timeouts: a store outage must surface as StoreUnavailable, not hang a worker.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True
        )
        self._release = self._redis.register_script(_RELEASE)
        self._extend = self._redis.register_script(_EXTEND)
        self._take_all = self._redis.register_script(_TAKE_ALL)
        self._reserve = self._redis.register_script(_RESERVE)

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    def claim(self, key: str, value: str, ttl: float) -> bool:
        return bool(self._call(lambda: self._redis.set(key, value, nx=True, px=_ms(ttl))))

    def release(self, key: str, value: str) -> bool:
        return bool(self._call(lambda: self._release(keys=[key], args=[value])))

    def extend(self, key: str, value: str, ttl: float) -> bool:
        return bool(self._call(lambda: self._extend(keys=[key], args=[value, _ms(ttl)])))

    def get(self, key: str) -> str | None:
        value: Any = self._call(lambda: self._redis.get(key))
        return None if value is None else str(value)

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        self._call(lambda: self._redis.set(key, value, px=_ms(ttl) if ttl else None))

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        def write() -> None:
            with self._redis.pipeline() as pipe:
                pipe.hset(key, mapping=dict[Any, Any](fields))
                pipe.pexpire(key, _ms(ttl))
                pipe.execute()

        self._call(write)

    def hash_get_all(self, key: str) -> dict[str, str]:
        found: Any = self._call(lambda: self._redis.hgetall(key))
        return dict(found)

    def hash_take_all(self, key: str) -> dict[str, str]:
        flat: Any = self._call(lambda: self._take_all(keys=[key]))
        return dict(zip(flat[0::2], flat[1::2], strict=True))

    def reserve_slot(self, key: str, interval: float) -> float:
        return float(self._call(lambda: self._reserve(keys=[key], args=[interval])))

    def close(self) -> None:
        self._redis.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
