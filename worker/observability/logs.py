"""Logging: structlog for our lines, and Celery's own records through the same renderer.

JSON lines when ``ORDER_SYNC_LOG_FORMAT=json`` (the default when stderr is not a terminal), a
readable console format otherwise. Context bound with ``structlog.contextvars`` (event id, order
id, task id) is carried by every line, including Celery's. Keys that could hold a secret are
masked before rendering, wherever the line comes from.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor

from worker.settings import LogSettings

SECRET_KEYS = frozenset(
    {"password", "access_token", "token", "authorization", "secret", "credentials"}
)
MASK = "***"

# Celery logs two INFO lines per task (received, succeeded); at our rates that costs real
# throughput and repeats what our own outcome line says.
QUIET_AT_INFO = (
    "celery.app.trace",
    "celery.worker.strategy",
    # Browsing the dead-letter queue hands messages back; that is not news at INFO.
    "kombu.transport.virtual.base",
)


def mask_secrets(_: Any, __: str, event_dict: EventDict) -> EventDict:
    for key in event_dict.keys() & SECRET_KEYS:
        event_dict[key] = MASK
    return event_dict


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]


def wants_json(settings: LogSettings) -> bool:
    if settings.format is not None:
        return settings.format == "json"
    return not sys.stderr.isatty()


def configure_logging(settings: LogSettings) -> None:
    """Route structlog and the standard library (Celery, kombu, requests) to one stderr handler."""
    as_json = wants_json(settings)
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if as_json:
        # Tracebacks as data, without each frame's local variables: those hold passwords (the
        # token request's body), tokens and customers' data, which no log line may carry.
        final.append(
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))
        )
    final.append(renderer)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=final,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    # Python warnings (Celery's SecurityWarning, deprecations) are log lines like any other.
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.level)
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
