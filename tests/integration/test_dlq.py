"""``order-sync dlq``: list, show, summary, replay, export, purge against real brokers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kombu import Producer

from tests.support import Pipeline, make_event, wait_for
from worker.broker.connection import connect
from worker.broker.topology import EVENTS_QUEUE
from worker.deadletter import queue as dead_letters
from worker.deadletter.entries import new_entry

pytestmark = pytest.mark.integration


def order_sync(pipeline: Pipeline, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", "dlq", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def seed(pipeline: Pipeline, count: int, **overrides: Any) -> list[dict[str, Any]]:
    """Dead-letter ``count`` events directly, as a worker would have."""
    entries = []
    with connect(pipeline.broker) as connection:
        producer = Producer(connection)
        for i in range(count):
            order_id = overrides.get("order_id", 10_000 + i)
            event = make_event(order_id)
            entry = new_entry(
                reason=overrides.get("reason", "api_rejected"),
                error=overrides.get("error", f"Update Order {order_id}: HTTP 400"),
                attempts=1,
                event=event,
                event_id=event["event_id"],
                order_id=order_id,
                status_code=400,
            )
            dead_letters.publish(producer, entry)
            entries.append(entry)
    return entries


def events_waiting(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Take every message from the events queue (no worker runs in these tests)."""
    with connect(pipeline.broker) as connection:
        queue = EVENTS_QUEUE(connection.channel())
        queue.declare()
        taken = []
        while (message := queue.get(no_ack=True)) is not None:
            taken.append({"body": json.loads(message.body), "headers": message.headers})
        return taken


def ids(lines: str) -> list[str]:
    return [json.loads(line)["id"] for line in lines.splitlines()]


def test_list_filters_and_never_consumes_or_reorders(pipeline: Pipeline) -> None:
    rejected = seed(pipeline, 3)
    exhausted = seed(pipeline, 2, reason="retries_exhausted", error="HTTP 503")
    everything = [e["id"] for e in rejected + exhausted]

    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything
    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything
    by_reason = order_sync(pipeline, "list", "--json", "--reason", "retries_exhausted")
    assert ids(by_reason.stdout) == [e["id"] for e in exhausted]
    by_order = order_sync(pipeline, "list", "--json", "--order-id", "10001")
    assert [json.loads(x)["order_id"] for x in by_order.stdout.splitlines()] == [10001, 10001]
    by_id = order_sync(pipeline, "list", "--json", "--id", rejected[2]["id"])
    assert ids(by_id.stdout) == [rejected[2]["id"]]
    by_error = order_sync(pipeline, "list", "--json", "--error-contains", "http 503")
    assert len(by_error.stdout.splitlines()) == 2
    limited = order_sync(pipeline, "list", "--json", "--limit", "2")
    assert ids(limited.stdout) == everything[:2]
    future = order_sync(pipeline, "list", "--json", "--since", "2999-01-01T00:00:00Z")
    assert future.stdout == ""
    past = order_sync(pipeline, "list", "--json", "--until", "2999-01-01")
    assert ids(past.stdout) == everything
    table = order_sync(pipeline, "list")
    assert "retries_exhausted" in table.stdout and "5 entries" in table.stderr
    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything


def test_show_prints_the_whole_entry_or_fails_clearly(pipeline: Pipeline) -> None:
    [entry] = seed(pipeline, 1)
    shown = order_sync(pipeline, "show", entry["id"])
    assert shown.returncode == 0
    assert json.loads(shown.stdout) == entry
    missing = order_sync(pipeline, "show", "no-such-id")
    assert missing.returncode == 1
    assert "no dead-lettered entry" in missing.stderr


def test_summary_groups_by_reason_and_error(pipeline: Pipeline) -> None:
    seed(pipeline, 3)
    seed(pipeline, 2, reason="retries_exhausted", error="POST token: timed out after 30s")
    result = order_sync(pipeline, "summary", "--json")
    summary = json.loads(result.stdout)
    assert summary["total"] == 5
    assert summary["by_reason"]["api_rejected"]["count"] == 3
    assert summary["by_reason"]["retries_exhausted"]["count"] == 2
    groups = {(g["reason"], g["error"]): g["count"] for g in summary["by_error"]}
    assert groups[("api_rejected", "Update Order N: HTTP 400")] == 3
    first = summary["by_reason"]["api_rejected"]
    assert first["oldest"] <= first["newest"]
    table = order_sync(pipeline, "summary")
    assert "api_rejected" in table.stdout and "Update Order N: HTTP 400" in table.stdout


def test_replay_republishes_the_selection_and_removes_only_it(pipeline: Pipeline) -> None:
    rejected = seed(pipeline, 3)
    others = seed(pipeline, 2, reason="order_not_found")
    dry = order_sync(pipeline, "replay", "--reason", "api_rejected", "--dry-run")
    assert dry.returncode == 0
    assert dry.stdout.count("would replay") == 4  # three entries and the closing line
    assert len(ids(order_sync(pipeline, "list", "--json").stdout)) == 5

    result = order_sync(pipeline, "replay", "--reason", "api_rejected", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["done"] == 3
    assert ids(order_sync(pipeline, "list", "--json").stdout) == [e["id"] for e in others]
    replayed = events_waiting(pipeline)
    assert [m["body"] for m in replayed] == [e["event"] for e in rejected]
    history = json.loads(replayed[0]["headers"]["x-order-sync-history"])
    assert history[0]["dead_letter_id"] == rejected[0]["id"]
    assert history[0]["status_code"] == 400


def test_replay_needs_a_selection_or_all(pipeline: Pipeline) -> None:
    result = order_sync(pipeline, "replay")
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
    replayed = order_sync(pipeline, "replay", "--id", first["id"], "--patch", patch)
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
    order_sync(pipeline, "replay", "--all")
    wait_for(lambda: pipeline.statuses(9500) == [400, 400, 200], what="the third PUT")
    assert pipeline.state.order(9500) == {"CustomerId": 77}
    assert pipeline.dead_letters() == []


def test_a_patch_that_breaks_the_event_leaves_the_entry_in_place(
    pipeline: Pipeline,
) -> None:
    [entry] = seed(pipeline, 1)
    result = order_sync(pipeline, "replay", "--all", "--patch", '{"customer_id": "x"}')
    assert result.returncode == 1
    assert "changes.customer_id" in result.stderr
    assert ids(order_sync(pipeline, "list", "--json").stdout) == [entry["id"]]


def test_replay_rate_paces_the_publishes(pipeline: Pipeline) -> None:
    seed(pipeline, 6)
    started = time.monotonic()
    result = order_sync(pipeline, "replay", "--all", "--rate", "10")
    elapsed = time.monotonic() - started
    assert result.returncode == 0
    assert elapsed >= 0.5  # six publishes at 10/s take at least five intervals
    assert len(events_waiting(pipeline)) == 6


def test_export_and_publish_make_a_round_trip(pipeline: Pipeline, tmp_path: Path) -> None:
    entries = seed(pipeline, 2)
    out = tmp_path / "dead.jsonl"
    exported = order_sync(pipeline, "export", "--out", str(out))
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
    unconfirmed = order_sync(pipeline, "purge", "--reason", "api_rejected")
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr
    result = order_sync(pipeline, "purge", "--reason", "api_rejected", "--yes", "--json")
    assert json.loads(result.stdout)["done"] == 2
    assert ids(order_sync(pipeline, "list", "--json").stdout) == [kept[0]["id"]]


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
    still_dead = {e["event_id"] for e in pipeline.dead_letters()}
    republished = {m["body"]["event_id"] for m in events_waiting(pipeline)}
    everything = {e["event_id"] for e in entries}
    assert still_dead | republished == everything  # each one somewhere: nothing lost
    assert republished and still_dead  # it really was killed midway


def _events_queued(pipeline: Pipeline) -> int:
    with connect(pipeline.broker) as connection:
        return int(EVENTS_QUEUE(connection.channel()).queue_declare().message_count)


def test_two_replays_at_once_neither_lose_nor_double_send(pipeline: Pipeline) -> None:
    entries = seed(pipeline, 300)
    argv = [sys.executable, "-m", "worker.cli", "dlq", "replay", "--all", "--json"]
    runs = [
        subprocess.Popen(argv, env=pipeline.env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    done = [json.loads(run.communicate(timeout=120)[0])["done"] for run in runs]
    republished = [m["body"]["event_id"] for m in events_waiting(pipeline)]
    assert sorted(republished) == sorted(e["event_id"] for e in entries)  # each exactly once
    assert sum(done) == 300
    assert pipeline.dead_letters() == []


@pytest.mark.parametrize("pipeline", ["redis", "embedded"], indirect=True)
def test_list_replay_and_purge_on_other_brokers(pipeline: Pipeline) -> None:
    entries = seed(pipeline, 4)
    everything = [e["id"] for e in entries]
    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything
    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything
    replay = order_sync(pipeline, "replay", "--id", everything[1], "--json")
    assert json.loads(replay.stdout)["done"] == 1
    assert ids(order_sync(pipeline, "list", "--json").stdout) == [
        everything[0],
        *everything[2:],
    ]
    purge = order_sync(pipeline, "purge", "--id", everything[0], "--yes", "--json")
    assert json.loads(purge.stdout)["done"] == 1
    assert ids(order_sync(pipeline, "list", "--json").stdout) == everything[2:]
    assert [m["body"]["event_id"] for m in events_waiting(pipeline)] == [entries[1]["event_id"]]


def _on_a_terminal(pipeline: Pipeline, *args: str) -> str:
    """Run ``order-sync dlq ...`` with a pseudo-terminal as its stdin, stdout and stderr."""
    import os

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
    piped = order_sync(pipeline, "summary")
    assert "reading" not in piped.stdout + piped.stderr
    as_json = _on_a_terminal(pipeline, "summary", "--json")
    assert "reading" not in as_json
    replay = _on_a_terminal(pipeline, "replay", "--all")
    assert "replaying" in replay and "replayed 20 entries" in replay
