"""Sellercloud REST API client: bearer-token auth, Update Order, and the errors they raise
(``errors``: the exception tree, documented there)."""

from worker.sellercloud import errors
from worker.sellercloud.auth import BearerTokenAuth, Token, TokenCache
from worker.sellercloud.client import SellercloudClient

__all__ = ["BearerTokenAuth", "SellercloudClient", "Token", "TokenCache", "errors"]
