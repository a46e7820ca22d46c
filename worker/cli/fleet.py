"""``order-sync pause`` and ``order-sync resume``: the operator's switch for the whole fleet.

Pausing closes the fleet's gate (``worker.coordination.gate``): within a second every worker
stops calling Sellercloud and stops reading its queues, and events wait in the broker, none
spending a retry. Resuming opens it, whatever closed it (an outage, refused credentials, an
operator); if the cause is still there, the gate closes again on its own.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from worker.coordination.gate import FleetGate, GateSettings
from worker.settings import ConfigError, fleet_settings

EXIT_FAILED = 1


@contextmanager
def _gate() -> Iterator[FleetGate]:
    from worker.coordination.backends import open_store

    try:
        fleet = fleet_settings()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    store = open_store(fleet.redis_url, str(fleet.store_path))
    try:
        yield FleetGate(store, GateSettings(fleet.outage_threshold, fleet.probe_interval_max))
    except Exception as exc:
        click.echo(f"the fleet's store did not answer: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        store.close()


@click.command("pause")
@click.option("--reason", default="paused by an operator", show_default=True, help="Why.")
@click.option("--json", "as_json", is_flag=True, help="Print the fleet's state as JSON.")
def pause_command(reason: str, as_json: bool) -> None:
    """Stop every worker calling Sellercloud until ``order-sync resume``."""
    with _gate() as gate:
        state = gate.pause(reason, by=getpass.getuser())
    if as_json:
        click.echo(json.dumps({"calls": f"paused: {state.kind}", "reason": state.reason}))
    else:
        click.echo(f"paused: workers stop calling Sellercloud within a second ({reason})")


@click.command("resume")
@click.option("--json", "as_json", is_flag=True, help="Print what was resumed as JSON.")
def resume_command(as_json: bool) -> None:
    """Let every worker call Sellercloud again, whatever paused the fleet."""
    with _gate() as gate:
        before = gate.state()
        gate.open()
    was = f"paused: {before.kind}" if before else "open"
    if as_json:
        click.echo(json.dumps({"calls": "open", "was": was}))
    else:
        click.echo(f"resumed (was {was}): workers read their queues again within a second")
