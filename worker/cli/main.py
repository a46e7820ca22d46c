"""``order-sync``: run the worker, publish events, print the contract, read dead letters.

Exit codes: 0 done, 1 failed (the message says what), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from worker.cli.console import console_command
from worker.cli.demo import demo_command
from worker.cli.dlq import dlq_group
from worker.cli.fleet import pause_command, resume_command
from worker.cli.ops import health_command, status_command
from worker.cli.outbox import beat, outbox_group
from worker.cli.queues import queues_group
from worker.cli.trace import trace_command
from worker.settings import ConfigError, broker_settings, log_settings, worker_settings
from worker.simulator.command import simulator_command

EXIT_FAILED = 1
EXIT_USAGE = 2


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@click.group()
@click.version_option(package_name="sellercloud-order-sync")
def main() -> None:
    """Sync order-change events to Sellercloud through Celery workers."""
    from worker.observability.logs import configure_logging

    try:
        configure_logging(log_settings())
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Start a worker; further arguments go to ``celery worker`` (e.g. -c 32, --pool prefork)."""
    if not {"-h", "--help"} & set(celery_args):
        try:
            broker_settings()
            worker_settings()
        except ConfigError as exc:
            click.echo(f"order-sync worker: {exc}", err=True)
            sys.exit(EXIT_USAGE)
    from worker.celery import app

    defaults = (
        []
        if {"--with-gossip", "--with-mingle"} & set(celery_args)
        else [
            # Neither is needed here, and mingle alone adds a second to every start.
            "--without-gossip",
            "--without-mingle",
        ]
    )
    app.worker_main(["worker", *defaults, *_prefork_as_asked(celery_args)])


def _prefork_as_asked(celery_args: tuple[str, ...]) -> list[str]:
    """Celery takes ``-P prefork`` for "no pool given" (prefork is its own default) and so runs
    the app's threads pool; ``processes`` is the same pool under the name it honours."""
    args = list(celery_args)
    for i, arg in enumerate(args):
        if arg in ("--pool=prefork", "-Pprefork"):
            args[i] = "--pool=processes"
        elif arg in ("-P", "--pool") and i + 1 < len(args) and args[i + 1] == "prefork":
            args[i + 1] = "processes"
    return args


@main.command()
@click.argument("files", nargs=-1, type=click.Path(allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option(
    "--bulk", is_flag=True, help="Publish as bulk events (a re-sync): live changes go first."
)
def publish(files: tuple[str, ...], as_json: bool, bulk: bool) -> None:
    """Validate events from FILES (JSON objects or JSON Lines; - or none for stdin), then publish.

    Nothing is published if any event is invalid; each error names the line and the field.
    """
    from worker.cli.event_files import UnreadableInput, iter_json_values
    from worker.publisher import EventPublisher, validate_events

    events: list[tuple[str, Any]] = []
    try:
        for name in files or ("-",):
            with click.open_file(name, encoding="utf-8") as handle:
                label = "<stdin>" if name == "-" else name
                events.extend(iter_json_values(handle.read(), label))
    except (UnreadableInput, OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(str(exc)) from exc
    problems = validate_events(events)
    if problems:
        if as_json:
            _echo_json({"published": 0, "invalid": len(problems), "errors": problems})
        else:
            for problem in problems:
                click.echo(problem, err=True)
            click.echo(f"{len(problems)} invalid event(s); nothing published.", err=True)
        sys.exit(EXIT_FAILED)
    with (
        EventPublisher(broker_settings()) as publisher,
        click.progressbar(events, label="publishing", file=sys.stderr, show_pos=True) as progress,
    ):
        for _label, event in progress:
            body = json.dumps(event, separators=(",", ":"))
            publisher.publish_raw(body, str(event["event_id"]), bulk=bulk)
    if as_json:
        _echo_json({"published": len(events), "invalid": 0, "errors": []})
    else:
        click.echo(f"published {len(events)} event(s)", err=True)


@main.command()
def schema() -> None:
    """Print the event contract as JSON Schema, generated from the marshmallow schemas."""
    from schemas.jsonschema import event_json_schema

    click.echo(json.dumps(event_json_schema(), indent=2))


main.add_command(dlq_group)
main.add_command(trace_command)
main.add_command(health_command)
main.add_command(status_command)
main.add_command(outbox_group)
main.add_command(beat)
main.add_command(simulator_command)
main.add_command(demo_command)
main.add_command(pause_command)
main.add_command(resume_command)
main.add_command(queues_group)
main.add_command(console_command)
