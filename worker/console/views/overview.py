"""The fleet at a glance: queues, throughput per minute, budget, workers, pause, and the
largest groups of dead letters."""

from __future__ import annotations

from flask import Blueprint, render_template

from worker.console.views import backend

bp = Blueprint("overview", __name__)

TOP_GROUPS = 10


@bp.get("/")
def overview() -> str:
    found = backend()
    return render_template(
        "overview.html",
        fleet=found.fleet(),
        groups=found.groups(limit=TOP_GROUPS),
    )
