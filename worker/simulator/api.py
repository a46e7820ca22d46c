"""The simulated Sellercloud endpoints: ``POST /token`` and ``PUT /Orders/{id}``.

Transport-free: the server hands in an ``ApiRequest`` and writes back the ``Reply``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs

from . import replies
from .outcomes import Outcome
from .replies import Reply
from .state import RecordedRequest, SimulatorState
from .validation import validate_update_order

INT32_MAX = 2**31 - 1
JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
REDACTED = "***"
EMPTY_BODY = "A non-empty request body is required."

_ORDER_ROUTE = re.compile(r"/orders/([^/]+)", re.IGNORECASE)
_NUMERIC = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ApiRequest:
    method: str
    # The full request path (without query), for the request log.
    path: str
    # The path below the REST root, e.g. "/Orders/5002".
    route: str
    content_type: str | None
    authorization: str | None
    body: bytes


def handle_api(state: SimulatorState, request: ApiRequest) -> Reply:
    """Answer one call below the REST root and record it in the state's request log."""
    arrived = time.time()
    authorized = state.token_valid(bearer_token(request.authorization))
    order_match = _ORDER_ROUTE.fullmatch(request.route)
    raw_id = order_match.group(1) if order_match else None
    logged_body: Any = _body_for_log(request.body)

    if request.route.lower() == "/token":
        if request.method == "POST":
            reply, logged_body = _create_token(state, request)
        else:
            reply = _method_not_allowed(request.method)
    elif raw_id is not None:
        if request.method == "PUT":
            reply = _update_order(state, request, raw_id, authorized)
        else:
            reply = _method_not_allowed(request.method)
    else:
        reply = replies.message(
            HTTPStatus.NOT_FOUND,
            f"No HTTP resource was found that matches the request URI '{request.path}'.",
        )

    state.record_request(
        RecordedRequest(
            method=request.method,
            path=request.path,
            order_id=int(raw_id) if raw_id and _NUMERIC.fullmatch(raw_id) else None,
            body=logged_body,
            status=None if reply.drop else int(reply.status),
            at=arrived,
            authorization_valid=authorized,
        )
    )
    return reply


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _create_token(state: SimulatorState, request: ApiRequest) -> tuple[Reply, Any]:
    state.count_token_request()
    blocked_until = state.acquire_rate_slot()
    _sleep_ms(state.latency_ms)
    fields, errors, logged = _token_fields(request)

    early = _scripted(state.next_token_outcome(), "token")
    if early is not None:
        return early, logged
    if blocked_until is not None:
        return replies.too_many_requests(blocked_until), logged
    if errors is not None:
        return errors, logged
    if not state.check_credentials(fields["username"], fields["password"]):
        return (
            replies.json_reply(
                HTTPStatus.BAD_REQUEST,
                {
                    "error": "invalid_grant",
                    "error_description": "The user name or password is incorrect.",
                },
            ),
            logged,
        )
    token = state.issue_token()
    return (
        replies.json_reply(
            HTTPStatus.OK,
            {
                "access_token": token.access_token,
                "token_type": "bearer",
                "username": token.username,
                "expires_in": token.lifetime,
                ".issued": replies.http_date(token.issued_at),
                ".expires": replies.http_date(token.expires_at),
            },
        ),
        logged,
    )


def _token_fields(request: ApiRequest) -> tuple[dict[str, str], Reply | None, Any]:
    """Username and password from a JSON or form body (field names are case-insensitive, as in
    ASP.NET model binding), an error reply if unusable, and the body as logged (password hidden).
    """
    media = _media_type(request.content_type)
    logged: Any = _body_for_log(request.body)
    source: dict[str, object]
    if not request.body.strip():
        return {}, replies.model_state({"model": [EMPTY_BODY]}), logged
    if media == FORM_TYPE:
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        source = {key: values[-1] for key, values in form.items()}
    elif media in JSON_TYPES:
        try:
            parsed = _parse_json(request.body)
        except ValueError as exc:
            return {}, replies.model_state({"model": [str(exc)]}), logged
        if not isinstance(parsed, dict):
            problem = "The request body must be a JSON object."
            return {}, replies.model_state({"model": [problem]}), parsed
        source = parsed
    else:
        return {}, _unsupported_media(request.content_type), logged

    logged = {k: (REDACTED if k.lower() == "password" else v) for k, v in source.items()}
    lowered = {key.lower(): value for key, value in source.items()}
    fields: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    for name in ("Username", "Password"):
        value = lowered.get(name.lower())
        if isinstance(value, str) and value:
            fields[name.lower()] = value
        else:
            missing[f"model.{name}"] = [f"The {name} field is required."]
    return fields, (replies.model_state(missing) if missing else None), logged


def _update_order(
    state: SimulatorState, request: ApiRequest, raw_id: str, authorized: bool
) -> Reply:
    state.count_put_request()
    blocked_until = state.acquire_rate_slot()
    _sleep_ms(state.latency_ms)

    if not authorized:
        return replies.denied()
    if _media_type(request.content_type) not in JSON_TYPES:
        return _unsupported_media(request.content_type)
    if not _NUMERIC.fullmatch(raw_id):
        return replies.message(
            HTTPStatus.NOT_FOUND,
            f"No HTTP resource was found that matches the request URI '{request.path}'.",
        )
    order_id = int(raw_id)
    if not 1 <= order_id <= INT32_MAX:
        return replies.model_state({"id": [f"The value '{raw_id}' is not valid for id."]})

    early = _scripted(state.next_order_outcome(order_id), "order")
    if early is not None:
        return early
    if blocked_until is not None:
        return replies.too_many_requests(blocked_until)
    if state.is_missing(order_id):
        return replies.message(HTTPStatus.NOT_FOUND, replies.ORDER_NOT_FOUND)
    try:
        body = _parse_json(request.body)
    except ValueError as exc:
        return replies.model_state({"request": [str(exc)]})
    errors = validate_update_order(body)
    # Validation never passes a non-object; the isinstance check is for the type checker.
    if errors or not isinstance(body, dict):
        return replies.model_state(errors)
    state.apply_update(order_id, body)
    return Reply(HTTPStatus.OK)


def _scripted(outcome: Outcome | None, endpoint: Literal["order", "token"]) -> Reply | None:
    """The forced reply for a scripted outcome, or None to carry on answering normally."""
    if outcome is None:
        return None
    if outcome.kind == "drop":
        return replies.DROPPED
    if outcome.kind == "slow":
        _sleep_ms(outcome.value)
        return None
    return replies.forced(outcome.value, endpoint, time.time())


def _parse_json(raw: bytes) -> object:
    """Strict JSON (no NaN/Infinity, which .NET rejects); an empty body parses as None."""
    if not raw.strip():
        return None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"The request body is not valid UTF-8: {exc.reason}.") from exc
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"The request body is not valid JSON: {exc.msg} (line {exc.lineno}, "
            f"column {exc.colno})."
        ) from exc


def _reject_constant(name: str) -> object:
    raise json.JSONDecodeError(f"Unexpected value {name}", name, 0)


def _body_for_log(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return _parse_json(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _unsupported_media(content_type: str | None) -> Reply:
    shown = _media_type(content_type) or "(none)"
    return replies.message(
        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        f"The request entity's media type '{shown}' is not supported for this resource.",
    )


def _method_not_allowed(method: str) -> Reply:
    return replies.message(
        HTTPStatus.METHOD_NOT_ALLOWED,
        f"The requested resource does not support http method '{method}'.",
    )


def _sleep_ms(milliseconds: int) -> None:
    if milliseconds > 0:
        time.sleep(milliseconds / 1000)
