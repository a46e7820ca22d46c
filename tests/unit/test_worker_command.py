"""``order-sync worker``: what it hands to ``celery worker``."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("given", "passed"),
    [
        (("-P", "prefork", "-c", "4"), ["-P", "processes", "-c", "4"]),
        (("--pool", "prefork"), ["--pool", "processes"]),
        (("--pool=prefork",), ["--pool=processes"]),
        (("-Pprefork",), ["--pool=processes"]),
        (("-P", "threads"), ["-P", "threads"]),
        (("-c", "prefork"), ["-c", "prefork"]),
    ],
)
def test_asking_for_prefork_gets_prefork(given: tuple[str, ...], passed: list[str]) -> None:
    """Celery reads -P prefork as "no pool given" and would run the app's threads pool."""
    from worker.cli.main import _prefork_as_asked

    assert _prefork_as_asked(given) == passed
