"""Errors raised by the Sellercloud client.

    SellercloudError            anything that kept a call from succeeding
    ├── TransientError          worth retrying later, with backoff
    │   ├── ApiUnavailable      5xx, connection refused or reset, timeout
    │   ├── RateLimited         429 / "Too many requests."; carries the reset time if given
    │   └── AuthenticationFailed  a freshly fetched token was refused
    │       └── CredentialsRefused  the token endpoint refused the username and password;
    │                           fixing them makes the event succeed
    └── RequestRejected         any other 4xx: this request will never succeed as sent
        └── OrderNotFound       404: the order id does not exist (yet)

Every error has a stable ``reason`` word (used in logs, metrics and dead letters) and, when the
API answered, its ``status_code`` and ``response_body``. Messages never contain credentials or
tokens.
"""

from __future__ import annotations

import datetime as dt


class SellercloudError(Exception):
    reason = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response_body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response_body = response_body


class TransientError(SellercloudError):
    reason = "transient"


class ApiUnavailable(TransientError):
    reason = "api_unavailable"


class RateLimited(TransientError):
    reason = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        reset_at: dt.datetime | None = None,
        status_code: int | None = None,
        response_body: str | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, response_body=response_body)
        self.reset_at = reset_at


class AuthenticationFailed(TransientError):
    reason = "auth_failed"


class CredentialsRefused(AuthenticationFailed):
    """No event can succeed until the credentials are fixed: the whole fleet pauses."""


class RequestRejected(SellercloudError):
    reason = "api_rejected"


class OrderNotFound(RequestRejected):
    reason = "order_not_found"
