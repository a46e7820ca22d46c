"""The operator console in a real browser: a dead-lettered event is found, patched (a bad patch
first: refused, nothing changes), replayed, and the order then holds the patched value; the audit
trail names the user. Also: a POST without the CSRF token changes nothing, a non-loopback address
needs a password, and no page shows the Sellercloud password or a token.

Debian's Chromium (``.ci/run`` installs it) is driven through its chromedriver by Selenium,
against a real ``order-sync console`` process, RabbitMQ, the database, worker processes and the
Sellercloud simulator. The screenshots in ``docs/screenshots`` (shown in the README) are taken
here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import PASSWORD, Pipeline, make_event, postgres_database, wait_for
from worker.deadletter.store import DeadLetterDB

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
CONSOLE_PASSWORD = "console-pass-31c9"
#: Where the tests leave the screenshots the README shows.
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
START_SECONDS = 60.0


@dataclass
class Console:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_console(
    env: dict[str, str], log: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str | None]:
    """``order-sync console --port 0 ARGS``: the process and the address it printed (None if it
    ended without printing one)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "console", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
    )
    assert process.stdout is not None
    found: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        found.append(process.stdout.readline().decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_SECONDS)
    line = found[0].strip() if found else ""
    if not line.startswith("console"):
        return process, None
    return process, line.split()[-1]


def console_env(pipeline: Pipeline, password: str | None = CONSOLE_PASSWORD) -> dict[str, str]:
    env = dict(pipeline.env)
    if password is not None:
        env["ORDER_SYNC_CONSOLE_PASSWORD"] = password
    return env


#: The PostgreSQL database of the console tests run on PostgreSQL (created if missing).
POSTGRES_URL = os.environ.get(
    "TEST_CONSOLE_DATABASE_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/order_sync_console_test",
)


def _fresh_postgres() -> str:
    from worker.deadletter.store import engine as engines

    postgres_database(POSTGRES_URL)
    engine = engines.create(POSTGRES_URL)
    engines.upgrade(engine)
    engines.downgrade(engine)
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, pipeline: Pipeline) -> str:
    """The database the worker and the console share: a fresh SQLite file in the pipeline's
    data folder, or (``indirect`` parametrisation) a PostgreSQL database emptied first."""
    if request.param == "postgresql":
        pipeline.env_overrides["ORDER_SYNC_DATABASE_URL"] = _fresh_postgres()
    return str(request.param)


@pytest.fixture
def console(pipeline: Pipeline, database: str) -> Iterator[Console]:
    """A console with a password, on the pipeline's broker and database."""
    log = pipeline.tmp_path / "console.log"
    process, url = run_console(console_env(pipeline), log)
    if url is None:
        process.kill()
        process.wait()
        pytest.fail(f"the console did not start:\n{log.read_text(errors='replace')}")
    running = Console(process, url, log)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} and {CHROMEDRIVER} are needed "
            "(apt-get install chromium chromium-driver; .ci/run does it)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1360,900",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """The browser with no cookies from an earlier test."""
    browser.delete_all_cookies()
    yield browser
    browser.delete_all_cookies()


WAIT = 30.0
US_ADDRESS = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "address_line_1": "12 Analytical Row",
    "city": "Buffalo",
    "zip_code": "14201",
    "country": "US",
}


def _wait(driver: Any) -> WebDriverWait:  # type: ignore[type-arg]
    return WebDriverWait(driver, WAIT)


def _login(driver: Any, console: Console, name: str = "alice") -> None:
    driver.get(console.url)
    _wait(driver).until(ec.presence_of_element_located((By.NAME, "password")))
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(CONSOLE_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button").click()
    _wait(driver).until(ec.presence_of_element_located((By.ID, "fleet-calls")))


def _reload_until(driver: Any, url: str, condition: Any, what: str) -> None:
    """Load ``url`` again until ``condition(driver)`` holds (the page shows what it should)."""

    def shown() -> bool:
        driver.get(url)
        return bool(condition(driver))

    wait_for(shown, WAIT, what, interval=0.3)


def _db(pipeline: Pipeline) -> DeadLetterDB:
    from worker.settings import database_settings

    return DeadLetterDB.open(settings=database_settings(pipeline.env))


def _no_secrets(driver: Any, pipeline: Pipeline) -> None:
    source = driver.page_source
    assert PASSWORD not in source
    assert CONSOLE_PASSWORD not in source
    for token in pipeline.state.issued_tokens():
        assert token not in source


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_a_dead_letter_is_patched_and_replayed_from_the_browser(
    pipeline: Pipeline, database: str, console: Console, page: Any
) -> None:
    # One run leaves the README's screenshots; both take them, so both show the same pages.
    shots = SCREENSHOTS if database == "sqlite" else pipeline.tmp_path
    for order_id in (7001, 7004, 7005):
        pipeline.state.script_order(order_id, [400])
    pipeline.start_worker()
    pipeline.publish(
        make_event(7003, "evt-console-applied", customer_id=3),
        make_event(7001, "evt-console-rejected", customer_id=5),
        make_event(7004, "evt-console-rejected-2", customer_id=6),
        make_event(7005, "evt-console-rejected-3", customer_id=7),
    )
    # Invalid (a US address needs a state), and it carries the Sellercloud password in a field
    # no event has: no page may show it.
    invalid = make_event(7002, "evt-console-invalid", billing_address=US_ADDRESS, password=PASSWORD)
    pipeline.publish_raw(json.dumps(invalid))

    _login(page, console)
    _reload_until(
        page,
        console.url,
        lambda d: (
            "\n4\n" in d.find_element(By.ID, "fleet-dead-letters").text
            and len(d.find_elements(By.CSS_SELECTOR, "#top-groups .group-link")) == 2
        ),
        "the overview to show the four dead letters in two groups",
    )
    _no_secrets(page, pipeline)
    page.save_screenshot(str(shots / "overview.png"))

    # The groups page, then the API-rejected group.
    page.find_element(By.LINK_TEXT, "Dead letters").click()
    groups = page.find_element(By.ID, "groups").text
    assert "api_rejected" in groups and "invalid_event" in groups
    row = next(
        r
        for r in page.find_elements(By.CSS_SELECTOR, "#groups tr.group")
        if "api_rejected" in r.text
    )
    row.find_element(By.CSS_SELECTOR, "a.group-link").click()
    _wait(page).until(ec.presence_of_element_located((By.ID, "entries")))
    listed = page.find_element(By.ID, "entries").text
    assert all(f"Update Order {o}: HTTP 400" in listed for o in (7001, 7004, 7005))
    assert page.find_element(By.ID, "counts").text.endswith(" of 3")
    page.save_screenshot(str(shots / "dead-letter-group.png"))

    # One entry in full.
    row = next(r for r in page.find_elements(By.CSS_SELECTOR, "#entries tr") if "7001" in r.text)
    row.find_element(By.CSS_SELECTOR, "a[href*='/dead-letters/']").click()
    _wait(page).until(ec.presence_of_element_located((By.ID, "entry-state")))
    entry_url = page.current_url
    entry_id = entry_url.rstrip("/").rsplit("/", 1)[-1]
    assert page.find_element(By.ID, "entry-state").text == "dead"
    assert '"customer_id": 5' in page.find_element(By.ID, "entry-event").text
    assert "HTTP 400" in page.find_element(By.ID, "entry-error").text
    _no_secrets(page, pipeline)

    # A bad patch: the preview names the problem, offers nothing to send, and changes nothing.
    page.find_element(By.ID, "patch").click()
    patch_box = _wait(page).until(ec.presence_of_element_located((By.ID, "patch-text")))
    patch_box.send_keys('{"customer_id": "seventy-seven"}')
    page.find_element(By.ID, "preview").click()
    failures = _wait(page).until(ec.presence_of_element_located((By.ID, "preview-failures")))
    assert "changes.customer_id" in failures.text
    assert page.find_elements(By.ID, "send") == []
    with _db(pipeline) as db:
        detail = db.get(entry_id)
        assert detail is not None and detail.state == "dead" and detail.audit == []
    assert pipeline.statuses(7001) == [400]

    # Not JSON at all: a clear message, nothing changes.
    patch_box = page.find_element(By.ID, "patch-text")
    patch_box.clear()
    patch_box.send_keys("{customer_id: 77")
    page.find_element(By.ID, "preview").click()
    problems = _wait(page).until(ec.presence_of_element_located((By.ID, "problems")))
    assert "not JSON" in problems.text

    # A good patch: previewed, then sent.
    patch_box = page.find_element(By.ID, "patch-text")
    patch_box.clear()
    patch_box.send_keys('{"customer_id": 77}')
    page.find_element(By.ID, "preview").click()
    summary = _wait(page).until(ec.presence_of_element_located((By.ID, "preview-summary")))
    assert "1 valid" in summary.text.replace("\n", " ")
    assert '"customer_id": 77' in page.find_element(By.CSS_SELECTOR, "pre.after").text
    page.find_element(By.ID, "send").click()
    _wait(page).until(ec.url_to_be(entry_url))
    assert "Replayed 1 entry" in page.find_element(By.CSS_SELECTOR, ".flashes").text
    assert page.find_element(By.ID, "entry-state").text == "replayed"

    # The order now holds the patched value.
    wait_for(
        lambda: pipeline.state.order(7001) == {"CustomerId": 77},
        WAIT,
        "order 7001 to hold the patched customer id",
    )
    assert pipeline.statuses(7001) == [400, 200]

    # The audit trail shows the replay, by whom, with the patch.
    page.get(entry_url)
    audit = page.find_element(By.ID, "entry-audit").text
    assert "alice" in audit and "replay" in audit and "customer_id" in audit
    with _db(pipeline) as db:
        [action] = db.get(entry_id).audit  # type: ignore[union-attr]
        assert action["user"] == "alice" and action["action"] == "replay"
        assert action["detail"]["patch"] == {"customer_id": 77}

    page.find_element(By.LINK_TEXT, "Audit trail").click()
    trail = _wait(page).until(ec.presence_of_element_located((By.ID, "audit"))).text
    assert "alice" in trail and "replay" in trail

    # The invalid event's entry shows no secret either.
    page.get(console.url + "dead-letters/list?reason=invalid_event")
    page.find_element(By.CSS_SELECTOR, "#entries td a[href*='/dead-letters/']").click()
    _wait(page).until(ec.presence_of_element_located((By.ID, "entry-event")))
    assert "***" in page.find_element(By.ID, "entry-event").text
    _no_secrets(page, pipeline)

    # The order's history, searched by order id.
    page.get(console.url + "orders/")
    page.find_element(By.NAME, "order_id").send_keys("7001")
    page.find_element(By.CSS_SELECTOR, "#history-form button").click()
    _wait(page).until(lambda d: "order_id=7001" in d.current_url)
    _reload_until(
        page,
        page.current_url,
        lambda d: (
            d.find_elements(By.ID, "history") and "applied" in d.find_element(By.ID, "history").text
        ),
        "order 7001's history to show it applied",
    )
    history = page.find_element(By.ID, "history").text
    assert "evt-console-rejected" in history
    _no_secrets(page, pipeline)
    page.save_screenshot(str(shots / "order-history.png"))


def _session(console: Console) -> tuple[requests.Session, str]:
    """A logged-in HTTP session and its CSRF token, as the browser would hold them."""
    session = requests.Session()
    login = session.get(console.url + "login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token is not None
    answer = session.post(
        console.url + "login",
        data={"csrf_token": token.group(1), "name": "bob", "password": CONSOLE_PASSWORD},
        headers={"Origin": console.url.rstrip("/")},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text
    # Logging in starts a new session, with a token of its own.
    after = re.search(
        r'name="csrf_token" value="([^"]+)"', session.get(console.url, timeout=30).text
    )
    assert after is not None
    return session, after.group(1)


def test_an_action_without_the_csrf_token_or_from_another_site_changes_nothing(
    pipeline: Pipeline, console: Console
) -> None:
    pipeline.start_worker()
    pipeline.publish_raw(json.dumps(make_event(7101, "evt-csrf", billing_address=US_ADDRESS)))
    session, token = _session(console)

    def entry_id() -> str | None:
        with _db(pipeline) as db:
            stored, _ = db.page()
        return stored[0].id if stored else None

    session.get(console.url + "dead-letters/", timeout=10)  # moves the entry into the database
    found = wait_for(entry_id, WAIT, "the entry in the database")
    origin = {"Origin": console.url.rstrip("/")}

    no_token = session.post(
        console.url + "actions/archive", data={"entry": found}, headers=origin, timeout=10
    )
    assert no_token.status_code == 400
    assert "Nothing was changed" in no_token.text
    wrong_token = session.post(
        console.url + "actions/archive",
        data={"entry": found, "csrf_token": token + "x"},
        headers=origin,
        timeout=10,
    )
    assert wrong_token.status_code == 400
    elsewhere = session.post(
        console.url + "actions/archive",
        data={"entry": found, "csrf_token": token},
        headers={"Origin": "http://attacker.example"},
        timeout=10,
    )
    assert elsewhere.status_code == 403
    with _db(pipeline) as db:
        detail = db.get(found)
        assert detail is not None and detail.state == "dead" and detail.audit == []

    # The same request with the token, from the console's own page, does change it.
    done = session.post(
        console.url + "actions/archive",
        data={"entry": found, "csrf_token": token},
        headers=origin,
        timeout=10,
        allow_redirects=False,
    )
    assert done.status_code == 302
    with _db(pipeline) as db:
        detail = db.get(found)
        assert detail is not None and detail.state == "archived"
        assert [(a["user"], a["action"]) for a in detail.audit] == [("bob", "archive")]


def test_pages_need_the_password_and_bad_input_changes_nothing(
    pipeline: Pipeline, console: Console
) -> None:
    anonymous = requests.get(console.url + "dead-letters/", timeout=10, allow_redirects=False)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    wrong = requests.Session()
    login = wrong.get(console.url + "login", timeout=10)
    token = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert token is not None
    refused = wrong.post(
        console.url + "login",
        data={"csrf_token": token.group(1), "name": "eve", "password": "guess"},
        timeout=10,
    )
    assert refused.status_code == 400 and "not the console" in refused.text

    session, token_value = _session(console)
    bad_filter = session.get(console.url + "dead-letters/list?order_id=abc", timeout=10)
    assert bad_filter.status_code == 400 and "is not a whole number" in bad_filter.text
    bad_history = session.get(console.url + "orders/?order_id=12x", timeout=10)
    assert bad_history.status_code == 400 and "is not a whole number" in bad_history.text
    nothing_ticked = session.post(
        console.url + "actions/replay",
        data={"csrf_token": token_value},
        headers={"Origin": console.url.rstrip("/")},
        timeout=10,
    )
    assert nothing_ticked.status_code == 400 and "No entry was ticked" in nothing_ticked.text
    with _db(pipeline) as db:
        assert db.audit() == []


def test_a_non_loopback_address_needs_a_password(pipeline: Pipeline) -> None:
    log = pipeline.tmp_path / "console-refused.log"
    process, url = run_console(console_env(pipeline, password=None), log, "--host", "0.0.0.0")  # noqa: S104 (refused)
    assert process.wait(timeout=30) == 2
    assert url is None
    message = log.read_text()
    assert "refusing to listen on 0.0.0.0" in message
    assert "ORDER_SYNC_CONSOLE_PASSWORD" in message

    env = console_env(pipeline, password=None)
    env["ORDER_SYNC_CONSOLE_PASSWORD_FILE"] = str(pipeline.tmp_path / "missing")
    process, url = run_console(env, log)
    assert process.wait(timeout=30) == 2
    assert "ORDER_SYNC_CONSOLE_PASSWORD_FILE cannot be read" in log.read_text()


def test_a_loopback_console_answers_only_to_loopback_names(pipeline: Pipeline) -> None:
    """Without a password, a page elsewhere cannot rebind its name to 127.0.0.1 and read it."""
    log = pipeline.tmp_path / "console-open.log"
    process, url = run_console(console_env(pipeline, password=None), log)
    try:
        assert url is not None, log.read_text()
        assert requests.get(url, timeout=30).status_code == 200
        rebound = requests.get(url, headers={"Host": "attacker.example"}, timeout=30)
        assert rebound.status_code == 421
    finally:
        process.terminate()
        process.wait(timeout=15)
