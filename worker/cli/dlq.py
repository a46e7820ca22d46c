"""``order-sync dlq``: inspect, group, fix, replay, archive, annotate, export and purge
dead-lettered events, kept in the project's database.

Every command first moves whatever waits in the dead-letter queue into the database (so it works
with no worker running), then works on the database alone. Human tables by default, ``--json``
for scripts. Exit codes: 0 done, 1 partly failed (what failed is listed), 2 bad usage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import click

from worker.deadletter import operations as dlq
from worker.deadletter.store import DEAD, STATES, DeadLetterDB
from worker.settings import ConfigError, broker_settings

F = TypeVar("F", bound=Callable[..., Any])
EXIT_PARTLY_FAILED = 1
ANY_STATE = "all"


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
        click.option("--group", "groups", multiple=True, help="Only this error group (key)."),
        click.option("--since", type=IsoTime(), help="Dead-lettered at or after this time."),
        click.option("--until", type=IsoTime(), help="Dead-lettered at or before this time."),
        click.option("--error-contains", help="Error message contains this (any case)."),
        click.option("--limit", type=click.IntRange(min=1), help="Act on at most this many."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def state_option(command: F) -> F:
    return click.option(
        "--state",
        type=click.Choice([*STATES, ANY_STATE]),
        default=DEAD,
        show_default=True,
        help="Entries in this state.",
    )(command)


def user_option(command: F) -> F:
    return click.option(
        "--user",
        default=getpass.getuser,
        show_default="the OS user",
        help="Who is acting, for the audit trail.",
    )(command)


def _state(value: str) -> str | None:
    return None if value == ANY_STATE else value


def _selection(params: dict[str, Any]) -> dlq.Selection:
    return dlq.Selection(
        reasons=frozenset(params.pop("reason", ())),
        order_ids=frozenset(params.pop("order_id", ())),
        ids=frozenset(params.pop("ids", ())),
        groups=frozenset(params.pop("groups", ())),
        since=params.pop("since", None),
        until=params.pop("until", None),
        error_contains=params.pop("error_contains", None),
    )


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _entries(count: int) -> str:
    return f"entr{'y' if count == 1 else 'ies'}"


@contextlib.contextmanager
def _progress(label: str, total: int, show: bool) -> Iterator[dlq.OnRead | None]:
    """A progress bar on a terminal; nothing when piped or with --json."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar.update


def _collect(db: DeadLetterDB, show: bool) -> None:
    """Move what waits in the dead-letter queue into the database; without a broker, say so and
    go on with what the database holds."""
    from worker.broker.connection import connect
    from worker.deadletter.ingest import drain, waiting

    with connect(broker_settings()) as connection:
        try:
            depth = waiting(connection)
            if depth:
                with _progress("reading", depth, show) as progress:
                    drain(connection, db, progress=progress)
        except connection.connection_errors as exc:
            click.echo(
                f"warning: the dead-letter queue was not read ({exc}); "
                "showing what the database holds",
                err=True,
            )


@contextlib.contextmanager
def _database(show_progress: bool = False) -> Iterator[DeadLetterDB]:
    try:
        db = DeadLetterDB.open()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        _collect(db, show_progress)
        yield db
    finally:
        db.close()


def _require_selection(selection: dlq.Selection, everything: bool, verb: str) -> None:
    if selection.is_everything and not everything:
        raise click.UsageError(f"say which entries to {verb} (--reason, --id, ...) or --all")


def _finish(outcome: dlq.Outcome, verb: str, as_json: bool) -> None:
    if as_json:
        _echo_json(outcome.as_dict())
    else:
        click.echo(f"{verb} {len(outcome.done)} {_entries(len(outcome.done))}")
        for failure in outcome.failed:
            click.echo(f"not {verb}: {failure['id']}: {failure['error']}", err=True)
    if outcome.failed:
        sys.exit(EXIT_PARTLY_FAILED)


@click.group("dlq")
def dlq_group() -> None:
    """Inspect, group, fix, replay and archive dead-lettered events."""


@dlq_group.command("list")
@selection_options
@state_option
@click.option("--json", "as_json", is_flag=True, help="One JSON entry per line.")
def list_command(as_json: bool, limit: int | None, state: str, **params: Any) -> None:
    """List entries, oldest first."""
    selection = _selection(params)
    shown = 0
    with _database() as db:
        for entry in dlq.select(db, selection, state=_state(state), limit=limit):
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
        click.echo(f"{shown} {_entries(shown)}", err=True)


@dlq_group.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True, help="The entry as one line of JSON.")
@click.option("--full", is_flag=True, help="With its state, replays, group, notes and audit.")
def show_command(entry_id: str, as_json: bool, full: bool) -> None:
    """Show one whole entry: event, request, response, error, attempts, replay history."""
    with _database() as db:
        found = db.get(entry_id)
    if found is None:
        click.echo(f"no dead-lettered entry with id {entry_id}", err=True)
        sys.exit(EXIT_PARTLY_FAILED)
    shown = found.as_dict() if full else found.entry
    if as_json:
        _echo_json(shown)
        return
    click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    if not full and (found.state != DEAD or found.notes):
        # Beside the entry, not in it: stdout stays the entry's JSON.
        click.echo(f"state: {found.state} ({found.changed_at} by {found.changed_by})", err=True)
        for note in found.notes:
            click.echo(f"note by {note['by']} at {note['at']}: {note['text']}", err=True)


@dlq_group.command("summary")
@selection_options
@state_option
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object.")
def summary_command(as_json: bool, limit: int | None, state: str, **params: Any) -> None:
    """Counts by reason and by error group, with the oldest and newest of each."""
    selection = _selection(params)
    with _database(show_progress=not as_json) as db:
        summary = dlq.summarize(db, selection, state=_state(state), limit=limit)
    if as_json:
        _echo_json(summary.as_dict())
        return
    click.echo(f"{summary.total} dead-lettered {_entries(summary.total)}\n")
    click.echo(f"{'reason':<26}{'count':>8}  {'oldest':<26}newest")
    for reason, group in summary.ranked(summary.by_reason):
        click.echo(f"{reason:<26}{group.count:>8}  {group.oldest or '':<26}{group.newest or ''}")
    click.echo(f"\n{'reason':<26}{'count':>8}  {'group':<18}error")
    for (reason, error), group in summary.ranked(summary.by_error):
        click.echo(f"{reason:<26}{group.count:>8}  {group.key:<18}{error[:120]}")
        if group.note:
            click.echo(f"{'':<54}note: {group.note[:120]}")


@dlq_group.command("replay")
@selection_options
@click.option("--all", "everything", is_flag=True, help="Replay every entry.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option("--rate", type=click.FloatRange(min=0.01), help="At most this many per second.")
@click.option("--patch", help="JSON merge patch applied to each event's changes.")
@click.option("--live", is_flag=True, help="Publish as live events, not bulk ones.")
@user_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def replay_command(
    everything: bool,
    dry_run: bool,
    rate: float | None,
    patch: str | None,
    live: bool,
    user: str,
    as_json: bool,
    limit: int | None,
    **params: Any,
) -> None:
    """Send selected events through the normal flow again and mark their entries replayed."""
    selection = _selection(params)
    _require_selection(selection, everything, "replay")
    try:
        parsed_patch = json.loads(patch) if patch is not None else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--patch") from exc
    if parsed_patch is not None and not isinstance(parsed_patch, dict):
        raise click.BadParameter("a merge patch for changes is a JSON object", param_hint="--patch")
    with _database(show_progress=not as_json) as db:
        total = db.count(selection)
        with _progress("replaying", min(total, limit or total), not as_json) as progress:
            outcome = dlq.replay(
                broker_settings(),
                db,
                selection,
                user=user,
                patch=parsed_patch,
                rate=rate,
                dry_run=dry_run,
                limit=limit,
                live=live,
                progress=progress,
            )
    if dry_run and not as_json:
        for entry_id in outcome.done:
            click.echo(f"would replay {entry_id}")
    _finish(outcome, "would replay" if dry_run else "replayed", as_json)


@dlq_group.command("export")
@selection_options
@state_option
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write to FILE.")
@click.option("--entries", is_flag=True, help="Whole entries instead of just the events.")
def export_command(
    out: str | None, entries: bool, limit: int | None, state: str, **params: Any
) -> None:
    """Events as JSON Lines: fix them in an editor, then ``order-sync publish`` them."""
    selection = _selection(params)
    written = skipped = 0
    with _database() as db, click.open_file(out or "-", "w", encoding="utf-8") as handle:
        for entry in dlq.select(db, selection, state=_state(state), limit=limit):
            record = entry if entries else entry.get("event")
            if record is None:
                skipped += 1
                continue
            handle.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
            written += 1
    note = f"; {skipped} {_entries(skipped)} kept no JSON event" if skipped else ""
    click.echo(f"exported {written}{note}", err=True)


@dlq_group.command("purge")
@selection_options
@state_option
@click.option("--all", "everything", is_flag=True, help="Purge every entry.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@user_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def purge_command(
    everything: bool,
    yes: bool,
    user: str,
    as_json: bool,
    limit: int | None,
    state: str,
    **params: Any,
) -> None:
    """Delete selected entries for good."""
    selection = _selection(params)
    _require_selection(selection, everything, "purge")
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("purging deletes entries for good: confirm with --yes")
    with _database(show_progress=not as_json) as db:
        count = db.count(selection, _state(state))
        count = min(count, limit or count)
        if not yes:
            click.confirm(f"Delete {count} dead-lettered entries for good?", abort=True)
        with _progress("purging", count, not as_json) as progress:
            outcome = dlq.purge(
                db, selection, user=user, state=_state(state), limit=limit, progress=progress
            )
    _finish(outcome, "purged", as_json)


def _state_change(verb: str, action: Callable[..., list[str]]) -> Callable[..., None]:
    def command(
        everything: bool, user: str, as_json: bool, limit: int | None, **params: Any
    ) -> None:
        selection = _selection(params)
        _require_selection(selection, everything, verb)
        if limit is not None:
            raise click.UsageError(f"--limit does not apply to {verb}; select by --id instead")
        with _database(show_progress=not as_json) as db:
            done = action(db, selection, user)
        _finish(dlq.Outcome(done=done), f"{verb}d", as_json)

    return command


def _archive_options(verb: str, help_text: str) -> Callable[[F], F]:
    def decorate(command: F) -> F:
        command = click.option("--json", "as_json", is_flag=True, help="The result as JSON.")(
            command
        )
        command = user_option(command)
        command = click.option("--all", "everything", is_flag=True, help=f"{verb} every entry.")(
            command
        )
        command = selection_options(command)
        return dlq_group.command(verb, help=help_text)(command)  # type: ignore[return-value]

    return decorate


_archive_options("archive", "Put dead entries aside (kept for the retention period).")(
    _state_change("archive", lambda db, selection, user: db.archive(selection, user))
)
_archive_options("unarchive", "Make archived entries dead again.")(
    _state_change("unarchive", lambda db, selection, user: db.unarchive(selection, user))
)


@dlq_group.command("note")
@click.argument("text")
@click.option("--id", "entry_id", help="The entry to write the note on.")
@click.option("--group", help="The error group (key, as in summary) to write the note on.")
@user_option
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def note_command(
    text: str, entry_id: str | None, group: str | None, user: str, as_json: bool
) -> None:
    """Write a note on an entry or an error group (the group's shows in summary)."""
    if (entry_id is None) == (group is None):
        raise click.UsageError("give either --id or --group")
    with _database() as db:
        written = db.note(text, user, entry_id=entry_id, group=group)
    if as_json:
        _echo_json({"written": written})
    elif written:
        click.echo("note written")
    if not written:
        click.echo(f"no such {'entry' if entry_id else 'group'}: {entry_id or group}", err=True)
        sys.exit(EXIT_PARTLY_FAILED)


@dlq_group.command("audit")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="One JSON action per line.")
def audit_command(limit: int, offset: int, as_json: bool) -> None:
    """Operator actions, newest first: who replayed, archived, noted or purged what, when."""
    with _database() as db:
        actions = db.audit(limit, offset)
    for action in actions:
        if as_json:
            _echo_json(action)
        else:
            detail = json.dumps(action["detail"], ensure_ascii=False)
            click.echo(
                f"{action['at']}  {action['user']:<16} {action['action']:<10} "
                f"{action['count']:>7} {_entries(action['count']):<8} {detail[:100]}"
            )


@dlq_group.command("expire")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object.")
def expire_command(as_json: bool) -> None:
    """Delete replayed and archived entries older than ORDER_SYNC_DLQ_RETENTION_DAYS (workers
    do this hourly by themselves)."""
    with _database() as db:
        expired = db.expire()
    if as_json:
        _echo_json({"expired": expired})
    else:
        click.echo(f"expired {expired} {_entries(expired)}")
