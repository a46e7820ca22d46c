"""``order-sync dlq``: list, show, summary, replay, export, purge against real brokers, with the
entries kept in the database (SQLite by default; PostgreSQL where a test says so)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from kombu import Producer

from tests.integration.dlq_database import postgres_url, psycopg_args
from tests.support import Pipeline, make_event, order_sync, queue_count, wait_for
from worker.broker.connection import connect
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENT_QUEUES, EVENTS_QUEUE, TASKS_QUEUE
from worker.deadletter import queue as dead_letters
from worker.deadletter.entries import HISTORY_HEADER, new_entry
from worker.deadletter.store.db import BATCH

pytestmark = pytest.mark.integration
__all__ = ["postgres_url"]  # a fixture


def dlq(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return order_sync(pipeline, "dlq", *args)


def seed(
    pipeline: Pipeline,
    count: int,
    *,
    reasons: Sequence[str] = (),
    pad: int = 0,
    events: Sequence[dict[str, Any]] = (),
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Dead-letter ``count`` events directly, as a worker would have.

    ``reasons`` are given to the entries in turn; ``pad`` characters of response body make each
    entry that much bigger; ``events`` are the events to dead-letter (new ones otherwise).
    """
    entries = []
    with connect(pipeline.broker) as connection:
        producer = Producer(connection)
        for i in range(count):
            event = events[i] if events else make_event(overrides.get("order_id", 10_000 + i))
            order_id = event["order_id"]
            entry = new_entry(
                reason=reasons[i % len(reasons)]
                if reasons
                else overrides.get("reason", "api_rejected"),
                error=overrides.get("error", f"Update Order {order_id}: HTTP 400"),
                attempts=1,
                event=event,
                event_id=event["event_id"],
                order_id=order_id,
                status_code=400,
                response_body={"Message": "x" * pad} if pad else None,
            )
            dead_letters.publish(producer, entry)
            entries.append(entry)
    return entries


def events_waiting(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Take every message from the live, then the bulk events queue (no worker runs in these
    tests); each says which queue it came from."""
    taken = []
    with connect(pipeline.broker) as connection:
        for declared in EVENT_QUEUES:
            queue = declared(connection.channel())
            queue.declare()
            while (message := queue.get(no_ack=True)) is not None:
                taken.append(
                    {
                        "body": json.loads(message.body),
                        "headers": message.headers,
                        "queue": declared.name,
                    }
                )
    return taken


def ids(lines: str) -> list[str]:
    return [json.loads(line)["id"] for line in lines.splitlines()]


def test_list_filters_and_never_consumes_or_reorders(pipeline: Pipeline) -> None:
    rejected = seed(pipeline, 3)
    exhausted = seed(pipeline, 2, reason="retries_exhausted", error="HTTP 503")
    everything = [e["id"] for e in rejected + exhausted]

    assert ids(dlq(pipeline, "list", "--json").stdout) == everything
    assert ids(dlq(pipeline, "list", "--json").stdout) == everything
    by_reason = dlq(pipeline, "list", "--json", "--reason", "retries_exhausted")
    assert ids(by_reason.stdout) == [e["id"] for e in exhausted]
    by_order = dlq(pipeline, "list", "--json", "--order-id", "10001")
    assert [json.loads(x)["order_id"] for x in by_order.stdout.splitlines()] == [10001, 10001]
    by_id = dlq(pipeline, "list", "--json", "--id", rejected[2]["id"])
    assert ids(by_id.stdout) == [rejected[2]["id"]]
    by_error = dlq(pipeline, "list", "--json", "--error-contains", "http 503")
    assert len(by_error.stdout.splitlines()) == 2
    limited = dlq(pipeline, "list", "--json", "--limit", "2")
    assert ids(limited.stdout) == everything[:2]
    future = dlq(pipeline, "list", "--json", "--since", "2999-01-01T00:00:00Z")
    assert future.stdout == ""
    past = dlq(pipeline, "list", "--json", "--until", "2999-01-01")
    assert ids(past.stdout) == everything
    table = dlq(pipeline, "list")
    assert "retries_exhausted" in table.stdout and "5 entries" in table.stderr
    assert ids(dlq(pipeline, "list", "--json").stdout) == everything


def test_show_prints_the_whole_entry_or_fails_clearly(pipeline: Pipeline) -> None:
    [entry] = seed(pipeline, 1)
    shown = dlq(pipeline, "show", entry["id"])
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == entry
    missing = dlq(pipeline, "show", "no-such-id")
    assert missing.returncode == 1
    assert "no dead-lettered entry" in missing.stderr


def test_summary_groups_by_reason_and_error(pipeline: Pipeline) -> None:
    seed(pipeline, 3)
    seed(pipeline, 2, reason="retries_exhausted", error="POST token: timed out after 30s")
    result = dlq(pipeline, "summary", "--json")
    summary = json.loads(result.stdout)
    assert summary["total"] == 5
    assert summary["by_reason"]["api_rejected"]["count"] == 3
    assert summary["by_reason"]["retries_exhausted"]["count"] == 2
    groups = {(g["reason"], g["error"]): g["count"] for g in summary["by_error"]}
    assert groups[("api_rejected", "Update Order N: HTTP 400")] == 3
    first = summary["by_reason"]["api_rejected"]
    assert first["oldest"] <= first["newest"]
    table = dlq(pipeline, "summary")
    assert "api_rejected" in table.stdout and "Update Order N: HTTP 400" in table.stdout


def test_replay_republishes_the_selection_and_removes_only_it(pipeline: Pipeline) -> None:
    rejected = seed(pipeline, 3)
    others = seed(pipeline, 2, reason="order_not_found")
    dry = dlq(pipeline, "replay", "--reason", "api_rejected", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.count("would replay") == 4  # three entries and the closing line
    assert len(ids(dlq(pipeline, "list", "--json").stdout)) == 5

    result = dlq(pipeline, "replay", "--reason", "api_rejected", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 3
    assert ids(dlq(pipeline, "list", "--json").stdout) == [e["id"] for e in others]
    replayed = events_waiting(pipeline)
    assert [m["body"] for m in replayed] == [e["event"] for e in rejected]
    history = json.loads(replayed[0]["headers"]["x-order-sync-history"])
    assert history[0]["dead_letter_id"] == rejected[0]["id"]
    assert history[0]["status_code"] == 400


def test_replay_needs_a_selection_or_all(pipeline: Pipeline) -> None:
    result = dlq(pipeline, "replay")
    assert result.returncode == 2
    assert "--all" in result.stderr


def test_a_replayed_event_that_fails_again_comes_back_with_its_history(
    pipeline: Pipeline,
) -> None:
    pipeline.state.script_order(9500, [400, 400])
    pipeline.start_worker()
    pipeline.publish(make_event(9500))
    [first] = pipeline.wait_dead_letters(1)

    patch = json.dumps({"customer_id": 77})
    replayed = dlq(pipeline, "replay", "--id", first["id"], "--patch", patch, "--live")
    assert replayed.returncode == 0, replayed.stderr
    second = wait_for(
        lambda: [e for e in pipeline.dead_letters() if e["id"] != first["id"]],
        what="the replayed event to fail again",
    )[0]
    assert second["event"]["changes"] == {"customer_id": 77}
    assert len(second["history"]) == 1
    step = second["history"][0]
    assert step["dead_letter_id"] == first["id"]
    assert step["status_code"] == 400 and step["reason"] == "api_rejected"
    assert step["patch"] == {"customer_id": 77}
    assert step["replayed_at"] >= first["dead_lettered_at"]
    assert [e["id"] for e in pipeline.dead_letters()] == [second["id"]]

    # Replayed again, it succeeds: the entry is gone and the order has the patched data.
    dlq(pipeline, "replay", "--all", "--live")
    wait_for(lambda: pipeline.statuses(9500) == [400, 400, 200], what="the third PUT")
    assert pipeline.state.order(9500) == {"CustomerId": 77}
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0  # the broker's count: bodies of any kind


def test_a_patch_that_breaks_the_event_leaves_the_entry_in_place(
    pipeline: Pipeline,
) -> None:
    [entry] = seed(pipeline, 1)
    result = dlq(pipeline, "replay", "--all", "--patch", '{"customer_id": "x"}')
    assert result.returncode == 1
    assert "changes.customer_id" in result.stderr
    assert ids(dlq(pipeline, "list", "--json").stdout) == [entry["id"]]


def test_replay_rate_paces_the_publishes(pipeline: Pipeline) -> None:
    seed(pipeline, 6)
    started = time.monotonic()
    result = dlq(pipeline, "replay", "--all", "--rate", "10")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert elapsed >= 0.5  # six publishes at 10/s take at least five intervals
    assert len(events_waiting(pipeline)) == 6


def test_export_and_publish_make_a_round_trip(pipeline: Pipeline, tmp_path: Path) -> None:
    entries = seed(pipeline, 2)
    out = tmp_path / "dead.jsonl"
    exported = dlq(pipeline, "export", "--out", str(out))
    assert exported.returncode == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        e["event"] for e in entries
    ]
    published = subprocess.run(
        [sys.executable, "-m", "worker.cli", "publish", str(out)],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert published.returncode == 0, published.stderr
    assert [m["body"] for m in events_waiting(pipeline)] == [e["event"] for e in entries]


def test_purge_deletes_the_selection_after_confirmation(pipeline: Pipeline) -> None:
    seed(pipeline, 2)
    kept = seed(pipeline, 1, reason="order_not_found")
    unconfirmed = dlq(pipeline, "purge", "--reason", "api_rejected")
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    result = dlq(pipeline, "purge", "--reason", "api_rejected", "--yes", "--json")
    assert json.loads(result.stdout)["done"] == 2
    assert ids(dlq(pipeline, "list", "--json").stdout) == [kept[0]["id"]]


def test_a_replay_killed_midway_loses_nothing(pipeline: Pipeline) -> None:
    entries = seed(pipeline, 200)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dlq", "replay", "--all", "--rate", "200"],
        env=pipeline.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _events_queued(pipeline) >= 40, what="some replays")
    process.send_signal(signal.SIGKILL)
    process.wait()
    _wait_handed_back(pipeline)
    still_dead = Counter(e["event_id"] for e in pipeline.dead_letters())
    assert pipeline.dead_letter_count() == sum(still_dead.values())  # browsing missed nothing
    republished = Counter(m["body"]["event_id"] for m in events_waiting(pipeline))
    everything = {e["event_id"] for e in entries}
    lost = everything - set(still_dead) - set(republished)
    assert not lost, f"{len(lost)} entries neither dead-lettered nor republished"
    assert set(still_dead) | set(republished) == everything
    assert republished and still_dead  # it really was killed midway
    assert max(still_dead.values()) == 1 and max(republished.values()) == 1


def _wait_handed_back(pipeline: Pipeline) -> None:
    """Wait until the broker has dropped a killed reader's consumer, and so put back the
    entries it held, before the queue is read."""

    def consumers() -> int:
        with connect(pipeline.broker) as connection:
            queue: Any = DEAD_LETTER_QUEUE(connection.channel())
            return int(queue.queue_declare(passive=True).consumer_count)

    wait_for(lambda: consumers() == 0, what="the killed process's consumer to go")


def _events_queued(pipeline: Pipeline) -> int:
    with connect(pipeline.broker) as connection:
        return sum(
            int(queue(connection.channel()).queue_declare().message_count) for queue in EVENT_QUEUES
        )


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_replays_at_once_share_the_entries_and_send_each_once(
    pipeline: Pipeline, database: str, request: pytest.FixtureRequest
) -> None:
    if database == "postgresql":
        pipeline.env_overrides["ORDER_SYNC_DATABASE_URL"] = request.getfixturevalue("postgres_url")
    entries = seed(pipeline, 300)
    assert len(pipeline.dead_letters()) == len(entries)  # in the database before either starts
    argv = [sys.executable, "-m", "worker.cli", "dlq", "replay", "--all", "--json", "--rate", "150"]
    first = subprocess.Popen(argv, env=pipeline.env, stdout=subprocess.PIPE, text=True)
    wait_for(lambda: _events_queued(pipeline) > 0, what="the first replay to start")
    second = subprocess.Popen(argv, env=pipeline.env, stdout=subprocess.PIPE, text=True)
    outcomes = [json.loads(run.communicate(timeout=120)[0]) for run in (first, second)]

    shares = [outcome["done"] for outcome in outcomes]
    assert all(shares), f"one replay took every entry: {shares}"
    republished = events_waiting(pipeline)
    sent = Counter(m["body"]["event_id"] for m in republished)
    twice = sorted(event_id for event_id, times in sent.items() if times > 1)
    assert not twice, f"{len(twice)} events sent more than once, e.g. {twice[:3]}"
    assert set(sent) == {e["event_id"] for e in entries}  # each exactly once
    assert sum(shares) == len(entries)
    assert not set(outcomes[0]["ids"]) & set(outcomes[1]["ids"])

    # When each replay sent its events (the last step of their history): the spans overlap.
    owner = {entry_id: run for run, outcome in enumerate(outcomes) for entry_id in outcome["ids"]}
    times: list[list[str]] = [[], []]
    for message in republished:
        step = json.loads(message["headers"][HISTORY_HEADER])[-1]
        times[owner[step["dead_letter_id"]]].append(step["replayed_at"])
    (first_start, first_end), (second_start, second_end) = [(min(t), max(t)) for t in times]
    assert max(first_start, second_start) < min(first_end, second_end), times
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0


@pytest.mark.parametrize("pipeline", ["redis", "embedded"], indirect=True)
def test_list_replay_and_purge_on_other_brokers(pipeline: Pipeline) -> None:
    entries = seed(pipeline, 4)
    everything = [e["id"] for e in entries]
    assert ids(dlq(pipeline, "list", "--json").stdout) == everything
    assert ids(dlq(pipeline, "list", "--json").stdout) == everything
    replay = dlq(pipeline, "replay", "--id", everything[1], "--json")
    assert json.loads(replay.stdout)["done"] == 1
    assert ids(dlq(pipeline, "list", "--json").stdout) == [
        everything[0],
        *everything[2:],
    ]
    purge = dlq(pipeline, "purge", "--id", everything[0], "--yes", "--json")
    assert json.loads(purge.stdout)["done"] == 1
    assert ids(dlq(pipeline, "list", "--json").stdout) == everything[2:]
    assert [m["body"]["event_id"] for m in events_waiting(pipeline)] == [entries[1]["event_id"]]


def _on_a_terminal(pipeline: Pipeline, *args: str) -> str:
    """Run ``order-sync dlq ...`` with a pseudo-terminal as its stdin, stdout and stderr."""

    leader, follower = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dlq", *args],
        env=pipeline.env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closes when the process exits
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    process.wait(timeout=60)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_show_on_a_terminal_and_stay_quiet_when_piped(
    pipeline: Pipeline,
) -> None:
    seed(pipeline, 20)
    on_terminal = _on_a_terminal(pipeline, "summary")
    assert "reading" in on_terminal and "20/20" in on_terminal
    piped = dlq(pipeline, "summary")
    assert "reading" not in piped.stdout + piped.stderr
    as_json = _on_a_terminal(pipeline, "summary", "--json")
    assert "reading" not in as_json
    replay = _on_a_terminal(pipeline, "replay", "--all")
    assert "replaying" in replay and "replayed 20 entries" in replay


def test_a_purge_killed_midway_loses_nothing_it_did_not_purge(
    pipeline: Pipeline, postgres_url: str
) -> None:
    pipeline.env_overrides["ORDER_SYNC_DATABASE_URL"] = postgres_url
    # Every third entry is not selected.
    entries = seed(pipeline, 1500, reasons=("api_rejected", "api_rejected", "order_not_found"))
    selected = [e["id"] for e in entries if e["reason"] == "api_rejected"]
    kept = [e["id"] for e in entries if e["reason"] != "api_rejected"]
    assert len(pipeline.dead_letters()) == len(entries)  # moved into the database

    # The test holds one selected entry, past the purge's first batches, locked: the purge
    # commits the batches before it, then waits on the lock until it is killed.
    held = selected[BATCH + 100]
    with psycopg.connect(**psycopg_args(postgres_url)) as lock:  # type: ignore[arg-type]
        lock.execute("SELECT 1 FROM order_sync_dead_letters WHERE id = %s FOR UPDATE", (held,))
        argv = ["dlq", "purge", "--reason", "api_rejected", "--yes"]
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *argv],
            env=pipeline.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def purge_waits() -> bool:
            with psycopg.connect(**psycopg_args(postgres_url)) as c:  # type: ignore[arg-type]
                row = c.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                return bool(row and row[0])

        wait_for(lambda: process.poll() is not None or purge_waits(), what="the purge to wait")
        assert process.poll() is None, "the purge ended without waiting for the held entry"
        process.send_signal(signal.SIGKILL)
        process.wait()

    left = [e["id"] for e in pipeline.dead_letters()]
    assert pipeline.dead_letter_count() == len(left)
    twice = [entry_id for entry_id, times in Counter(left).items() if times > 1]
    assert not twice, f"{len(twice)} entries are stored twice"
    order = {e["id"]: index for index, e in enumerate(entries)}
    assert [order[i] for i in left] == sorted(order[i] for i in left), "entries were reordered"
    missing = [i for i in kept if i not in set(left)]
    assert not missing, f"{len(missing)} entries the purge did not select are gone"
    purged = set(selected) - set(left)
    assert 0 < len(purged) < len(selected), "the purge was not killed midway"
    assert len(purged) % BATCH == 0, "a batch was purged in part"
    assert len(left) + len(purged) == len(entries)

    # Run again, it purges exactly what the killed run had left of the selection.
    again = dlq(pipeline, "purge", "--reason", "api_rejected", "--yes", "--json")
    assert json.loads(again.stdout)["done"] == len(selected) - len(purged)
    assert [e["id"] for e in pipeline.dead_letters()] == kept
    assert pipeline.dead_letter_count() == len(kept)


def test_a_replay_while_a_worker_runs_applies_each_event_once(pipeline: Pipeline) -> None:
    orders = list(range(9600, 9620))
    for order_id in orders:
        pipeline.state.script_order(order_id, [400])  # rejected once, accepted after
    pipeline.start_worker()
    pipeline.publish(*(make_event(order_id) for order_id in orders))
    dead = pipeline.wait_dead_letters(len(orders))
    assert sorted(e["order_id"] for e in dead) == orders
    assert pipeline.dead_letter_count() == len(orders)

    # Paced, so the worker applies the first replayed events while the rest are still being sent.
    replay = dlq(pipeline, "replay", "--all", "--json", "--rate", "20", "--live")
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["done"] == len(orders)
    pipeline.wait_applied(*orders)
    wait_for(
        lambda: (
            queue_count(pipeline.broker, EVENTS_QUEUE) == 0
            and queue_count(pipeline.broker, TASKS_QUEUE) == 0
        ),
        what="the worker to finish every message",
    )
    assert {order_id: pipeline.statuses(order_id) for order_id in orders} == {
        order_id: [400, 200] for order_id in orders
    }
    applied = Counter(
        event_id
        for record in pipeline.log_records()
        if record.get("event") == "event applied"
        for event_id in record["event_ids"]
    )
    assert applied == Counter({e["event_id"]: 1 for e in dead}), applied
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0


def test_an_already_applied_event_is_skipped_when_sent_or_replayed_again(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker()
    event = make_event(9700, customer_id=5)
    pipeline.publish(event)
    pipeline.wait_applied(9700)
    assert pipeline.statuses(9700) == [200]

    def skipped() -> int:
        return sum(
            1
            for r in pipeline.log_records()
            if r.get("event") == "event already handled" and r.get("event_id") == event["event_id"]
        )

    # The same event again: a publisher's retry, then a dead-letter entry of it replayed.
    pipeline.publish(event)
    wait_for(lambda: skipped() >= 1 or len(pipeline.statuses(9700)) > 1, what="the copy")
    [entry] = seed(pipeline, 1, events=[event])
    replay = dlq(pipeline, "replay", "--id", entry["id"], "--json", "--live")
    assert json.loads(replay.stdout)["done"] == 1
    wait_for(lambda: skipped() >= 2 or len(pipeline.statuses(9700)) > 2, what="the replay")
    assert pipeline.statuses(9700) == [200], "an applied event was sent to Sellercloud again"
    assert skipped() == 2
    assert pipeline.dead_letters() == []
    assert pipeline.dead_letter_count() == 0
