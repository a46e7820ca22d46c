"""Dead letters in the database: the store on SQLite and PostgreSQL, moving entries from the
queue (by ``order-sync dlq`` and by a running worker), and the commands the database adds."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections import Counter
from typing import Any

import pytest
from kombu import Producer
from sqlalchemy import text

from tests.integration.dlq_database import database_url, postgres_url
from tests.integration.test_dlq import events_waiting, seed
from tests.support import Pipeline, make_event, order_sync, wait_for
from worker.broker.connection import connect
from worker.broker.topology import (
    BULK_ROUTING_KEY,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENTS_BULK_QUEUE,
    EVENTS_QUEUE,
)
from worker.deadletter import queue as dead_letters
from worker.deadletter.entries import new_entry, replay_step
from worker.deadletter.groups import error_group, group_key
from worker.deadletter.ingest import drain, waiting
from worker.deadletter.selection import Selection
from worker.deadletter.store import ARCHIVED, DEAD, REPLAYED, DeadLetterDB
from worker.settings import DatabaseSettings, database_settings

pytestmark = pytest.mark.integration
__all__ = ["database_url", "postgres_url"]  # fixtures


def entry(order_id: int, reason: str = "api_rejected", **details: Any) -> dict[str, Any]:
    event = make_event(order_id)
    return new_entry(
        reason=reason,
        error=details.pop("error", f"Update Order {order_id}: HTTP 400"),
        attempts=1,
        event=event,
        event_id=event["event_id"],
        order_id=order_id,
        **details,
    )


def test_error_groups_blank_ids_but_keep_status_codes() -> None:
    assert error_group("Update Order 5001: HTTP 400") == "Update Order N: HTTP 400"
    assert error_group("event 3f0c9d2e-8d1b-4b5e-9a51-0c2f1e7d4a10 bad") == "event N bad"
    assert group_key("api_rejected", "Order 5001: HTTP 400") == group_key(
        "api_rejected", "Order 77777: HTTP 400"
    )
    assert group_key("api_rejected", "HTTP 400") != group_key("api_rejected", "HTTP 503")
    assert group_key("api_rejected", "HTTP 400") != group_key("order_not_found", "HTTP 400")


def test_the_store_filters_groups_and_records_every_action(database_url: str) -> None:
    settings = DatabaseSettings(url=database_url, retention_days=30, history_days=7)
    with DeadLetterDB.open(settings=settings) as db:
        rejected = [entry(5000 + i) for i in range(4)]
        missing = [entry(6000 + i, "order_not_found", error="HTTP 404") for i in range(2)]
        # Delivered twice (a redelivery): stored once.
        assert db.ingest_many(rejected + missing) == 6
        assert db.ingest_many(rejected) == 0
        assert db.ingest(missing[0]) is False
        assert db.count() == 6

        summary = db.summary().as_dict()
        assert summary["total"] == 6
        assert summary["by_reason"]["api_rejected"]["count"] == 4
        [group] = [g for g in summary["by_error"] if g["reason"] == "api_rejected"]
        assert (group["error"], group["count"]) == ("Update Order N: HTTP 400", 4)

        ids = lambda found: [stored.id for stored in found]  # noqa: E731
        page, total = db.page(Selection(), DEAD, offset=1, limit=2)
        assert (ids(page), total) == ([rejected[1]["id"], rejected[2]["id"]], 6)
        assert db.page(Selection(order_ids=frozenset({5002})))[1] == 1
        assert db.page(Selection(reasons=frozenset({"order_not_found"})))[1] == 2
        assert db.page(Selection(error_contains="http 404"))[1] == 2  # any case
        assert db.page(Selection(error_contains="50%"))[1] == 0  # % is literal
        assert db.page(Selection(groups=frozenset({group["group"]})))[1] == 4
        future = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
        assert db.page(Selection(since=future))[1] == 0
        assert db.page(Selection(until=future))[1] == 6
        assert ids(db.iter_entries(limit=3)) == [e["id"] for e in rejected[:3]]

        assert db.archive([rejected[0]["id"]], "ann") == [rejected[0]["id"]]
        assert db.archive([rejected[0]["id"]], "ann") == []  # archived already
        assert db.count() == 5 and db.count(state=ARCHIVED) == 1
        assert db.unarchive(Selection(ids=frozenset({rejected[0]["id"]})), "bob") == [
            rejected[0]["id"]
        ]
        assert db.note("known: the API refuses these", "cy", group=group["group"])
        assert db.note("called the customer", "cy", entry_id=rejected[1]["id"])
        assert not db.note("x", "cy", entry_id="no-such-entry")
        assert db.mark_replayed(rejected[1]["id"], "dee", {"customer_id": 7})
        assert not db.mark_replayed(rejected[1]["id"], "dee")  # not dead any more
        assert db.purge(Selection(ids=frozenset({missing[1]["id"]})), "eve") == [missing[1]["id"]]
        assert db.summary().as_dict()["by_error"][0]["note"] == "known: the API refuses these"

        detail = db.get(rejected[1]["id"])
        assert detail is not None
        assert detail.entry == rejected[1]
        assert (detail.state, detail.changed_by) == (REPLAYED, "dee")
        assert [r["patch"] for r in detail.replays] == [{"customer_id": 7}]
        assert [n["text"] for n in detail.notes] == [
            "known: the API refuses these",
            "called the customer",
        ]
        assert [(a["action"], a["user"]) for a in detail.audit] == [
            ("note", "cy"),
            ("replay", "dee"),
        ]
        actions = [(a["action"], a["user"], a["count"]) for a in db.audit()]
        assert actions == [
            ("purge", "eve", 1),
            ("replay", "dee", 1),
            ("note", "cy", 1),
            ("note", "cy", 0),
            ("unarchive", "bob", 1),
            ("archive", "ann", 1),
        ]
        assert db.get(missing[1]["id"]) is None

        # Retention: only replayed and archived entries, only once old enough.
        db.archive([rejected[2]["id"]], "ann")
        assert db.expire() == 0
        assert db.expire(dt.datetime.now(dt.UTC) + dt.timedelta(days=31)) == 2
        assert Counter(s.state for s in db.iter_entries(state=None)) == Counter({DEAD: 3})


def _publish_raw(pipeline: Pipeline, body: bytes | str, **properties: Any) -> None:
    with connect(pipeline.broker) as connection:
        Producer(connection).publish(
            body,
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=DEAD_LETTER_QUEUE.routing_key,
            declare=[DEAD_LETTER_QUEUE],
            content_encoding="binary" if isinstance(body, bytes) else "utf-8",
            **properties,
        )


def test_drain_stores_each_message_once_and_keeps_what_is_not_an_entry(
    pipeline: Pipeline,
) -> None:
    entries = seed(pipeline, 3)
    with connect(pipeline.broker) as connection:
        dead_letters.publish(Producer(connection), entries[0])  # the same entry, delivered again
    _publish_raw(pipeline, "not json at all", content_type="text/plain")
    _publish_raw(pipeline, b"\xff\xfe binary", content_type="application/octet-stream")
    limited = make_event(7100)
    death = {"count": 20, "reason": "delivery_limit", "queue": "order-sync.events"}
    _publish_raw(
        pipeline,
        json.dumps(limited),
        content_type="application/json",
        headers={"x-death": [death]},
    )
    with (
        DeadLetterDB.open(settings=database_settings(pipeline.env)) as db,
        connect(pipeline.broker) as connection,
    ):
        assert drain(connection, db, batch=2) == 6  # seven messages, six entries
        assert waiting(connection) == 0
        assert drain(connection, db) == 0
        stored = [s.entry for s in db.iter_entries()]
    assert Counter(e["id"] for e in stored) == Counter({e["id"]: 1 for e in stored})
    assert [e["id"] for e in stored[:3]] == [e["id"] for e in entries]
    reasons = Counter(e["reason"] for e in stored)
    assert reasons == Counter({"api_rejected": 3, "unreadable": 2, "delivery_limit": 1})
    [text_body] = [e for e in stored if e.get("raw_body") == "not json at all"]
    assert text_body["raw_body_encoding"] == "utf-8"
    assert [e["raw_body_encoding"] for e in stored if e.get("raw_body") and e is not text_body] == [
        "base64"
    ]
    [by_broker] = [e for e in stored if e["reason"] == "delivery_limit"]
    assert (by_broker["event"], by_broker["event_id"], by_broker["order_id"]) == (
        limited,
        limited["event_id"],
        7100,
    )
    assert by_broker["attempts"] == 20


def test_a_drain_that_cannot_commit_leaves_every_message_in_the_queue(
    pipeline: Pipeline,
) -> None:
    seed(pipeline, 5)
    settings = database_settings(pipeline.env)
    with DeadLetterDB.open(settings=settings) as db:
        with db.engine.begin() as connection:
            connection.execute(text("DROP TABLE order_sync_dead_letters"))
        with connect(pipeline.broker) as connection, pytest.raises(Exception, match="no such"):
            drain(connection, db)
    assert _queue_depth(pipeline) == 5


def _queue_depth(pipeline: Pipeline) -> int:
    with connect(pipeline.broker) as connection:
        return waiting(connection)


def test_a_running_worker_moves_dead_letters_into_the_database(pipeline: Pipeline) -> None:
    pipeline.start_worker()
    seeded = seed(pipeline, 5)
    pipeline.publish_raw("{not json")  # the worker dead-letters it itself
    settings = database_settings(pipeline.env)

    def stored() -> list[dict[str, Any]]:
        # The database alone: nothing here reads the queue.
        with DeadLetterDB.open(settings=settings) as db:
            return [s.entry for s in db.iter_entries()]

    found = wait_for(lambda: len(entries := stored()) >= 6 and entries, what="six entries")
    assert _queue_depth(pipeline) == 0
    assert Counter(e["reason"] for e in found) == Counter({"api_rejected": 5, "invalid_json": 1})
    assert {e["id"] for e in seeded} <= {e["id"] for e in found}
    assert len(found) == 6


def dlq(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return order_sync(pipeline, "dlq", *args)


def test_archive_note_audit_and_expire_from_the_command_line(pipeline: Pipeline) -> None:
    first, second, third = seed(pipeline, 3)
    archived = dlq(pipeline, "archive", "--id", first["id"], "--user", "ann", "--json")
    assert json.loads(archived.stdout)["ids"] == [first["id"]]
    assert dlq(pipeline, "archive").returncode == 2  # needs a selection or --all
    listed = dlq(pipeline, "list", "--json").stdout.splitlines()
    assert [json.loads(line)["id"] for line in listed] == [second["id"], third["id"]]
    shelf = dlq(pipeline, "list", "--json", "--state", "archived").stdout.splitlines()
    assert [json.loads(line)["id"] for line in shelf] == [first["id"]]
    everything = dlq(pipeline, "summary", "--json", "--state", "all")
    assert json.loads(everything.stdout)["total"] == 3

    summary = json.loads(dlq(pipeline, "summary", "--json").stdout)
    group = summary["by_error"][0]["group"]
    noted = dlq(pipeline, "note", "refused: bad customer ids", "--group", group, "--user", "bo")
    assert noted.returncode == 0, noted.stderr
    assert json.loads(dlq(pipeline, "summary", "--json").stdout)["by_error"][0]["note"] == (
        "refused: bad customer ids"
    )
    assert "refused: bad customer ids" in dlq(pipeline, "summary").stdout
    assert dlq(pipeline, "note", "x", "--id", "no-such-entry").returncode == 1
    assert dlq(pipeline, "note", "x").returncode == 2

    unarchived = dlq(pipeline, "unarchive", "--id", first["id"], "--user", "cy", "--json")
    assert json.loads(unarchived.stdout)["done"] == 1
    replayed = dlq(pipeline, "replay", "--id", second["id"], "--user", "dee", "--json")
    assert json.loads(replayed.stdout)["done"] == 1
    full = json.loads(dlq(pipeline, "show", second["id"], "--full", "--json").stdout)
    assert full["entry"] == second and full["state"] == "replayed"
    assert full["replays"][0]["by"] == "dee"
    assert full["group"]["note"] == "refused: bad customer ids"

    audit = [json.loads(line) for line in dlq(pipeline, "audit", "--json").stdout.splitlines()]
    assert [(a["action"], a["user"], a["count"]) for a in audit] == [
        ("replay", "dee", 1),
        ("unarchive", "cy", 1),
        ("note", "bo", 0),
        ("archive", "ann", 1),
    ]
    assert "replay" in dlq(pipeline, "audit").stdout

    pipeline.env_overrides["ORDER_SYNC_DLQ_RETENTION_DAYS"] = "0"
    expired = dlq(pipeline, "expire", "--json")
    assert json.loads(expired.stdout) == {"expired": 1}  # the replayed entry
    remaining = dlq(pipeline, "list", "--json", "--state", "all").stdout.splitlines()
    assert [json.loads(line)["id"] for line in remaining] == [first["id"], third["id"]]


def test_a_replay_publishes_bulk_events_unless_asked_for_live_ones(pipeline: Pipeline) -> None:
    bulk, live = seed(pipeline, 2)
    assert json.loads(dlq(pipeline, "replay", "--id", bulk["id"], "--json").stdout)["done"] == 1
    assert (
        json.loads(dlq(pipeline, "replay", "--id", live["id"], "--live", "--json").stdout)["done"]
        == 1
    )
    sent = {m["body"]["event_id"]: m["queue"] for m in events_waiting(pipeline)}
    assert sent == {bulk["event_id"]: EVENTS_BULK_QUEUE.name, live["event_id"]: EVENTS_QUEUE.name}
    assert EVENTS_BULK_QUEUE.routing_key == BULK_ROUTING_KEY
    # The replay's history step is what the entry keeps.
    with DeadLetterDB.open(settings=database_settings(pipeline.env)) as db:
        detail = db.get(bulk["id"])
    assert detail is not None and detail.state == REPLAYED
    step = replay_step(bulk)
    assert {k: detail.replays[0][k] for k in ("dead_letter_id", "reason")} == {
        k: step[k] for k in ("dead_letter_id", "reason")
    }
