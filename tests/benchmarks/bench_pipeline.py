"""Benchmark: what the pipeline's guarantees cost, side by side with the alternatives.

    .venv/bin/python -m tests.benchmarks.bench_pipeline [--events N] [--repeat R] [--only NAME]

1. overhead: events/s draining a backlog (broker -> schema -> PUT to a simulator answering at
   once) for the worker, for the hand-written kombu consumer in ``handwritten.py``, and for two
   Celery tasks (``noop_app.py``) on the same broker, pool and concurrency: one that does
   nothing (the ceiling) and one that does only the hand-written consumer's PUT.
2. scaling: the simulator answering in 50 ms; the worker's threads pool at concurrency 2, 4, 8,
   32 and 128 and its prefork pool at 8 and 32, against the ideal of concurrency / 50 ms.

Every variant runs in its own processes, interleaved, ``--repeat`` times; the report gives the
median rate, the CPU the consumer process used per event, and the CPU the whole machine used
per event (consumer, simulator, RabbitMQ, Redis: on two cores, what bounds the rate). Needs
RabbitMQ and Redis on localhost and nothing else using them. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.benchmarks.harness import (
    RABBITMQ_URL,
    Process,
    Simulator,
    bench_env,
    bench_event,
    machine,
    machine_busy_seconds,
    median,
    our_worker,
    publish_backlog,
    rate_between,
    reset_broker,
    running,
)
from tests.support import wait_for

Run = Callable[[Path, int], dict[str, float]]


def drain(simulator: Simulator, consumer: Process, events: int) -> dict[str, float]:
    """Run the consumer until the simulator has seen every order; rate from PUT timestamps."""
    with running(consumer):
        cpu_at_start, busy_at_start = consumer.cpu_seconds(), machine_busy_seconds()
        wait_for(
            lambda: simulator.stats()["orders"] >= events,
            timeout=max(120, events / 20),
            what=f"{events} orders applied",
        )
        cpu = consumer.cpu_seconds() - cpu_at_start
        busy = machine_busy_seconds() - busy_at_start
    return {
        "events_per_s": rate_between(simulator.put_times()),
        "cpu_ms_per_event": 1000 * cpu / events,
        "machine_cpu_ms_per_event": 1000 * busy / events,
    }


def draining(latency_ms: int, consumer: Callable[[Simulator, Path], Process]) -> Run:
    """A run: a fresh backlog, a simulator answering after ``latency_ms``, one consumer."""

    def run(tmp: Path, events: int) -> dict[str, float]:
        reset_broker()
        publish_backlog(events)
        simulator = Simulator(latency_ms)
        try:
            return drain(simulator, consumer(simulator, tmp), events)
        finally:
            simulator.stop()

    return run


def ours(
    store: str = "redis", pool: str = "threads", concurrency: int = 16, latency_ms: int = 0
) -> Run:
    env = {} if store == "redis" else {"ORDER_SYNC_REDIS_URL": ""}
    return draining(
        latency_ms,
        lambda simulator, tmp: our_worker(
            simulator, tmp, pool=pool, concurrency=concurrency, **env
        ),
    )


def handwritten(concurrency: int = 16) -> Run:
    return draining(
        0,
        lambda simulator, tmp: Process(
            [sys.executable, "-m", "tests.benchmarks.handwritten", str(concurrency)],
            bench_env(simulator, tmp / "data"),
            tmp / "handwritten.log",
            ready_line="handwritten consumer ready.",
        ),
    )


def celery_task(name: str, pool: str = "threads", concurrency: int = 16) -> Run:
    """One ``noop_app`` task per event: ``bench.noop`` or ``bench.put``."""

    def run(tmp: Path, events: int) -> dict[str, float]:
        from tests.benchmarks.noop_app import QUEUE, app

        app.conf.broker_url = RABBITMQ_URL
        with app.connection_for_write() as connection:
            QUEUE(connection.default_channel).declare()
            QUEUE(connection.default_channel).purge()
            with app.producer_or_acquire() as producer:
                for n in range(events):
                    payload = json.loads(bench_event(1_000_000 + n))
                    app.send_task(name, args=(payload,), producer=producer)
        result = tmp / f"noop-{uuid.uuid4().hex[:6]}.json"
        simulator = Simulator()  # idle for bench.noop, which runs beside one as the others do
        try:
            argv = ["-A", "tests.benchmarks.noop_app", "worker", "-P", pool]
            worker = Process(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    *argv,
                    "-c",
                    str(concurrency),
                    "-l",
                    "INFO",
                    "-n",
                    f"noop-{uuid.uuid4().hex[:6]}@%h",
                ],
                {
                    **bench_env(simulator, tmp / "data"),
                    "BENCH_EXPECT": str(events),
                    "BENCH_RESULT": str(result),
                },
                tmp / "noop.log",
                ready_line=" ready.",
            )
            with running(worker):
                cpu_at_start, busy_at_start = worker.cpu_seconds(), machine_busy_seconds()
                wait_for(result.exists, timeout=max(120, events / 20), what=f"{name} tasks")
                cpu = worker.cpu_seconds() - cpu_at_start
                busy = machine_busy_seconds() - busy_at_start
        finally:
            simulator.stop()
        times = json.loads(result.read_text())
        return {
            "events_per_s": (times["count"] - 1) / (times["last"] - times["first"]),
            "cpu_ms_per_event": 1000 * cpu / events,
            "machine_cpu_ms_per_event": 1000 * busy / events,
        }

    return run


def measure(variants: dict[str, Run], events: int, repeat: int, tmp: Path) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    for round_ in range(repeat):
        # Interleaved, so drift in the machine's speed hits every variant alike.
        for number, (name, run) in enumerate(variants.items()):
            folder = Path(tempfile.mkdtemp(prefix=f"variant{number}-run{round_}-", dir=tmp))
            result = run(folder, events)
            runs[name].append(result)
            print(f"{name} #{round_ + 1}: {result}", file=sys.stderr, flush=True)
    return {
        name: {
            "events_per_s": round(median(r["events_per_s"] for r in results), 1),
            "cpu_ms_per_event": round(median(r["cpu_ms_per_event"] for r in results), 3),
            "machine_cpu_ms_per_event": round(
                median(r["machine_cpu_ms_per_event"] for r in results), 3
            ),
            "runs": [round(r["events_per_s"], 1) for r in results],
        }
        for name, results in runs.items()
    }


def overhead(events: int, repeat: int, tmp: Path) -> dict[str, Any]:
    return measure(
        {
            "worker (Redis store)": ours("redis"),
            "worker (SQLite store)": ours("sqlite"),
            "worker, prefork pool of 8": ours("redis", pool="prefork", concurrency=8),
            "hand-written kombu + requests": handwritten(),
            "Celery task doing only the PUT": celery_task("bench.put"),
            "no-op Celery task": celery_task("bench.noop"),
        },
        events,
        repeat,
        tmp,
    )


def scaling(events: int, repeat: int, tmp: Path) -> dict[str, Any]:
    variants = {
        (pool, c): ours(pool=pool, concurrency=c, latency_ms=50)
        for pool, levels in (("threads", (2, 4, 8, 32, 128)), ("prefork", (8, 32)))
        for c in levels
    }
    report = measure(
        {f"{pool} {c}": run for (pool, c), run in variants.items()}, events, repeat, tmp
    )
    for pool, c in variants:
        entry = report[f"{pool} {c}"]
        entry["ideal_per_s"] = c / 0.05
        entry["of_ideal"] = round(entry["events_per_s"] / entry["ideal_per_s"], 3)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="backlog per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median)")
    parser.add_argument("--only", choices=["overhead", "scaling"], help="one benchmark only")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": machine(), "events_per_run": args.events}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        if args.only in (None, "overhead"):
            report["overhead"] = overhead(args.events, args.repeat, tmp)
        if args.only in (None, "scaling"):
            report["scaling_50ms"] = scaling(args.events, args.repeat, tmp)
    report["seconds"] = round(time.monotonic() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
