"""``order-sync outbox`` (init, run-once, status) and ``order-sync beat``.

Exit codes like the rest of the CLI: 0 done, 1 failed (the message says what), 2 bad usage or
configuration.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from worker.settings import (
    ConfigError,
    OutboxSettings,
    broker_settings,
    data_dir,
    outbox_settings,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

EXIT_FAILED = 1
EXIT_USAGE = 2
BEAT_SCHEDULE_FILE = "celerybeat-schedule"


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"order-sync outbox: {message}", err=True)
    sys.exit(code)


@contextmanager
def _outbox() -> Iterator[tuple[OutboxSettings, Engine]]:
    """Settings and engine; configuration problems exit 2, database problems exit 1."""
    # SQLAlchemy is imported by the outbox commands only, not by every ``order-sync`` start.
    from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError

    from worker.outbox.db import outbox_engine

    try:
        settings = outbox_settings()
        engine = outbox_engine(settings)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    try:
        yield settings, engine
    except SQLAlchemyError as exc:
        # The first line of a driver error names the cause; the rest is SQL and a docs link.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if isinstance(exc, ProgrammingError | OperationalError) and _is_missing_table(reason):
            reason += " (run `order-sync outbox init` first)"
        _fail(f"outbox database: {reason}", EXIT_FAILED)
    finally:
        engine.dispose()


def _is_missing_table(reason: str) -> bool:
    # PostgreSQL: relation "..." does not exist; SQLite: no such table.
    return "order_sync_outbox" in reason and ("does not exist" in reason or "no such" in reason)


@click.group("outbox")
def outbox_group() -> None:
    """Publish order changes that upstreams wrote into the outbox table (ORDER_SYNC_OUTBOX_URL)."""


@outbox_group.command()
@click.option("--sql", is_flag=True, help="Print the PostgreSQL DDL instead of running it.")
def init(sql: bool) -> None:
    """Create or upgrade the outbox table (Alembic migrations to head); safe to run again."""
    from worker.outbox.db import offline_sql, upgrade

    if sql:
        click.echo(offline_sql(), nl=False)
        return
    with _outbox() as (_, engine):
        upgrade(engine)
        click.echo(f"outbox ready: {engine.url.render_as_string(hide_password=True)}", err=True)


@outbox_group.command("run-once")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def run_once(as_json: bool) -> None:
    """Publish one batch of pending rows by hand (what the beat task does every interval)."""
    from worker.outbox.poller import run_pass
    from worker.outbox.sink import EventSink

    try:
        broker = broker_settings()
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    with _outbox() as (settings, engine), EventSink(broker) as sink:
        result = run_pass(engine, sink, settings.batch, settings.retention_days)
    if as_json:
        _echo_json(result.counts())
    else:
        counts = ", ".join(
            f"{value} {key.replace('_', ' ')}" for key, value in result.counts().items()
        )
        click.echo(counts, err=True)
    if not result.ok:
        _fail(f"the pass failed: {result.error}", EXIT_FAILED)


@outbox_group.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status(as_json: bool) -> None:
    """Pending rows and the age of the oldest, the last pass, rows with errors, cleanup."""
    from worker.outbox.status import outbox_status

    with _outbox() as (settings, engine):
        report = outbox_status(engine, settings.retention_days)
    if as_json:
        _echo_json(report)
        return
    for key, value in report.items():
        click.echo(f"{key.replace('_', ' '):<28}{'-' if value is None else value}")


def _check(*readers: Callable[[], object]) -> None:
    for read in readers:
        try:
            read()
        except ConfigError as exc:
            click.echo(f"order-sync beat: {exc}", err=True)
            sys.exit(EXIT_USAGE)


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Start the scheduler (outbox polls); further arguments go to ``celery beat``.

    Run one beat per deployment. A second one by mistake does no harm (passes lock their
    rows), it only doubles the polling.
    """
    if not {"-h", "--help"} & set(celery_args):
        _check(broker_settings, outbox_settings)
    from worker.celery import app

    defaults: list[str] = []
    if not any(arg.startswith(("-s", "--schedule")) for arg in celery_args):
        folder = data_dir()
        folder.mkdir(parents=True, exist_ok=True)
        # Beat's own state (when each entry last ran), kept with the other local files.
        defaults = ["--schedule", str(folder / BEAT_SCHEDULE_FILE)]
    app.start(["beat", *defaults, *celery_args])
