"""The ``/_sim/`` control API: inspect and steer the simulator from tests and scripts.

No authentication and no rate limit: these calls are not part of the simulated service.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .outcomes import Outcome
from .ratelimit import RateLimit
from .replies import Reply, json_reply
from .state import SimulatorState

PREFIX = "/_sim"


def handle_control(state: SimulatorState, method: str, path: str, body: bytes) -> Reply:
    """Answer one ``/_sim/...`` call. ``path`` is the request path without its query string."""
    route = "/".join(part for part in path.removeprefix(PREFIX).split("/") if part)
    try:
        if route.startswith("orders/") and route.count("/") == 1:
            if method != "GET":
                return _not_allowed(method)
            return _order(state, route.removeprefix("orders/"))
        handler = _ROUTES.get((method, route))
        if handler is not None:
            return handler(state, _json_body(body))
        if any(known == route for _, known in _ROUTES):
            return _not_allowed(method)
        return json_reply(HTTPStatus.NOT_FOUND, {"error": f"no control endpoint {path!r}"})
    except ValueError as exc:
        return json_reply(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def _not_allowed(method: str) -> Reply:
    return json_reply(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} is not supported here"})


def _health(_state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, {"ok": True})


def _requests(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, state.requests())


def _stats(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, state.stats())


def _order(state: SimulatorState, raw_id: str) -> Reply:
    try:
        order_id = int(raw_id)
    except ValueError:
        return json_reply(HTTPStatus.BAD_REQUEST, {"error": f"not an order id: {raw_id!r}"})
    record = state.order(order_id)
    if record is None:
        return json_reply(HTTPStatus.NOT_FOUND, {"error": f"order {order_id} was never updated"})
    return json_reply(HTTPStatus.OK, record)


def _get_script(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, state.pending_script())


def _post_script(state: SimulatorState, body: Any) -> Reply:
    data = _object(body)
    _only(data, {"orders", "token"})
    orders = data.get("orders") or {}
    if not isinstance(orders, dict):
        raise ValueError('"orders" must map order ids to lists of outcomes')
    # Parse everything first so a bad entry leaves the script untouched.
    per_order = {_order_id(key): _outcomes(value) for key, value in orders.items()}
    token = _outcomes(data.get("token") or [])
    for order_id, outcomes in per_order.items():
        state.script_order(order_id, outcomes)
    state.script_token(token)
    return json_reply(HTTPStatus.OK, state.pending_script())


def _expire_tokens(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, {"expired": state.expire_tokens()})


def _get_missing(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, {"order_ids": sorted(state.missing_orders)})


def _post_missing(state: SimulatorState, body: Any) -> Reply:
    data = _object(body)
    _only(data, {"order_ids"})
    ids = data.get("order_ids")
    if not isinstance(ids, list):
        raise ValueError('"order_ids" must be a list of order ids')
    state.add_missing([_order_id(i) for i in ids])
    return _get_missing(state, None)


def _get_config(state: SimulatorState, _body: Any) -> Reply:
    return json_reply(HTTPStatus.OK, state.config())


def _post_config(state: SimulatorState, body: Any) -> Reply:
    data = _object(body)
    _only(data, {"latency_ms", "token_lifetime", "rate_limit"})
    # Check every value before changing any, so a bad request changes nothing.
    latency = _int(data, "latency_ms")
    lifetime = _int(data, "token_lifetime")
    raw_limit = data.get("rate_limit")
    if raw_limit is not None and not isinstance(raw_limit, str):
        raise ValueError('"rate_limit" must be a string such as "10800/h", or null')
    limit = RateLimit.parse(raw_limit) if raw_limit is not None else None
    if latency is not None and latency < 0:
        raise ValueError('"latency_ms" must not be negative')
    if lifetime is not None and lifetime < 1:
        raise ValueError('"token_lifetime" must be at least 1 second')
    if latency is not None:
        state.latency_ms = latency
    if lifetime is not None:
        state.token_lifetime = lifetime
    if "rate_limit" in data:
        state.rate_limit = limit
    return _get_config(state, None)


def _post_outage(state: SimulatorState, body: Any) -> Reply:
    """``{"endpoint": "order"|"token"|"all", "outcome": 503, "seconds": 30}``."""
    data = _object(body)
    seconds = data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError('"seconds" must be a number >= 0')
    state.outage(str(data.get("endpoint", "all")), data.get("outcome", 503), float(seconds))
    return json_reply(HTTPStatus.OK, {"ok": True})


def _reset(state: SimulatorState, _body: Any) -> Reply:
    state.reset()
    return json_reply(HTTPStatus.OK, {"ok": True})


_Route = Callable[[SimulatorState, Any], Reply]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "health"): _health,
    ("GET", "requests"): _requests,
    ("GET", "stats"): _stats,
    ("GET", "script"): _get_script,
    ("POST", "script"): _post_script,
    ("POST", "tokens/expire"): _expire_tokens,
    ("GET", "missing"): _get_missing,
    ("POST", "missing"): _post_missing,
    ("GET", "config"): _get_config,
    ("POST", "config"): _post_config,
    ("POST", "outage"): _post_outage,
    ("POST", "reset"): _reset,
}


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from exc


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


def _only(data: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")


def _int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'"{name}" must be an integer')
    return value


def _order_id(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    raise ValueError(f"not an order id: {raw!r}")


def _outcomes(raw: object) -> list[Outcome]:
    if not isinstance(raw, list):
        raise ValueError('outcomes must be a list, e.g. [500, "drop", "slow:2000"]')
    return [Outcome.parse(item) for item in raw]
