"""``order-sync health`` and ``order-sync status``: what a probe and an operator ask first.

Exit codes: 0 healthy, 1 unhealthy (each failed check says why), 2 bad configuration.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from worker.deadletter.operations import parse_time
from worker.settings import ConfigError, broker_settings, fleet_settings

Check = Callable[[], str]


def _broker_reachable() -> str:
    from worker.broker.connection import connect, redacted

    settings = broker_settings()
    with connect(settings) as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        channel: Any = connection.channel()
        channel.close()
    return f"connected to {redacted(settings.url)}"


def _worker_responding(this_host: bool = False) -> str:
    from worker.celery import app

    if broker_settings().is_embedded:
        return "skipped: workers on the embedded broker take no remote commands"
    names = sorted(name for reply in app.control.ping(timeout=3.0) or [] for name in reply)
    if this_host:
        # In a pod or on a server, the probe is about the worker next to it, not the fleet.
        names = [name for name in names if name.endswith(f"@{socket.gethostname()}")]
    if not names:
        where = f" on {socket.gethostname()}" if this_host else ""
        raise RuntimeError(f"no worker{where} answered a ping within 3 s")
    return f"{len(names)} worker(s) answered: " + ", ".join(names)


def _credentials_valid() -> str:
    from worker.apply import runtime

    # The fleet's shared token when there is one, so a probe costs no API call most of the time.
    runtime.current().client.tokens.get()
    return "a Sellercloud token is available"


CHECKS: dict[str, Check] = {
    "broker": _broker_reachable,
    "worker": _worker_responding,
    "credentials": _credentials_valid,
}
PROBES = {"liveness": ("broker", "worker"), "readiness": ("broker", "credentials")}


@click.command("health")
@click.option("--liveness", "probe", flag_value="liveness", help="Broker and worker only.")
@click.option("--readiness", "probe", flag_value="readiness", help="Broker and credentials.")
@click.option("--this-host", is_flag=True, help="Only a worker on this host counts as responding.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def health_command(probe: str | None, this_host: bool, as_json: bool) -> None:
    """Check the broker, the workers and the Sellercloud credentials; exit 1 if any fails."""
    names = PROBES[probe] if probe else tuple(CHECKS)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            detail = _worker_responding(this_host) if name == "worker" else CHECKS[name]()
            results[name] = {"ok": True, "detail": detail}
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        except Exception as exc:
            results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    healthy = all(result["ok"] for result in results.values())
    if as_json:
        click.echo(json.dumps({"ok": healthy, "checks": results}))
    else:
        for name, result in results.items():
            click.echo(f"{'ok ' if result['ok'] else 'BAD'} {name:<12} {result['detail']}")
    sys.exit(0 if healthy else 1)


def _queue_depths() -> dict[str, int]:
    from worker.broker.connection import connect, queue_depths

    with connect(broker_settings()) as connection:
        return queue_depths(connection)


def _oldest_waiting() -> dict[str, Any] | None:
    """The event at the head of the events queue, looked at and handed back."""
    from worker.broker.connection import connect
    from worker.broker.topology import EVENTS_QUEUE

    with connect(broker_settings()) as connection:
        channel: Any = connection.channel()
        try:
            message = EVENTS_QUEUE(channel).get(no_ack=False)
            if message is None:
                return None
            try:
                event = json.loads(message.body or b"")
            except (TypeError, ValueError):
                return {"event_id": None, "note": "not JSON"}
        finally:
            channel.close()  # unacknowledged: the message goes back to the head of the queue
    occurred = str(event.get("occurred_at", "")) if isinstance(event, dict) else ""
    age = None
    with contextlib.suppress(ValueError):
        age = round((dt.datetime.now(dt.UTC) - parse_time(occurred)).total_seconds(), 1)
    return {
        "event_id": event.get("event_id") if isinstance(event, dict) else None,
        "occurred_at": occurred or None,
        "age_seconds": age,
    }


def _fleet_state() -> dict[str, Any]:
    from worker.coordination.backends import open_store
    from worker.coordination.gate import GATE_KEY, GateState
    from worker.coordination.ratelimit import PAUSE_KEY, SLOT_KEY
    from worker.coordination.tokens import TOKEN_KEY

    fleet = fleet_settings()
    store = open_store(fleet.redis_url, str(fleet.store_path))
    try:
        now = time.time()
        next_slot = float(store.get(SLOT_KEY) or 0)
        paused_until = float(store.get(PAUSE_KEY) or 0)
        token = store.get(TOKEN_KEY)
        gate = store.get(GATE_KEY)
    finally:
        store.close()
    token_age = None
    if token is not None:
        record = json.loads(token)
        token_age = round(now - (float(record["expires_at"]) - float(record["lifetime"])), 1)
    closed = GateState.loads(gate) if gate else None
    return {
        # Whether the fleet calls Sellercloud: "open", or why not (coordination.gate).
        "calls": "open" if closed is None else f"paused: {closed.kind}",
        **(_paused(closed, now) if closed else {}),
        "store": "redis" if fleet.redis_url else f"sqlite {fleet.store_path}",
        "rate_limit": str(fleet.rate_limit) if fleet.rate_limit else "off",
        # Slots already promised to callers: how far ahead the fleet has booked the budget.
        "rate_budget_booked_seconds": round(max(0.0, next_slot - now), 1),
        "paused_for_seconds": round(max(0.0, paused_until - now), 1),
        "token_age_seconds": token_age,
    }


def _paused(state: Any, now: float) -> dict[str, Any]:
    return {
        "paused_since": dt.datetime.fromtimestamp(state.since, dt.UTC).isoformat(),
        "paused_seconds": round(now - state.since, 1),
        "paused_because": state.reason,
        "paused_last_error": state.error or None,
        "paused_by": state.by or None,
        "next_probe_in_seconds": (
            round(max(0.0, state.next_probe_at - now), 1) if state.next_probe_at else None
        ),
    }


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON object.")
def status_command(as_json: bool) -> None:
    """Queue depths, dead letters by reason, the oldest waiting event, whether the fleet is
    paused (since when, why), rate budget, token age."""
    from worker.broker.connection import connect
    from worker.deadletter import operations as dlq

    try:
        report: dict[str, Any] = {"queues": _queue_depths(), "oldest_waiting": _oldest_waiting()}
        with connect(broker_settings()) as connection:
            summary = dlq.summarize(dlq.select(connection, dlq.Selection()))
        report["dead_letters_by_reason"] = {
            r: g.count for r, g in summary.ranked(summary.by_reason)
        }
        report["fleet"] = _fleet_state()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:
        click.echo(f"status unavailable: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(report))
        return
    for name, depth in report["queues"].items():
        click.echo(f"queue {name:<26} {depth:>8}")
    for reason, count in report["dead_letters_by_reason"].items():
        click.echo(f"dead letters {reason:<19} {count:>8}")
    oldest = report["oldest_waiting"]
    click.echo(f"oldest waiting event       {json.dumps(oldest) if oldest else 'none'}")
    for key, value in report["fleet"].items():
        click.echo(f"{key.replace('_', ' '):<27}{value}")
