"""Parts shared by the benchmarks: the simulator and workers as processes, backlogs, readings.

Everything under test runs in its own process, started the way an operator would start it, so
the CPU and memory each one uses can be read off the operating system.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
import requests
from kombu import Connection, Producer

from tests.support import make_event, wait_for, worker_env
from worker.broker.topology import (
    DEAD_LETTER_QUEUE,
    EVENT_QUEUES,
    EVENT_ROUTING_KEY,
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    TASKS_QUEUE,
)

RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
STATE_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
USERNAME = "bench@example.com"
PASSWORD = "bench-password-5d1c"
ROOT = Path(__file__).resolve().parents[2]


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


class Simulator:
    """``order-sync simulator`` in a process of its own, on a free port."""

    def __init__(self, latency_ms: int = 0) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "simulator",
                "--port",
                "0",
                "--latency-ms",
                str(latency_ms),
                "--username",
                USERNAME,
                "--password",
                PASSWORD,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.rsplit(" ", 1)[-1].strip()  # "... serving http://127.0.0.1:P/rest/api"
        self.root = self.url.split("/rest/")[0]
        self.session = requests.Session()

    def stats(self) -> dict[str, int]:
        return dict(self.session.get(f"{self.root}/_sim/stats", timeout=30).json())

    def put_times(self) -> list[float]:
        calls = self.session.get(f"{self.root}/_sim/requests", timeout=120).json()
        return sorted(c["at"] for c in calls if c["method"] == "PUT" and c["status"] == 200)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def rate_between(times: list[float]) -> float:
    """Completions per second from the first to the last one, ignoring start-up."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def reset_broker() -> None:
    """Empty queues, so every run starts from exactly the backlog it publishes."""
    with Connection(RABBITMQ_URL) as connection:
        channel = connection.channel()
        for queue in (*EVENT_QUEUES, TASKS_QUEUE, DEAD_LETTER_QUEUE):
            bound = queue(channel)
            bound.declare()
            bound.purge()
        channel.close()
    redis.Redis.from_url(STATE_REDIS_URL).flushdb()


ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "address_line_1": "1 Main St",
    "city": "Springfield",
    "zip_code": "12345",
    "country": "US",
    "state": "NY",
}


def bench_event(order_id: int) -> bytes:
    """An event as upstream publishes it: one order each, so every event is one PUT."""
    event = make_event(
        order_id,
        f"bench-{uuid.uuid4().hex}",
        customer_id=order_id % 1000 + 1,
        currency_code="USD",
        order_source="Amazon",
        shipping_address=ADDRESS,
    )
    return json.dumps(event, separators=(",", ":")).encode()


def publish_backlog(count: int, first_order: int = 1_000_000) -> None:
    """Publish ``count`` persistent events to the events queue and wait until all are there.

    Without a confirm per message (100,000 confirmed one by one take minutes); counting the
    queue afterwards shows that none went missing.
    """
    with Connection(RABBITMQ_URL) as connection:
        producer = Producer(connection)
        EVENTS_QUEUE(connection.default_channel).declare()
        for n in range(count):
            producer.publish(
                bench_event(first_order + n),
                exchange=EVENTS_EXCHANGE,
                routing_key=EVENT_ROUTING_KEY,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
            )
    wait_for(lambda: queue_depth(EVENTS_QUEUE.name) >= count, timeout=120, what=f"{count} events")


def queue_depth(queue_name: str) -> int:
    with Connection(RABBITMQ_URL) as connection:
        channel = connection.channel()
        try:
            return int(channel.queue_declare(queue_name, passive=True).message_count)
        finally:
            channel.close()


@dataclass
class Process:
    """A process under measurement (its children included, for a prefork pool)."""

    argv: list[str]
    env: dict[str, str]
    log: Path
    ready_line: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)  # (seconds, RSS MiB)

    def start(self, timeout: float = 60) -> Process:
        with self.log.open("wb") as handle:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        if self.ready_line:
            wait_for(
                lambda: self._exited() or self.ready_line in self.log.read_text(errors="replace"),
                timeout,
                f"{self.argv[2:5]} to be ready",
            )
            if self._exited():
                raise RuntimeError(self.log.read_text(errors="replace"))
        return self

    def _exited(self) -> bool:
        return self.popen is not None and self.popen.poll() is not None

    def _tree(self) -> list[psutil.Process]:
        assert self.popen is not None
        parent = psutil.Process(self.popen.pid)
        return [parent, *parent.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._tree():
            times = proc.cpu_times()
            total += times.user + times.system
        return total

    def rss_mib(self) -> float:
        return sum(p.memory_info().rss for p in self._tree()) / 2**20

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, every core) since boot."""
    times = psutil.cpu_times()
    # Linux counts guest time inside user time, and steal is the hypervisor's, not ours.
    parts = ("user", "nice", "system", "irq", "softirq")
    return float(sum(getattr(times, part, 0.0) for part in parts))


def bench_env(simulator: Simulator, data_dir: Path, **overrides: str) -> dict[str, str]:
    """A worker's environment on the benchmarks' RabbitMQ and Redis, with no rate limit."""
    return worker_env(
        simulator_url=simulator.url,
        username=USERNAME,
        password=PASSWORD,
        data_dir=data_dir,
        broker_url=RABBITMQ_URL,
        store_url=STATE_REDIS_URL,
        **{"ORDER_SYNC_RATE_LIMIT": "0", "ORDER_SYNC_LOG_LEVEL": "INFO", **overrides},
    )


def our_worker(
    simulator: Simulator, tmp: Path, *, pool: str = "threads", concurrency: int = 16, **env: str
) -> Process:
    node = f"bench-{uuid.uuid4().hex[:6]}@%h"
    argv = [sys.executable, "-m", "worker.cli", "worker", "-P", pool, "-c", str(concurrency)]
    return Process(
        [*argv, "-n", node],
        bench_env(simulator, tmp / "data", **env),
        tmp / f"worker-{uuid.uuid4().hex[:6]}.log",
        ready_line=" ready.",
    )


@contextmanager
def running(process: Process) -> Iterator[Process]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import platform
    from importlib.metadata import version as package

    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            return "unknown"
        return out.strip().splitlines()[0] if out.strip() else "unknown"

    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        **{name: package(name) for name in ("celery", "kombu", "marshmallow", "requests")},
        "redis_server": version(["redis-server", "--version"]),
        "rabbitmq": version(["rabbitmqctl", "-q", "version"]),
    }
