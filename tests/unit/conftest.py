"""What several unit test files share: ``store``, each real shared store in turn (Redis
database 12, flushed first, and a fresh SQLite file)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker.coordination.redis_store import RedisStore
from worker.coordination.sqlite_store import SqliteStore
from worker.coordination.store import Store

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture(params=["redis", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "redis":
        redis.Redis.from_url(REDIS_URL).flushdb()
        opened: Store = RedisStore(REDIS_URL)
    else:
        opened = SqliteStore(str(tmp_path / "state.sqlite3"))
    yield opened
    opened.close()
