"""Metrics scraped over HTTP from real workers, and the health and status commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Pipeline, make_event, wait_for

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def order_sync(pipeline: Pipeline, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=env or pipeline.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_metrics_count_what_happened(pipeline: Pipeline, pool: str) -> None:
    port = free_port()
    pipeline.env_overrides["ORDER_SYNC_METRICS_PORT"] = str(port)
    pipeline.state.script_order(9602, [500])
    pipeline.state.script_order(9603, [400])
    pipeline.start_worker("--pool", pool, "-c", "2")
    invalid = make_event(9604, customer_id="x")
    pipeline.publish(make_event(9601), make_event(9602), make_event(9603))
    pipeline.publish_raw(json.dumps(invalid))
    pipeline.wait_applied(9601, 9602)
    pipeline.wait_dead_letters(2)

    samples = wait_for(
        lambda: (
            (s := scrape(port))
            and value(s, "order_sync_dead_letters_total", reason="invalid_event") == 1
            and value(s, "order_sync_dead_letters_total", reason="api_rejected") == 1
            and value(s, "order_sync_events_applied_total") == 2
            and s
        ),
        what="the counts to reach the scrape",
    )
    assert value(samples, "order_sync_events_received_total") == 4
    assert value(samples, "order_sync_events_applied_total") == 2
    assert value(samples, "order_sync_retries_total", reason="api_unavailable") == 1
    assert value(samples, "order_sync_dead_letters_total", reason="api_rejected") == 1
    assert value(samples, "order_sync_token_fetches_total", outcome="ok") == 1
    assert (
        value(
            samples,
            "order_sync_api_request_duration_seconds_count",
            endpoint="update_order",
            status="200",
        )
        == 2
    )
    assert (
        value(
            samples,
            "order_sync_api_request_duration_seconds_count",
            endpoint="update_order",
            status="500",
        )
        == 1
    )
    # The worker moves dead letters from their queue into the database.
    assert value(samples, "order_sync_queue_messages", queue="order-sync.dead-letters") == 0
    assert pipeline.dead_letter_count() == 2
    assert value(samples, "order_sync_queue_messages", queue="order-sync.events") == 0


def test_health_passes_with_a_running_worker_and_names_what_fails(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker()
    healthy = order_sync(pipeline, "health", "--json", "--this-host")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    checks = json.loads(healthy.stdout)["checks"]
    assert set(checks) == {"broker", "worker", "credentials"}
    assert all(check["ok"] for check in checks.values())

    # A store with no token yet, so the credentials themselves are tried.
    wrong_password = {
        **pipeline.env,
        "SELLERCLOUD_PASSWORD": "wrong",
        "ORDER_SYNC_DATA_DIR": str(pipeline.tmp_path / "elsewhere"),
    }
    ready = order_sync(pipeline, "health", "--readiness", "--json", env=wrong_password)
    assert ready.returncode == 1
    assert json.loads(ready.stdout)["checks"]["credentials"]["ok"] is False

    no_broker = {**pipeline.env, "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}
    alive = order_sync(pipeline, "health", "--liveness", env=no_broker)
    assert alive.returncode == 1
    assert "BAD broker" in alive.stdout


def test_status_reports_queues_dead_letters_the_oldest_event_and_the_fleet(
    pipeline: Pipeline,
) -> None:
    pipeline.state.script_order(9611, [400])
    pipeline.start_worker()
    pipeline.publish(make_event(9610), make_event(9611))
    pipeline.wait_applied(9610)
    pipeline.wait_dead_letters(1)
    pipeline.stop_workers()
    waiting = make_event(9612, "evt-waiting")
    pipeline.publish(waiting)

    result = order_sync(pipeline, "status", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queues"]["order-sync.events"] == 1
    assert report["queues"]["order-sync.dead-letters"] == 0  # moved into the database
    assert report["dead_letters_by_reason"] == {"api_rejected": 1}
    assert report["oldest_waiting"]["event_id"] == "evt-waiting"
    assert report["oldest_waiting"]["age_seconds"] > 0
    assert report["fleet"]["token_age_seconds"] >= 0
    assert report["fleet"]["rate_limit"] == "off"
    # Looking did not take the event away.
    assert (
        json.loads(order_sync(pipeline, "status", "--json").stdout)["queues"]["order-sync.events"]
        == 1
    )
    table = order_sync(pipeline, "status")
    assert "order-sync.dead-letters" in table.stdout and "token age seconds" in table.stdout


def test_a_publishers_correlation_id_is_on_every_log_line_about_its_event(
    pipeline: Pipeline,
) -> None:
    from kombu import Producer

    from worker.broker.connection import connect
    from worker.broker.topology import EVENTS_EXCHANGE, EVENTS_QUEUE

    pipeline.state.script_order(9620, [503])
    pipeline.start_worker()
    with connect(pipeline.broker) as connection:
        Producer(connection).publish(
            json.dumps(make_event(9620)),
            exchange=EVENTS_EXCHANGE,
            routing_key="order.changed",
            declare=[EVENTS_QUEUE],
            content_type="application/json",
            correlation_id="req-7f3a",
        )
    pipeline.wait_applied(9620)
    about_it = wait_for(
        lambda: (
            (lines := [r for r in pipeline.log_records() if r.get("order_id") == 9620])
            and any(r["event"] == "event applied" for r in lines)
            and lines
        ),
        what="the line saying the event was applied",
    )
    assert {r["event"] for r in about_it} >= {"event retry scheduled", "event applied"}
    assert all(r["correlation_id"] == "req-7f3a" for r in about_it)
