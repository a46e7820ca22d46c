"""The console's Flask application: ``create_app(config, backend)`` builds it, nothing else
does (importing this module starts nothing and reads no setting)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from worker.console import auth, guard
from worker.console.forms import BadInput
from worker.console.redact import Redactor

if TYPE_CHECKING:
    from worker.console.backend import Backend


@dataclass(frozen=True)
class ConsoleConfig:
    password: str | None = field(default=None, repr=False)
    # Listening on loopback: requests must name a loopback host (no DNS rebinding).
    loopback_only: bool = True
    secret_key: bytes = field(default=b"", repr=False)
    # Values never shown on a page, wherever they turn up (the Sellercloud password).
    secrets: tuple[str, ...] = field(default=(), repr=False)


def create_app(config: ConsoleConfig, backend: Backend) -> Flask:
    if not config.secret_key:
        raise ValueError("the console needs a secret key for its sessions")
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        SECRET_KEY=config.secret_key,
        CONSOLE_PASSWORD=config.password,
        SESSION_COOKIE_NAME="order_sync_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # The token lives as long as the browser session: a page left open still works.
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=256 * 1024,
        TEMPLATES_AUTO_RELOAD=False,
    )
    app.extensions["console_backend"] = backend
    redactor = Redactor(config.secrets)
    app.extensions["console_redactor"] = redactor

    guard.install(app, loopback_only=config.loopback_only)
    auth.install(app)

    from worker.console.views import actions, audit, deadletters, history, overview

    for blueprint in (overview.bp, deadletters.bp, actions.bp, history.bp, audit.bp):
        app.register_blueprint(blueprint)

    _filters(app, redactor)
    _errors(app)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {
            "user": auth.current_user(),
            "login_required": config.password is not None,
        }

    return app


def _filters(app: Flask, redactor: Redactor) -> None:
    @app.template_filter("pretty")
    def pretty(value: Any) -> str:
        """JSON for a page, with every secret masked."""
        return json.dumps(redactor.value(value), indent=2, ensure_ascii=False, sort_keys=False)

    @app.template_filter("masked")
    def masked(value: Any) -> Any:
        return redactor.value(value)

    @app.template_filter("when")
    def when(value: Any) -> str:
        """A timestamp shortened for a table: ``2026-11-27 03:04:05``, UTC."""
        if value is None or value == "":
            return "-"
        if isinstance(value, int | float):
            value = dt.datetime.fromtimestamp(value, dt.UTC)
        if isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).isoformat()
        text = str(value).replace("T", " ")
        return text[:19]


def _errors(app: Flask) -> None:
    @app.errorhandler(BadInput)
    def bad_input(exc: BadInput) -> tuple[str, int]:
        return render_template(
            "error.html", title="Nothing was changed", problems=exc.problems
        ), 400

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> tuple[str, int]:
        problems = [
            "This form carried no valid security token (it may come from another site, or the "
            "console was restarted since the page was loaded). Nothing was changed: reload the "
            "page and try again."
        ]
        return render_template("error.html", title="Refused", problems=problems), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[str, int]:
        code = exc.code or 500
        return render_template(
            "error.html", title=f"{code} {exc.name}", problems=[exc.description or exc.name]
        ), code
