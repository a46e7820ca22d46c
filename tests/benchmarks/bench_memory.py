"""Benchmark: the worker's memory while it drains a large backlog.

    .venv/bin/python -m tests.benchmarks.bench_memory [--events 100000] [--every 2]

Publishes ``--events`` events, starts one worker (default pool and concurrency, Redis store,
the simulator answering at once) and samples the resident set size of the worker's processes
every ``--every`` seconds until the simulator has seen every order. Reports RSS at the start,
at each quarter of the backlog and at the end, and the largest sample. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.harness import (
    Simulator,
    machine,
    our_worker,
    publish_backlog,
    reset_broker,
    running,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=2.0)
    args = parser.parse_args()
    reset_broker()
    started = time.monotonic()
    publish_backlog(args.events)
    print(f"published {args.events} in {time.monotonic() - started:.0f}s", file=sys.stderr)
    samples: list[dict[str, Any]] = []
    simulator = Simulator()
    try:
        with tempfile.TemporaryDirectory() as folder:
            worker = our_worker(simulator, Path(folder))
            with running(worker):
                began = time.monotonic()
                while True:
                    done = simulator.stats()["orders"]
                    samples.append(
                        {
                            "seconds": round(time.monotonic() - began, 1),
                            "applied": done,
                            "rss_mib": round(worker.rss_mib(), 1),
                        }
                    )
                    if len(samples) % 30 == 0:
                        print(samples[-1], file=sys.stderr, flush=True)
                    if done >= args.events:
                        break
                    time.sleep(args.every)
    finally:
        simulator.stop()

    def at(fraction: float) -> dict[str, Any]:
        return next(s for s in samples if s["applied"] >= fraction * args.events)

    rss = [s["rss_mib"] for s in samples]
    report = {
        "machine": machine(),
        "events": args.events,
        "seconds": samples[-1]["seconds"],
        "events_per_s": round(args.events / samples[-1]["seconds"], 1),
        "rss_mib": {
            "first_sample": rss[0],
            **{f"at_{int(f * 100)}pct": at(f)["rss_mib"] for f in (0.25, 0.5, 0.75, 1.0)},
            "max": max(rss),
            "min": min(rss),
        },
        "samples": samples,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
