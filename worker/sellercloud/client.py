"""The Sellercloud REST client: one pooled ``requests.Session`` per process.

Every call has a timeout and verifies TLS. Responses are classified into the errors documented in
``worker.sellercloud.errors``; a 401 never reaches the caller unless a fresh token was refused too.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import os
import time
from collections.abc import Callable
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from worker.sellercloud.auth import BearerTokenAuth, TokenCache
from worker.sellercloud.errors import (
    ApiUnavailable,
    AuthenticationFailed,
    CredentialsRefused,
    OrderNotFound,
    RateLimited,
    RequestRejected,
)

# Kept in dead letters and logs; a longer body is cut, so a runaway error page cannot bloat them.
MAX_KEPT_BODY = 4096
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
TOO_MANY_REQUESTS = "Too many requests."
MAX_RETRY_AFTER = 86400
# What each call is called in metrics and logs.
UPDATE_ORDER_ENDPOINT, TOKEN_ENDPOINT = "update_order", "token"
ENDPOINTS = (UPDATE_ORDER_ENDPOINT, TOKEN_ENDPOINT)
#: fetch(rejected_token_or_None) -> (access_token, seconds it stays valid)
TokenFetch = Callable[[str | None], tuple[str, float]]


def _kept(response: requests.Response) -> str:
    text = response.text
    return text if len(text) <= MAX_KEPT_BODY else text[:MAX_KEPT_BODY] + "...[cut]"


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _rate_limit_reset(response: requests.Response) -> dt.datetime | None:
    """When the API says calls may resume: its documented body field, else Retry-After."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("RateLimitResetTime"), str):
        return _parse_time(body["RateLimitResetTime"])
    retry_after = response.headers.get("Retry-After", "")
    if retry_after.isdigit():
        # A day at the most: a huge number would overflow a datetime, and no pause of the API
        # is meant to last longer (the fleet waits it out, probing nothing, until then).
        seconds = min(int(retry_after), MAX_RETRY_AFTER)
        return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)
    return _parse_time(retry_after) if retry_after else None


def _ca_bundle() -> str | None:
    """A CA bundle named the way requests reads it from the environment, if one is."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if value := os.environ.get(name, "").strip():
            return value
    return None


def _is_rate_limited(response: requests.Response) -> bool:
    if response.status_code == 429:
        return True
    # The documented throttling body; its status code is unconfirmed, so the body decides too.
    return response.status_code >= 400 and TOO_MANY_REQUESTS in response.text[:200]


class SellercloudClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout: float,
        pool_size: int = 10,
        before_call: Callable[[], None] | None = None,
        observe: Callable[[str, int | None, float], None] | None = None,
        shared_tokens: Callable[[Callable[[], tuple[str, float]]], TokenFetch] | None = None,
        credentials: Callable[[], tuple[str, str]] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(timeout, 10.0), timeout)  # (connect, read)
        # Read again before each token request, so a rotated password is used without a restart.
        self.credentials = credentials or (lambda: (username, password))
        self.session = requests.Session()
        # The environment is read once, here, not on every call: requests would otherwise scan
        # it for proxy and CA settings per request (about 0.4 ms of CPU each). Proxies and a
        # custom CA bundle still apply; nothing here can turn TLS verification off.
        self.session.trust_env = False
        self.session.proxies = requests.utils.get_environ_proxies(self.base_url)
        self.session.verify = _ca_bundle() or True
        # requests keeps 10 connections per host by default; more threads than that would each
        # open a new TCP connection per call.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 10))
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Called before every request (token calls included): the fleet's rate limiter.
        self.before_call = before_call
        # Told (endpoint, status or None, seconds) after every call: the worker's metrics.
        self.observe = observe
        # Each process keeps its own copy; with a fleet store, one token is shared by all.
        fetch: TokenFetch = lambda _rejected: self._fetch_token()  # noqa: E731
        if shared_tokens is not None:
            fetch = shared_tokens(self._fetch_token)
        self.tokens = TokenCache(fetch)
        self.auth = BearerTokenAuth(self.tokens, before_repeat=before_call)

    def __repr__(self) -> str:
        return f"SellercloudClient({self.base_url!r})"

    def update_order(
        self, order_id: int, body: dict[str, Any], *, slot_taken: bool = False
    ) -> None:
        """``PUT {base}/Orders/{id}``; returns on 200, raises a SellercloudError otherwise.

        ``slot_taken``: the caller already waited for this call's rate-limit slot (a repeat
        after a 401 still waits for one of its own)."""
        # Token first: a request that waited for a token after taking its rate-limit slot would
        # go out in a burst with every other request that waited for the same token.
        self.tokens.get()
        response = self._send(
            UPDATE_ORDER_ENDPOINT,
            "PUT",
            f"{self.base_url}/Orders/{order_id}",
            json=body,
            auth=self.auth,
            slot_taken=slot_taken,
        )
        if 200 <= response.status_code < 300:
            return
        self._raise_for(response, what=f"Update Order {order_id}")

    def login(self) -> None:
        """Ask for a token with the current credentials, past every cache; raises as a call."""
        self._fetch_token()

    def _fetch_token(self) -> tuple[str, float]:
        username, password = self.credentials()
        login = {"Username": username, "Password": password}
        response = self._send(TOKEN_ENDPOINT, "POST", f"{self.base_url}/token", json=login)
        if response.status_code != 200:
            if response.status_code < 500 and not _is_rate_limited(response):
                raise CredentialsRefused(
                    f"token endpoint refused the credentials: HTTP {response.status_code}",
                    status_code=response.status_code,
                    response_body=_kept(response),
                )
            self._raise_for(response, what="token request")
        try:
            payload = response.json()
            return str(payload["access_token"]), float(payload["expires_in"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiUnavailable(
                "token endpoint answered 200 without access_token/expires_in",
                status_code=200,
                response_body=_kept(response),
            ) from exc

    def _send(
        self, endpoint: str, method: str, url: str, *, slot_taken: bool = False, **kwargs: Any
    ) -> requests.Response:
        if self.before_call is not None and not slot_taken:
            self.before_call()
        started = time.perf_counter()
        status: int | None = None
        try:
            # A redirect would be followed with the body re-sent elsewhere: never wanted here.
            response = self.session.request(
                method, url, timeout=self.timeout, allow_redirects=False, **kwargs
            )
            status = response.status_code
            return response
        except requests.Timeout as exc:
            raise ApiUnavailable(f"{method} {url}: timed out after {self.timeout[1]:g}s") from exc
        except requests.ConnectionError as exc:
            raise ApiUnavailable(
                f"{method} {url}: connection failed ({type(exc).__name__})"
            ) from exc
        finally:
            if self.observe is not None:
                self.observe(endpoint, status, time.perf_counter() - started)

    @staticmethod
    def _raise_for(response: requests.Response, *, what: str) -> None:
        status = response.status_code
        body = _kept(response)
        if _is_rate_limited(response):
            raise RateLimited(
                f"{what}: rate limited (HTTP {status})",
                reset_at=_rate_limit_reset(response),
                status_code=status,
                response_body=body,
            )
        if status in TRANSIENT_STATUSES or status >= 500:
            raise ApiUnavailable(f"{what}: HTTP {status}", status_code=status, response_body=body)
        if status == 401:
            raise AuthenticationFailed(
                f"{what}: HTTP 401 even with a freshly fetched token",
                status_code=status,
                response_body=body,
            )
        if status == 404:
            raise OrderNotFound(f"{what}: HTTP 404", status_code=status, response_body=body)
        raise RequestRejected(f"{what}: HTTP {status}", status_code=status, response_body=body)


def response_json(body: str | None) -> Any:
    """A kept response body as JSON when it is JSON, else the text itself."""
    if body is None:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return body
