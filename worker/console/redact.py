"""Nothing secret reaches a page: values under secret-looking keys are masked, and so is any
occurrence of a secret the console knows (the Sellercloud password) inside any string."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "***"
SECRET_KEYS = frozenset(
    {"password", "token", "access_token", "authorization", "secret", "credentials", "cookie"}
)
SECRET_SUFFIXES = ("_password", "_token", "_secret", "api_key")


def is_secret_key(key: str) -> bool:
    """``password``, ``access_token``, ``Authorization``, ... but not ``token_age_seconds``."""
    lowered = key.lower().replace("-", "_")
    return lowered in SECRET_KEYS or lowered.endswith(SECRET_SUFFIXES)


class Redactor:
    """Masks secrets in JSON-like values (dicts, lists, strings) before they are shown."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Short values would mask ordinary words; a real password is not that short.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                key: MASK
                if isinstance(key, str) and is_secret_key(key) and item not in (None, "")
                else self.value(item)
                for key, item in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value
