"""The outbox without servers: settings, the shipped DDL, migrations on SQLite, row to event."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from worker.outbox import db
from worker.outbox.poller import ROW_COLUMNS, iso, row_event
from worker.outbox.table import VERSION_TABLE, outbox
from worker.settings import ConfigError, OutboxSettings, outbox_settings

DDL_FILE = Path(__file__).resolve().parents[2] / "deploy" / "outbox-postgresql.sql"


def _columns(ddl: str) -> dict[str, str]:
    """``name -> type and constraints`` for each column of the outbox's CREATE TABLE."""
    body = re.search(r"CREATE TABLE order_sync_outbox \((.*?)\n\)", ddl, re.S)
    assert body is not None, "no CREATE TABLE order_sync_outbox"
    columns = {}
    for raw in body.group(1).splitlines():
        line = raw.strip().rstrip(",").strip()
        if line and not line.startswith(("PRIMARY KEY", "CONSTRAINT", "UNIQUE")):
            name, rest = line.split(" ", 1)
            columns[name] = rest
    return columns


def _constraints_and_indexes(ddl: str) -> set[str]:
    lines = {line.strip().rstrip(",").strip().rstrip(";") for line in ddl.splitlines()}
    return {
        line for line in lines if line.startswith(("PRIMARY KEY", "CONSTRAINT", "CREATE INDEX"))
    }


def _table_ddl() -> str:
    dialect = postgresql.dialect()
    statements = [str(CreateTable(outbox).compile(dialect=dialect))]
    statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in outbox.indexes]
    return "\n".join(statements)


def test_the_shipped_postgresql_ddl_matches_the_table() -> None:
    shipped = DDL_FILE.read_text(encoding="utf-8")
    assert _columns(shipped) == _columns(_table_ddl())
    assert list(_columns(shipped)) == [column.name for column in outbox.columns]
    assert _columns(shipped)["changes"] == "JSONB"
    assert _constraints_and_indexes(_table_ddl()) <= _constraints_and_indexes(shipped)
    assert (
        "CREATE INDEX ix_order_sync_outbox_pending ON order_sync_outbox (id) "
        "WHERE published_at IS NULL"
    ) in shipped


def test_the_shipped_ddl_is_what_the_migrations_generate() -> None:
    shipped = DDL_FILE.read_text(encoding="utf-8")
    generated = db.offline_sql()
    assert shipped.endswith(generated)
    assert f"INSERT INTO {VERSION_TABLE}" in generated


def test_migrations_create_the_table_on_sqlite_and_run_again_harmlessly(tmp_path: Path) -> None:
    engine = db.outbox_engine(
        OutboxSettings(
            url=f"sqlite:///{tmp_path / 'nested' / 'o.sqlite3'}",
            interval=2,
            batch=10,
            retention_days=7,
        )
    )
    db.upgrade(engine)
    db.upgrade(engine)
    inspector = inspect(engine)
    assert [c["name"] for c in inspector.get_columns("order_sync_outbox")] == [
        c.name for c in outbox.columns
    ]
    assert {i["name"] for i in inspector.get_indexes("order_sync_outbox")} == {
        "ix_order_sync_outbox_pending",
        "ix_order_sync_outbox_published_at",
    }
    with engine.begin() as connection:
        connection.execute(
            insert(outbox),
            [
                {"event_id": "a", "order_id": 1, "occurred_at": dt.datetime.now(dt.UTC)},
                {"event_id": "b", "order_id": 2, "occurred_at": dt.datetime.now(dt.UTC)},
            ],
        )
        rows = connection.execute(select(outbox.c.id, outbox.c.attempts)).all()
    assert [tuple(r) for r in rows] == [(1, 0), (2, 0)]  # ids count up, attempts default to 0
    db.downgrade(engine)
    assert not inspect(engine).has_table("order_sync_outbox")
    engine.dispose()


def test_settings_defaults(tmp_path: Path) -> None:
    settings = outbox_settings({"ORDER_SYNC_DATA_DIR": str(tmp_path)})
    assert settings.url == f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    assert (settings.interval, settings.batch, settings.retention_days) == (2.0, 500, 7.0)


def test_settings_from_the_environment_keep_the_password_out_of_repr() -> None:
    settings = outbox_settings(
        {
            "ORDER_SYNC_OUTBOX_URL": "postgresql+psycopg://sync:s3cret@db:5432/shop",
            "ORDER_SYNC_OUTBOX_INTERVAL": "0.5",
            "ORDER_SYNC_OUTBOX_BATCH": "2000",
            "ORDER_SYNC_OUTBOX_RETENTION": "1.5",
        }
    )
    assert (settings.interval, settings.batch, settings.retention_days) == (0.5, 2000, 1.5)
    assert settings.url.endswith("@db:5432/shop")
    assert "s3cret" not in repr(settings)


def test_malformed_settings_are_all_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        outbox_settings(
            {
                "ORDER_SYNC_OUTBOX_URL": "not a url",
                "ORDER_SYNC_OUTBOX_INTERVAL": "soon",
                "ORDER_SYNC_OUTBOX_BATCH": "0",
                "ORDER_SYNC_OUTBOX_RETENTION": "-1",
            }
        )
    message = str(caught.value)
    for name in ("URL", "INTERVAL", "BATCH", "RETENTION"):
        assert f"ORDER_SYNC_OUTBOX_{name}" in message


def test_an_unknown_database_driver_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="ORDER_SYNC_OUTBOX_URL"):
        db.outbox_engine(OutboxSettings(url="nosuchdb://x", interval=2, batch=1, retention_days=1))


def test_a_row_becomes_the_event_an_upstream_would_publish() -> None:
    with_zone = dt.datetime(2026, 11, 26, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert iso(with_zone) == "2026-11-26T10:00:00Z"
    assert iso(dt.datetime(2026, 11, 26, 10, 0, 0, 250000)) == "2026-11-26T10:00:00.250000Z"
    engine = db.outbox_engine(
        OutboxSettings(url="sqlite://", interval=2, batch=1, retention_days=1)
    )
    db.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(outbox).values(
                event_id="e-1", order_id=5001, occurred_at=with_zone, changes={"customer_id": 7}
            )
        )
        row = connection.execute(select(*ROW_COLUMNS)).one()
    assert row_event(row) == {
        "event_id": "e-1",
        "order_id": 5001,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": {"customer_id": 7},
    }
