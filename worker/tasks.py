"""Celery tasks. Names are stable: other systems and queued messages depend on them."""

from __future__ import annotations

import datetime as dt
import random
import traceback
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject, Retry

from worker import deadletter, pipeline, runtime
from worker.celery_app import app
from worker.sellercloud.errors import RateLimited, SellercloudError, TransientError

log = structlog.get_logger(__name__)

APPLY_ORDER_EVENT = "order_sync.apply_order_event"


class OrderSyncTask(Task[..., str]):
    """Delivery guarantees and the retry policy shared by every task of ours."""

    # Ack only once the event is applied or dead-lettered; a killed worker's message comes back.
    acks_late = True
    reject_on_worker_lost = True
    # Retries are decided in retry_later() from the settings, not by Celery's autoretry.
    max_retries = None

    @property
    def attempts(self) -> int:
        return int(self.request.retries) + 1

    def backoff(self, error: TransientError) -> float:
        """Exponential backoff with full jitter; a rate limit waits at least until its reset."""
        settings = runtime.current().settings
        ceiling = min(settings.retry_backoff_max, settings.retry_backoff * 2**self.request.retries)
        delay = random.uniform(0, ceiling)  # noqa: S311 (jitter, not security)
        if isinstance(error, RateLimited) and error.reset_at is not None:
            until_reset = (error.reset_at - dt.datetime.now(dt.UTC)).total_seconds()
            delay = max(delay, min(until_reset, settings.retry_backoff_max))
        return delay

    def may_retry(self, error: SellercloudError) -> bool:
        return isinstance(error, TransientError) and (
            self.attempts <= runtime.current().settings.max_retries
        )

    def retry_later(self, error: SellercloudError) -> Retry:
        """Requeue with a countdown; the message waits in the broker, not in a pool slot."""
        countdown = self.backoff(error) if isinstance(error, TransientError) else 0.0
        log.warning(
            "event retry scheduled",
            reason=error.reason,
            error=str(error),
            status_code=error.status_code,
            attempt=self.attempts,
            countdown=round(countdown, 3),
        )
        try:
            self.retry(countdown=countdown, max_retries=None)
        except Retry as retry:
            return retry
        except Exception as exc:
            # The retry could not be queued: give the message back to the broker, never ack it.
            raise Reject(f"could not schedule retry: {exc}", requeue=True) from exc
        raise AssertionError("Task.retry always raises")  # pragma: no cover

    def dead_letter(self, entry: dict[str, Any]) -> str:
        entry["task_id"] = self.request.id
        entry["worker"] = self.request.hostname
        try:
            with self.app.producer_or_acquire() as producer:
                deadletter.publish(producer, entry)
        except Exception as exc:
            log.error("dead-letter publish failed; message returned to the queue", error=str(exc))
            raise Reject(f"could not dead-letter: {exc}", requeue=True) from exc
        log.warning(
            "event dead-lettered",
            reason=entry["reason"],
            error=entry["error"],
            status_code=entry.get("status_code"),
            attempt=self.attempts,
            dead_letter_id=entry["id"],
        )
        return "dead_lettered"


@app.task(base=OrderSyncTask, bind=True, name=APPLY_ORDER_EVENT)
def apply_order_event(self: OrderSyncTask, envelope: dict[str, Any]) -> str:
    """Apply one upstream event to Sellercloud, retry it later, or dead-letter it."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=self.request.id, correlation_id=envelope.get("correlation_id")
    )
    progress = pipeline.Progress()
    try:
        pipeline.process(envelope, runtime.current().client, progress)
    except pipeline.EventRejected as rejected:
        return self.dead_letter(
            pipeline.rejected_entry(envelope, progress, rejected, self.attempts)
        )
    except SellercloudError as error:
        if self.may_retry(error):
            raise self.retry_later(error) from error
        return self.dead_letter(
            pipeline.api_failure_entry(envelope, progress, error, self.attempts)
        )
    except (Retry, Reject):
        raise
    except Exception as exc:
        log.exception("unexpected error while applying event")
        trace = traceback.format_exc(limit=20)
        return self.dead_letter(
            pipeline.internal_error_entry(envelope, progress, exc, trace, self.attempts)
        )
    log.info("event applied", attempt=self.attempts, fields=sorted(progress.body or {}))
    return "applied"
