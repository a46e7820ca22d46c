"""Bearer-token authentication for Sellercloud, as a ``requests`` auth object.

Sellercloud issues tokens from ``POST {base}/token`` with no refresh token: when one expires the
client logs in again. ``TokenCache`` keeps the current token and fetches a new one shortly before
``expires_in`` runs out; fetches are single-flight, so many threads that find the token stale (or
that all get a 401 at once) cause one token request. ``BearerTokenAuth`` puts the token on each
request and, like ``requests.auth.HTTPDigestAuth``, answers a 401 from a response hook: it
refreshes the token and sends the request again, once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.auth import AuthBase

# Refresh ahead of expiry by this share of the lifetime, capped, so a token never lapses mid-call.
REFRESH_SHARE = 0.1
REFRESH_MARGIN_MAX = 300.0


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    issued_at: float  # all three on the time.monotonic() clock
    expires_at: float
    refresh_at: float

    @classmethod
    def issued(cls, value: str, expires_in: float, now: float) -> Token:
        margin = min(REFRESH_MARGIN_MAX, expires_in * REFRESH_SHARE)
        return cls(
            value=value,
            issued_at=now,
            expires_at=now + expires_in,
            refresh_at=now + expires_in - margin,
        )


class TokenCache:
    """The current token, fetched on first use and again shortly before it expires."""

    def __init__(
        self,
        fetch: Callable[[str | None], tuple[str, float]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # fetch(rejected) returns (access_token, seconds it stays valid); ``rejected`` is the
        # token the API just refused, or None when the current one is merely about to expire.
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Token | None = None
        self.fetches = 0

    def get(self) -> str:
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        with self._lock:
            # Another thread may have refreshed while this one waited for the lock.
            if self._token is token or self._token is None:
                self._token = self._new_token(None)
            return self._token.value

    def replace(self, rejected: str) -> str:
        """A token the API refused: fetch a new one unless another thread already did."""
        with self._lock:
            if self._token is None or self._token.value == rejected:
                self._token = self._new_token(rejected)
            return self._token.value

    def age(self) -> float | None:
        """Seconds since the current token was fetched; None before the first fetch."""
        token = self._token
        if token is None:
            return None
        return self._clock() - token.issued_at

    def _new_token(self, rejected: str | None) -> Token:
        started = self._clock()
        value, expires_in = self._fetch(rejected)
        self.fetches += 1
        return Token.issued(value, expires_in, started)


def _bearer(token: str) -> str:
    return f"Bearer {token}"


class BearerTokenAuth(AuthBase):
    """Sends ``Authorization: Bearer ...``; a 401 refreshes the token and repeats the call once."""

    def __init__(self, tokens: TokenCache, before_repeat: Callable[[], None] | None = None) -> None:
        self.tokens = tokens
        self.before_repeat = before_repeat  # the repeat is a call like any other: rate-limit it

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = _bearer(self.tokens.get())
        request.register_hook("response", self._retry_on_401)  # type: ignore[no-untyped-call]
        return request

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        sent = str(response.request.headers.get("Authorization", ""))
        fresh = self.tokens.replace(sent.removeprefix("Bearer "))
        # Drain and release the connection so the repeat can reuse it.
        _ = response.content
        response.close()
        repeat = response.request.copy()
        repeat.headers["Authorization"] = _bearer(fresh)
        repeat.deregister_hook("response", self._retry_on_401)  # type: ignore[no-untyped-call]
        if self.before_repeat is not None:
            self.before_repeat()
        adapter: Any = response.connection  # the HTTPAdapter that sent the first request
        second: requests.Response = adapter.send(repeat, **kwargs)
        second.history.append(response)
        second.request = repeat
        return second

    def __repr__(self) -> str:
        return "BearerTokenAuth(<token hidden>)"
