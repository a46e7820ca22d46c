"""What /livez and /readyz answer, over a real HTTP server (worker/observability/health.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import make_server

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter

from worker.observability.endpoint import app
from worker.observability.health import STALE_SECONDS, WorkerHealth


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def served() -> Iterator[tuple[str, WorkerHealth, Clock]]:
    clock = Clock()
    worker = WorkerHealth(clock=clock)
    registry = CollectorRegistry()
    Counter("probe_test", "A counter.", registry=registry).inc()
    server = make_server("127.0.0.1", 0, app(registry, worker))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", worker, clock
    server.shutdown()


def get(url: str) -> tuple[int, str]:
    response = requests.get(url, timeout=5)
    return response.status_code, response.text


def test_a_connected_worker_whose_loop_turns_is_alive_and_ready(
    served: tuple[str, WorkerHealth, Clock],
) -> None:
    base, worker, clock = served
    worker.connection(True)
    clock.now += 5
    worker.beat()
    assert get(f"{base}/livez")[0] == 200
    assert get(f"{base}/readyz") == (200, "ok: reading the queues\n")
    assert "probe_test_total 1.0" in get(f"{base}/metrics")[1]


def test_a_stuck_event_loop_fails_liveness(served: tuple[str, WorkerHealth, Clock]) -> None:
    base, worker, clock = served
    worker.connection(True)
    clock.now += STALE_SECONDS + 1
    status, text = get(f"{base}/livez")
    assert status == 503 and "has not turned for 61 s" in text


def test_waiting_for_the_broker_is_alive_but_not_ready(
    served: tuple[str, WorkerHealth, Clock],
) -> None:
    base, worker, clock = served
    worker.connection(True)
    worker.connection(False)
    clock.now += 10 * STALE_SECONDS  # the loop does not turn while Celery reconnects
    assert get(f"{base}/livez")[0] == 200
    assert get(f"{base}/readyz") == (503, "not ok: not connected to the broker\n")


def test_a_paused_fleet_is_alive_but_not_ready(served: tuple[str, WorkerHealth, Clock]) -> None:
    base, worker, _ = served
    worker.connection(True)
    worker.paused = "api_unavailable"
    assert get(f"{base}/livez")[0] == 200
    assert get(f"{base}/readyz") == (503, "not ok: the fleet is paused (api_unavailable)\n")
