"""``order-sync trace``: what became of an order's (or an event's) events, in time order.

Exit codes: 0 records found, 1 none, 2 bad usage.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker.settings import ConfigError, database_settings

EXIT_NOTHING = 1


def _detail(record: dict[str, Any]) -> str:
    skip = {"at", "kind", "order_id", "event_id"}
    return " ".join(
        f"{key}={json.dumps(value, ensure_ascii=False)}"
        for key, value in record.items()
        if key not in skip
    )


@click.command("trace")
@click.option("--order", "order_id", type=int, help="Every event of this order.")
@click.option("--event", "event_id", help="This one event.")
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
def trace_command(order_id: int | None, event_id: str | None, as_json: bool) -> None:
    """Received, applied (in which PUT), stale, duplicate, retried, dead-lettered: each event's
    history, oldest first (kept ORDER_SYNC_HISTORY_DAYS)."""
    if (order_id is None) == (event_id is None):
        raise click.UsageError("give either --order or --event")
    from worker.deadletter.store import engine as engines
    from worker.history.reader import trace

    try:
        engine = engines.create(database_settings().url)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        engines.upgrade(engine)
        records = trace(engine, order_id=order_id, event_id=event_id)
    finally:
        engine.dispose()
    for record in records:
        if as_json:
            click.echo(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        else:
            click.echo(
                f"{record['at']}  {record['kind']:<14} {record['order_id'] or '-':>10}  "
                f"{record['event_id'] or '-'}  {_detail(record)}"
            )
    if not records:
        what = f"order {order_id}" if order_id is not None else f"event {event_id}"
        click.echo(f"no history for {what}", err=True)
        sys.exit(EXIT_NOTHING)
