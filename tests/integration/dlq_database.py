"""The PostgreSQL database of the dead-letter and history tests: created when missing, its
tables dropped and created again through the migrations for each test that uses it."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.support import postgres_database
from worker.deadletter.store import engine as engines

DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_dlq_test"
)


def psycopg_args(url: str) -> dict[str, object]:
    parsed = make_url(url)
    return {
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username,
        "dbname": parsed.database,
    }


@functools.cache
def _postgres_database() -> str:
    return postgres_database(DATABASE_URL)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of an empty dead-letter and history schema on PostgreSQL."""
    url = _postgres_database()
    engine = engines.create(url)
    engines.downgrade(engine)
    engines.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """An empty schema on SQLite (a file of the test's own) and on PostgreSQL, in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/order-sync.sqlite3"
    return str(request.getfixturevalue("postgres_url"))
