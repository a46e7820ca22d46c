"""The Sellercloud client with the network stubbed at the transport (``responses``)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator

import pytest
import requests
import responses
from responses import matchers

from worker.sellercloud import SellercloudClient, TokenCache
from worker.sellercloud.errors import (
    ApiUnavailable,
    AuthenticationFailed,
    OrderNotFound,
    RateLimited,
    RequestRejected,
)

BASE = "https://tt.api.sellercloud.com/rest/api"
TOKEN_URL = f"{BASE}/token"
ORDER_URL = f"{BASE}/Orders/5001"
PASSWORD = "s3cret-password"


def token_reply(value: str, expires_in: int = 3600) -> responses.Response:
    return responses.Response(
        responses.POST,
        TOKEN_URL,
        json={"access_token": value, "token_type": "bearer", "expires_in": expires_in},
    )


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> SellercloudClient:
    return SellercloudClient(BASE, "integration@example.com", PASSWORD, timeout=5)


def auth_headers(api: responses.RequestsMock) -> list[str | None]:
    return [c.request.headers.get("Authorization") for c in api.calls if c.request.method == "PUT"]


def test_put_sends_the_body_with_a_bearer_token(api, client) -> None:
    api.add(
        responses.POST,
        TOKEN_URL,
        json={"access_token": "tok-1", "expires_in": 3600},
        match=[
            matchers.json_params_matcher(
                {"Username": "integration@example.com", "Password": PASSWORD}
            )
        ],
    )
    api.add(responses.PUT, ORDER_URL, match=[matchers.json_params_matcher({"CustomerId": 7})])
    client.update_order(5001, {"CustomerId": 7})
    client.update_order(5001, {"CustomerId": 7})
    assert auth_headers(api) == ["Bearer tok-1", "Bearer tok-1"]
    assert client.tokens.fetches == 1  # reused until shortly before it expires


def test_a_401_fetches_a_new_token_and_repeats_the_call_once(api, client) -> None:
    api.add(token_reply("old"))
    api.add(token_reply("new"))
    api.add(responses.PUT, ORDER_URL, status=401)
    api.add(responses.PUT, ORDER_URL, status=200)
    client.update_order(5001, {"CustomerId": 7})
    assert auth_headers(api) == ["Bearer old", "Bearer new"]
    assert client.tokens.fetches == 2


def test_a_second_401_is_an_authentication_failure_not_a_loop(api, client) -> None:
    api.add(token_reply("a"))
    api.add(token_reply("b"))
    api.add(responses.PUT, ORDER_URL, status=401)
    api.add(responses.PUT, ORDER_URL, status=401)
    with pytest.raises(AuthenticationFailed) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.status_code == 401
    assert len(auth_headers(api)) == 2


def test_wrong_credentials_are_an_authentication_failure_without_the_password(api, client) -> None:
    api.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_grant", "error_description": "The user name or password is bad."},
    )
    with pytest.raises(AuthenticationFailed) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert "invalid_grant" in (caught.value.response_body or "")
    assert PASSWORD not in str(caught.value)
    assert PASSWORD not in repr(client.tokens._token)
    assert PASSWORD not in repr(client)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(api, client, status) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=status, body="oops")
    with pytest.raises(ApiUnavailable) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.status_code == status
    assert caught.value.response_body == "oops"


def test_connection_errors_and_timeouts_are_transient(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, body=requests.ConnectionError("refused"))
    api.add(responses.PUT, ORDER_URL, body=requests.ReadTimeout("slow"))
    with pytest.raises(ApiUnavailable, match="connection failed"):
        client.update_order(5001, {"CustomerId": 7})
    with pytest.raises(ApiUnavailable, match="timed out"):
        client.update_order(5001, {"CustomerId": 7})


def test_a_400_is_rejected_with_status_and_body(api, client) -> None:
    model_state = {"Message": "The request is invalid.", "ModelState": {"request.X": ["bad"]}}
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=400, json=model_state)
    with pytest.raises(RequestRejected) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.status_code == 400
    assert json.loads(caught.value.response_body or "") == model_state


def test_a_404_is_order_not_found(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=404)
    with pytest.raises(OrderNotFound):
        client.update_order(5001, {"CustomerId": 7})


@pytest.mark.parametrize("status", [429, 400, 503])
def test_the_documented_throttling_body_is_a_rate_limit_whatever_the_status(
    api, client, status
) -> None:
    api.add(token_reply("t"))
    api.add(
        responses.PUT,
        ORDER_URL,
        status=status,
        json={"Error": "Too many requests.", "RateLimitResetTime": "2026-11-27T09:38:49.98Z"},
    )
    with pytest.raises(RateLimited) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.reset_at is not None
    assert caught.value.reset_at.isoformat().startswith("2026-11-27T09:38:49")


def test_retry_after_header_sets_the_reset_time(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=429, headers={"Retry-After": "7"})
    with pytest.raises(RateLimited) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.reset_at is not None


def test_a_huge_retry_after_is_capped_at_a_day_not_a_crash(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=429, headers={"Retry-After": "9" * 30})
    with pytest.raises(RateLimited) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.reset_at is not None
    wait = caught.value.reset_at - dt.datetime.now(dt.UTC)
    assert dt.timedelta(hours=23, minutes=59) < wait <= dt.timedelta(days=1)


def test_an_error_page_is_cut_before_it_is_kept(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=500, body="x" * 100_000)
    with pytest.raises(ApiUnavailable) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert len(caught.value.response_body or "") < 5000


def test_redirects_are_not_followed(api, client) -> None:
    api.add(token_reply("t"))
    api.add(responses.PUT, ORDER_URL, status=302, headers={"Location": "https://elsewhere/"})
    with pytest.raises(RequestRejected) as caught:
        client.update_order(5001, {"CustomerId": 7})
    assert caught.value.status_code == 302


def test_token_fetches_are_single_flight() -> None:
    started = threading.Event()
    release = threading.Event()
    calls = []

    def slow_fetch(_rejected: str | None) -> tuple[str, float]:
        calls.append(1)
        started.set()
        release.wait(5)
        return f"token-{len(calls)}", 3600.0

    cache = TokenCache(slow_fetch)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get())) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert started.wait(5)
    release.set()
    for thread in threads:
        thread.join(5)
    assert calls == [1]
    assert results == ["token-1"] * 16


def test_many_401s_at_once_cause_one_token_request() -> None:
    fetched = []

    def fetch(_rejected: str | None) -> tuple[str, float]:
        fetched.append(1)
        return f"token-{len(fetched)}", 3600.0

    cache = TokenCache(fetch)
    rejected = cache.get()
    barrier = threading.Barrier(8)
    results: list[str] = []

    def on_401() -> None:
        barrier.wait(5)
        results.append(cache.replace(rejected))

    threads = [threading.Thread(target=on_401) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(fetched) == 2  # the first token and exactly one replacement
    assert set(results) == {"token-2"}


def test_a_token_is_refreshed_shortly_before_it_expires() -> None:
    now = [0.0]
    fetched = []

    def fetch(_rejected: str | None) -> tuple[str, float]:
        fetched.append(1)
        return f"token-{len(fetched)}", 3600.0

    cache = TokenCache(fetch, clock=lambda: now[0])
    assert cache.get() == "token-1"
    now[0] = 3200.0  # still more than the 300 s margin left
    assert cache.get() == "token-1"
    now[0] = 3301.0  # inside the margin: refresh before it lapses
    assert cache.get() == "token-2"
    assert cache.age() == 0.0
