"""``order-sync simulator``: serve the Sellercloud stand-in from the command line."""

from __future__ import annotations

import click

from .outcomes import Outcome
from .ratelimit import RateLimit
from .runner import run_simulator
from .state import DEFAULT_PASSWORD, DEFAULT_TOKEN_LIFETIME, DEFAULT_USERNAME


def parse_failure(text: str) -> tuple[int, list[Outcome]]:
    """``"5002=500,drop,slow:2000"`` -> ``(5002, [...])``; raise ``ValueError`` if malformed."""
    raw_id, sep, raw_outcomes = text.partition("=")
    if not sep or not raw_id.strip().isdigit() or not raw_outcomes.strip():
        raise ValueError(f"expected ORDER_ID=OUTCOME[,OUTCOME...], got {text!r}")
    return int(raw_id), [Outcome.parse(part) for part in raw_outcomes.split(",")]


def _failures(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[int, list[Outcome]]:
    failures: dict[int, list[Outcome]] = {}
    for value in values:
        try:
            order_id, outcomes = parse_failure(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
        failures.setdefault(order_id, []).extend(outcomes)
    return failures


def _rate_limit(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> RateLimit | None:
    if value is None:
        return None
    try:
        return RateLimit.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--username",
    envvar="SELLERCLOUD_USERNAME",
    default=DEFAULT_USERNAME,
    show_default=True,
    show_envvar=True,
    help="Login the token endpoint accepts.",
)
# The password is never shown: not in --help, not in the startup line.
@click.option(
    "--password",
    envvar="SELLERCLOUD_PASSWORD",
    default=DEFAULT_PASSWORD,
    show_default=False,
    show_envvar=True,
    help="Password the token endpoint accepts.",
)
@click.option(
    "--token-lifetime",
    default=DEFAULT_TOKEN_LIFETIME,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds an issued token stays valid.",
)
@click.option(
    "--latency-ms",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Delay before answering each API call.",
)
@click.option(
    "--rate-limit",
    default=None,
    callback=_rate_limit,
    metavar="CALLS/UNIT",
    help="Answer 429 beyond this many calls, e.g. 10800/h or 3/s. Default: off.",
)
@click.option(
    "--fail",
    "failures",
    multiple=True,
    callback=_failures,
    metavar="ORDER_ID=OUTCOME[,OUTCOME...]",
    help="Script the next PUTs of an order: a status code, 'drop' or 'slow:MS'. Repeatable.",
)
@click.option(
    "--missing",
    multiple=True,
    type=click.IntRange(min=1),
    metavar="ORDER_ID",
    help="Answer 404 for this order. Repeatable.",
)
def simulator_command(
    *,
    host: str,
    port: int,
    username: str,
    password: str,
    token_lifetime: int,
    latency_ms: int,
    rate_limit: RateLimit | None,
    failures: dict[int, list[Outcome]],
    missing: tuple[int, ...],
) -> None:
    """Serve a local stand-in for the Sellercloud REST API until SIGINT or SIGTERM."""
    try:
        run_simulator(
            host,
            port,
            username=username,
            password=password,
            token_lifetime=token_lifetime,
            latency_ms=latency_ms,
            rate_limit=rate_limit,
            failures=failures,
            missing=missing,
            announce=lambda url: click.echo(f"Sellercloud simulator serving {url}"),
        )
    except OSError as exc:
        # Usually the port is taken; a one-line message beats a traceback.
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
