"""The operator console without a browser: its pages and actions through Flask's test client,
on a real SQLite database and the embedded broker in a temporary folder (nothing mocked), and
the pieces that keep it safe. The browser tests (``tests/integration/test_console_browser.py``)
drive it end to end."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.datastructures import MultiDict

from worker.console import forms
from worker.console.app import ConsoleConfig, create_app
from worker.console.backend import Backend
from worker.console.guard import is_loopback_host
from worker.console.redact import MASK, Redactor
from worker.deadletter.entries import new_entry
from worker.settings import ConfigError, console_settings

SELLERCLOUD_PASSWORD = "sc-password-for-unit-tests"
HOST = {"Host": "127.0.0.1:8080"}
HERE = {**HOST, "Origin": "http://127.0.0.1:8080"}


def _event(order_id: int, **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"evt-{order_id}",
        "order_id": order_id,
        "occurred_at": "2026-11-26T10:00:00Z",
        "changes": changes or {"customer_id": 5},
    }


def _entry(order_id: int, **changes: Any) -> dict[str, Any]:
    return new_entry(
        reason="api_rejected",
        error=f"Update Order {order_id}: HTTP 400",
        attempts=1,
        event=_event(order_id, **changes),
        event_id=f"evt-{order_id}",
        order_id=order_id,
        status_code=400,
    )


@pytest.fixture
def backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
    for name in ("CELERY_BROKER_URL", "ORDER_SYNC_DATABASE_URL", "ORDER_SYNC_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ORDER_SYNC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SELLERCLOUD_USERNAME", "someone")
    monkeypatch.setenv("SELLERCLOUD_PASSWORD", SELLERCLOUD_PASSWORD)
    opened = Backend.from_settings()
    yield opened
    opened.close()


def _client(backend: Backend, password: str | None = None) -> Any:
    config = ConsoleConfig(password=password, secret_key=b"k" * 32, secrets=backend.secrets())
    return create_app(config, backend).test_client()


def _token(client: Any, path: str = "/dead-letters/list") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path, headers=HOST).text)
    assert found is not None
    return found.group(1)


def test_every_page_renders_and_shows_no_secret(backend: Backend) -> None:
    leaky = _entry(9001, sales_rep_1=3)
    leaky["event"]["changes"]["password"] = SELLERCLOUD_PASSWORD
    leaky["error"] = f"changes.password: Unknown field ({SELLERCLOUD_PASSWORD})"
    backend.db.ingest_many([_entry(9000), leaky])
    client = _client(backend)
    pages = ["/", "/dead-letters/", "/dead-letters/list", "/orders/?order_id=9001", "/audit/"]
    pages += [f"/dead-letters/{e.id}" for e in backend.db.page()[0]]
    for path in pages:
        response = client.get(path, headers=HOST)
        assert response.status_code == 200, path
        assert SELLERCLOUD_PASSWORD not in response.text, path
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"


def test_an_action_needs_the_token_and_the_same_origin(backend: Backend) -> None:
    backend.db.ingest(_entry(9100))
    [stored], _ = backend.db.page()
    client = _client(backend)
    token = _token(client)
    form = {"entry": stored.id, "csrf_token": token}

    assert (
        client.post("/actions/archive", data={"entry": stored.id}, headers=HERE).status_code == 400
    )
    elsewhere = {**HOST, "Origin": "http://attacker.example"}
    assert client.post("/actions/archive", data=form, headers=elsewhere).status_code == 403
    cross = {**HOST, "Sec-Fetch-Site": "cross-site"}
    assert client.post("/actions/archive", data=form, headers=cross).status_code == 403
    assert backend.db.get(stored.id).state == "dead"  # type: ignore[union-attr]

    assert client.post("/actions/archive", data=form, headers=HERE).status_code == 302
    detail = backend.db.get(stored.id)
    assert detail is not None and detail.state == "archived"
    assert [a["action"] for a in detail.audit] == ["archive"]
    assert detail.audit[0]["user"].startswith("local")


def test_a_loopback_console_answers_only_loopback_names(backend: Backend) -> None:
    client = _client(backend)
    assert client.get("/", headers={"Host": "attacker.example"}).status_code == 421
    assert client.get("/", headers={"Host": "localhost:8080"}).status_code == 200


def test_with_a_password_every_page_asks_for_it_and_the_name_is_audited(
    backend: Backend,
) -> None:
    backend.db.ingest(_entry(9200))
    [stored], _ = backend.db.page()
    client = _client(backend, password="open sesame")
    assert client.get("/dead-letters/", headers=HOST).status_code == 302
    token = _token(client, "/login")
    wrong = {"csrf_token": token, "name": "carol", "password": "nope"}
    assert client.post("/login", data=wrong, headers=HERE).status_code == 400
    right = {**wrong, "password": "open sesame", "next": "//attacker.example/"}
    answer = client.post("/login", data=right, headers=HERE)
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    note = {"entry_id": stored.id, "note": "called the customer", "csrf_token": _token(client)}
    assert client.post("/actions/note", data=note, headers=HERE).status_code == 302
    detail = backend.db.get(stored.id)
    assert detail is not None
    assert [(n["by"], n["text"]) for n in detail.notes] == [("carol", "called the customer")]
    assert detail.audit[0]["user"] == "carol"
    assert "open sesame" not in client.get(f"/dead-letters/{stored.id}", headers=HOST).text


def test_a_bad_patch_is_refused_and_nothing_is_sent(backend: Backend) -> None:
    backend.db.ingest(_entry(9300))
    [stored], _ = backend.db.page()
    client = _client(backend)
    token = _token(client)
    for patch, message in [
        ("", "The patch is empty"),
        ("{nope", "not JSON"),
        ("[1]", "must be a JSON object"),
        ('{"customer_id": "x"}', "changes.customer_id"),
    ]:
        form = {"entry": stored.id, "csrf_token": token, "patch": patch}
        answer = client.post("/actions/preview", data=form, headers=HERE)
        assert answer.status_code == 400, patch
        assert message in answer.text.replace("&#39;", "'"), patch
        assert 'id="send"' not in answer.text
    good = {"entry": stored.id, "csrf_token": token, "patch": '{"customer_id": 77}'}
    answer = client.post("/actions/preview", data=good, headers=HERE)
    assert answer.status_code == 200 and 'id="send"' in answer.text
    assert backend.db.get(stored.id).state == "dead"  # type: ignore[union-attr]
    assert backend.db.audit() == []


def test_purge_asks_first_then_deletes_and_records_it(backend: Backend) -> None:
    backend.db.ingest_many([_entry(9400), _entry(9401)])
    client = _client(backend)
    token = _token(client)
    form = {"scope": "filter", "reason": "api_rejected", "csrf_token": token}
    asked = client.post("/actions/purge", data=form, headers=HERE)
    assert asked.status_code == 200 and "Purge 2 entries?" in asked.text
    assert backend.db.count() == 2
    done = client.post("/actions/purge", data={**form, "confirm": "yes"}, headers=HERE)
    assert done.status_code == 302
    assert backend.db.count(state=None) == 0
    [action] = backend.db.audit()
    assert action["action"] == "purge" and action["count"] == 2


def test_bad_filters_name_the_problem_and_query_nothing(backend: Backend) -> None:
    client = _client(backend)
    for query, message in [
        ("order_id=abc", "is not a whole number"),
        ("since=yesterday", "is not a time"),
        ("state=gone", "is not one of"),
        ("limit=7", "Page size 7"),
        ("group=zz", "is not a group key"),
    ]:
        answer = client.get(f"/dead-letters/list?{query}", headers=HOST)
        assert answer.status_code == 400, query
        assert message in answer.text, query
    assert client.get("/orders/?order_id=1&event_id=e", headers=HOST).status_code == 400
    assert client.get("/dead-letters/nope", headers=HOST).status_code == 404


def test_forms_read_a_filter() -> None:
    wanted = forms.entry_filter(
        MultiDict(
            [("reason", "api_rejected, invalid_event"), ("order_id", "5, 6"), ("state", "all")]
        )
    )
    assert wanted.selection.reasons == {"api_rejected", "invalid_event"}
    assert wanted.selection.order_ids == {5, 6}
    assert wanted.state == "all"
    assert forms.entry_filter(MultiDict(wanted.query())) == wanted
    with pytest.raises(forms.BadInput):
        forms.entry_filter(MultiDict([("until", "2026-01-01"), ("since", "2026-02-01")]))


def test_the_redactor_masks_secrets_and_keeps_the_rest() -> None:
    redactor = Redactor([SELLERCLOUD_PASSWORD, "ab"])
    value = {
        "Authorization": "Bearer abc",
        "access_token": "t",
        "token_age_seconds": 12,
        "note": f"pw is {SELLERCLOUD_PASSWORD}!",
        "list": [{"password": "x"}],
        "ab": "ab",
    }
    assert redactor.value(value) == {
        "Authorization": MASK,
        "access_token": MASK,
        "token_age_seconds": 12,
        "note": f"pw is {MASK}!",
        "list": [{"password": MASK}],
        "ab": "ab",  # too short to be a password: words are not masked
    }


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8080", True),
        ("localhost", True),
        ("[::1]:8080", True),
        ("::1", True),
        ("0.0.0.0", False),  # noqa: S104
        ("10.0.0.5", False),
        ("attacker.example", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_console_settings(tmp_path: Path) -> None:
    assert console_settings({}).password is None
    assert console_settings({"ORDER_SYNC_CONSOLE_PASSWORD": " s3 "}).password == "s3"
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    assert console_settings({"ORDER_SYNC_CONSOLE_PASSWORD_FILE": str(secret)}).password == (
        "from-file"
    )
    secret.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        console_settings({"ORDER_SYNC_CONSOLE_PASSWORD_FILE": str(secret)})
    with pytest.raises(ConfigError, match="cannot be read"):
        console_settings({"ORDER_SYNC_CONSOLE_PASSWORD_FILE": str(tmp_path / "missing")})


def test_importing_the_console_builds_nothing(tmp_path: Path) -> None:
    from tests.unit.test_layout import (
        test_importing_a_public_piece_builds_no_app_and_writes_nothing,
    )

    test_importing_a_public_piece_builds_no_app_and_writes_nothing(
        "import worker.console.app, worker.console.backend, worker.cli.console", tmp_path
    )


def test_the_overview_shows_the_backlog_waiting_for_the_api_budget(backend: Backend) -> None:
    from schemas.event import load_event
    from worker.coordination.backends import open_store
    from worker.coordination.orders import BULK, LIVE, OrderCoordinator
    from worker.settings import fleet_settings

    fleet = fleet_settings()
    store = open_store(None, str(fleet.store_path))
    coordinator = OrderCoordinator(store, 60.0, 30.0)
    for order_id, lane in ((9100, LIVE), (9101, BULK), (9102, BULK)):
        event = load_event(_event(order_id))
        assert coordinator.absorb(event, {}, lane) is None
    store.close()
    page = _client(backend).get("/", headers=HOST).text
    waiting = re.search(r'id="fleet-backlog">([^<]*)<', page)
    assert waiting is not None
    assert waiting.group(1).startswith("waiting for a turn: 1 live, 2 bulk order(s), 3 event(s)")
