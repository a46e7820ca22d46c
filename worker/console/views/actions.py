"""Actions on dead letters: on one entry, on the entries ticked on a list, or on everything a
filter (a group) matches. Every one is a POST with the session's CSRF token; each is recorded in
the audit trail with the user; bad input changes nothing.

- replay: the events go through the normal flow again (``deadletter.operations``, as
  ``order-sync dlq replay`` does);
- preview, then replay with a patch: the patch is validated against every selected event and
  shown before anything is sent;
- archive / unarchive: out of the way, kept;
- purge: deleted for good, after a confirmation page;
- note: a remark on an entry or a group.

A filter (a whole group) is always confirmed first, with the number of entries it covers.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from worker.console import forms
from worker.console.auth import current_user
from worker.console.backend import Target
from worker.console.views import backend

bp = Blueprint("actions", __name__, url_prefix="/actions")

VERBS = {
    "replay": "replayed",
    "archive": "archived",
    "unarchive": "unarchived",
    "purge": "purged",
}


def _target() -> Target:
    """The entries a form names: ticked ids, or the filter (``scope=filter``)."""
    if request.form.get("scope") == "filter":
        wanted = forms.entry_filter(request.form)
        return Target(filter=wanted)
    ids = forms.checked_ids(request.form)
    if not ids:
        raise forms.BadInput(["No entry was ticked: tick entries, or act on the whole filter."])
    return Target(ids=tuple(ids))


def _back() -> str:
    target = request.form.get("next", "")
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("deadletters.groups")


@bp.post("/<verb>")
def act(verb: str) -> Response | str:
    if verb not in VERBS:
        abort(404, f"There is no action {verb[:20]!r}.")
    target = _target()
    patch = forms.patch(request.form.get("patch"), required=False) if verb == "replay" else None
    confirmed = request.form.get("confirm") == "yes"
    if (verb == "purge" or target.filter is not None) and not confirmed:
        count = backend().count(target)
        if count == 0:
            raise forms.BadInput(["No entry matches: nothing to do."])
        return render_template(
            "confirm.html",
            verb=verb,
            count=count,
            target=target,
            patch=request.form.get("patch", ""),
            next=_back(),
        )
    outcome = backend().act(verb, target, user=current_user(), patch=patch)
    done = len(outcome.done)
    flash(f"{VERBS[verb].capitalize()} {done} entr{'y' if done == 1 else 'ies'}.", "ok")
    for failure in outcome.failed[:20]:
        flash(f"Not {VERBS[verb]}: {failure['id']}: {failure['error']}", "error")
    if len(outcome.failed) > 20:
        flash(f"... and {len(outcome.failed) - 20} more not {VERBS[verb]}.", "error")
    return redirect(_back())


@bp.post("/preview")
def preview() -> str | tuple[str, int]:
    """Validate a patch against the selected events and show the result; nothing is sent."""
    target = _target()
    raw = request.form.get("patch", "")
    try:
        patch = forms.patch(raw)
    except forms.BadInput as exc:
        return render_template(
            "patch.html",
            target=target,
            patch=raw,
            problems=exc.problems,
            preview=None,
            next=_back(),
        ), 400
    assert patch is not None  # noqa: S101 (required=True)
    result = backend().preview(target, patch)
    status = 200 if result.valid else 400
    return render_template(
        "patch.html", target=target, patch=raw, problems=[], preview=result, next=_back()
    ), status


@bp.post("/patch")
def patch_form() -> str:
    """The patch form for the ticked entries or a filter (from a list or an entry page)."""
    return render_template(
        "patch.html",
        target=_target(),
        patch=request.form.get("patch", ""),
        problems=[],
        preview=None,
        next=_back(),
    )


@bp.post("/note")
def note() -> Response:
    text = forms.note(request.form)
    entry_id = request.form.get("entry_id", "").strip()
    if entry_id:
        if not forms.ID_PATTERN.match(entry_id):
            raise forms.BadInput([f"Entry id {entry_id[:40]!r} is not an entry id."])
        backend().note_entry(entry_id, text, user=current_user())
    else:
        group = request.form.get("group", "").strip()
        if not group:
            raise forms.BadInput(["Say which entry or group the note is about."])
        if not re.fullmatch(r"[0-9a-f]{1,64}", group):
            raise forms.BadInput([f"Group {group[:40]!r} is not a group key (hex digits)."])
        backend().note_group(group, text, user=current_user())
    flash("Note saved.", "ok")
    return redirect(_back())
