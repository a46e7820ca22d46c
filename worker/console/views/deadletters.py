"""Dead letters: grouped by cause, a group or filtered list (paged), one entry in full."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from worker.console import forms
from worker.console.views import backend

bp = Blueprint("deadletters", __name__, url_prefix="/dead-letters")


@bp.get("/")
def groups() -> str:
    state = request.args.get("state", forms.DEFAULT_STATE)
    if state not in forms.STATES:
        raise forms.BadInput([f"State {state[:20]!r} is not one of {', '.join(forms.STATES)}."])
    return render_template("groups.html", groups=backend().groups(state=state), state=state)


@bp.get("/list")
def entries() -> tuple[str, int]:
    wanted = forms.entry_filter(request.args, strict=False)
    if wanted.problems:
        # The form again, with what is wrong; no query was made.
        return render_template("entries.html", filter=wanted, page=None, reasons=[]), 400
    page = backend().page(wanted)
    return render_template("entries.html", filter=wanted, page=page), 200


@bp.get("/<entry_id>")
def entry(entry_id: str) -> str:
    if not forms.ID_PATTERN.match(entry_id):
        abort(404, f"There is no dead-letter entry {entry_id[:40]!r}.")
    found = backend().entry(entry_id)
    if found is None:
        abort(404, f"There is no dead-letter entry {entry_id!r} (replayed or purged already?).")
    return render_template("entry.html", entry=found)
