"""What keeps a browser from being turned against the console.

- Every POST carries the session's CSRF token (Flask-WTF's ``CSRFProtect``), and one whose
  ``Origin`` (or, lacking it, ``Referer``) is another site is refused before the token is even
  looked at, as is one a browser marks ``Sec-Fetch-Site: cross-site``.
- On loopback, a request must name a loopback host: a page on another site that rebinds its
  DNS name to 127.0.0.1 cannot read the console.
- Pages may not be framed, load nothing from elsewhere, and leak no referrer.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from flask import Flask, Response, abort, request
from flask_wtf.csrf import CSRFProtect

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.x.y.z`` or ``::1`` (brackets and a port allowed around it)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def _same_origin() -> bool:
    here = request.host_url.rstrip("/").lower()
    origin = request.headers.get("Origin")
    if origin is not None:
        # "null" (a sandboxed frame, a redirect from elsewhere) is never this console.
        return origin.lower() == here
    referer = request.headers.get("Referer")
    if referer:
        return _origin_of(referer) == here
    # Neither header (some privacy settings strip both): the CSRF token alone decides.
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


def install(app: Flask, *, loopback_only: bool) -> CSRFProtect:
    csrf = CSRFProtect()

    @app.before_request
    def check_request() -> None:
        if loopback_only and not is_loopback_host(request.host):
            abort(421, "This console answers only to a loopback address such as 127.0.0.1.")
        if request.method not in SAFE_METHODS and (
            request.headers.get("Sec-Fetch-Site") == "cross-site" or not _same_origin()
        ):
            abort(403, "This form did not come from a page of this console; nothing changed.")

    @app.after_request
    def secure_headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # Registered after the checks above, so a cross-site POST is refused before CSRF runs.
    csrf.init_app(app)
    return csrf
