"""Sellercloud REST API client: bearer-token auth, Update Order, and the errors they raise."""

from worker.sellercloud.auth import BearerTokenAuth, Token, TokenCache
from worker.sellercloud.client import SellercloudClient
from worker.sellercloud.errors import (
    ApiUnavailable,
    AuthenticationFailed,
    CredentialsRefused,
    OrderNotFound,
    RateLimited,
    RequestRejected,
    SellercloudError,
    TransientError,
)

__all__ = [
    "ApiUnavailable",
    "AuthenticationFailed",
    "BearerTokenAuth",
    "CredentialsRefused",
    "OrderNotFound",
    "RateLimited",
    "RequestRejected",
    "SellercloudClient",
    "SellercloudError",
    "Token",
    "TokenCache",
    "TransientError",
]
