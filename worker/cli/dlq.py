"""``order-sync dlq``: inspect, group, fix, replay, export and purge dead-lettered events.

Human tables by default, ``--json`` for scripts. Exit codes: 0 done, 1 partly failed (what
failed is listed), 2 bad usage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from worker.broker.connection import connect
from worker.deadletter import operations as dlq
from worker.settings import broker_settings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_PARTLY_FAILED = 1


class IsoTime(click.ParamType):  # type: ignore[type-arg]
    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            return dlq.parse_time(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 time such as 2026-11-27T03:00:00Z", param, ctx)


def selection_options(command: F) -> F:
    options = [
        click.option("--reason", multiple=True, help="Only this reason (repeatable)."),
        click.option("--order-id", type=int, multiple=True, help="Only this order (repeatable)."),
        click.option("--id", "ids", multiple=True, help="Only this entry id (repeatable)."),
        click.option("--since", type=IsoTime(), help="Dead-lettered at or after this time."),
        click.option("--until", type=IsoTime(), help="Dead-lettered at or before this time."),
        click.option("--error-contains", help="Error message contains this (any case)."),
        click.option("--limit", type=click.IntRange(min=1), help="Act on at most this many."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _selection(params: dict[str, Any]) -> dlq.Selection:
    return dlq.Selection(
        reasons=frozenset(params.pop("reason", ())),
        order_ids=frozenset(params.pop("order_id", ())),
        ids=frozenset(params.pop("ids", ())),
        since=params.pop("since", None),
        until=params.pop("until", None),
        error_contains=params.pop("error_contains", None),
    )


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


@contextlib.contextmanager
def _progress(label: str, show: bool) -> Iterator[dlq.OnRead | None]:
    """A progress bar on a terminal; nothing when piped or with --json."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    with connect(broker_settings()) as connection:
        total = dlq.depth(connection)
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


def _require_selection(selection: dlq.Selection, everything: bool, verb: str) -> None:
    if selection.is_everything and not everything:
        raise click.UsageError(f"say which entries to {verb} (--reason, --id, ...) or --all")


def _finish(outcome: dlq.Outcome, verb: str, as_json: bool) -> None:
    if as_json:
        _echo_json(outcome.as_dict())
    else:
        click.echo(f"{verb} {len(outcome.done)} entr{'y' if len(outcome.done) == 1 else 'ies'}")
        for failure in outcome.failed:
            click.echo(f"not {verb}: {failure['id']}: {failure['error']}", err=True)
    if outcome.failed:
        sys.exit(EXIT_PARTLY_FAILED)


@click.group("dlq")
def dlq_group() -> None:
    """Inspect, group, fix and replay dead-lettered events."""


@dlq_group.command("list")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
def list_command(as_json: bool, limit: int | None, **params: Any) -> None:
    """List entries, oldest first, without consuming or reordering them."""
    selection = _selection(params)
    shown = 0
    with connect(broker_settings()) as connection:
        for entry in dlq.select(connection, selection, limit=limit):
            shown += 1
            if as_json:
                _echo_json(entry)
                continue
            if shown == 1:
                click.echo(f"{'dead-lettered at':<24}  {'reason':<22}  {'order':>10}  id / error")
            click.echo(
                f"{entry.get('dead_lettered_at', ''):<24}  {entry.get('reason', ''):<22}  "
                f"{entry.get('order_id') or '-':>10}  {entry.get('id')}\n"
                f"{'':<60}{str(entry.get('error', ''))[:160]}"
            )
    if not as_json:
        click.echo(f"{shown} entr{'y' if shown == 1 else 'ies'}", err=True)


@dlq_group.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="The entry as one line of JSON.")
def show_command(entry_id: str, as_json: bool) -> None:
    """Show one whole entry: event, request, response, error, attempts, replay history."""
    with connect(broker_settings()) as connection:
        found = next(dlq.select(connection, dlq.Selection(ids=frozenset({entry_id}))), None)
    if found is None:
        click.echo(f"no dead-lettered entry with id {entry_id}", err=True)
        sys.exit(EXIT_PARTLY_FAILED)
    if as_json:
        _echo_json(found)
    else:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False))


@dlq_group.command("summary")
@selection_options
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
def summary_command(as_json: bool, limit: int | None, **params: Any) -> None:
    """Counts by reason and by error message, with the oldest and newest of each group."""
    selection = _selection(params)
    with (
        _progress("reading", not as_json) as progress,
        connect(broker_settings()) as connection,
    ):
        summary = dlq.summarize(dlq.select(connection, selection, limit=limit, progress=progress))
    if as_json:
        _echo_json(summary.as_dict())
        return
    click.echo(f"{summary.total} dead-lettered entr{'y' if summary.total == 1 else 'ies'}\n")
    click.echo(f"{'reason':<26}{'count':>8}  {'oldest':<26}newest")
    for reason, group in summary.ranked(summary.by_reason):
        click.echo(f"{reason:<26}{group.count:>8}  {group.oldest or '':<26}{group.newest or ''}")
    click.echo(f"\n{'reason':<26}{'count':>8}  error")
    for (reason, error), group in summary.ranked(summary.by_error):
        click.echo(f"{reason:<26}{group.count:>8}  {error[:120]}")


@dlq_group.command("replay")
@selection_options
@click.option("--all", "everything", is_flag=True, help="Replay every entry.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--rate", type=click.FloatRange(min=0.01), help="At most this many per second.")
@click.option("--patch", help="JSON merge patch applied to each event's changes.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def replay_command(
    everything: bool,
    dry_run: bool,
    rate: float | None,
    patch: str | None,
    as_json: bool,
    limit: int | None,
    **params: Any,
) -> None:
    """Send selected events through the normal flow again and remove their entries."""
    selection = _selection(params)
    _require_selection(selection, everything, "replay")
    try:
        parsed_patch = json.loads(patch) if patch is not None else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--patch") from exc
    if parsed_patch is not None and not isinstance(parsed_patch, dict):
        raise click.BadParameter("a merge patch for changes is a JSON object", param_hint="--patch")
    with _progress("replaying", not as_json) as progress:
        outcome = dlq.replay(
            broker_settings(),
            selection,
            patch=parsed_patch,
            rate=rate,
            dry_run=dry_run,
            limit=limit,
            progress=progress,
        )
    if dry_run and not as_json:
        for entry_id in outcome.done:
            click.echo(f"would replay {entry_id}")
    _finish(outcome, "would replay" if dry_run else "replayed", as_json)


@dlq_group.command("export")
@selection_options
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to FILE.")
@click.option("--entries", is_flag=True, help="Whole entries instead of just the events.")
def export_command(out: str | None, entries: bool, limit: int | None, **params: Any) -> None:
    """Events as JSON Lines: fix them in an editor, then ``order-sync publish`` them."""
    selection = _selection(params)
    written = skipped = 0
    with (
        click.open_file(out or "-", "w", encoding="utf-8") as handle,
        connect(broker_settings()) as connection,
    ):
        for entry in dlq.select(connection, selection, limit=limit):
            record = entry if entries else entry.get("event")
            if record is None:
                skipped += 1
                continue
            handle.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            written += 1
    note = f"; {skipped} entr{'y' if skipped == 1 else 'ies'} kept no JSON event" if skipped else ""
    click.echo(f"exported {written}{note}", err=True)


@dlq_group.command("purge")
@selection_options
@click.option("--all", "everything", is_flag=True, help="Purge every entry.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def purge_command(
    everything: bool, yes: bool, as_json: bool, limit: int | None, **params: Any
) -> None:
    """Delete selected entries for good."""
    selection = _selection(params)
    _require_selection(selection, everything, "purge")
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("purging deletes entries for good: confirm with --yes")
        with connect(broker_settings()) as connection:
            count = sum(1 for _ in dlq.select(connection, selection, limit=limit))
        click.confirm(f"Delete {count} dead-lettered entries for good?", abort=True)
    with (
        _progress("purging", not as_json) as progress,
        connect(broker_settings()) as connection,
    ):
        outcome = dlq.purge(connection, selection, limit=limit, progress=progress)
    _finish(outcome, "purged", as_json)
