"""Real parts for integration tests: RabbitMQ, Redis, the simulator over HTTP, worker processes.

Workers run as separate processes started exactly as an operator would (``order-sync worker``);
nothing of ours is mocked. Each test starts from empty queues and a fresh simulator. The parts
themselves (``Pipeline``, events, waiting) are in ``tests/support.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    FLEET_REDIS_URL,
    PASSWORD,
    RABBITMQ_URL,
    REDIS_URL,
    USERNAME,
    Pipeline,
    reachable,
    reset_topology,
)
from worker.simulator import SimulatorServer, SimulatorState

pytestmark = pytest.mark.integration

#: The brokers a pipeline runs on; RabbitMQ unless a test asks for others.
BROKERS = ("rabbitmq", "embedded", "redis")


def _fresh_broker(name: str) -> str | None:
    """The URL of broker ``name``, emptied; None for the embedded broker (in the data folder)."""
    if name == "rabbitmq":
        if not reachable("127.0.0.1", 5672):
            pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 (.ci/run starts it)")
        reset_topology(RABBITMQ_URL)
        return RABBITMQ_URL
    if name == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        client.close()
        return REDIS_URL
    if name == "embedded":
        return None
    raise ValueError(f"unknown broker {name!r}; one of {', '.join(BROKERS)}")


@pytest.fixture
def simulator() -> Iterator[SimulatorServer]:
    server = SimulatorServer(state=SimulatorState(USERNAME, PASSWORD)).start()
    yield server
    server.stop()


@pytest.fixture
def pipeline(
    request: pytest.FixtureRequest, simulator: SimulatorServer, tmp_path: Path
) -> Iterator[Pipeline]:
    """The simulator and worker processes on an empty broker: RabbitMQ, or the ones a test names
    with ``@pytest.mark.parametrize("pipeline", ["embedded", "redis"], indirect=True)``."""
    running = Pipeline(_fresh_broker(getattr(request, "param", "rabbitmq")), simulator, tmp_path)
    yield running
    running.stop_workers()


@pytest.fixture
def fleet(pipeline: Pipeline) -> Iterator[Pipeline]:
    """Workers on RabbitMQ sharing an empty Redis store, as a fleet on several hosts would."""
    import redis

    client = redis.Redis.from_url(FLEET_REDIS_URL)
    client.flushdb()
    client.close()
    pipeline.env_overrides["ORDER_SYNC_REDIS_URL"] = FLEET_REDIS_URL
    yield pipeline
