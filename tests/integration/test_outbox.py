"""The transactional outbox against real PostgreSQL, RabbitMQ, workers and the simulator.

Rows are written the way an upstream writes them (committed in its own transaction) and
published by ``order-sync outbox run-once`` or beat, run as separate processes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Consumer, Queue
from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.engine import make_url

from tests.support import Pipeline, postgres_database, wait_for
from worker.broker.connection import connect
from worker.broker.topology import (
    EVENT_ROUTING_KEY,
    EVENTS_BULK_QUEUE,
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
)
from worker.outbox import db
from worker.outbox.table import outbox
from worker.settings import OutboxSettings, outbox_settings

pytestmark = pytest.mark.integration

OUTBOX_URL = os.environ.get(
    "TEST_OUTBOX_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_test"
)
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="session")
def outbox_database() -> str:
    """The test database, created once if it does not exist."""
    return postgres_database(OUTBOX_URL)


@pytest.fixture
def engine(outbox_database: str) -> Iterator[Engine]:
    """A fresh outbox table, dropped and created again through the migrations."""
    engine = db.outbox_engine(
        OutboxSettings(url=outbox_database, interval=2, batch=500, retention_days=7)
    )
    db.downgrade(engine)
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pipeline(pipeline: Pipeline, request: pytest.FixtureRequest) -> Pipeline:
    """The pipeline with its outbox in PostgreSQL; on the embedded broker, the tests are about
    the outbox's default (SQLite, in the data folder) and get that."""
    if pipeline.broker_url is not None:
        outbox_database = request.getfixturevalue("outbox_database")
        pipeline.env_overrides["ORDER_SYNC_OUTBOX_URL"] = outbox_database
    return pipeline


def row(order_id: int, event_id: str | None = None, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": event_id or f"outbox-{order_id}",
        "order_id": order_id,
        "occurred_at": NOW,
        "changes": changes or {"customer_id": order_id % 1000},
    }


def write(engine: Engine, rows: list[dict[str, Any]]) -> None:
    """Commit rows in one transaction, as an upstream does alongside its own data."""
    with engine.begin() as connection:
        connection.execute(insert(outbox), rows)


def outbox_cli(pipeline: Pipeline, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "outbox", *args],
        env={**pipeline.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def run_once(pipeline: Pipeline, **env: str) -> dict[str, int]:
    result = outbox_cli(pipeline, "run-once", "--json", **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def rows_by_event_id(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return {r.event_id: r for r in connection.execute(select(outbox)).all()}


def queued(pipeline: Pipeline) -> int:
    with connect(pipeline.broker) as connection:
        return int(EVENTS_QUEUE(connection.channel()).queue_declare().message_count)


def take_events(pipeline: Pipeline, queue: Queue = EVENTS_QUEUE) -> list[dict[str, Any]]:
    """Consume every event waiting in ``queue`` (no worker runs meanwhile)."""
    bodies: list[dict[str, Any]] = []
    with connect(pipeline.broker) as connection:
        channel = connection.channel()
        depth = queue(channel).queue_declare().message_count
        consumer = Consumer(
            channel,
            [queue],
            no_ack=True,
            on_message=lambda message: bodies.append(json.loads(message.body)),
        )
        with consumer:
            while len(bodies) < depth:
                connection.drain_events(timeout=10)
    return bodies


def test_committed_rows_reach_sellercloud_through_a_worker(
    pipeline: Pipeline, engine: Engine
) -> None:
    pipeline.start_worker()
    write(engine, [row(7001), row(7002, shipping_address=None, customer_id=42)])

    assert run_once(pipeline) == {"published": 2, "dead_lettered": 0, "failed": 0}
    pipeline.wait_applied(7001, 7002)
    assert pipeline.state.order(7002) == {"CustomerId": 42}
    rows = rows_by_event_id(engine)
    assert all(r.published_at is not None and r.last_error is None for r in rows.values())
    assert run_once(pipeline)["published"] == 0  # nothing is published twice


def test_a_rolled_back_transaction_publishes_nothing(pipeline: Pipeline, engine: Engine) -> None:
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(insert(outbox), [row(7101), row(7102)])
        transaction.rollback()
    write(engine, [row(7103)])

    assert run_once(pipeline)["published"] == 1
    assert [e["event_id"] for e in take_events(pipeline)] == ["outbox-7103"]


def _waiting_for_the_table(engine: Engine) -> int:
    """How many sessions wait for a lock on the outbox table."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text(
                    "SELECT count(DISTINCT pid) FROM pg_locks"
                    " WHERE NOT granted AND relation = 'order_sync_outbox'::regclass"
                )
            ).scalar_one()
        )


def _publishing_transaction(engine: Engine) -> dict[str, str]:
    """event_id -> the id of the transaction that marked the row published (its xmin)."""
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT event_id, xmin::text FROM order_sync_outbox"))
        return {event_id: xid for event_id, xid in rows}


def test_two_passes_at_once_share_the_rows_and_publish_each_exactly_once(
    pipeline: Pipeline, engine: Engine
) -> None:
    count, batch = 2000, 1000
    write(engine, [row(10_000 + i) for i in range(count)])
    env = {**pipeline.env, "ORDER_SYNC_OUTBOX_BATCH": str(batch)}
    argv = [sys.executable, "-m", "worker.cli", "outbox", "run-once", "--json"]
    # Both passes queue up behind a lock on the table and are let go together, so their
    # SELECT ... FOR UPDATE SKIP LOCKED run at the same moment rather than one after the other.
    with engine.connect() as gate:
        holding = gate.begin()
        gate.execute(text("LOCK TABLE order_sync_outbox IN EXCLUSIVE MODE"))
        pollers = [
            subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        wait_for(lambda: _waiting_for_the_table(engine) == 2, what="both passes to be waiting")
        holding.commit()
    outputs = [poller.communicate(timeout=60) for poller in pollers]
    assert [poller.returncode for poller in pollers] == [0, 0], outputs

    published = [json.loads(out)["published"] for out, _ in outputs]
    assert sum(published) == count and all(published), published
    events = [e["event_id"] for e in take_events(pipeline)]
    sent = Counter(events)
    twice = [event_id for event_id, times in sent.items() if times > 1]
    assert not twice, f"{len(twice)} rows published more than once"
    assert set(sent) == {f"outbox-{10_000 + i}" for i in range(count)}
    assert all(r.published_at is not None for r in rows_by_event_id(engine).values())

    # Which pass published each event (the transaction that marked its row), in the order the
    # events reached the queue: A ... B ... A means both were publishing at the same time.
    by_pass = _publishing_transaction(engine)
    assert len(set(by_pass.values())) == 2
    passes = [by_pass[event_id] for event_id in events]
    turns = sum(1 for before, after in pairwise(passes) if before != after)
    assert turns >= 2, f"the passes published one after the other ({turns} turn(s))"


def test_a_pass_skips_rows_another_transaction_holds_and_publishes_them_later(
    pipeline: Pipeline, engine: Engine
) -> None:
    write(engine, [row(7900 + i) for i in range(10)])
    ids = sorted(r.id for r in rows_by_event_id(engine).values())
    held = [ids[0], ids[1], ids[6]]  # the head of the queue, and one further on
    with engine.connect() as holder:
        holding = holder.begin()
        holder.execute(select(outbox.c.id).where(outbox.c.id.in_(held)).with_for_update())
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "outbox", "run-once", "--json"],
            env=pipeline.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            pytest.fail("the pass waited for the locked rows instead of skipping them")
        assert process.returncode == 0, err
        assert json.loads(out) == {"published": 7, "dead_lettered": 0, "failed": 0}
        rows = rows_by_event_id(engine)
        assert sorted(r.id for r in rows.values() if r.published_at is None) == held
        holding.rollback()

    event_ids = {r.id: r.event_id for r in rows.values()}
    free = [event_ids[row_id] for row_id in ids if row_id not in held]
    assert [e["event_id"] for e in take_events(pipeline)] == free
    assert run_once(pipeline) == {"published": 3, "dead_lettered": 0, "failed": 0}
    assert [e["event_id"] for e in take_events(pipeline)] == [event_ids[i] for i in held]
    assert all(r.published_at is not None for r in rows_by_event_id(engine).values())


def test_rows_are_published_in_id_order_whatever_their_times_and_gaps(
    pipeline: Pipeline, engine: Engine
) -> None:
    # Ids with gaps, committed out of id order, each newer by id older by time.
    ids = [3, 8, 9, 15, 40, 41, 57, 100, 101, 250]
    later = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
    for row_id in [57, 3, 250, 9, 100, 15, 41, 8, 101, 40]:
        when = later - dt.timedelta(minutes=row_id)
        write(
            engine, [{**row(8000 + row_id), "id": row_id, "occurred_at": when, "created_at": when}]
        )

    # Three passes of four rows at most: the order holds within and across passes. Rows
    # written long ago are a catch-up: they are published as bulk events.
    for expected in (4, 4, 2):
        assert run_once(pipeline, ORDER_SYNC_OUTBOX_BATCH="4")["published"] == expected
    assert queued(pipeline) == 0
    caught_up = take_events(pipeline, EVENTS_BULK_QUEUE)
    assert [e["event_id"] for e in caught_up] == [f"outbox-{8000 + i}" for i in ids]


def test_a_poller_killed_between_publish_and_mark_loses_nothing(
    pipeline: Pipeline, engine: Engine
) -> None:
    count = 20_000
    write(engine, [row(100_000 + i) for i in range(count)])
    env = {**pipeline.env, "ORDER_SYNC_OUTBOX_BATCH": str(count)}
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "outbox", "run-once"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: queued(pipeline) >= 500, what="the poller to publish some events")
    process.send_signal(signal.SIGKILL)
    process.wait()

    # It died mid-batch: events are in the queue, yet no row of the batch is marked.
    assert 0 < queued(pipeline) < count
    assert all(r.published_at is None for r in rows_by_event_id(engine).values())

    assert run_once(pipeline, ORDER_SYNC_OUTBOX_BATCH=str(count))["published"] == count
    assert all(r.published_at is not None for r in rows_by_event_id(engine).values())
    event_ids = [e["event_id"] for e in take_events(pipeline)]
    assert set(event_ids) == {f"outbox-{100_000 + i}" for i in range(count)}
    assert len(event_ids) > count  # the ones published before the kill came twice


def test_a_bad_row_is_dead_lettered_once_and_does_not_block_the_rest(
    pipeline: Pipeline, engine: Engine
) -> None:
    pipeline.start_worker()
    write(engine, [row(7201), row(7202, customer_id="seven"), row(7203)])

    assert run_once(pipeline) == {"published": 2, "dead_lettered": 1, "failed": 0}
    pipeline.wait_applied(7201, 7203)
    [entry] = pipeline.wait_dead_letters(1)
    assert entry["reason"] == "invalid_event"
    assert entry["event_id"] == "outbox-7202" and entry["order_id"] == 7202
    assert entry["field_errors"] == [
        {"field": "changes.customer_id", "message": "Not a valid integer."}
    ]
    assert entry["error"] == "changes.customer_id: Not a valid integer."
    assert entry["event"]["changes"] == {"customer_id": "seven"}
    bad = rows_by_event_id(engine)["outbox-7202"]
    assert entry["outbox_row_id"] == bad.id
    assert bad.published_at is not None and bad.attempts == 1
    assert bad.last_error == "changes.customer_id: Not a valid integer."
    assert run_once(pipeline) == {"published": 0, "dead_lettered": 0, "failed": 0}


def test_a_broker_refusal_mid_batch_keeps_what_was_confirmed(
    pipeline: Pipeline, engine: Engine
) -> None:
    # A queue that refuses what it cannot hold makes RabbitMQ nack the sixth event onwards.
    limit = Queue(
        "outbox-test.full-after-5",
        exchange=EVENTS_EXCHANGE,
        routing_key=EVENT_ROUTING_KEY,
        queue_arguments={"x-max-length": 5, "x-overflow": "reject-publish"},
    )
    with Connection(pipeline.broker.url) as connection:
        limit(connection.channel()).declare()
    try:
        write(engine, [row(7300 + i) for i in range(12)])
        failed = outbox_cli(pipeline, "run-once", "--json")
        assert failed.returncode == 1
        assert json.loads(failed.stdout) == {"published": 5, "dead_lettered": 0, "failed": 7}
        assert "nack" in failed.stderr
        rows = sorted(rows_by_event_id(engine).values(), key=lambda r: r.id)
        assert [r.published_at is not None for r in rows] == [True] * 5 + [False] * 7
        assert [r.attempts for r in rows] == [0] * 5 + [1] * 7
        assert all("nack" in r.last_error for r in rows[5:])
    finally:
        with Connection(pipeline.broker.url) as connection:
            limit(connection.channel()).delete()

    assert run_once(pipeline)["published"] == 7
    assert all(r.published_at is not None for r in rows_by_event_id(engine).values())


def test_an_unreachable_broker_fails_the_pass_and_keeps_the_rows(
    pipeline: Pipeline, engine: Engine
) -> None:
    write(engine, [row(7401), row(7402)])
    result = outbox_cli(
        pipeline, "run-once", "--json", CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:1//"
    )
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"published": 0, "dead_lettered": 0, "failed": 2}
    assert all(
        r.published_at is None and r.attempts == 1 and r.last_error
        for r in rows_by_event_id(engine).values()
    )
    status = json.loads(outbox_cli(pipeline, "status", "--json").stdout)
    assert status["pending"] == 2 and status["pending_with_errors"] == 2

    assert run_once(pipeline)["published"] == 2


def test_status_reports_backlog_errors_and_the_last_pass(
    pipeline: Pipeline, engine: Engine
) -> None:
    empty = json.loads(outbox_cli(pipeline, "status", "--json").stdout)
    assert empty["pending"] == 0 and empty["oldest_pending_age_seconds"] is None
    assert empty["last_pass_at"] is None

    write(engine, [row(7501), row(7502, customer_id="seven")])
    run_once(pipeline)
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    write(engine, [{**row(7503), "created_at": an_hour_ago}])
    write(engine, [row(7504)])

    result = outbox_cli(pipeline, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["pending"] == 2
    assert 3600 <= status["oldest_pending_age_seconds"] < 3700
    assert status["errors"] == 1 and status["pending_with_errors"] == 0
    assert status["published_kept"] == 2 and status["awaiting_cleanup"] == 0
    last_pass = dt.datetime.fromisoformat(status["last_pass_at"])
    assert abs((dt.datetime.now(dt.UTC) - last_pass).total_seconds()) < 60
    human = outbox_cli(pipeline, "status")
    assert "pending" in human.stdout and "oldest pending age seconds" in human.stdout


def test_retention_deletes_only_published_rows_past_it(pipeline: Pipeline, engine: Engine) -> None:
    write(engine, [row(7601), row(7602), row(7603), row(7604)])
    ages = {"outbox-7601": 10, "outbox-7602": 8, "outbox-7603": 1}
    with engine.begin() as connection:
        for event_id, days in ages.items():
            connection.execute(
                update(outbox)
                .where(outbox.c.event_id == event_id)
                .values(published_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days))
            )
        # Pending for a long time is not "published long ago": it must stay.
        connection.execute(
            update(outbox)
            .where(outbox.c.event_id == "outbox-7604")
            .values(created_at=NOW - dt.timedelta(days=30))
        )
    assert json.loads(outbox_cli(pipeline, "status", "--json").stdout)["awaiting_cleanup"] == 2

    assert run_once(pipeline)["published"] == 1
    assert set(rows_by_event_id(engine)) == {"outbox-7603", "outbox-7604"}

    run_once(pipeline, ORDER_SYNC_OUTBOX_RETENTION="0")
    assert rows_by_event_id(engine) == {}


@pytest.mark.parametrize("pipeline", ["embedded"], indirect=True)
def test_the_embedded_sqlite_default_works(pipeline: Pipeline) -> None:
    assert "ORDER_SYNC_OUTBOX_URL" not in pipeline.env
    init = outbox_cli(pipeline, "init")
    assert init.returncode == 0, init.stderr
    settings = outbox_settings(pipeline.env)
    assert settings.url == f"sqlite:///{pipeline.tmp_path / 'data' / 'outbox.sqlite3'}"
    sqlite = db.outbox_engine(settings)
    try:
        write(sqlite, [row(7701), row(7702, customer_id="seven"), row(7703)])
        pipeline.start_worker()
        assert run_once(pipeline) == {"published": 2, "dead_lettered": 1, "failed": 0}
        pipeline.wait_applied(7701, 7703)
        [entry] = pipeline.wait_dead_letters(1)
        assert entry["reason"] == "invalid_event" and entry["event_id"] == "outbox-7702"
        assert all(r.published_at is not None for r in rows_by_event_id(sqlite).values())
    finally:
        sqlite.dispose()


def _has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has the file open (Linux: its descriptors in /proc)."""
    try:
        return any(os.readlink(fd) == str(path) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it exited, or closed a descriptor while we looked
        return False


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("pipeline", ["embedded"], indirect=True)
def test_two_pollers_on_sqlite_take_turns(pipeline: Pipeline) -> None:
    assert outbox_cli(pipeline, "init").returncode == 0
    settings = outbox_settings(pipeline.env)
    database = Path(str(make_url(settings.url).database))
    sqlite = db.outbox_engine(settings)
    try:
        write(sqlite, [row(20_000 + i) for i in range(600)])
        env = {**pipeline.env, "ORDER_SYNC_OUTBOX_BATCH": "300"}
        argv = [sys.executable, "-m", "worker.cli", "outbox", "run-once", "--json"]
        # The test holds the write lock until both pollers have opened the database (and so
        # wait for the lock): they start their passes together, and SQLite makes them take turns.
        with sqlite.connect() as gate:
            holding = gate.begin()  # BEGIN IMMEDIATE: the write lock
            pollers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE) for _ in range(2)]
            wait_for(
                lambda: all(_has_open(poller.pid, database) for poller in pollers),
                what="both pollers to open the database",
            )
            assert [poller.poll() for poller in pollers] == [None, None]
            holding.rollback()
        outputs = [poller.communicate(timeout=60)[0] for poller in pollers]
        assert [json.loads(out)["published"] for out in outputs] == [300, 300]
        assert all(r.published_at is not None for r in rows_by_event_id(sqlite).values())
        sent = Counter(e["event_id"] for e in take_events(pipeline))
        assert sent == Counter({f"outbox-{20_000 + i}": 1 for i in range(600)})
    finally:
        sqlite.dispose()


def test_beat_schedules_the_poll_at_the_configured_interval(pipeline: Pipeline) -> None:
    probe = (
        "import json; from worker.celery import app; import worker.outbox.tasks; "
        "print(json.dumps(app.conf.beat_schedule['order_sync.outbox_poll']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**pipeline.env, "ORDER_SYNC_OUTBOX_INTERVAL": "7.5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "task": "order_sync.outbox_poll",
        "schedule": 7.5,
        "options": {"expires": 7.5},
    }


def test_beat_and_a_worker_drain_the_outbox_by_themselves(
    pipeline: Pipeline, engine: Engine
) -> None:
    pipeline.env_overrides["ORDER_SYNC_OUTBOX_INTERVAL"] = "0.5"
    pipeline.start_worker()
    pipeline.start_worker(command=[sys.executable, "-m", "worker.cli", "beat"], wait=False)
    write(engine, [row(7801), row(7802)])
    pipeline.wait_applied(7801, 7802)
    write(engine, [row(7803)])
    pipeline.wait_applied(7803)
    assert all(r.published_at is not None for r in rows_by_event_id(engine).values())
