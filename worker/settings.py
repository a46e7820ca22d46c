"""Configuration, read from the environment in one place.

Broker settings are needed by every command (publish, dlq, worker) and always resolve: with no
``CELERY_BROKER_URL`` the embedded on-disk broker is used. Sellercloud settings are needed only by
the worker; they are checked together at start so one message names everything that is wrong.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from worker.broker.embedded import SCHEME as EMBEDDED_SCHEME
from worker.coordination.rate import Rate, parse_rate

T = TypeVar("T")

SERVER_URL_TEMPLATE = "https://{server_id}.api.sellercloud.com/rest/api"
LOG_FORMATS = ("json", "console")
DEFAULT_RATE_LIMIT = "10800/h"  # Sellercloud's published limit per IP address
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
QUEUE_TYPE_SETTING = "ORDER_SYNC_QUEUE_TYPE"
CLASSIC = "classic"
QUORUM = "quorum"
QUEUE_TYPES = (CLASSIC, QUORUM)
# Classic keeps a deployment's existing queues (their type cannot change in place); quorum is
# for a RabbitMQ cluster and is reached with `order-sync queues migrate --to quorum`.
DEFAULT_QUEUE_TYPE = CLASSIC


class ConfigError(Exception):
    """One or more settings are missing or malformed; the message names each of them."""


@dataclass(frozen=True)
class BrokerSettings:
    url: str
    embedded_dir: Path | None  # set when the embedded on-disk broker is in use
    # Redis only: how long a message a worker took but never acked stays invisible before it
    # is handed out again (after a crash). Must exceed the longest retry countdown.
    redis_visibility_timeout: float = 3600.0
    # RabbitMQ only: the type of every queue of ours (``classic`` or ``quorum``).
    queue_type: str = DEFAULT_QUEUE_TYPE

    @property
    def is_embedded(self) -> bool:
        return self.embedded_dir is not None


@dataclass(frozen=True)
class ApiSettings:
    base_url: str
    username: str
    password: str = field(repr=False)
    max_retries: int
    retry_backoff: float
    retry_backoff_max: float
    http_timeout: float


@dataclass(frozen=True)
class LogSettings:
    format: str | None  # None: JSON unless stderr is a terminal
    level: str


def data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    default = Path(environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "order-sync"
    return Path(environ.get("ORDER_SYNC_DATA_DIR") or default)


def queue_type(environ: Mapping[str, str] = os.environ, *, strict: bool = True) -> str:
    """``ORDER_SYNC_QUEUE_TYPE``: ``classic`` (the default) or ``quorum``.

    Not strict, an unknown value reads as the default: for declarations made at import, while
    ``broker_settings`` (which every command reads first) reports the value as an error.
    """
    raw = environ.get(QUEUE_TYPE_SETTING, "").strip().lower() or DEFAULT_QUEUE_TYPE
    if raw in QUEUE_TYPES:
        return raw
    if strict:
        raise ConfigError(
            f"invalid configuration: {QUEUE_TYPE_SETTING} must be one of "
            f"{', '.join(QUEUE_TYPES)} (got {raw!r})"
        )
    return DEFAULT_QUEUE_TYPE


def broker_settings(environ: Mapping[str, str] = os.environ) -> BrokerSettings:
    reader = _Reader(environ)
    visibility = reader.number("ORDER_SYNC_REDIS_VISIBILITY_TIMEOUT", 3600.0, float, 1)
    url = environ.get("CELERY_BROKER_URL", "").strip()
    kind = DEFAULT_QUEUE_TYPE
    try:
        kind = queue_type(environ)
    except ConfigError as exc:
        reader.problems.append(str(exc).removeprefix("invalid configuration: "))
    if kind != DEFAULT_QUEUE_TYPE and not url.startswith(("amqp", "pyamqp")):
        reader.problems.append(
            f"{QUEUE_TYPE_SETTING}={kind} needs RabbitMQ (CELERY_BROKER_URL=amqp://...)"
        )
    reader.checked(None)
    if url:
        return BrokerSettings(
            url=url, embedded_dir=None, redis_visibility_timeout=visibility, queue_type=kind
        )
    return BrokerSettings(url=f"{EMBEDDED_SCHEME}://", embedded_dir=data_dir(environ) / "broker")


def log_settings(environ: Mapping[str, str] = os.environ) -> LogSettings:
    fmt = environ.get("ORDER_SYNC_LOG_FORMAT", "").strip().lower() or None
    level = environ.get("ORDER_SYNC_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    problems = []
    if fmt is not None and fmt not in LOG_FORMATS:
        problems.append(
            f"ORDER_SYNC_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)} (got {fmt!r})"
        )
    if level not in LOG_LEVELS:
        problems.append(
            f"ORDER_SYNC_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)} (got {level!r})"
        )
    if problems:
        raise ConfigError("; ".join(problems))
    return LogSettings(format=fmt, level=level)


class _Reader:
    """Reads typed values, collecting every problem instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[str] = []

    def checked(self, value: T) -> T:
        """``value``, unless a setting read so far was wrong: then one error naming each."""
        if self.problems:
            raise ConfigError("invalid configuration: " + "; ".join(self.problems))
        return value

    def text(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        if not value:
            self.problems.append(f"{name} is not set")
        return value

    def number(self, name: str, default: T, parse: Callable[[str], T], minimum: float) -> T:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = parse(raw)
        except ValueError:
            value = None
        if value is None or float(value) < minimum:  # type: ignore[arg-type]
            kind = "a whole number" if parse is int else "a number"
            self.problems.append(f"{name} must be {kind} >= {minimum:g} (got {raw!r})")
            return default
        return value

    def password(self) -> str:
        path = self.environ.get("SELLERCLOUD_PASSWORD_FILE", "").strip()
        if path:
            try:
                return Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problems.append(f"SELLERCLOUD_PASSWORD_FILE cannot be read ({exc.strerror})")
                return ""
        return self.text("SELLERCLOUD_PASSWORD")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(reader: _Reader) -> str:
    url = reader.environ.get("SELLERCLOUD_BASE_URL", "").strip().rstrip("/")
    server_id = reader.environ.get("SELLERCLOUD_SERVER_ID", "").strip()
    if not url and not server_id:
        reader.problems.append("SELLERCLOUD_BASE_URL (or SELLERCLOUD_SERVER_ID) is not set")
        return ""
    if not url:
        return SERVER_URL_TEMPLATE.format(server_id=server_id)
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return url
    reader.problems.append(
        f"SELLERCLOUD_BASE_URL must be an https:// URL (plain http:// only for loopback), "
        f"got {url!r}"
    )
    return url


@dataclass(frozen=True)
class FleetSettings:
    """How the workers of a fleet coordinate (ordering, de-duplication, the API budget)."""

    redis_url: str | None  # None: the embedded SQLite store, for one machine
    store_path: Path
    rate_limit: Rate | None  # None: no limit
    dedup_window: float
    order_lock_ttl: float
    # An outage: this many different orders failing in a row with transient errors.
    outage_threshold: int = 5
    probe_interval_max: float = 30.0  # the longest wait between two probes of an outage
    # Under a rate limit, while a backlog is still being read from the broker, an order's turn
    # waits until the rest is read (its other events may be in it), at most this long.
    backlog_hold: float = 30.0
    # While both lanes wait, every n-th turn goes to bulk (n = 1 / share).
    bulk_share: float = 0.2


def fleet_settings(environ: Mapping[str, str] = os.environ) -> FleetSettings:
    reader = _Reader(environ)
    raw_rate = environ.get("ORDER_SYNC_RATE_LIMIT", "").strip() or DEFAULT_RATE_LIMIT
    rate: Rate | None = None
    try:
        rate = parse_rate(raw_rate)
    except ValueError as exc:
        reader.problems.append(f"ORDER_SYNC_RATE_LIMIT: {exc}")
    settings = FleetSettings(
        redis_url=environ.get("ORDER_SYNC_REDIS_URL", "").strip() or None,
        store_path=data_dir(environ) / "state.sqlite3",
        rate_limit=rate,
        dedup_window=reader.number("ORDER_SYNC_DEDUP_WINDOW", 7 * 86400.0, float, 1),
        order_lock_ttl=reader.number("ORDER_SYNC_ORDER_LOCK_TTL", 75.0, float, 1),
        outage_threshold=reader.number("ORDER_SYNC_OUTAGE_THRESHOLD", 5, int, 2),
        probe_interval_max=reader.number("ORDER_SYNC_PROBE_INTERVAL_MAX", 30.0, float, 1),
        backlog_hold=reader.number("ORDER_SYNC_BACKLOG_HOLD", 30.0, float, 0),
        bulk_share=reader.number("ORDER_SYNC_BULK_SHARE", 0.2, float, 0.01),
    )
    if settings.bulk_share > 1:
        reader.problems.append(
            f"ORDER_SYNC_BULK_SHARE must be at most 1 (got {settings.bulk_share:g})"
        )
    return reader.checked(settings)


def metrics_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``ORDER_SYNC_METRICS_PORT`` is set at all (``metrics_port`` checks its value)."""
    return bool(environ.get("ORDER_SYNC_METRICS_PORT", "").strip())


def metrics_port(environ: Mapping[str, str] = os.environ) -> int | None:
    """``ORDER_SYNC_METRICS_PORT``: where a worker serves Prometheus metrics; None: nowhere."""
    raw = environ.get("ORDER_SYNC_METRICS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(
            f"invalid configuration: ORDER_SYNC_METRICS_PORT must be a port (got {raw!r})"
        )
    return int(raw)


def credentials(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The Sellercloud username and password as they are now: the password file is read again
    on every call, so a rotated password is used from the next token request on."""
    reader = _Reader(environ)
    return reader.checked((reader.text("SELLERCLOUD_USERNAME"), reader.password()))


def api_settings(environ: Mapping[str, str] = os.environ) -> ApiSettings:
    """The worker's Sellercloud settings; raises ConfigError naming every problem at once."""
    reader = _Reader(environ)
    settings = ApiSettings(
        base_url=_base_url(reader),
        username=reader.text("SELLERCLOUD_USERNAME"),
        password=reader.password(),
        max_retries=reader.number("ORDER_SYNC_MAX_RETRIES", 15, int, 0),
        retry_backoff=reader.number("ORDER_SYNC_RETRY_BACKOFF", 2.0, float, 0.001),
        retry_backoff_max=reader.number("ORDER_SYNC_RETRY_BACKOFF_MAX", 600.0, float, 0.001),
        http_timeout=reader.number("ORDER_SYNC_HTTP_TIMEOUT", 30.0, float, 0.1),
    )
    return reader.checked(settings)


@dataclass(frozen=True)
class WorkerSettings:
    """What a worker needs beyond its broker, checked together when it starts."""

    api: ApiSettings
    fleet: FleetSettings
    metrics_port: int | None


def worker_settings(environ: Mapping[str, str] = os.environ) -> WorkerSettings:
    """Every setting a worker reads; raises one ConfigError naming every problem of them all."""
    problems: list[str] = []

    def read(settings: Callable[[Mapping[str, str]], T]) -> T | None:
        try:
            return settings(environ)
        except ConfigError as exc:
            problems.append(str(exc).removeprefix("invalid configuration: "))
            return None

    api, fleet, port = read(api_settings), read(fleet_settings), read(metrics_port)
    read(database_settings)  # checked here so a bad one stops the worker at start
    if problems or api is None or fleet is None:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return WorkerSettings(api, fleet, port)


@dataclass(frozen=True)
class OutboxSettings:
    url: str = field(repr=False)  # a database URL may carry a password
    interval: float  # seconds between passes of the beat schedule
    batch: int  # rows per pass
    retention_days: float  # published rows are kept this long, then deleted


def outbox_settings(environ: Mapping[str, str] = os.environ) -> OutboxSettings:
    """The transactional outbox; with no ``ORDER_SYNC_OUTBOX_URL``, SQLite in the data dir."""
    reader = _Reader(environ)
    interval = reader.number("ORDER_SYNC_OUTBOX_INTERVAL", 2.0, float, 0.1)
    batch = reader.number("ORDER_SYNC_OUTBOX_BATCH", 500, int, 1)
    retention = reader.number("ORDER_SYNC_OUTBOX_RETENTION", 7.0, float, 0)
    url = environ.get("ORDER_SYNC_OUTBOX_URL", "").strip()
    if url and "://" not in url:
        reader.problems.append(
            "ORDER_SYNC_OUTBOX_URL must be a SQLAlchemy URL such as "
            "postgresql+psycopg://user@host:5432/db"
        )
    return reader.checked(
        OutboxSettings(
            url=url or f"sqlite:///{data_dir(environ) / 'outbox.sqlite3'}",
            interval=interval,
            batch=batch,
            retention_days=retention,
        )
    )


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console: the password that guards it (None: loopback only, no login)."""

    password: str | None = field(default=None, repr=False)


def console_settings(environ: Mapping[str, str] = os.environ) -> ConsoleSettings:
    """``ORDER_SYNC_CONSOLE_PASSWORD``, or the file ``ORDER_SYNC_CONSOLE_PASSWORD_FILE`` names."""
    reader = _Reader(environ)
    password = environ.get("ORDER_SYNC_CONSOLE_PASSWORD", "").strip()
    path = environ.get("ORDER_SYNC_CONSOLE_PASSWORD_FILE", "").strip()
    if path:
        try:
            password = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            reader.problems.append(
                f"ORDER_SYNC_CONSOLE_PASSWORD_FILE cannot be read ({exc.strerror})"
            )
        else:
            if not password:
                reader.problems.append(f"ORDER_SYNC_CONSOLE_PASSWORD_FILE {path} is empty")
    return reader.checked(ConsoleSettings(password=password or None))


@dataclass(frozen=True)
class DatabaseSettings:
    """The project's own database: dead-letter entries, their audit trail, order history."""

    url: str = field(repr=False)  # a database URL may carry a password
    retention_days: float  # archived and replayed dead-letter entries are kept this long
    history_days: float  # order history records are kept this long


def database_settings(environ: Mapping[str, str] = os.environ) -> DatabaseSettings:
    """``ORDER_SYNC_DATABASE_URL``; with none, a SQLite file in the data directory."""
    reader = _Reader(environ)
    retention = reader.number("ORDER_SYNC_DLQ_RETENTION_DAYS", 30.0, float, 0)
    history = reader.number("ORDER_SYNC_HISTORY_DAYS", 7.0, float, 0)
    url = environ.get("ORDER_SYNC_DATABASE_URL", "").strip()
    if url and "://" not in url:
        reader.problems.append(
            "ORDER_SYNC_DATABASE_URL must be a SQLAlchemy URL such as "
            "postgresql+psycopg://user@host:5432/db"
        )
    return reader.checked(
        DatabaseSettings(
            url=url or f"sqlite:///{data_dir(environ) / 'order-sync.sqlite3'}",
            retention_days=retention,
            history_days=history,
        )
    )
