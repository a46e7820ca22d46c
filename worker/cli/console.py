"""``order-sync console``: the operator console, a web page over the fleet, the dead letters and
every order's history.

Listens on 127.0.0.1 unless ``--host`` says otherwise; any other address needs a password
(``ORDER_SYNC_CONSOLE_PASSWORD`` or ``ORDER_SYNC_CONSOLE_PASSWORD_FILE``). Exit codes: 0 stopped
(Ctrl-C, SIGTERM), 2 bad usage or configuration.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from worker.settings import ConfigError

EXIT_USAGE = 2
DEFAULT_PORT = 8080


def build_app(host: str) -> Any:
    """The console's WSGI app for listening on ``host``; ConfigError (or ValueError for a
    non-loopback host without a password) if it must not start."""
    import secrets

    from worker.console.app import ConsoleConfig, create_app
    from worker.console.backend import Backend
    from worker.console.guard import is_loopback_host
    from worker.settings import console_settings

    settings = console_settings()
    loopback = is_loopback_host(host)
    if not loopback and settings.password is None:
        raise ValueError(
            f"refusing to listen on {host}, which is not a loopback address, without a "
            "password: set ORDER_SYNC_CONSOLE_PASSWORD or ORDER_SYNC_CONSOLE_PASSWORD_FILE "
            "(or listen on 127.0.0.1)"
        )
    backend = Backend.from_settings()
    config = ConsoleConfig(
        password=settings.password,
        loopback_only=loopback,
        secret_key=secrets.token_bytes(32),
        secrets=backend.secrets(),
    )
    return create_app(config, backend)


@click.command("console")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=DEFAULT_PORT,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port; the address is printed).",
)
def console_command(host: str, port: int) -> None:
    """Serve the operator console: fleet overview, dead letters (group, inspect, patch, replay,
    archive, purge) and order history."""
    from worker.console.serve import serve

    try:
        app = build_app(host)
    except ConfigError as exc:
        click.echo(f"order-sync console: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except ValueError as exc:
        click.echo(f"order-sync console: {exc}", err=True)
        sys.exit(EXIT_USAGE)

    def ready(url: str) -> None:
        click.echo(f"console     {url}", err=False)
        sys.stdout.flush()

    try:
        serve(app, host, port, ready)
    except OSError as exc:
        click.echo(f"order-sync console: cannot listen on {host}:{port}: {exc}", err=True)
        sys.exit(EXIT_USAGE)
