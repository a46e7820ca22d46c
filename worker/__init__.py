"""Celery workers that apply order-change events to Sellercloud (``celery -A worker worker``)."""

from worker.celery_app import app

__all__ = ["app"]
