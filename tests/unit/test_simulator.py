"""The Sellercloud simulator, exercised over real HTTP on loopback."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from worker.simulator import SimulatorServer, SimulatorState, run_simulator
from worker.simulator.command import parse_failure, simulator_command
from worker.simulator.outcomes import Outcome
from worker.simulator.ratelimit import RateLimit, SlidingWindow
from worker.simulator.validation import (
    REQUEST_DEFINITION,
    draft7_schema,
    load_swagger,
    validate_update_order,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
USERNAME = "demo"
PASSWORD = "demo-password"
TIMEOUT = 5

FULL_ADDRESS: dict[str, Any] = {
    "FirstName": "Ada",
    "LastName": "Lovelace",
    "MiddleName": None,
    "ZipCode": "14201",
    "City": "Buffalo",
    "Country": "US",
    "Business": None,
    "AddressLine1": "1 Main St",
    "AddressLine2": None,
    "Fax": None,
    "Region": None,
    "State": "NY",
    "Phone": "555-0100",
}


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


@pytest.fixture
def server() -> Iterator[SimulatorServer]:
    with SimulatorServer(port=0, state=SimulatorState(USERNAME, PASSWORD)) as running:
        yield running


def get_token(server: SimulatorServer, session: Any = requests) -> str:
    response = session.post(
        f"{server.url}/token", json={"Username": USERNAME, "Password": PASSWORD}, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def put_order(
    server: SimulatorServer,
    order_id: int | str,
    body: Any,
    token: str | None,
    *,
    session: Any = requests,
    timeout: float = TIMEOUT,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response: requests.Response = session.put(
        f"{server.url}/Orders/{order_id}", json=body, headers=headers, timeout=timeout
    )
    return response


def control(server: SimulatorServer, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(
        method, f"{server.base_url}/_sim/{path}", json=body, timeout=TIMEOUT
    )
    assert response.status_code == 200, response.text
    return response.json()


def statuses_for(server: SimulatorServer, order_id: int) -> list[int | None]:
    return [r["status"] for r in control(server, "GET", "requests") if r["order_id"] == order_id]


# Token ---------------------------------------------------------------------------------------


def test_token_issued_for_right_credentials(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.url}/token", json={"Username": USERNAME, "Password": PASSWORD}, timeout=TIMEOUT
    )

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["username"] == USERNAME
    assert body["expires_in"] == 3600
    assert len(body["access_token"]) >= 32
    issued = parsedate_to_datetime(body[".issued"])
    expires = parsedate_to_datetime(body[".expires"])
    assert body[".issued"].endswith(" GMT")
    assert (expires - issued).total_seconds() == pytest.approx(3600, abs=1)
    assert server.state.token_valid(body["access_token"])
    assert control(server, "GET", "stats")["token_requests"] == 1


def test_token_accepts_form_encoded_credentials(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.url}/token",
        data={"grant_type": "password", "username": USERNAME, "password": PASSWORD},
        timeout=TIMEOUT,
    )

    assert response.status_code == 200
    assert server.state.token_valid(response.json()["access_token"])


def test_token_refused_for_wrong_password(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.url}/token", json={"Username": USERNAME, "Password": "nope"}, timeout=TIMEOUT
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "The user name or password is incorrect.",
    }
    [logged] = control(server, "GET", "requests")
    assert logged["status"] == 400
    assert logged["body"] == {"Username": USERNAME, "Password": "***"}


@pytest.mark.parametrize(
    ("data", "content_type", "key"),
    [
        (b"{not json", "application/json", "model"),
        (b'{"Username": "demo"}', "application/json", "model.Password"),
        (b"[1, 2]", "application/json", "model"),
        (b"", "application/json", "model"),
    ],
)
def test_token_malformed_body_is_400(
    server: SimulatorServer, data: bytes, content_type: str, key: str
) -> None:
    response = requests.post(
        f"{server.url}/token", data=data, headers={"Content-Type": content_type}, timeout=TIMEOUT
    )

    assert response.status_code == 400
    assert key in response.json()["ModelState"]


# Authorization -------------------------------------------------------------------------------


def test_put_without_or_with_unknown_token_is_401(server: SimulatorServer) -> None:
    for token in (None, "not-a-token"):
        response = put_order(server, 5001, {"CustomerId": 7}, token)

        assert response.status_code == 401
        assert response.json() == {"Message": "Authorization has been denied for this request."}
    assert [r["authorization_valid"] for r in control(server, "GET", "requests")] == [False, False]
    assert server.state.order(5001) is None


def test_expired_tokens_are_401_until_a_new_token(server: SimulatorServer) -> None:
    token = get_token(server)
    assert put_order(server, 5001, {"CustomerId": 7}, token).status_code == 200

    assert control(server, "POST", "tokens/expire") == {"expired": 1}

    assert put_order(server, 5001, {"CustomerId": 8}, token).status_code == 401
    assert put_order(server, 5001, {"CustomerId": 8}, get_token(server)).status_code == 200
    assert control(server, "GET", "orders/5001") == {"CustomerId": 8}


def test_token_lapses_after_its_lifetime(server: SimulatorServer) -> None:
    control(server, "POST", "config", {"token_lifetime": 1})
    response = requests.post(
        f"{server.url}/token", json={"Username": USERNAME, "Password": PASSWORD}, timeout=TIMEOUT
    )
    assert response.json()["expires_in"] == 1
    token = response.json()["access_token"]
    issued = time.monotonic()
    assert put_order(server, 5001, {"CustomerId": 1}, token).status_code == 200

    wait_until(lambda: put_order(server, 5001, {"CustomerId": 2}, token).status_code == 401)

    assert time.monotonic() - issued >= 0.9
    statuses = statuses_for(server, 5001)
    assert statuses[-1] == 401
    assert set(statuses[:-1]) == {200}


# Update Order: success -------------------------------------------------------------------------


def test_valid_put_is_stored_and_merged(server: SimulatorServer) -> None:
    token = get_token(server)

    first = put_order(server, 5001, {"CustomerId": 7, "OrderSource": 4}, token)
    second = put_order(
        server,
        5001,
        {"CustomerId": None, "CurrencyCode": 0, "ShippingAddress": FULL_ADDRESS},
        token,
    )
    moved = {**FULL_ADDRESS, "City": "Toronto", "Country": "CA", "State": "ON", "Phone": None}
    third = put_order(server, 5001, {"ShippingAddress": moved}, token)

    for response in (first, second, third):
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["Content-Length"] == "0"
    assert control(server, "GET", "orders/5001") == {
        "CustomerId": 7,
        "OrderSource": 4,
        "CurrencyCode": 0,
        "ShippingAddress": moved,
    }
    assert control(server, "GET", "stats") == {"token_requests": 1, "put_requests": 3, "orders": 1}


@pytest.mark.parametrize(
    "body",
    [
        {"OrderSource": 79, "OrderSubType": 16, "CurrencyCode": 174},
        {"OrderSource": 0, "OrderSubType": 0, "CurrencyCode": 0},
        {"CompanyId": 2**31 - 1, "CustomerId": -(2**31), "SalesRep1": 0},
        {"DisableInventoryCount": False},
        {"BillingAddress": {**FULL_ADDRESS, "Country": "GB", "State": None}},
        {
            "BillingAddress": None,
            "ShippingAddress": {**FULL_ADDRESS, "Country": "CA", "State": "QC"},
        },
    ],
    ids=["enum-max", "enum-zero", "int32-bounds", "bool", "gb-without-state", "ca-with-state"],
)
def test_valid_bodies_are_accepted(server: SimulatorServer, body: dict[str, Any]) -> None:
    response = put_order(server, 42, body, get_token(server))

    assert response.status_code == 200, response.text
    stored = control(server, "GET", "orders/42")
    assert stored == {k: v for k, v in body.items() if v is not None}


# Update Order: validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "key", "fragment"),
    [
        ({"OrderSource": "Local_Store"}, "request.OrderSource", "integer"),
        ({"CurrencyCode": "USD"}, "request.CurrencyCode", "integer"),
        ({"OrderSubType": 14}, "request.OrderSubType", "not a defined"),
        ({"CompanyId": True}, "request.CompanyId", "integer"),
        ({"CustomerId": 1.5}, "request.CustomerId", "integer"),
        ({"SalesRep1": 2**31}, "request.SalesRep1", "Int32"),
        ({"CustomerId": -(2**31) - 1}, "request.CustomerId", "Int32"),
        ({"DisableInventoryCount": "yes"}, "request.DisableInventoryCount", "boolean"),
        ({"CustomerId": 1, "Notes": "x"}, "request.Notes", "Could not find member 'Notes'"),
        (
            {"ShippingAddress": {**FULL_ADDRESS, "Line3": "x"}},
            "request.ShippingAddress.Line3",
            "Could not find member",
        ),
        (
            {"ShippingAddress": {k: v for k, v in FULL_ADDRESS.items() if k != "City"}},
            "request.ShippingAddress.City",
            "required",
        ),
        (
            {"BillingAddress": {**FULL_ADDRESS, "LastName": "  "}},
            "request.BillingAddress.LastName",
            "required",
        ),
        (
            {"ShippingAddress": {"FirstName": "Ada"}},
            "request.ShippingAddress.AddressLine1",
            "required",
        ),
        (
            {"ShippingAddress": {**FULL_ADDRESS, "Country": "us"}},
            "request.ShippingAddress.Country",
            "two-letter",
        ),
        (
            {"ShippingAddress": {**FULL_ADDRESS, "Country": "USA"}},
            "request.ShippingAddress.Country",
            "two-letter",
        ),
        (
            {"ShippingAddress": {**FULL_ADDRESS, "State": None}},
            "request.ShippingAddress.State",
            "required when Country is US",
        ),
        (
            {"BillingAddress": {**FULL_ADDRESS, "Country": "CA", "State": ""}},
            "request.BillingAddress.State",
            "required when Country is CA",
        ),
        (
            {"ShippingAddress": {**FULL_ADDRESS, "State": "New York"}},
            "request.ShippingAddress.State",
            "two-letter",
        ),
        ({"ShippingAddress": "1 Main St"}, "request.ShippingAddress", "object"),
        ({}, "request", "no fields to update"),
        ({"CustomerId": None, "ShippingAddress": None}, "request", "no fields to update"),
        ([{"CustomerId": 1}], "request", "object"),
    ],
    ids=[
        "enum-name",
        "currency-name",
        "enum-undefined-int",
        "bool-as-int",
        "float-as-int",
        "int32-overflow",
        "int32-underflow",
        "string-as-bool",
        "unknown-field",
        "unknown-address-field",
        "address-missing-city",
        "address-blank-last-name",
        "address-mostly-missing",
        "country-lowercase",
        "country-three-letters",
        "us-without-state",
        "ca-with-empty-state",
        "state-not-a-code",
        "address-not-object",
        "empty-body",
        "all-null-body",
        "array-body",
    ],
)
def test_invalid_bodies_are_400_with_model_state(
    server: SimulatorServer, body: Any, key: str, fragment: str
) -> None:
    response = put_order(server, 42, body, get_token(server))

    assert response.status_code == 400
    payload = response.json()
    assert payload["Message"] == "The request is invalid."
    assert key in payload["ModelState"], payload
    assert any(fragment in message for message in payload["ModelState"][key]), payload
    assert server.state.order(42) is None


def test_unparseable_or_missing_json_is_400(server: SimulatorServer) -> None:
    token = get_token(server)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    for data in (b"{broken", b"", b'{"CustomerId": NaN}'):
        response = requests.put(
            f"{server.url}/Orders/42", data=data, headers=headers, timeout=TIMEOUT
        )
        assert response.status_code == 400
        assert list(response.json()["ModelState"]) == ["request"]


def test_non_json_content_type_is_415(server: SimulatorServer) -> None:
    response = requests.put(
        f"{server.url}/Orders/42",
        data="CustomerId=1",
        headers={
            "Authorization": f"Bearer {get_token(server)}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
        timeout=TIMEOUT,
    )

    assert response.status_code == 415
    assert "media type" in response.json()["Message"]


@pytest.mark.parametrize(
    ("raw_id", "status"), [("0", 400), ("-3", 400), ("2147483648", 400), ("abc", 404)]
)
def test_order_id_must_be_positive_int32(server: SimulatorServer, raw_id: str, status: int) -> None:
    response = put_order(server, raw_id, {"CustomerId": 1}, get_token(server))

    assert response.status_code == status
    if status == 400:
        assert "id" in response.json()["ModelState"]


def test_validation_function_directly() -> None:
    assert validate_update_order({"CustomerId": 1}) == {}
    assert validate_update_order(None) == {"request": ["A non-empty request body is required."]}
    errors = validate_update_order({"OrderSource": "Amazon", "CompanyId": False})
    assert set(errors) == {"request.OrderSource", "request.CompanyId"}
    # The type message alone is enough for a name sent where an integer belongs.
    assert len(errors["request.OrderSource"]) == 1


def test_swagger_converts_to_strict_nullable_draft7() -> None:
    schema = draft7_schema(load_swagger())
    request = schema["definitions"]["UpdateOrderRequest"]
    address = schema["definitions"]["AddressWithSeparateAddrLinesDto"]

    assert schema["$ref"] == "#/definitions/UpdateOrderRequest"
    assert request["additionalProperties"] is False
    assert address["additionalProperties"] is False
    assert request["properties"]["ShippingAddress"] == {
        "$ref": "#/definitions/AddressWithSeparateAddrLinesDto"
    }
    assert "null" in address["type"]
    assert request["properties"]["CompanyId"]["maximum"] == 2**31 - 1
    assert None in request["properties"]["OrderSource"]["enum"]
    swagger_enum = load_swagger()["definitions"][REQUEST_DEFINITION]["properties"]["OrderSource"]
    assert request["properties"]["OrderSource"]["enum"][:-1] == swagger_enum["enum"]


# Scripted outcomes -----------------------------------------------------------------------------


def test_scripted_500s_then_success(server: SimulatorServer) -> None:
    token = get_token(server)
    control(server, "POST", "script", {"orders": {"5002": [500, 502]}})

    first = put_order(server, 5002, {"CustomerId": 1}, token)
    second = put_order(server, 5002, {"CustomerId": 1}, token)
    third = put_order(server, 5002, {"CustomerId": 1}, token)

    assert (first.status_code, second.status_code, third.status_code) == (500, 502, 200)
    assert first.json() == {"Message": "An error has occurred."}
    assert statuses_for(server, 5002) == [500, 502, 200]
    assert control(server, "GET", "script") == {"orders": {}, "token": []}


def test_scripted_outcome_waits_for_an_authorized_call(server: SimulatorServer) -> None:
    server.state.script_order(5002, [503])

    assert put_order(server, 5002, {"CustomerId": 1}, None).status_code == 401
    assert put_order(server, 5002, {"CustomerId": 1}, get_token(server)).status_code == 503


@pytest.mark.parametrize(
    ("outcome", "check"),
    [
        (400, lambda body: body["Message"] == "The request is invalid." and body["ModelState"]),
        (404, lambda body: body == {"Message": "Order not found."}),
        (401, lambda body: body == {"Message": "Authorization has been denied for this request."}),
    ],
    ids=["400", "404", "401"],
)
def test_scripted_client_errors_have_api_bodies(
    server: SimulatorServer, outcome: int, check: Callable[[Any], bool]
) -> None:
    server.state.script_order(5003, [outcome])

    response = put_order(server, 5003, {"CustomerId": 1}, get_token(server))

    assert response.status_code == outcome
    assert check(response.json())
    assert server.state.order(5003) is None


def test_scripted_429_has_the_rate_limit_body(server: SimulatorServer) -> None:
    server.state.script_order(5004, [429])
    before = datetime.now(UTC)

    response = put_order(server, 5004, {"CustomerId": 1}, get_token(server))

    assert response.status_code == 429
    body = response.json()
    assert body["Error"] == "Too many requests."
    assert body["RateLimitResetTime"].endswith("Z")
    reset = datetime.fromisoformat(body["RateLimitResetTime"])
    assert 0.5 <= (reset - before).total_seconds() <= 5


def test_scripted_drop_closes_the_connection(server: SimulatorServer) -> None:
    token = get_token(server)
    server.state.script_order(5005, ["drop"])

    with pytest.raises(requests.exceptions.ConnectionError):
        put_order(server, 5005, {"CustomerId": 1}, token)

    assert put_order(server, 5005, {"CustomerId": 1}, token).status_code == 200
    assert statuses_for(server, 5005) == [None, 200]


def test_scripted_slow_triggers_a_read_timeout(server: SimulatorServer) -> None:
    token = get_token(server)
    server.state.script_order(5006, ["slow:1500"])

    with pytest.raises(requests.exceptions.ReadTimeout):
        put_order(server, 5006, {"CustomerId": 1}, token, timeout=0.2)


def test_scripted_slow_then_answers_normally(server: SimulatorServer) -> None:
    token = get_token(server)
    server.state.script_order(5006, ["slow:300"])
    started = time.monotonic()

    response = put_order(server, 5006, {"CustomerId": 1}, token)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3
    assert server.state.order(5006) == {"CustomerId": 1}


def test_scripted_token_failures(server: SimulatorServer) -> None:
    control(server, "POST", "script", {"token": [503, "drop"]})
    credentials = {"Username": USERNAME, "Password": PASSWORD}

    first = requests.post(f"{server.url}/token", json=credentials, timeout=TIMEOUT)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(f"{server.url}/token", json=credentials, timeout=TIMEOUT)
    third = requests.post(f"{server.url}/token", json=credentials, timeout=TIMEOUT)

    assert first.status_code == 503
    assert third.status_code == 200
    assert server.state.token_requests == 3


def test_bad_script_is_refused_whole(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.base_url}/_sim/script",
        json={"orders": {"1": [500], "2": ["explode"]}},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert "explode" in response.json()["error"]
    assert control(server, "GET", "script") == {"orders": {}, "token": []}


def test_missing_orders_answer_404(server: SimulatorServer) -> None:
    token = get_token(server)
    assert control(server, "POST", "missing", {"order_ids": [9999]}) == {"order_ids": [9999]}

    missing = put_order(server, 9999, {"CustomerId": 1}, token)
    present = put_order(server, 9998, {"CustomerId": 1}, token)

    assert missing.status_code == 404
    assert missing.json() == {"Message": "Order not found."}
    assert present.status_code == 200


# Rate limit, latency, keep-alive -------------------------------------------------------------


def test_rate_limit_counts_token_and_put_calls(server: SimulatorServer) -> None:
    assert control(server, "POST", "config", {"rate_limit": "2/h"})["rate_limit"] == "2/h"
    token = get_token(server)
    assert put_order(server, 5001, {"CustomerId": 1}, token).status_code == 200

    limited = put_order(server, 5001, {"CustomerId": 2}, token)

    assert limited.status_code == 429
    body = limited.json()
    assert body["Error"] == "Too many requests."
    reset = datetime.fromisoformat(body["RateLimitResetTime"])
    assert 3500 <= (reset - datetime.now(UTC)).total_seconds() <= 3600
    # The control API is not part of the budget.
    assert control(server, "GET", "stats")["put_requests"] == 2
    assert server.state.order(5001) == {"CustomerId": 1}

    control(server, "POST", "config", {"rate_limit": None})
    assert put_order(server, 5001, {"CustomerId": 3}, token).status_code == 200


def test_latency_delays_each_api_call(server: SimulatorServer) -> None:
    control(server, "POST", "config", {"latency_ms": 200})
    started = time.monotonic()

    get_token(server)

    assert time.monotonic() - started >= 0.2


def test_keep_alive_reuses_one_connection(server: SimulatorServer) -> None:
    with requests.Session() as session:
        token = get_token(server, session)
        first = put_order(server, 5001, {"CustomerId": 1}, token, session=session)
        second = put_order(server, 5001, {"CustomerId": 2}, token, session=session)
        stats = session.get(f"{server.base_url}/_sim/stats", timeout=TIMEOUT)

    assert (first.status_code, second.status_code, stats.status_code) == (200, 200, 200)
    assert "close" not in first.headers.get("Connection", "").lower()
    assert server.state.connections == 1


def test_concurrent_calls_are_all_answered_and_counted(server: SimulatorServer) -> None:
    token = get_token(server)
    statuses: list[int] = []

    def update(order_id: int) -> None:
        statuses.append(put_order(server, order_id, {"CustomerId": order_id}, token).status_code)

    workers = [threading.Thread(target=update, args=(1000 + n,)) for n in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=TIMEOUT)

    assert statuses == [200] * 20
    assert control(server, "GET", "stats") == {
        "token_requests": 1,
        "put_requests": 20,
        "orders": 20,
    }
    assert server.state.order(1013) == {"CustomerId": 1013}


# Control API and routing -----------------------------------------------------------------------


def test_request_log_records_each_api_call(server: SimulatorServer) -> None:
    token = get_token(server)
    put_order(server, 5001, {"CustomerId": 7}, token)

    log = control(server, "GET", "requests")

    assert [(r["method"], r["path"], r["order_id"], r["status"]) for r in log] == [
        ("POST", "/rest/api/token", None, 200),
        ("PUT", "/rest/api/Orders/5001", 5001, 200),
    ]
    assert log[1]["body"] == {"CustomerId": 7}
    assert log[1]["authorization_valid"] is True
    assert log[0]["at"] <= log[1]["at"] <= time.time()


def test_reset_forgets_everything_but_credentials(server: SimulatorServer) -> None:
    token = get_token(server)
    put_order(server, 5001, {"CustomerId": 7}, token)
    control(server, "POST", "script", {"orders": {"5001": [500]}})
    control(server, "POST", "missing", {"order_ids": [5]})
    control(server, "POST", "config", {"latency_ms": 5})

    assert control(server, "POST", "reset") == {"ok": True}

    assert control(server, "GET", "stats") == {"token_requests": 0, "put_requests": 0, "orders": 0}
    assert control(server, "GET", "requests") == []
    assert control(server, "GET", "script") == {"orders": {}, "token": []}
    assert control(server, "GET", "config")["latency_ms"] == 0
    assert server.state.missing_orders == frozenset()
    assert put_order(server, 5001, {"CustomerId": 7}, token).status_code == 401
    assert put_order(server, 5001, {"CustomerId": 7}, get_token(server)).status_code == 200


def test_control_health_and_unknown_paths(server: SimulatorServer) -> None:
    assert control(server, "GET", "health") == {"ok": True}

    unknown_order = requests.get(f"{server.base_url}/_sim/orders/77", timeout=TIMEOUT)
    unknown_control = requests.get(f"{server.base_url}/_sim/nothing", timeout=TIMEOUT)
    unknown_api = requests.get(f"{server.url}/Products", timeout=TIMEOUT)
    outside = requests.get(f"{server.base_url}/favicon.ico", timeout=TIMEOUT)
    wrong_method = requests.get(f"{server.url}/Orders/5", timeout=TIMEOUT)

    for response in (unknown_order, unknown_control, unknown_api, outside):
        assert response.status_code == 404
        assert response.headers["Content-Type"].startswith("application/json")
        assert response.json()
    assert wrong_method.status_code == 405


def test_bad_config_changes_nothing(server: SimulatorServer) -> None:
    response = requests.post(
        f"{server.base_url}/_sim/config",
        json={"latency_ms": 10, "rate_limit": "lots"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 400
    assert control(server, "GET", "config") == {
        "latency_ms": 0,
        "token_lifetime": 3600,
        "rate_limit": None,
    }


# Parsing helpers -------------------------------------------------------------------------------


def test_outcome_and_rate_limit_parsing() -> None:
    assert Outcome.parse(500) == Outcome("status", 500)
    assert Outcome.parse(" DROP ") == Outcome("drop")
    assert Outcome.parse("slow:250").to_json() == "slow:250"
    for bad in (True, 200, "slow:", "slow:x", "boom", None, 5.0):
        with pytest.raises(ValueError, match=r"outcome|slow|status"):
            Outcome.parse(bad)

    assert RateLimit.parse("10800/h") == RateLimit(10800, 3600)
    assert RateLimit.parse("3/s") == RateLimit(3, 1)
    assert str(RateLimit.parse("5/10s")) == "5/10s"
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit.parse("3 per second")

    assert parse_failure("5002=500,drop,slow:10") == (
        5002,
        [Outcome("status", 500), Outcome("drop"), Outcome("slow", 10)],
    )
    with pytest.raises(ValueError, match="ORDER_ID"):
        parse_failure("5002")


def test_sliding_window_frees_slots_as_they_age() -> None:
    window = SlidingWindow(RateLimit(2, 10))

    assert window.acquire(0.0) is None
    assert window.acquire(1.0) is None
    assert window.acquire(2.0) == pytest.approx(8.0)
    assert window.acquire(10.5) is None
    assert window.acquire(10.6) == pytest.approx(0.4)


# Running it ------------------------------------------------------------------------------------


def test_run_simulator_serves_until_stopped() -> None:
    announced: list[str] = []
    stop = threading.Event()
    runner = threading.Thread(
        target=run_simulator,
        kwargs={
            "port": 0,
            "failures": {5002: [500]},
            "missing": [7],
            "announce": announced.append,
            "stop": stop,
        },
        daemon=True,
    )
    runner.start()
    try:
        wait_until(lambda: bool(announced))
        url = announced[0]
        token = requests.post(
            f"{url}/token", json={"Username": USERNAME, "Password": PASSWORD}, timeout=TIMEOUT
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        put = requests.put(
            f"{url}/Orders/5002", json={"CustomerId": 1}, headers=headers, timeout=TIMEOUT
        )
        gone = requests.put(
            f"{url}/Orders/7", json={"CustomerId": 1}, headers=headers, timeout=TIMEOUT
        )
        assert (put.status_code, gone.status_code) == (500, 404)
    finally:
        stop.set()
        runner.join(timeout=5)
    assert not runner.is_alive()


def test_command_help_hides_the_password() -> None:
    result = CliRunner().invoke(
        simulator_command, ["--help"], env={"SELLERCLOUD_PASSWORD": "hunter2-secret"}
    )

    assert result.exit_code == 0
    assert "--rate-limit" in result.output
    assert "hunter2-secret" not in result.output
    assert "demo-password" not in result.output


def test_command_rejects_a_malformed_fail_option() -> None:
    result = CliRunner().invoke(simulator_command, ["--fail", "5002:500"])

    assert result.exit_code == 2
    assert "ORDER_ID=OUTCOME" in result.output


def test_command_reports_a_taken_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = CliRunner().invoke(simulator_command, ["--port", str(port)])

    assert result.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _read_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    buffered = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffered:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise AssertionError(f"no line from the simulator within {timeout} s")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"the simulator exited early: {buffered!r}")
            buffered += chunk
    return buffered.split(b"\n", 1)[0].decode()


def test_command_serves_until_sigterm() -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SELLERCLOUD_USERNAME": "cli-user",
        "SELLERCLOUD_PASSWORD": "cli-secret-123",
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from worker.simulator.command import simulator_command; simulator_command()",
            "--port",
            str(port),
            "--token-lifetime",
            "120",
            "--fail",
            "5002=500,drop",
            "--missing",
            "7",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        line = _read_line(process, timeout=20)
        url = line.split()[-1]
        assert url == f"http://127.0.0.1:{port}/rest/api"

        token = requests.post(
            f"{url}/token",
            json={"Username": "cli-user", "Password": "cli-secret-123"},
            timeout=TIMEOUT,
        )
        assert token.status_code == 200
        assert token.json()["expires_in"] == 120
        root = url.removesuffix("/rest/api")
        script = requests.get(f"{root}/_sim/script", timeout=TIMEOUT).json()
        assert script == {"orders": {"5002": [500, "drop"]}, "token": []}
        missing = requests.get(f"{root}/_sim/missing", timeout=TIMEOUT).json()
        assert missing == {"order_ids": [7]}

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, stderr.decode()
    assert b"cli-secret-123" not in line.encode() + stdout + stderr
