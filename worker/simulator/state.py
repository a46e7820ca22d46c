"""Everything the simulator remembers between calls, behind one lock.

Handler threads call in concurrently; nothing here sleeps or does I/O while holding the lock.
"""

from __future__ import annotations

import copy
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from .outcomes import Outcome
from .ratelimit import RateLimit, SlidingWindow

DEFAULT_USERNAME = "demo"
DEFAULT_PASSWORD = "demo-password"  # noqa: S105 - a throwaway login for a local fake
DEFAULT_TOKEN_LIFETIME = 3600


class RecordedRequest(TypedDict):
    """One API call as the simulator saw it; ``status`` is None when the connection was dropped."""

    method: str
    path: str
    order_id: int | None
    body: Any
    status: int | None
    at: float
    authorization_valid: bool


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    username: str
    issued_at: float
    expires_at: float
    lifetime: int


class SimulatorState:
    """Credentials, tokens, stored orders, the request log, scripted failures and settings.

    ``reset()`` returns to the configuration the state was built with (credentials, token
    lifetime, latency, rate limit) and forgets everything learned or scripted since.
    """

    def __init__(
        self,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        *,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        latency_ms: int = 0,
        rate_limit: RateLimit | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._username = username
        self._password = password
        self._initial = (token_lifetime, latency_ms, rate_limit)
        self._token_lifetime = _check_lifetime(token_lifetime)
        self._latency_ms = _check_latency(latency_ms)
        self._window = SlidingWindow(rate_limit) if rate_limit else None
        self._tokens: dict[str, float] = {}
        self._issued: list[str] = []  # every token ever handed out, for leak checks in tests
        self._orders: dict[int, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._order_script: dict[int, deque[Outcome]] = {}
        self._token_script: deque[Outcome] = deque()
        # A standing outcome for every call to an endpoint until a time: an outage.
        self._outages: dict[str, tuple[Outcome, float]] = {}
        self._missing: set[int] = set()
        self._token_requests = 0
        self._put_requests = 0
        self._connections = 0

    # Settings -----------------------------------------------------------------------------------

    @property
    def username(self) -> str:
        return self._username

    @property
    def token_lifetime(self) -> int:
        """Seconds a newly issued token stays valid."""
        with self._lock:
            return self._token_lifetime

    @token_lifetime.setter
    def token_lifetime(self, seconds: int) -> None:
        seconds = _check_lifetime(seconds)
        with self._lock:
            self._token_lifetime = seconds

    @property
    def latency_ms(self) -> int:
        """Delay before answering each API call."""
        with self._lock:
            return self._latency_ms

    @latency_ms.setter
    def latency_ms(self, value: int) -> None:
        value = _check_latency(value)
        with self._lock:
            self._latency_ms = value

    @property
    def rate_limit(self) -> RateLimit | None:
        with self._lock:
            return self._window.limit if self._window else None

    @rate_limit.setter
    def rate_limit(self, limit: RateLimit | None) -> None:
        with self._lock:
            # A new limit starts with an empty window: earlier calls were made under other rules.
            self._window = SlidingWindow(limit) if limit else None

    def config(self) -> dict[str, Any]:
        with self._lock:
            return {
                "latency_ms": self._latency_ms,
                "token_lifetime": self._token_lifetime,
                "rate_limit": str(self._window.limit) if self._window else None,
            }

    # Tokens -------------------------------------------------------------------------------------

    def check_credentials(self, username: str, password: str) -> bool:
        same_user = hmac.compare_digest(username.encode(), self._username.encode())
        same_password = hmac.compare_digest(password.encode(), self._password.encode())
        return same_user and same_password

    def issue_token(self) -> IssuedToken:
        now = time.time()
        token = secrets.token_urlsafe(32)
        with self._lock:
            lifetime = self._token_lifetime
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + lifetime
            self._issued.append(token)
        return IssuedToken(token, self._username, now, now + lifetime, lifetime)

    def token_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            expires_at = self._tokens.get(token)
        return expires_at is not None and time.time() < expires_at

    def issued_tokens(self) -> list[str]:
        """Every token issued since the last reset, expired ones included."""
        with self._lock:
            return list(self._issued)

    def expire_tokens(self) -> int:
        """Invalidate every issued token; return how many were still valid."""
        now = time.time()
        with self._lock:
            alive = sum(1 for exp in self._tokens.values() if exp > now)
            self._tokens.clear()
        return alive

    # Scripted failures --------------------------------------------------------------------------

    def script_order(self, order_id: int, outcomes: Iterable[Outcome | int | str]) -> None:
        """Queue forced outcomes for the next PUTs of ``order_id``, in order."""
        parsed = [Outcome.parse(o) for o in outcomes]
        with self._lock:
            self._order_script.setdefault(order_id, deque()).extend(parsed)

    def script_token(self, outcomes: Iterable[Outcome | int | str]) -> None:
        """Queue forced outcomes for the next token calls, in order."""
        parsed = [Outcome.parse(o) for o in outcomes]
        with self._lock:
            self._token_script.extend(parsed)

    def outage(self, endpoint: str, outcome: Outcome | int | str, seconds: float) -> None:
        """Answer every call to ``endpoint`` (``order``, ``token`` or ``all``) with ``outcome``
        for the next ``seconds`` (0 ends the outage at once)."""
        if endpoint not in ("order", "token", "all"):
            raise ValueError(f"an outage is of 'order', 'token' or 'all', not {endpoint!r}")
        parsed = Outcome.parse(outcome)
        until = time.monotonic() + seconds
        with self._lock:
            for name in ("order", "token") if endpoint == "all" else (endpoint,):
                self._outages[name] = (parsed, until)

    def _outage(self, endpoint: str) -> Outcome | None:
        standing = self._outages.get(endpoint)
        if standing is None:
            return None
        outcome, until = standing
        if time.monotonic() >= until:
            del self._outages[endpoint]
            return None
        return outcome

    def set_password(self, password: str) -> None:
        """Change the password the token endpoint accepts (a rotated integration password)."""
        with self._lock:
            self._password = password

    def next_order_outcome(self, order_id: int) -> Outcome | None:
        with self._lock:
            outage = self._outage("order")
            if outage is not None:
                return outage
            queue = self._order_script.get(order_id)
            if not queue:
                return None
            outcome = queue.popleft()
            if not queue:
                del self._order_script[order_id]
            return outcome

    def next_token_outcome(self) -> Outcome | None:
        with self._lock:
            outage = self._outage("token")
            if outage is not None:
                return outage
            return self._token_script.popleft() if self._token_script else None

    def pending_script(self) -> dict[str, Any]:
        """Outcomes not yet used, in the control API's ``/_sim/script`` shape."""
        with self._lock:
            return {
                "orders": {
                    str(order_id): [o.to_json() for o in queue]
                    for order_id, queue in sorted(self._order_script.items())
                },
                "token": [o.to_json() for o in self._token_script],
            }

    def add_missing(self, order_ids: Iterable[int]) -> None:
        """Make these orders answer 404 from now on."""
        ids = set(order_ids)
        with self._lock:
            self._missing |= ids

    def is_missing(self, order_id: int) -> bool:
        with self._lock:
            return order_id in self._missing

    @property
    def missing_orders(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._missing)

    # Rate limit ---------------------------------------------------------------------------------

    def acquire_rate_slot(self) -> float | None:
        """Count one API call. None if allowed; else the POSIX time when a slot frees up."""
        with self._lock:
            if self._window is None:
                return None
            wait = self._window.acquire(time.monotonic())
        return None if wait is None else time.time() + wait

    # Orders -------------------------------------------------------------------------------------

    def apply_update(self, order_id: int, body: Mapping[str, Any]) -> dict[str, Any]:
        """Merge the non-null fields of a valid Update Order body; return the stored record.

        An address replaces the stored address whole, as the API documents.
        """
        changes = {k: copy.deepcopy(v) for k, v in body.items() if v is not None}
        with self._lock:
            record = self._orders.setdefault(order_id, {})
            record.update(changes)
            return copy.deepcopy(record)

    def order(self, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._orders.get(order_id)
            return copy.deepcopy(record) if record is not None else None

    def orders(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._orders)

    # Request log and counters -------------------------------------------------------------------

    def record_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return copy.deepcopy(self._requests)

    def count_token_request(self) -> None:
        with self._lock:
            self._token_requests += 1

    def count_put_request(self) -> None:
        with self._lock:
            self._put_requests += 1

    def note_connection(self) -> None:
        """Called once per accepted TCP connection (a keep-alive client opens few)."""
        with self._lock:
            self._connections += 1

    @property
    def token_requests(self) -> int:
        with self._lock:
            return self._token_requests

    @property
    def put_requests(self) -> int:
        with self._lock:
            return self._put_requests

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "token_requests": self._token_requests,
                "put_requests": self._put_requests,
                "orders": len(self._orders),
            }

    def reset(self) -> None:
        """Forget tokens, orders, requests, scripts, missing ids and counters; restore settings."""
        lifetime, latency, limit = self._initial
        with self._lock:
            self._token_lifetime = lifetime
            self._latency_ms = latency
            self._window = SlidingWindow(limit) if limit else None
            self._tokens.clear()
            self._issued.clear()
            self._orders.clear()
            self._requests.clear()
            self._order_script.clear()
            self._token_script.clear()
            self._outages.clear()
            self._missing.clear()
            self._token_requests = 0
            self._put_requests = 0
            self._connections = 0


def _check_lifetime(seconds: int) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise ValueError(f"token lifetime must be a positive number of seconds, got {seconds!r}")
    return seconds


def _check_latency(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"latency must be a non-negative number of milliseconds, got {value!r}")
    return value
