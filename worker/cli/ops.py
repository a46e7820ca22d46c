"""``order-sync health`` and ``order-sync status``: what a probe and an operator ask first.

Exit codes: 0 healthy, 1 unhealthy (each failed check says why), 2 bad configuration.
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from typing import Any

import click

from worker.settings import ConfigError, broker_settings

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


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON object.")
def status_command(as_json: bool) -> None:
    """Queue depths, dead letters by reason, the oldest waiting event, whether the fleet is
    paused (since when, why), rate budget, token age, and the backlog waiting for the API
    budget (orders, events, budget used per minute, when it will be done)."""
    from worker.broker.connection import connect
    from worker.deadletter.ingest import drain
    from worker.deadletter.store import DeadLetterDB
    from worker.observability import fleet_status

    try:
        report: dict[str, Any] = {
            "queues": fleet_status.queue_depths(),
            "oldest_waiting": fleet_status.oldest_waiting(),
        }
        with DeadLetterDB.open() as db, connect(broker_settings()) as connection:
            drain(connection, db)
            report["dead_letters_by_reason"] = db.counts_by_reason()
        report["fleet"] = fleet_status.fleet_state()
        report["backlog"] = fleet_status.backlog()
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
    waiting = report["backlog"]
    orders = ", ".join(f"{count} {lane}" for lane, count in waiting["orders"].items())
    click.echo(f"backlog                    {orders} order(s), {waiting['events']} event(s)")
    budget = waiting["budget_per_minute"]
    click.echo(
        f"budget used                {waiting['calls_last_minute']} calls in the last minute"
        + (f" of {budget}" if budget else "")
    )
    sizes = waiting["events_per_put_last_5_minutes"]
    if sizes is not None:
        bounds = list(sizes)
        shown = ", ".join(
            f"{f'<={le}' if le != '+Inf' else f'>{bounds[-2]}'}: {n}"
            for le, n in sizes.items()
            if n
        )
        click.echo(f"events per PUT (5 min)     {shown or 'no PUT'}")
    if waiting["drain_seconds"] is None:
        click.echo("done by                    unknown (no rate limit and no calls lately)")
    else:
        click.echo(
            f"done by                    {waiting['done_by']} (in {waiting['drain_seconds']} s)"
        )
