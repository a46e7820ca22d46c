"""An order's history: every event it received and what became of each, searched by order id
or event id."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from worker.console import forms
from worker.console.views import backend

bp = Blueprint("history", __name__, url_prefix="/orders")


@bp.get("/")
def search() -> tuple[str, int]:
    try:
        order_id, event_id = forms.history_query(request.args)
    except forms.BadInput as exc:
        return render_template("history.html", problems=exc.problems, trace=None, query={}), 400
    query = {"order_id": order_id, "event_id": event_id}
    trace = backend().trace(order_id, event_id) if order_id or event_id else None
    return render_template("history.html", problems=[], trace=trace, query=query), 200


@bp.get("/<int:order_id>")
def order(order_id: int) -> Response:
    return redirect(url_for("history.search", order_id=order_id))
