"""One Sellercloud token for the whole fleet (``SharedTokens``), on real Redis and on SQLite.

What it promises: the first process that needs a token fetches it under a store lock and the
others read it (one login, however many ask at once); a token is refreshed once less than
``MARGIN_SHARE`` of its life (at most ``MARGIN_MAX``) is left; after a 401 one process fetches a
new token, and only if nobody replaced the refused one; the lock outlives no holder for more
than ``LOCK_SECONDS``; and a waiter never stays without a token past ``LOCK_SECONDS``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tests.unit.shared_stores import BACKENDS, FrozenClock, fresh_stores
from worker.coordination import tokens
from worker.coordination.store import Store
from worker.coordination.tokens import LOCK_KEY, TOKEN_KEY, SharedTokens

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


class Logins:
    """The real token call, counted: every call is one login, whatever it returns."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, float]:
        with self._lock:
            token = f"token-{len(self.calls) + 1}"
            self.calls.append(token)
        return token, self.lifetime


class RefusedClaims:
    """A store that counts, per process, the times the token lock was held by someone else."""

    def __init__(self, store: Store, seen: threading.Condition, refused: list[int], me: int):
        self._store, self._seen, self._refused, self._me = store, seen, refused, me

    def claim(self, key: str, value: str, ttl: float) -> bool:
        claimed = self._store.claim(key, value, ttl)
        if not claimed and key == LOCK_KEY:
            with self._seen:
                self._refused[self._me] += 1
                self._seen.notify_all()
        return claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_many_asking_at_once_log_in_once(backend: str, processes: bool) -> None:
    """Four fetchers (four processes, each with its own store object; or four threads of one
    process sharing one) all ask while the first login is under way: one login in all."""
    count = 4
    with fresh_stores(backend, count if processes else 1) as stores:
        seen = threading.Condition()
        refused = [0] * count
        logins = Logins()

        def slow_login() -> tuple[str, float]:
            # Hold the lock until every other fetcher has found it taken at least once: the
            # very moment a second login would happen if the lock did not keep it out.
            with seen:
                seen.wait_for(lambda: sum(1 for r in refused if r) >= count - 1, timeout=10)
            return logins()

        fetchers = [
            SharedTokens(
                cast(Store, RefusedClaims(stores[i if processes else 0], seen, refused, i)),
                slow_login,
            )
            for i in range(count)
        ]
        got: list[tuple[str, float]] = []
        threads = [threading.Thread(target=lambda f=f: got.append(f.fetch(None))) for f in fetchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert logins.calls == ["token-1"]  # with multiplicity: exactly one login
        assert sum(1 for r in refused if r) == count - 1  # the others really did wait
        assert sorted(token for token, _ in got) == ["token-1"] * count
        assert all(3500 < remaining <= 3600 for _, remaining in got)
        # A process started later reads it too.
        later = SharedTokens(stores.open(), logins)
        assert later.fetch(None)[0] == "token-1"
        assert logins.calls == ["token-1"]
        assert stores[0].get(LOCK_KEY) is None  # the fetcher let go of the lock


class StaleRead:
    """A store whose first read of the token comes back empty just as another process fetches
    and stores one: the reader finds no token, then finds the lock free."""

    def __init__(self, store: Store, meanwhile: Callable[[], object]) -> None:
        self._store, self._meanwhile = store, meanwhile
        self.raced = False

    def get(self, key: str) -> str | None:
        value = self._store.get(key)
        if key == TOKEN_KEY and value is None and not self.raced:
            self.raced = True
            self._meanwhile()  # the other process logs in, stores the token, lets go
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_token_stored_just_before_taking_the_lock_is_used(backend: str) -> None:
    with fresh_stores(backend, 2) as (one, other):
        logins = Logins()
        first = SharedTokens(one, logins)
        racing = StaleRead(other, lambda: first.fetch(None))
        assert SharedTokens(cast(Store, racing), logins).fetch(None)[0] == "token-1"
        assert racing.raced
        assert logins.calls == ["token-1"]  # the lock's holder looked again before logging in


@pytest.mark.parametrize(
    ("lifetime", "margin"),
    [(100.0, 10.0), (3600.0, 300.0)],  # a tenth of its life, at most five minutes
    ids=["short-lived", "hour"],
)
def test_a_token_near_its_expiry_is_refreshed(
    backend: str, lifetime: float, margin: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FrozenClock()  # the tokens' clock; the store's TTLs run on real time, far from done
    monkeypatch.setattr(
        tokens, "time", SimpleNamespace(time=clock.time, monotonic=time.monotonic, sleep=time.sleep)
    )
    with fresh_stores(backend, 2) as (one, other):
        logins = Logins(lifetime)
        assert SharedTokens(one, logins).fetch(None) == ("token-1", lifetime)

        clock.advance(lifetime - margin - 1)  # one second more than the margin left: kept
        assert SharedTokens(other, logins).fetch(None) == ("token-1", margin + 1)
        assert logins.calls == ["token-1"]

        clock.advance(2)  # one second less than the margin left: refreshed, once for everyone
        assert SharedTokens(other, logins).fetch(None) == ("token-2", lifetime)
        assert SharedTokens(one, logins).fetch(None) == ("token-2", lifetime)
        assert logins.calls == ["token-1", "token-2"]
        stored = json.loads(one.get(TOKEN_KEY) or "{}")
        assert stored == {
            "token": "token-2",
            "expires_at": clock.now + lifetime,
            "lifetime": lifetime,
        }


def test_a_refused_token_is_replaced_once_for_the_fleet(backend: str) -> None:
    with fresh_stores(backend, 2) as (one, other):
        logins = Logins()
        first, second = SharedTokens(one, logins), SharedTokens(other, logins)
        assert first.fetch(None)[0] == second.fetch(None)[0] == "token-1"
        # Both get a 401 for token-1: the first to ask fetches token-2, the other takes it.
        assert first.fetch("token-1")[0] == "token-2"
        assert second.fetch("token-1")[0] == "token-2"
        assert logins.calls == ["token-1", "token-2"]
        assert second.fetch("token-2")[0] == "token-3"  # refused again: a new one
        assert logins.calls == ["token-1", "token-2", "token-3"]


LIFETIME = 0.5  # of the crashed holder's lock


def test_a_crashed_holders_lock_expires(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process is killed while logging in, holding the lock: another process gets the lock
    once the lock's lifetime is over, logs in and shares the token (not the fallback that
    logs in alone after LOCK_SECONDS of waiting, and stores nothing)."""
    monkeypatch.setattr(tokens, "LOCK_SECONDS", 10.0)  # this process's wait before the fallback
    with fresh_stores(backend, 1) as stores:
        store = stores[0]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the holder that crashes; never returns into pytest
            try:
                tokens.LOCK_SECONDS = LIFETIME  # its lock's lifetime
                child_store = stores.open()  # a process opens its own
                asked = time.monotonic()  # (one clock for every process)

                def login_and_hang() -> tuple[str, float]:
                    os.write(write, f"{asked!r}\n".encode())
                    time.sleep(60)
                    return "never", 1.0

                SharedTokens(child_store, login_and_hang).fetch(None)
            finally:
                os._exit(0)
        try:
            assert select.select([read], [], [], 10)[0], "the holder never began to log in"
            asked = float(os.read(read, 64).decode())
            holder = store.get(LOCK_KEY)
            if time.monotonic() < asked + LIFETIME - 0.05:  # its lock cannot have run out yet
                assert holder is not None and holder.startswith(f"{pid}-")
        finally:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            os.close(write)
        logins = Logins()
        assert SharedTokens(store, logins).fetch(None)[0] == "token-1"
        assert logins.calls == ["token-1"]
        assert json.loads(store.get(TOKEN_KEY) or "{}")["token"] == "token-1"  # shared
        assert store.get(LOCK_KEY) is None


def test_a_stuck_holder_does_not_leave_a_waiter_without_a_token(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "LOCK_SECONDS", 0.3)
    with fresh_stores(backend, 1) as (store,):
        assert store.claim(LOCK_KEY, "stuck-holder", ttl=60)  # alive but never done
        logins = Logins()
        began = time.monotonic()
        assert SharedTokens(store, logins).fetch(None) == ("token-1", 3600.0)
        assert time.monotonic() - began >= 0.3  # it did wait for the holder first
        assert logins.calls == ["token-1"]
        assert store.get(LOCK_KEY) == "stuck-holder"  # nobody else's lock was taken or released
