"""The console's pages, one module per job; each reads and acts through ``backend``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from worker.console.backend import Backend


def backend() -> Backend:
    found: Backend = current_app.extensions["console_backend"]
    return found
