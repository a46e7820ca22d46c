"""``order-sync queues``: the type of our queues on RabbitMQ, and moving them to another type.

    order-sync queues status             each queue's type on the broker, messages, consumers
    order-sync queues migrate --to quorum   classic -> quorum, moving every waiting message

Exit codes: 0 done, 1 failed or refused (the message says why), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker.settings import QUEUE_TYPE_SETTING, QUEUE_TYPES, ConfigError, broker_settings

EXIT_FAILED = 1
EXIT_USAGE = 2


def _rabbitmq() -> Any:
    """A connection to the configured broker, which must be RabbitMQ."""
    from worker.broker.connection import connect, is_amqp

    try:
        settings = broker_settings()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    if settings.is_embedded or not is_amqp(settings.url):
        click.echo("queue types exist on RabbitMQ only (CELERY_BROKER_URL=amqp://...)", err=True)
        sys.exit(EXIT_USAGE)
    return connect(settings)


@click.group("queues")
def queues_group() -> None:
    """Our queues on RabbitMQ: their type (classic or quorum), and moving them to another."""


@queues_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status_command(as_json: bool) -> None:
    """Each queue of ours: its type on the broker, messages waiting, consumers."""
    from worker.broker.migration import queue_states
    from worker.broker.topology import CONFIGURED

    with _rabbitmq() as connection:
        states = queue_states(connection, CONFIGURED)
    configured = CONFIGURED.queue_type
    mismatched = [s.name for s in states if s.type is not None and s.type != configured]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "configured": configured,
                    "queues": [s.as_dict() for s in states],
                    "mismatched": mismatched,
                },
                separators=(",", ":"),
            )
        )
    else:
        click.echo(f"{QUEUE_TYPE_SETTING}={configured}")
        click.echo(f"{'queue':<28} {'type':<9} {'messages':>9} {'consumers':>9}  migrating")
        for s in states:
            temporary = "" if s.temporary is None else f"{s.temporary} in {s.name}.migrating"
            click.echo(
                f"{s.name:<28} {s.type or '-':<9} {s.messages:>9} {s.consumers:>9}  {temporary}"
            )
        for s in states:
            if s.name in mismatched:
                click.echo(
                    f"{s.name} is {s.type}, not {configured}: set {QUEUE_TYPE_SETTING}={s.type}, "
                    f"or stop the workers and run `order-sync queues migrate --to {configured}`",
                    err=True,
                )
    if mismatched:
        sys.exit(EXIT_FAILED)


@queues_group.command("migrate")
@click.option(
    "--to", "to", type=click.Choice(QUEUE_TYPES), required=True, help="The new queue type."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def migrate_command(to: str, as_json: bool) -> None:
    """Move every queue of ours to type TO, keeping every waiting message. Stop the workers first.

    Safe to run again: an interrupted migration is resumed, a finished one changes nothing.
    Then start the workers with ORDER_SYNC_QUEUE_TYPE set to TO.
    """
    from worker.broker.migration import MigrationRefused, migrate

    def say(line: str) -> None:
        if not as_json:
            click.echo(line, err=True)

    with _rabbitmq() as connection:
        try:
            moved = migrate(connection, to, progress=say)
        except MigrationRefused as exc:
            click.echo(f"order-sync queues migrate: {exc}", err=True)
            sys.exit(EXIT_FAILED)
    if as_json:
        click.echo(
            json.dumps({"to": to, "queues": [m.as_dict() for m in moved]}, separators=(",", ":"))
        )
    else:
        click.echo(
            f"every queue is {to}; start the workers with {QUEUE_TYPE_SETTING}={to}", err=True
        )
