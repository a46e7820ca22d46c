"""One Sellercloud token for the whole fleet, kept in the shared store.

Sellercloud issues 60-minute tokens with no refresh token; every process logging in on its own
spends API budget and multiplies logins. Here the first process that needs a token fetches it
under a store lock and shares it; the others read it. After a 401 only the process that wins the
lock fetches a new one, and only if nobody replaced the refused token meanwhile.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable

from worker.coordination.store import Store

TOKEN_KEY = "order-sync:token"  # noqa: S105 (a key name, not a secret)
LOCK_KEY = "order-sync:token-lock"
LOCK_SECONDS = 30.0
WAIT_STEP = 0.05
# Leave this share of a token's life (at most five minutes) before its expiry to refresh it.
MARGIN_SHARE = 0.1
MARGIN_MAX = 300.0


class SharedTokens:
    """``fetch(rejected)`` for ``TokenCache``: reads the fleet's token, fetching it if needed."""

    def __init__(self, store: Store, login: Callable[[], tuple[str, float]]) -> None:
        self.store = store
        self.login = login  # the real token call: (access_token, expires_in)
        self.owner = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"

    def _usable(self, rejected: str | None) -> tuple[str, float] | None:
        raw = self.store.get(TOKEN_KEY)
        if raw is None:
            return None
        stored = json.loads(raw)
        remaining = float(stored["expires_at"]) - time.time()
        margin = min(MARGIN_MAX, float(stored["lifetime"]) * MARGIN_SHARE)
        if stored["token"] == rejected or remaining <= margin:
            return None
        return str(stored["token"]), remaining

    def fetch(self, rejected: str | None) -> tuple[str, float]:
        deadline = time.monotonic() + LOCK_SECONDS
        while time.monotonic() < deadline:
            usable = self._usable(rejected)
            if usable is not None:
                return usable
            if self.store.claim(LOCK_KEY, self.owner, LOCK_SECONDS):
                try:
                    usable = self._usable(rejected)  # another process may have just stored one
                    if usable is not None:
                        return usable
                    token, expires_in = self.login()
                    record = {
                        "token": token,
                        "expires_at": time.time() + expires_in,
                        "lifetime": expires_in,
                    }
                    self.store.put(TOKEN_KEY, json.dumps(record), ttl=expires_in)
                    return token, expires_in
                finally:
                    self.store.release(LOCK_KEY, self.owner)
            time.sleep(WAIT_STEP)
        # The lock holder is stuck or gone: do not leave this worker without a token.
        return self.login()
