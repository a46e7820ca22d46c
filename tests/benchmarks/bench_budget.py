"""Benchmark: the API budget is the real limit. A backlog should cost one PUT per order.

    .venv/bin/python -m tests.benchmarks.bench_budget [--workers 1 2] [--scale] [--out DIR]

``--lane bulk`` publishes the backlog as bulk events (the fresh change stays live);
``--store sqlite`` runs the workers as processes of one host sharing the embedded store
instead of Redis; ``--limit 0`` runs without a rate limit (the cost of an unthrottled event).

A backlog is published before any worker starts: ``--orders`` orders (300) with
``--per-order`` events each (10), shuffled, each event changing one of three integer fields
with an ``occurred_at`` that increases per order, so the newest value of every field is known.
The fleet's limit (``--limit``, 10 calls/s) is given to the workers (ORDER_SYNC_RATE_LIMIT)
and to the simulator, which answers 429 above it; the workers share Redis. For each fleet size
in ``--workers`` (one process, then two) it reports: PUTs sent (the simulator's request log),
PUTs per order, the drain time (from the first worker's start to the PUT after which every
order holds its newest values), the ideal (orders / (0.9 x limit)) and the ratio to it, 429s,
dead letters (the broker's count), whether every order ends with its newest values, worker
CPU seconds per event and peak RSS. ``--live-after`` seconds (10) after the workers start, a
fresh change to a new order is published: the seconds until it is applied (its PUT is not
counted in the backlog's figures). Then it explains the PUTs beyond one per order from the
request log and the workers' JSON logs (``event applied`` lines).

``--scale`` runs the issue's scaled-up case instead: 30,000 events over 3,000 orders at 50/s.
Every scenario stops after ``--timeout`` seconds. Needs RabbitMQ and Redis on localhost and
nothing else using them. Prints JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from kombu import Connection, Producer

from tests.benchmarks.harness import (
    RABBITMQ_URL,
    Process,
    Simulator,
    machine,
    our_worker,
    queue_depth,
    reset_broker,
)
from tests.support import wait_for
from worker.broker.topology import (
    BULK_ROUTING_KEY,
    DEAD_LETTER_QUEUE,
    EVENT_QUEUES,
    EVENT_ROUTING_KEY,
    EVENTS_EXCHANGE,
    EVENTS_QUEUE,
    TASKS_QUEUE,
)

FIELDS = ("customer_id", "company_id", "sales_rep_1")
BODY_NAMES = {"customer_id": "CustomerId", "company_id": "CompanyId", "sales_rep_1": "SalesRep1"}
FIRST_ORDER = 5_000_000
LIVE_ORDER = 9_000_000
READ_AHEAD = 256  # worker/intake/consumer.py, for the explanation only


# The backlog ------------------------------------------------------------------------------------


def backlog(orders: int, per_order: int, seed: int) -> list[dict[str, Any]]:
    """Events of ``orders`` orders, ``per_order`` each, shuffled; event k of an order changes
    field k % 3 to ``order * 100 + k`` at minute k."""
    events = []
    for n in range(orders):
        order_id = FIRST_ORDER + n
        for k in range(per_order):
            name = FIELDS[k % len(FIELDS)]
            events.append(
                {
                    "event_id": f"budget-{order_id}-{k:03d}-{uuid.uuid4().hex[:6]}",
                    "order_id": order_id,
                    "occurred_at": f"2026-11-26T{10 + k // 60:02d}:{k % 60:02d}:00Z",
                    "changes": {name: order_id % 100_000 * 100 + k},
                }
            )
    random.Random(seed).shuffle(events)
    return events


def newest(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Per order, the body fields it must end with (the newest value of each field)."""
    best: dict[int, dict[str, tuple[str, Any]]] = defaultdict(dict)
    for event in events:
        for name, value in event["changes"].items():
            seen = best[event["order_id"]].get(name)
            if seen is None or seen[0] < event["occurred_at"]:
                best[event["order_id"]][name] = (event["occurred_at"], value)
    return {
        order: {BODY_NAMES[name]: value for name, (_, value) in fields.items()}
        for order, fields in best.items()
    }


def publish(events: list[dict[str, Any]], routing_key: str = EVENT_ROUTING_KEY) -> None:
    with Connection(RABBITMQ_URL) as connection:
        producer = Producer(connection)
        for queue in EVENT_QUEUES:
            queue(connection.default_channel).declare()
        for event in events:
            producer.publish(
                json.dumps(event, separators=(",", ":")).encode(),
                exchange=EVENTS_EXCHANGE,
                routing_key=routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
            )


# Reading the simulator's log ------------------------------------------------------------------


def puts_of(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((c for c in calls if c["method"] == "PUT"), key=lambda c: c["at"])


def completion(calls: list[dict[str, Any]], want: dict[int, dict[str, Any]]) -> float | None:
    """When the last order came to hold its newest values (replaying the 200 PUTs), or None."""
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    done_at: dict[int, float] = {}
    for call in puts_of(calls):
        order = call["order_id"]
        if call["status"] != 200 or order not in want:
            continue
        state[order].update({k: v for k, v in (call["body"] or {}).items() if v is not None})
        if all(state[order].get(k) == v for k, v in want[order].items()):
            done_at.setdefault(order, call["at"])
        else:
            done_at.pop(order, None)
    if len(done_at) < len(want):
        return None
    return max(done_at.values())


def final_state_ok(simulator: Simulator, want: dict[int, dict[str, Any]]) -> int:
    """Orders whose record in the simulator lacks a newest value."""
    wrong = 0
    for order, fields in want.items():
        reply = simulator.session.get(f"{simulator.root}/_sim/orders/{order}", timeout=30)
        record = reply.json() if reply.status_code == 200 else {}
        wrong += any(record.get(k) != v for k, v in fields.items())
    return wrong


# One scenario ---------------------------------------------------------------------------------


def scenario(args: argparse.Namespace, workers: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    reset_broker()
    events = backlog(args.orders, args.per_order, args.seed)
    want = newest(events)
    bulk = args.lane == "bulk"
    publish(events, BULK_ROUTING_KEY if bulk else EVENT_ROUTING_KEY)
    backlog_queue = EVENT_QUEUES[1] if bulk else EVENTS_QUEUE
    wait_for(lambda: queue_depth(backlog_queue.name) >= len(events), 120, "the backlog")
    simulator = Simulator()
    limit = f"{args.limit}/s" if args.limit else "off"
    # Redis: workers as on several hosts; SQLite: processes on one host sharing its data folder.
    store_env = {"ORDER_SYNC_RATE_LIMIT": limit}
    if args.store == "sqlite":
        store_env["ORDER_SYNC_REDIS_URL"] = ""
    simulator.session.post(
        f"{simulator.root}/_sim/config",
        json={"rate_limit": limit if args.limit else None},
        timeout=30,
    ).raise_for_status()
    fleet: list[Process] = [
        our_worker(simulator, out, concurrency=args.concurrency, **store_env)
        for _ in range(workers)
    ]
    live: dict[str, Any] = {}
    peak_rss = 0.0
    drained_at: float | None = None
    calls: list[dict[str, Any]] = []
    try:
        started = time.time()
        for process in fleet:
            process.start()
        ready = time.time() - started
        cpu_at_ready = sum(p.cpu_seconds() for p in fleet)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            time.sleep(1)
            peak_rss = max(peak_rss, sum(p.rss_mib() for p in fleet))
            if args.live_after >= 0 and not live and time.time() - started >= args.live_after:
                live_event = {
                    "event_id": f"live-{uuid.uuid4().hex[:8]}",
                    "order_id": LIVE_ORDER,
                    "occurred_at": "2026-11-26T12:00:00Z",
                    "changes": {"customer_id": 4242},
                }
                live = {"published_at": time.time()}
                publish([live_event])
                live["queue_depth_at_publish"] = queue_depth(EVENTS_QUEUE.name)
            calls = simulator.session.get(f"{simulator.root}/_sim/requests", timeout=120).json()
            if live and "applied_after_s" not in live:
                hit = [
                    c["at"]
                    for c in calls
                    if c["method"] == "PUT" and c["order_id"] == LIVE_ORDER and c["status"] == 200
                ]
                if hit:
                    live["applied_after_s"] = round(min(hit) - live["published_at"], 2)
            drained_at = drained_at or completion(calls, want)
            live_done = args.live_after < 0 or "applied_after_s" in live
            if drained_at and live_done:
                break
        # Let stragglers (retries, second rounds) finish, so every PUT is counted.
        settle_until = time.monotonic() + 10
        last = len(calls)
        while time.monotonic() < settle_until:
            time.sleep(2)
            calls = simulator.session.get(f"{simulator.root}/_sim/requests", timeout=120).json()
            busy = queue_depth(EVENTS_QUEUE.name) + queue_depth(TASKS_QUEUE.name)
            if len(calls) == last and busy == 0:
                break
            last = len(calls)
        cpu = sum(p.cpu_seconds() for p in fleet)
        dead = queue_depth(DEAD_LETTER_QUEUE.name)
        wrong = final_state_ok(simulator, want)
    finally:
        for process in fleet:
            process.stop()
        simulator.stop()
    (out / "requests.json").write_text(json.dumps(calls))
    (out / "events.json").write_text(json.dumps(events))
    backlog_puts = [c for c in puts_of(calls) if c["order_id"] != LIVE_ORDER]
    ideal = args.orders / (0.9 * args.limit) if args.limit else None
    drain = None if drained_at is None else drained_at - started
    report: dict[str, Any] = {
        "workers": workers,
        "lane": args.lane,
        "store": args.store,
        "events": len(events),
        "orders": args.orders,
        "limit_per_s": args.limit,
        "workers_ready_s": round(ready, 2),
        "puts": len(backlog_puts),
        "puts_200": sum(c["status"] == 200 for c in backlog_puts),
        "puts_per_order": round(len(backlog_puts) / args.orders, 3),
        "drain_s": None if drain is None else round(drain, 1),
        "ideal_s": None if ideal is None else round(ideal, 1),
        "ratio_to_ideal": None if drain is None or ideal is None else round(drain / ideal, 2),
        "http_429": sum(c["status"] == 429 for c in calls),
        "token_calls": sum(c["method"] == "POST" for c in calls),
        "dead_letters": dead,
        "orders_not_newest": wrong,
        "all_newest": wrong == 0 and drain is not None,
        "worker_cpu_s_per_event": round(cpu / len(events), 5),
        "worker_cpu_s_per_event_after_ready": round((cpu - cpu_at_ready) / len(events), 5),
        "peak_rss_mib": round(peak_rss, 1),
        "timed_out": drain is None,
    }
    if live:
        report["live_change"] = {
            "published_s_after_start": round(live["published_at"] - started, 1),
            "events_queue_depth_then": live.get("queue_depth_at_publish"),
            "applied_after_s": live.get("applied_after_s"),
        }
    report["extra_puts"] = explain(events, calls, sorted(out.glob("worker-*.log")), workers)
    return report


# Where PUTs beyond one per order come from ----------------------------------------------------


def applied_lines(logs: list[Path]) -> list[dict[str, Any]]:
    lines = []
    for log in logs:
        for raw in log.read_text(errors="replace").splitlines():
            if '"event applied"' not in raw:
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            line["log"] = log.name
            lines.append(line)
    return sorted(lines, key=lambda line: line.get("timestamp", ""))


def explain(
    events: list[dict[str, Any]], calls: list[dict[str, Any]], logs: list[Path], workers: int
) -> dict[str, Any]:
    """Classify every PUT after an order's first.

    ``position`` is an event's place in the queue (publish order). The order's first PUT took
    the events announced by then; a later PUT's events were either still unread then (their
    position was beyond the read horizon: every event before the highest position any PUT up
    to then carried, plus the read-ahead of every worker), or already readable within it.
    """
    position = {e["event_id"]: i for i, e in enumerate(events)}
    order_of = {e["event_id"]: e["order_id"] for e in events}
    lines = [ln for ln in applied_lines(logs) if ln["event_ids"][0] in order_of]
    by_order: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for line in lines:
        by_order[order_of[line["event_ids"][0]]].append(line)
    backlog_puts = [c for c in puts_of(calls) if c["order_id"] in set(order_of.values())]
    put_count = Counter(c["order_id"] for c in backlog_puts if c["status"] == 200)
    coalesced = Counter(line["coalesced"] for line in lines)
    per_order = Counter(put_count.values())
    # The read horizon when each PUT went out: the highest queue position carried so far.
    horizon_then: list[int] = []
    highest = -1
    for line in lines:
        highest = max(highest, *(position[e] for e in line["event_ids"]))
        horizon_then.append(highest)
    index_of = {id(line): i for i, line in enumerate(lines)}
    kinds: Counter[str] = Counter()
    examples: list[dict[str, Any]] = []
    first_put_events: Counter[int] = Counter()
    for order, puts in by_order.items():
        first_put_events[len(puts[0]["event_ids"])] += 1
        for earlier, later in itertools.pairwise(puts):
            at = horizon_then[index_of[id(earlier)]]
            unread = [e for e in later["event_ids"] if position[e] > at + READ_AHEAD * workers]
            if all(position[e] < at for e in later["event_ids"]):
                kind = "all events of the later PUT had been read before the earlier PUT"
            elif len(unread) == len(later["event_ids"]):
                kind = "all events of the later PUT were beyond the read horizon"
            elif unread:
                kind = "some events of the later PUT were beyond the read horizon"
            else:
                kind = "all events of the later PUT were within reach (read or readable)"
            if earlier.get("task_id") == later.get("task_id"):
                # The lock holder's next round: events announced while its PUT waited for a slot.
                kind = "second round of the same task (lock holder): " + kind
            kinds[kind] += 1
            if len(examples) < 4 and all(x["order"] != order for x in examples):
                examples.append(
                    {
                        "order": order,
                        "puts": [
                            {
                                "at": p["timestamp"],
                                "worker": p["log"],
                                "positions": sorted(position[e] for e in p["event_ids"]),
                            }
                            for p in puts
                        ],
                        "horizon_at_earlier_put": at,
                    }
                )
    gaps = [
        (
            ts(later["timestamp"]) - ts(earlier["timestamp"]),
            min(position[e] for e in later["event_ids"])
            - max(position[e] for e in earlier["event_ids"]),
        )
        for puts in by_order.values()
        for earlier, later in itertools.pairwise(puts)
    ]
    return {
        "applied_lines": len(lines),
        "puts_200_per_order": dict(sorted(per_order.items())),
        "events_per_put": dict(sorted(coalesced.items())),
        "events_in_first_put_of_order": dict(sorted(first_put_events.items())),
        "extra_puts": sum(n - 1 for n in put_count.values()),
        "later_put_kinds": dict(kinds),
        "seconds_between_puts_of_one_order_median": median_or_none([g[0] for g in gaps]),
        "queue_positions_between_them_median": median_or_none([g[1] for g in gaps]),
        "examples": examples,
    }


def ts(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def median_or_none(values: list[float]) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[len(values) // 2], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=300)
    parser.add_argument("--per-order", type=int, default=10)
    parser.add_argument(
        "--limit", type=int, default=10, help="fleet limit, calls per second (0: none)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="fleet sizes")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per worker")
    parser.add_argument("--live-after", type=float, default=10, help="-1: no live change")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per scenario")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--lane", choices=("live", "bulk"), default="live", help="publish the backlog as"
    )
    parser.add_argument(
        "--store",
        choices=("redis", "sqlite"),
        default="redis",
        help="redis: workers as on several hosts; sqlite: processes on one host",
    )
    parser.add_argument("--scale", action="store_true", help="30,000 events / 3,000 orders / 50/s")
    parser.add_argument("--out", type=Path, help="keep request logs and worker logs here")
    args = parser.parse_args()
    if args.scale:
        args.orders, args.limit = 3000, 50
        args.timeout = max(args.timeout, 900)
    report: dict[str, Any] = {"machine": machine(), "lane": args.lane, "scenarios": []}
    with tempfile.TemporaryDirectory() as folder:
        root = args.out or Path(folder)
        for workers in args.workers:
            result = scenario(args, workers, root / f"workers-{workers}")
            print(json.dumps(result), file=sys.stderr, flush=True)
            report["scenarios"].append(result)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
