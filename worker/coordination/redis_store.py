"""The shared store on Redis: one server for every worker of the fleet, on every host.

Time for rate-limit slots comes from the Redis server, so hosts with drifting clocks still space
their calls correctly.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import redis
from redis.commands.core import Script

from worker.coordination.store import Entry, Lock, StoreUnavailable, Taken

T = TypeVar("T")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The hot-path operations (see worker.coordination.store). The done keys of taken fields are built
# inside the scripts, so this store needs one Redis server, not a Redis Cluster.
_ADD = """
local done = redis.call('GET', KEYS[1])
if done and ARGV[4] == '0' then return {done} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
"""
_TAKE = """
local all = redis.call('HGETALL', KEYS[2])
redis.call('DEL', KEYS[2])
local dones = {}
for i = 1, #all, 2 do
  dones[#dones + 1] = redis.call('GET', prefix .. all[i]) or ''
end
"""
_ADD_UNLESS_DONE = _ADD + "return {done or ''}"
_ADD_AND_CLAIM = (
    _ADD
    + """
if not redis.call('SET', KEYS[3], ARGV[5], 'NX', 'PX', ARGV[6]) then return {done or ''} end
local prefix = ARGV[7]
"""
    + _TAKE
    + "return {done or '', all, dones, redis.call('HGETALL', KEYS[4])}"
)
_TAKE_ALL_IF_LOCKED = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local prefix = ARGV[3]
"""
    + _TAKE
    + "return {all, dones, redis.call('HGETALL', KEYS[3])}"
)
_SETTLE = """
local ttl = ARGV[2]
local count = tonumber(ARGV[3])
for i = 0, count - 1 do
  redis.call('SET', ARGV[4 + 2 * i], ARGV[5 + 2 * i], 'PX', ttl)
end
local first = 4 + 2 * count
if #ARGV >= first then
  redis.call('HSET', KEYS[1], unpack(ARGV, first, #ARGV))
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if KEYS[4] then redis.call('DEL', KEYS[4]) end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('DEL', KEYS[3])
return 1
"""
# GCRA: keep the time of the next free slot; each caller reserves one and waits until it. The
# pause is a time written by a client's clock, so it is compared with the caller's (ARGV[3]);
# slots use the server's clock, so hosts with drifting clocks still space their calls.
_TAKE_SLOT = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return {'gated', '0'} end
local paused = redis.call('GET', KEYS[1])
if paused and tonumber(paused) > tonumber(ARGV[3]) then return {'paused', paused} end
if ARGV[1] == '' then return {'free', '0'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[2]) or '0')
if slot < now then slot = now end
if slot - now > tonumber(ARGV[2]) then return {'full', tostring(slot - now)} end
local keep_ms = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[2], tostring(slot + interval), 'PX', keep_ms)
return {'reserved', tostring(slot - now)}
"""

_NOTE_FAILURE = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('SCARD', KEYS[1]) < tonumber(ARGV[2]) then return 0 end
if redis.call('SET', KEYS[2], ARGV[4], 'NX') then return 1 end
return 0
"""


class RedisStore:
    def __init__(self, url: str) -> None:
        self._url = url
        # One connection per thread, held for the thread's life: the shared pool's checkout and
        # return cost about a quarter of a round trip's CPU, on every call.
        self._local = threading.local()
        self._clients: weakref.WeakSet[redis.Redis] = weakref.WeakSet()
        self._clients_lock = threading.Lock()
        # A forked child (prefork pool) must not share its parent's sockets: it opens its own.
        forget = functools.partial(_forget_connections, weakref.ref(self))
        os.register_at_fork(after_in_child=forget)
        self._redis = self._connect(single=False)  # holds the scripts; never connects itself
        self._release = self._redis.register_script(_RELEASE)
        self._take_slot = self._redis.register_script(_TAKE_SLOT)
        self._add_unless_done = self._redis.register_script(_ADD_UNLESS_DONE)
        self._add_and_claim = self._redis.register_script(_ADD_AND_CLAIM)
        self._take_all_if_locked = self._redis.register_script(_TAKE_ALL_IF_LOCKED)
        self._settle = self._redis.register_script(_SETTLE)
        self._note_failure = self._redis.register_script(_NOTE_FAILURE)

    def _connect(self, single: bool) -> redis.Redis:
        # Short timeouts: a store outage must surface as StoreUnavailable, not hang a worker.
        return redis.Redis.from_url(
            self._url,
            socket_timeout=5,
            socket_connect_timeout=5,
            decode_responses=True,
            single_connection_client=single,
        )

    @property
    def _client(self) -> redis.Redis:
        client: redis.Redis | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._connect(single=True)
            with self._clients_lock:
                self._clients.add(client)
        return client

    def _call(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis: {exc}") from exc

    def _run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        return self._call(lambda: script(keys=keys, args=args, client=self._client))

    def claim(self, key: str, value: str, ttl: float) -> bool:
        return bool(self._call(lambda: self._client.set(key, value, nx=True, px=_ms(ttl))))

    def release(self, key: str, value: str) -> bool:
        return bool(self._run(self._release, [key], [value]))

    def get(self, key: str) -> str | None:
        value: Any = self._call(lambda: self._client.get(key))
        return None if value is None else str(value)

    def put(self, key: str, value: str, ttl: float | None = None) -> None:
        self._call(lambda: self._client.set(key, value, px=_ms(ttl) if ttl else None))

    def delete(self, *keys: str) -> None:
        if keys:
            self._call(lambda: self._client.delete(*keys))

    def members(self, key: str) -> list[str]:
        found: Any = self._call(lambda: self._client.smembers(key))
        return [str(member) for member in found]

    def hash_put(self, key: str, fields: dict[str, str], ttl: float) -> None:
        def write() -> None:
            with self._client.pipeline() as pipe:
                pipe.hset(key, mapping=dict[Any, Any](fields))
                pipe.pexpire(key, _ms(ttl))
                pipe.execute()

        self._call(write)

    def add_unless_done(self, entry: Entry, *, even_if_done: bool = False) -> str | None:
        keys, args = _entry(entry, even_if_done)
        (done,) = self._run(self._add_unless_done, keys, args)
        return done or None

    def add_and_claim(
        self,
        entry: Entry,
        lock: Lock,
        done_prefix: str,
        versions_key: str,
        *,
        even_if_done: bool = False,
    ) -> tuple[str | None, Taken | None]:
        keys, args = _entry(entry, even_if_done)
        keys += [lock.key, versions_key]
        args += [lock.owner, _ms(lock.ttl), done_prefix]
        done, *taken = self._run(self._add_and_claim, keys, args)
        return done or None, _taken(*taken) if taken else None

    def take_all_if_locked(
        self, lock: Lock, hash_key: str, done_prefix: str, versions_key: str
    ) -> Taken | None:
        keys = [lock.key, hash_key, versions_key]
        args: list[str | int] = [lock.owner, _ms(lock.ttl), done_prefix]
        found: Any = self._run(self._take_all_if_locked, keys, args)
        return None if found is None else _taken(*found)

    def settle(
        self,
        done: dict[str, str],
        ttl: float,
        versions_key: str,
        versions: dict[str, str],
        hash_key: str,
        lock: Lock,
        clear: str | None = None,
    ) -> bool:
        args: list[str | int] = [lock.owner, _ms(ttl), len(done)]
        for pair in (*done.items(), *versions.items()):
            args.extend(pair)
        keys = [versions_key, hash_key, lock.key, *([clear] if clear else [])]
        return bool(self._run(self._settle, keys, args))

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
    ) -> tuple[str, float]:
        args = ["" if interval is None else interval, longest_wait, time.time()]
        keys = [pause_key, slot_key, *([gate_key] if gate_key else [])]
        state, value = self._run(self._take_slot, keys, args)
        return str(state), float(value)

    def note_failure(
        self,
        streak_key: str,
        member: str,
        threshold: int,
        window: float,
        gate_key: str,
        gate_value: str,
    ) -> bool:
        args = [member, threshold, _ms(window), gate_value]
        return bool(self._run(self._note_failure, [streak_key, gate_key], args))

    def close(self) -> None:
        with self._clients_lock:
            clients = list(self._clients)
        for client in (*clients, self._redis):
            client.close()


def _forget_connections(store: weakref.ref[RedisStore]) -> None:
    live = store()
    if live is not None:
        live._local = threading.local()
        live._clients = weakref.WeakSet()


def _entry(entry: Entry, even_if_done: bool) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of the ``_ADD`` part of a script."""
    args = [entry.field, entry.value, _ms(entry.ttl), int(even_if_done)]
    return [entry.done_key, entry.hash_key], args


def _taken(flat: list[str], done: list[str], versions: list[str]) -> Taken:
    names = flat[0::2]
    return Taken(
        fields=dict(zip(names, flat[1::2], strict=True)),
        done={name: value for name, value in zip(names, done, strict=True) if value},
        versions=dict(zip(versions[0::2], versions[1::2], strict=True)),
    )


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
