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

from worker.coordination.store import Backlog, Entry, Keys, Lane, StoreUnavailable, Turn

T = TypeVar("T")

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# The hot-path operations (see worker.coordination.store). Keys built from prefixes inside the
# scripts need one Redis server, not a Redis Cluster. Due times come from the server's clock.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""
# KEYS: done, hash, join, events, unless_in, leave; ARGV: field, value, even_if_done, member,
# has_unless_in, has_leave. A member that leaves a set for another keeps a due time still to
# come there (its turn's lease, or its retry's wait): it joins from then, not from now.
_ABSORB = (
    """
local done = redis.call('GET', KEYS[1])
if done and ARGV[3] == '0' then return done end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 then redis.call('INCR', KEYS[4]) end
"""
    + _NOW
    + """
local at = now
if ARGV[6] == '1' then
  local left = redis.call('ZSCORE', KEYS[6], ARGV[4])
  if left then
    redis.call('ZREM', KEYS[6], ARGV[4])
    if tonumber(left) > now then at = tonumber(left) end
  end
end
if ARGV[5] == '1' and redis.call('ZSCORE', KEYS[5], ARGV[4]) then return done or '' end
redis.call('ZADD', KEYS[3], 'NX', at, ARGV[4])
return done or ''
"""
)
# KEYS: the due sets; ARGV: their holds, then lock prefix, owner, lock ms, hash prefix, done
# prefix, versions prefix, failures hash, only.
_NEXT_DUE = (
    _NOW
    + """
local n = #KEYS
local lockp, owner, ttl = ARGV[n + 1], ARGV[n + 2], tonumber(ARGV[n + 3])
local hashp, donep, versp = ARGV[n + 4], ARGV[n + 5], ARGV[n + 6]
local failures, only = ARGV[n + 7], ARGV[n + 8]
for i = 1, n do
  local candidates = {}
  if only ~= '' then
    if redis.call('ZSCORE', KEYS[i], only) then candidates = {only} end
  else
    local cutoff = now - tonumber(ARGV[i])
    candidates = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', cutoff, 'LIMIT', 0, 16)
  end
  for _, m in ipairs(candidates) do
    if redis.call('SET', lockp .. m, owner, 'NX', 'PX', ttl) then
      local all = redis.call('HGETALL', hashp .. m)
      if #all == 0 then
        redis.call('ZREM', KEYS[i], m)
        redis.call('DEL', lockp .. m)
      else
        redis.call('ZADD', KEYS[i], 'XX', now + ttl / 1000, m)
        local dones = {}
        for j = 1, #all, 2 do dones[#dones + 1] = redis.call('GET', donep .. all[j]) or '' end
        local failed = redis.call('HGET', failures, m) or '0'
        return {m, KEYS[i], all, dones, redis.call('HGETALL', versp .. m), failed}
      end
    end
  end
end
return false
"""
)
# KEYS: hash, versions, failures, events, lock, clear, then the due sets (the turn's first);
# ARGV: owner, ttl ms, failures, due_in, has_clear, member, settled count, (field, done key,
# done value) per settled field, then versions as field, value pairs.
_SETTLE_TURN = (
    """
local owner, ttl, member = ARGV[1], ARGV[2], ARGV[6]
local count = tonumber(ARGV[7])
local removed = 0
for i = 0, count - 1 do
  local at = 8 + 3 * i
  removed = removed + redis.call('HDEL', KEYS[1], ARGV[at])
  redis.call('SET', ARGV[at + 1], ARGV[at + 2], 'PX', ttl)
end
if removed > 0 then redis.call('DECRBY', KEYS[4], removed) end
local first = 8 + 3 * count
if #ARGV >= first then
  redis.call('HSET', KEYS[2], unpack(ARGV, first, #ARGV))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if tonumber(ARGV[3]) > 0 then redis.call('HSET', KEYS[3], member, ARGV[3])
else redis.call('HDEL', KEYS[3], member) end
if ARGV[5] == '1' then redis.call('DEL', KEYS[6]) end
if redis.call('GET', KEYS[5]) ~= owner then return 0 end
redis.call('DEL', KEYS[5])
local left = redis.call('HLEN', KEYS[1])
"""
    + _NOW
    + """
local placed = false
for i = 7, #KEYS do
  if left == 0 then redis.call('ZREM', KEYS[i], member)
  elseif redis.call('ZSCORE', KEYS[i], member) then
    redis.call('ZADD', KEYS[i], now + tonumber(ARGV[4]), member)
    placed = true
  end
end
if left > 0 and not placed then redis.call('ZADD', KEYS[7], now + tonumber(ARGV[4]), member) end
return 1
"""
)
_DUE = (
    _NOW
    + """
for i = 1, #KEYS do
  if #redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[i]), 'LIMIT', 0, 1) > 0 then
    return 1
  end
end
return 0
"""
)
_BACKLOG = """
local found = {redis.call('GET', KEYS[1]) or '0'}
for i = 2, #KEYS do
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  found[#found + 1] = redis.call('ZCARD', KEYS[i])
  found[#found + 1] = oldest[2] or ''
end
return found
"""
# GCRA: keep the time of the next free slot; each caller reserves one and waits until it. The
# pause is a time written by a client's clock, so it is compared with the caller's (ARGV[3]);
# slots use the server's clock, so hosts with drifting clocks still space their calls.
_TAKE_SLOT = """
local function count()
  if ARGV[5] == '1' then
    redis.call('INCR', KEYS[4])
    redis.call('PEXPIRE', KEYS[4], 180000)
  end
end
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return {'gated', '0'} end
local paused = redis.call('GET', KEYS[1])
if paused and tonumber(paused) > tonumber(ARGV[3]) then return {'paused', paused} end
if ARGV[1] == '' then
  count()
  return {'free', '0'}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[2]) or '0')
if slot < now then slot = now end
if slot - now > tonumber(ARGV[2]) then return {'full', tostring(slot - now)} end
local keep_ms = math.ceil((slot - now + interval) * 1000) + 1000
redis.call('SET', KEYS[2], tostring(slot + interval), 'PX', keep_ms)
count()
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
        self._absorb = self._redis.register_script(_ABSORB)
        self._next_due = self._redis.register_script(_NEXT_DUE)
        self._settle_turn = self._redis.register_script(_SETTLE_TURN)
        self._due = self._redis.register_script(_DUE)
        self._backlog = self._redis.register_script(_BACKLOG)
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

    def absorb(
        self, entry: Entry, lane: Lane, member: str, keys: Keys, *, even_if_done: bool = False
    ) -> str | None:
        script_keys = [
            entry.done_key,
            entry.hash_key,
            lane.join,
            keys.events,
            lane.unless_in or lane.join,
            lane.leave or lane.join,
        ]
        args = [
            entry.field,
            entry.value,
            int(even_if_done),
            member,
            int(lane.unless_in is not None),
            int(lane.leave is not None),
        ]
        done = self._run(self._absorb, script_keys, args)
        return str(done) if done else None

    def due(self, queues: list[tuple[str, float]]) -> bool:
        keys = [key for key, _ in queues]
        return bool(self._run(self._due, keys, [hold for _, hold in queues]))

    def next_due(
        self,
        queues: list[tuple[str, float]],
        keys: Keys,
        owner: str,
        lock_ttl: float,
        only: str | None = None,
    ) -> Turn | None:
        args: list[Any] = [hold for _, hold in queues]
        args += [keys.lock, owner, _ms(lock_ttl), keys.pending, keys.done, keys.versions]
        args += [keys.failures, only or ""]
        found: Any = self._run(self._next_due, [key for key, _ in queues], args)
        if not found:
            return None
        member, due_key, flat, done, versions, failures = found
        names = flat[0::2]
        return Turn(
            member=str(member),
            due_key=str(due_key),
            fields=dict(zip(names, flat[1::2], strict=True)),
            done={name: value for name, value in zip(names, done, strict=True) if value},
            versions=dict(zip(versions[0::2], versions[1::2], strict=True)),
            failures=int(failures),
        )

    def settle_turn(
        self,
        turn: Turn,
        owner: str,
        keys: Keys,
        settled: dict[str, str],
        ttl: float,
        versions: dict[str, str],
        failures: int,
        due_in: float = 0.0,
        clear: str | None = None,
    ) -> None:
        member = turn.member
        lock = keys.lock + member
        others = [key for key in keys.due if key != turn.due_key]
        script_keys = [
            keys.pending + member,
            keys.versions + member,
            keys.failures,
            keys.events,
            lock,
            clear or lock,
            turn.due_key,
            *others,
        ]
        args: list[Any] = [owner, _ms(ttl), failures, due_in, int(clear is not None), member]
        args.append(len(settled))
        for name, outcome in settled.items():
            args += [name, keys.done + name, outcome]
        for pair in versions.items():
            args.extend(pair)
        self._run(self._settle_turn, script_keys, args)

    def backlog(self, due_keys: list[str], events_key: str) -> Backlog:
        found: Any = self._run(self._backlog, [events_key, *due_keys], [])
        members, oldest = {}, {}
        for i, key in enumerate(due_keys):
            members[key] = int(found[1 + 2 * i])
            score = found[2 + 2 * i]
            oldest[key] = float(score) if score else None
        return Backlog(members, max(0, int(found[0])), oldest)

    def take_slot(
        self,
        pause_key: str,
        slot_key: str,
        interval: float | None,
        longest_wait: float,
        gate_key: str | None = None,
        count_key: str | None = None,
    ) -> tuple[str, float]:
        args = ["" if interval is None else interval, longest_wait, time.time()]
        args += [int(gate_key is not None), int(count_key is not None)]
        keys = [pause_key, slot_key, gate_key or pause_key, count_key or pause_key]
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

    def keeps_data(self) -> bool | None:
        """Whether Redis writes an append-only file (so events waiting for their turn survive
        its restart); None when it will not say (CONFIG is often disabled on managed Redis)."""
        try:
            found: Any = self._client.config_get("appendonly")
        except redis.RedisError:
            return None
        return str(found.get("appendonly", "")).lower() == "yes"

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


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
