"""The audit trail: every operator action, newest first, with who did it and on how many
entries."""

from __future__ import annotations

from flask import Blueprint, render_template, request

from worker.console import forms
from worker.console.views import backend

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE = 50


@bp.get("/")
def trail() -> str:
    raw = request.args.get("offset", "0").strip() or "0"
    if not raw.isdigit() or len(raw) > 9:
        raise forms.BadInput([f"Offset {raw[:20]!r} is not a whole number of 0 or more."])
    offset = int(raw)
    rows = backend().audit(offset, PAGE + 1)
    return render_template(
        "audit.html", rows=rows[:PAGE], offset=offset, more=len(rows) > PAGE, page=PAGE
    )
