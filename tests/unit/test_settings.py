"""Configuration from the environment: defaults, and one message naming every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import ConfigError, api_settings, broker_settings, log_settings

GOOD = {
    "SELLERCLOUD_BASE_URL": "https://tt.api.sellercloud.com/rest/api/",
    "SELLERCLOUD_USERNAME": "integration@example.com",
    "SELLERCLOUD_PASSWORD": "pw",
}


def test_defaults() -> None:
    settings = api_settings(GOOD)
    assert settings.base_url == "https://tt.api.sellercloud.com/rest/api"
    assert (settings.max_retries, settings.retry_backoff, settings.retry_backoff_max) == (
        15,
        2,
        600,
    )
    assert settings.http_timeout == 30
    assert "pw" not in repr(settings)


def test_server_id_builds_the_base_url() -> None:
    env = {**GOOD, "SELLERCLOUD_SERVER_ID": "acme"}
    del env["SELLERCLOUD_BASE_URL"]
    assert api_settings(env).base_url == "https://acme.api.sellercloud.com/rest/api"


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    env = {**GOOD, "SELLERCLOUD_PASSWORD_FILE": str(secret)}
    del env["SELLERCLOUD_PASSWORD"]
    assert api_settings(env).password == "from-file"


def test_every_problem_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        api_settings({"ORDER_SYNC_MAX_RETRIES": "many", "ORDER_SYNC_HTTP_TIMEOUT": "-1"})
    message = str(caught.value)
    for name in (
        "SELLERCLOUD_BASE_URL",
        "SELLERCLOUD_USERNAME",
        "SELLERCLOUD_PASSWORD",
        "ORDER_SYNC_MAX_RETRIES",
        "ORDER_SYNC_HTTP_TIMEOUT",
    ):
        assert name in message


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8765/rest/api", True),
        ("http://localhost:8765/rest/api", True),
        ("http://[::1]:8765/rest/api", True),
        ("http://api.example.com/rest/api", False),
        ("ftp://api.example.com/rest/api", False),
        ("https://api.example.com/rest/api", True),
    ],
)
def test_plain_http_only_for_loopback(url: str, allowed: bool) -> None:
    env = {**GOOD, "SELLERCLOUD_BASE_URL": url}
    if allowed:
        assert api_settings(env).base_url == url
    else:
        with pytest.raises(ConfigError, match="https://"):
            api_settings(env)


def test_embedded_broker_when_no_url(tmp_path: Path) -> None:
    settings = broker_settings({"ORDER_SYNC_DATA_DIR": str(tmp_path)})
    assert settings.is_embedded
    assert settings.embedded_dir == tmp_path / "broker"
    assert not broker_settings({"CELERY_BROKER_URL": "amqp://guest@localhost//"}).is_embedded


def test_log_settings() -> None:
    assert log_settings({}).format is None
    assert log_settings({"ORDER_SYNC_LOG_FORMAT": "JSON"}).format == "json"
    with pytest.raises(ConfigError, match="ORDER_SYNC_LOG_LEVEL"):
        log_settings({"ORDER_SYNC_LOG_LEVEL": "loud"})


def test_fleet_settings_defaults_and_errors(tmp_path: Path) -> None:
    from worker.settings import fleet_settings

    fleet = fleet_settings({"ORDER_SYNC_DATA_DIR": str(tmp_path)})
    assert fleet.redis_url is None and fleet.store_path == tmp_path / "state.sqlite3"
    assert str(fleet.rate_limit) == "10800/3600s"
    assert fleet.dedup_window == 7 * 86400
    assert fleet_settings({"ORDER_SYNC_RATE_LIMIT": "0"}).rate_limit is None
    with pytest.raises(ConfigError, match="ORDER_SYNC_RATE_LIMIT"):
        fleet_settings({"ORDER_SYNC_RATE_LIMIT": "lots"})


def test_metrics_port() -> None:
    from worker.settings import metrics_port

    assert metrics_port({}) is None
    assert metrics_port({"ORDER_SYNC_METRICS_PORT": "9108"}) == 9108
    with pytest.raises(ConfigError, match="ORDER_SYNC_METRICS_PORT"):
        metrics_port({"ORDER_SYNC_METRICS_PORT": "99999"})
