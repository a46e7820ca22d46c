"""What the integration tests and the benchmarks share: the brokers and login they use, a
pipeline of real worker processes, and ways to break RabbitMQ and Redis.

The worker's environment, events and waiting come from :mod:`worker.cli.local_run`, which the
demo uses too; they are re-exported here so that the tests import their helpers from one place.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Producer, Queue

from worker.broker.connection import connect
from worker.broker.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENT_QUEUES,
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    TASKS_EXCHANGE,
    TASKS_QUEUE,
)
from worker.cli.local_run import DEFAULT_TIMEOUT, make_event, wait_for, worker_env
from worker.deadletter.ingest import dead_entries, waiting
from worker.deadletter.store import DeadLetterDB
from worker.publisher import EventPublisher
from worker.settings import BrokerSettings, broker_settings, database_settings
from worker.simulator import SimulatorServer, SimulatorState

__all__ = [
    "DEFAULT_TIMEOUT",
    "FLEET_REDIS_URL",
    "PASSWORD",
    "RABBITMQ_URL",
    "REDIS_URL",
    "TEST_SETTINGS",
    "USERNAME",
    "Pipeline",
    "make_event",
    "queue_count",
    "reachable",
    "redis_down",
    "reset_topology",
    "restart_rabbitmq",
    "wait_for",
    "worker_env",
]

RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
#: The fleet's shared store in the tests that run workers as a fleet.
FLEET_REDIS_URL = os.environ.get("TEST_FLEET_REDIS_URL", "redis://127.0.0.1:6379/13")
USERNAME = "integration@example.com"
PASSWORD = "integration-password-7f3a"

#: The tests' settings: quick retries, and no rate limit (the tests about it set one).
TEST_SETTINGS = {
    "ORDER_SYNC_RETRY_BACKOFF": "0.05",
    "ORDER_SYNC_RETRY_BACKOFF_MAX": "0.3",
    "ORDER_SYNC_MAX_RETRIES": "5",
    "ORDER_SYNC_HTTP_TIMEOUT": "3",
    "ORDER_SYNC_RATE_LIMIT": "0",
}


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def queue_count(settings: BrokerSettings, queue: Queue) -> int:
    """Messages ready in ``queue`` as the broker counts them, whatever their bodies.

    A passive declare: nothing is read, and it fails if the queue does not exist. Messages a
    reader holds unacknowledged are not counted.
    """
    with connect(settings) as connection:
        channel: Any = connection.channel()
        try:
            return int(queue(channel).queue_declare(passive=True).message_count)
        finally:
            channel.close()


def reset_topology(url: str) -> None:
    """Delete our queues and exchanges on the broker at ``url``: the next user starts empty."""
    with Connection(url) as connection:
        channel = connection.channel()
        for queue in (*EVENT_QUEUES, TASKS_QUEUE, DEAD_LETTER_QUEUE):
            try:
                queue(channel).delete()
            except Exception:
                channel = connection.channel()
        for exchange in (EVENTS_EXCHANGE, TASKS_EXCHANGE, DEAD_LETTER_EXCHANGE):
            try:
                exchange(channel).delete()
            except Exception:
                channel = connection.channel()
        channel.close()


@dataclass
class Pipeline:
    """A broker URL (or the embedded broker's folder), the simulator, and worker processes."""

    broker_url: str | None
    simulator: SimulatorServer
    tmp_path: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return worker_env(
            simulator_url=self.simulator.url,
            username=USERNAME,
            password=PASSWORD,
            data_dir=self.tmp_path / "data",
            broker_url=self.broker_url,
            **{**TEST_SETTINGS, **self.env_overrides},
        )

    @property
    def broker(self) -> BrokerSettings:
        return broker_settings(self.env)

    @property
    def state(self) -> SimulatorState:
        return self.simulator.state

    def start_worker(
        self, *args: str, command: list[str] | None = None, wait: bool = True
    ) -> subprocess.Popen[bytes]:
        log = self.tmp_path / f"worker-{len(self.logs)}.log"
        # A node name of its own: two workers on one host would otherwise clash on RabbitMQ.
        node = f"w{len(self.logs)}-{uuid.uuid4().hex[:6]}@%h"
        argv = command or [
            sys.executable,
            "-m",
            "worker.cli",
            "worker",
            "-c",
            "4",
            "-n",
            node,
            *args,
        ]
        with log.open("wb") as handle:
            process = subprocess.Popen(
                argv, env=self.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.workers.append(process)
        self.logs.append(log)
        if wait:
            wait_for(
                lambda: process.poll() is not None or " ready." in log.read_text(errors="replace"),
                what="the worker to be ready",
            )
            assert process.poll() is None, log.read_text()
        return process

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(sig)
        for process in self.workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def publish(self, *events: dict[str, Any], bulk: bool = False) -> None:
        with EventPublisher(self.broker) as publisher:
            for event in events:
                publisher.publish(event, bulk=bulk)

    def publish_raw(self, body: str | bytes, content_type: str = "application/json") -> None:
        with connect(self.broker) as connection:
            Producer(connection).publish(
                body,
                exchange=EVENTS_EXCHANGE,
                routing_key="order.changed",
                declare=[EVENTS_QUEUE, DEAD_LETTER_QUEUE],
                content_type=content_type,
                content_encoding="binary" if isinstance(body, bytes) else "utf-8",
                delivery_mode=2,
            )

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead entry in the database, after what waits in the queue was moved there."""
        return dead_entries(self.broker, database_settings(self.env))

    def dead_letter_count(self) -> int:
        """Dead entries in the database plus messages still in the dead-letter queue: every
        message counts, whatever its body (one that is not an entry is kept as ``unreadable``)."""
        with (
            DeadLetterDB.open(settings=database_settings(self.env)) as db,
            connect(self.broker) as connection,
        ):
            return db.count() + waiting(connection)

    def wait_dead_letters(
        self, count: int, timeout: float = DEFAULT_TIMEOUT
    ) -> list[dict[str, Any]]:
        return wait_for(  # type: ignore[return-value]
            lambda: (entries := self.dead_letters()) and len(entries) >= count and entries,
            timeout,
            what=f"{count} dead letter(s)",
        )

    def wait_applied(self, *order_ids: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_for(
            lambda: all(self.state.order(order_id) is not None for order_id in order_ids),
            timeout,
            what=f"orders {order_ids} to be applied",
        )

    def statuses(self, order_id: int) -> list[int | None]:
        return [r["status"] for r in self.state.requests() if r["order_id"] == order_id]

    def log_lines(self) -> list[str]:
        return [line for log in self.logs for line in log.read_text(errors="replace").splitlines()]

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.strip()]


def _run(*argv: str, timeout: float) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=timeout)


def restart_rabbitmq() -> None:
    """Stop and start RabbitMQ's application: every client connection drops and must recover."""
    try:
        _run("rabbitmqctl", "-q", "stop_app", timeout=120)
    finally:
        _run("rabbitmqctl", "-q", "start_app", timeout=120)
        _run("rabbitmqctl", "-q", "await_startup", timeout=120)


@contextmanager
def redis_down() -> Iterator[None]:
    """Redis shut down for the block and started again after it with its data, as a production
    Redis keeps it: the shared store holds events waiting for their turn. The machine's Redis
    keeps nothing on disk otherwise, so its data is saved on the way down (in its own folder:
    that setting is protected), loaded on the way up, and the file removed once loaded."""
    import redis

    client = redis.Redis(port=6379)
    folder = Path(str(client.config_get("dir")["dir"]))
    saved = folder / str(client.config_get("dbfilename")["dbfilename"])
    client.close()
    _run("redis-cli", "-p", "6379", "shutdown", "save", timeout=60)
    try:
        yield
    finally:
        _run(
            "redis-server",
            *("--daemonize", "yes", "--bind", "127.0.0.1", "--port", "6379"),
            *("--save", "", "--appendonly", "no", "--dir", str(folder)),
            *("--dbfilename", saved.name),
            timeout=60,
        )
        wait_for(lambda: reachable("127.0.0.1", 6379), what="Redis to come back")
        restarted = redis.Redis(port=6379)
        wait_for(lambda: restarted.info("persistence")["loading"] == 0, what="Redis to load")
        restarted.close()
        saved.unlink(missing_ok=True)


def postgres_database(url: str) -> str:
    """``url``'s PostgreSQL database, created if it does not exist yet (a test fails, saying
    so, when PostgreSQL does not answer); returns ``url``."""
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        admin = psycopg.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.username,
            dbname="postgres",
            autocommit=True,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc}); .ci/run starts it")
    with admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)
        ).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{parsed.database}"')
    return url


def order_sync(
    pipeline: Pipeline, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``order-sync ARGS`` run as an operator would, with the pipeline's settings."""
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        env=pipeline.env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
