"""The ``order-sync`` command as an operator or a script uses it, against real RabbitMQ."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.support import PASSWORD, Pipeline, make_event, wait_for

pytestmark = pytest.mark.integration


def order_sync(
    pipeline: Pipeline, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env or pipeline.env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def events_queued(pipeline: Pipeline) -> int:
    from worker.broker.connection import connect
    from worker.broker.topology import EVENTS_QUEUE

    with connect(pipeline.broker) as connection:
        # Declaring is harmless (durable, same arguments) and answers with the depth.
        _, count, _ = EVENTS_QUEUE(connection.channel()).queue_declare()
        return int(count)


def test_publish_validates_everything_first_and_names_line_and_field(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    good = make_event(9001)
    bad = make_event(9002, customer_id="seven")
    lines = tmp_path / "events.jsonl"
    lines.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    result = order_sync(pipeline, "publish", str(lines))
    assert result.returncode == 1
    assert f"{lines}:2: changes.customer_id: Not a valid integer." in result.stderr
    assert "nothing published" in result.stderr
    assert events_queued(pipeline) == 0


def test_publish_reads_objects_lines_and_stdin_then_the_worker_applies_them(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps(make_event(9010), indent=2))
    lines = tmp_path / "more.jsonl"
    lines.write_text("\n".join(json.dumps(make_event(9011 + i)) for i in range(3)))
    result = order_sync(
        pipeline,
        "publish",
        "--json",
        str(pretty),
        str(lines),
        "-",
        stdin=json.dumps(make_event(9020)),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"published": 5, "invalid": 0, "errors": []}
    pipeline.start_worker()
    pipeline.wait_applied(9010, 9011, 9012, 9013, 9020)


def test_publish_rejects_unreadable_input(pipeline: Pipeline, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"event_id": "x",\n  "order_id": }')
    result = order_sync(pipeline, "publish", str(broken))
    assert result.returncode == 1
    assert f"{broken}:2: not valid JSON" in result.stderr


def test_dlq_list_prints_entries_without_consuming_them(pipeline: Pipeline) -> None:
    pipeline.state.script_order(9030, [400])
    pipeline.start_worker()
    pipeline.publish(make_event(9030))
    pipeline.publish_raw("garbage")
    pipeline.wait_dead_letters(2)
    first = order_sync(pipeline, "dlq", "list", "--json")
    second = order_sync(pipeline, "dlq", "list", "--json")
    assert first.returncode == 0, first.stderr
    entries = [json.loads(line) for line in first.stdout.splitlines()]
    assert sorted(e["reason"] for e in entries) == ["api_rejected", "invalid_json"]
    assert sorted(second.stdout.splitlines()) == sorted(first.stdout.splitlines())
    table = order_sync(pipeline, "dlq", "list")
    assert "api_rejected" in table.stdout
    assert "2 entries" in table.stderr


def test_schema_is_a_valid_json_schema_that_accepts_a_real_event(
    pipeline: Pipeline,
) -> None:
    result = order_sync(pipeline, "schema")
    schema = json.loads(result.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(make_event(1, customer_id=2), schema)


def test_worker_json_logs_are_one_object_per_line_with_ids_and_no_secrets(
    pipeline: Pipeline,
) -> None:
    pipeline.state.script_order(9041, [500])
    pipeline.state.script_order(9042, [400])
    pipeline.start_worker()
    events = [make_event(9040 + i) for i in range(3)]
    pipeline.publish(*events)
    pipeline.wait_applied(9040, 9041)
    pipeline.wait_dead_letters(1)
    pipeline.stop_workers()

    lines = [line for line in pipeline.log_lines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses, or this fails
    about_events = [r for r in records if r["event"].startswith("event ")]
    assert {r["event"] for r in about_events} == {
        "event applied",
        "event retry scheduled",
        "event dead-lettered",
    }
    ids = {e["event_id"] for e in events}
    for record in about_events:
        # A line about one event names it; a line about an order's turn names its events.
        assert record.get("event_id") in ids or set(record["event_ids"]) <= ids, record
        assert record["order_id"] in {9040, 9041, 9042}
        assert record.get("task_id") or record.get("turn_id"), record
    assert any(r["event"] == "worker shutting down" for r in records)
    output = "\n".join(lines)
    assert PASSWORD not in output
    for token in pipeline.state.issued_tokens():
        assert token not in output


@pytest.mark.parametrize(
    "command",
    [
        ["-m", "worker.cli", "worker"],
        ["-m", "celery", "-A", "worker", "worker", "--pool", "threads"],
    ],
)
def test_a_worker_with_missing_settings_stops_with_one_clear_message(
    pipeline: Pipeline, command: list[str]
) -> None:
    env = {k: v for k, v in pipeline.env.items() if not k.startswith("SELLERCLOUD_")}
    env["ORDER_SYNC_MAX_RETRIES"] = "lots"
    result = subprocess.run(
        [sys.executable, *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    output = result.stdout + result.stderr
    for name in ("SELLERCLOUD_BASE_URL", "SELLERCLOUD_USERNAME", "ORDER_SYNC_MAX_RETRIES"):
        assert name in output
    assert "Traceback" not in output


def test_celery_command_line_runs_the_same_worker(pipeline: Pipeline) -> None:
    pipeline.start_worker(
        command=[
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker",
            "worker",
            "--pool",
            "threads",
            "-c",
            "2",
            "--without-mingle",
            "--without-gossip",
        ]
    )
    pipeline.publish(make_event(9050))
    pipeline.wait_applied(9050)
    wait_for(lambda: pipeline.dead_letters() == [], what="an empty dead-letter queue")


def test_the_demo_runs_end_to_end_on_embedded_defaults(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("CELERY_", "ORDER_SYNC", "SELLERCLOUD_"))
    }
    env["TMPDIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "!! "))]
    assert len(rows) == 6
    assert all(row.startswith("ok ") for row in rows)
    assert "applied" in result.stdout and "api_rejected" in result.stdout
