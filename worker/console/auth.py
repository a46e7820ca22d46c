"""Who is using the console, recorded with every action.

With a password (``ORDER_SYNC_CONSOLE_PASSWORD`` or ``..._FILE``), every page asks for it once
per browser session, with the name the operator goes by; the name is what the audit trail
records. Without one the console listens on loopback only, and the user is the local account
that started it (``local:<login>``).
"""

from __future__ import annotations

import getpass
import hmac
import threading
import time
from collections import deque

from flask import (
    Blueprint,
    Flask,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

bp = Blueprint("auth", __name__)

OPEN_ENDPOINTS = frozenset({"auth.login", "static"})
NAME_MAX = 60
# Failed logins allowed per minute (the whole console), then it waits out the minute.
FAILURES_PER_MINUTE = 10


class LoginThrottle:
    def __init__(self, limit: int = FAILURES_PER_MINUTE, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self.failures: deque[float] = deque()
        self.lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self.failures and self.failures[0] < now - self.window:
            self.failures.popleft()

    def blocked(self) -> bool:
        with self.lock:
            self._trim(time.monotonic())
            return len(self.failures) >= self.limit

    def failed(self) -> None:
        with self.lock:
            self.failures.append(time.monotonic())


def local_user() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local"


def current_user() -> str:
    """The name recorded in the audit trail for what this request does."""
    password = current_app.config["CONSOLE_PASSWORD"]
    if password is None:
        return str(current_app.config["CONSOLE_LOCAL_USER"])
    return str(session.get("user") or "")


def install(app: Flask) -> None:
    app.config.setdefault("CONSOLE_LOCAL_USER", local_user())
    app.extensions["console_login_throttle"] = LoginThrottle()
    app.register_blueprint(bp)

    @app.before_request
    def require_login() -> Response | None:
        if app.config["CONSOLE_PASSWORD"] is None or request.endpoint in OPEN_ENDPOINTS:
            return None
        if session.get("user"):
            return None
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never a redirect to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("overview.overview")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    password = current_app.config["CONSOLE_PASSWORD"]
    if password is None:
        return redirect(url_for("overview.overview"))
    next_path = _safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_path, error=None, name="")
    throttle: LoginThrottle = current_app.extensions["console_login_throttle"]
    name = request.form.get("name", "").strip()
    given = request.form.get("password", "")
    error = None
    if throttle.blocked():
        error = "Too many failed logins in the last minute; wait a minute and try again."
    elif not name or len(name) > NAME_MAX or not name.isprintable():
        error = f"Give the name you go by (1 to {NAME_MAX} printable characters)."
    elif not hmac.compare_digest(given.encode(), str(password).encode()):
        throttle.failed()
        error = "That password is not the console's password."
    if error:
        return render_template("login.html", next=next_path, error=error, name=name[:NAME_MAX]), 400
    session.clear()
    session["user"] = name
    session.permanent = False
    return redirect(next_path)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    session.clear()
    return redirect(url_for("auth.login"))
