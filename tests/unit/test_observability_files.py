"""deploy/observability/: the alert rules, the Grafana dashboard and the Prometheus example.

Prometheus and Grafana accept expressions on metrics that do not exist and simply show nothing,
so deploy/check_refs.py checks every name against the metrics the worker serves. These tests run
those checks on the real files, and on broken copies to show that each check can fail.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OBSERVABILITY = DEPLOY / "observability"
SUBCOMMANDS = ("alerts", "dashboard", "prometheus", "metrics-doc")


def load_check_refs() -> ModuleType:
    # deploy/ is no package: load the script by path, as check.sh runs it.
    spec = importlib.util.spec_from_file_location("check_refs", DEPLOY / "check_refs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_refs = load_check_refs()


def run_check(deploy: Path, subcommand: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(deploy / "check_refs.py"), subcommand],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    )


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    # A fixture that no longer matches would leave the file intact and the test meaningless.
    assert old in text, f"{old!r} not found in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture
def deploy_copy(tmp_path: Path) -> Path:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    return tmp_path / "deploy"


def alert_rules() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text(encoding="utf-8"))
    return {rule["alert"]: rule for group in data["groups"] for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text(encoding="utf-8"))
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets") or []
        if target.get("expr")
    ]


# --- the checks pass on the real files --------------------------------------------------------


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_check_passes(subcommand: str) -> None:
    result = run_check(DEPLOY, subcommand)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_check_script_runs_the_observability_checks(deploy_copy: Path) -> None:
    script = ["bash", str(DEPLOY / "check.sh")]
    env = {**os.environ, "VENV": sys.prefix}
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=110)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for line in (
        "ok    alert rules",
        "ok    Grafana dashboard",
        "ok    Prometheus example configuration",
        "ok    metrics table in deploy/README.md",
    ):
        assert line in output, output
    # Where promtool exists it must be used, not skipped.
    expected = "ok    promtool" if shutil.which("promtool") else "skip  promtool"
    assert expected in output, output

    replace_once(deploy_copy / "observability" / "alerts.yaml", "for: 1h", "for: an hour")
    replace_once(deploy_copy / "observability" / "grafana-dashboard.json", '"id": 3,', '"id": 2,')
    script = ["bash", str(deploy_copy / "check.sh")]
    result = subprocess.run(script, capture_output=True, text=True, env=env, timeout=110)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAIL  alert rules" in output
    assert "`for` must be a duration" in output
    assert "FAIL  Grafana dashboard" in output
    assert "deploy checks failed" in output


# --- each check fails on a broken copy --------------------------------------------------------

ALERTS = "observability/alerts.yaml"
DASHBOARD = "observability/grafana-dashboard.json"
PROMETHEUS = "observability/prometheus.yml"
README = "README.md"

BROKEN = [
    pytest.param(
        ALERTS,
        'order_sync_token_fetches_total{outcome="failed"}',
        'order_sync_token_fetch_total{outcome="failed"}',
        "alerts",
        "unknown metric order_sync_token_fetch_total",
        id="alert-unknown-metric",
    ),
    pytest.param(
        README,
        "#### API errors\n",
        "#### API failures\n",
        "alerts",
        "runbook anchor #api-errors is no heading in deploy/README.md",
        id="alert-runbook-anchor-missing",
    ),
    pytest.param(
        ALERTS,
        "runbook: deploy/README.md#rate-limit-pauses",
        "runbook: https://wiki.example/rate-limit-pauses",
        "alerts",
        "OrderSyncRateLimited: annotations.runbook must be deploy/README.md#<section>",
        id="alert-runbook-elsewhere",
    ),
    pytest.param(
        ALERTS,
        "        for: 1m\n",
        "",
        "alerts",
        "OrderSyncDeadLetters: `for` must be a duration",
        id="alert-without-for",
    ),
    pytest.param(
        ALERTS,
        "severity: warning",
        "severity: page-me",
        "alerts",
        "OrderSyncDeadLetters: labels.severity must be one of",
        id="alert-unknown-severity",
    ),
    pytest.param(
        ALERTS,
        '          summary: "Sellercloud answered 429 and the fleet paused"\n',
        "",
        "alerts",
        "OrderSyncRateLimited: no annotations.summary",
        id="alert-without-summary",
    ),
    pytest.param(
        ALERTS,
        '{kind="credentials"}',
        '{kind="credential"}',
        "alerts",
        "kind='credential' is not a value the worker sets",
        id="alert-unknown-label-value",
    ),
    pytest.param(
        ALERTS,
        '{queue=~"order-sync\\\\.(events|tasks)"}',
        '{queue=~"order-sync\\\\.(event|task)"}',
        "alerts",
        "matches none of",
        id="alert-regex-matching-no-queue",
    ),
    pytest.param(
        ALERTS,
        'order_sync_token_fetches_total{outcome="ok"}',
        'order_sync_token_fetches_total{result="ok"}',
        "alerts",
        "order_sync_token_fetches_total has no label 'result'",
        id="alert-unknown-label",
    ),
    pytest.param(
        ALERTS,
        "increase(order_sync_events_applied_total[15m])",
        "increase(order_sync_events_applied_total_count[15m])",
        "alerts",
        "unknown metric order_sync_events_applied_total_count",
        id="alert-suffix-on-a-counter",
    ),
    pytest.param(
        ALERTS,
        "sum(increase(order_sync_rate_limit_pauses_total[15m])) > 0",
        "sum(increse(order_sync_rate_limit_pauses_total[15m])) > 0",
        "alerts",
        "unknown function with name 'increse'",
        id="alert-unknown-function",
    ),
    pytest.param(
        ALERTS,
        "sum(increase(order_sync_rate_limit_pauses_total[15m])) > 0",
        "sum(increase(order_sync_rate_limit_pauses_total[15m]) > 0",
        "alerts",
        "unclosed left parenthesis",
        id="alert-unbalanced",
    ),
    pytest.param(
        ALERTS,
        "alert: OrderSyncWorkerNotScraped",
        "alert: OrderSyncNoWorkerScraped",
        "alerts",
        "OrderSyncNoWorkerScraped: defined twice",
        id="alert-duplicate-name",
    ),
    pytest.param(
        ALERTS,
        "groups:\n",
        "groups:\n  - [\n",
        "alerts",
        "alerts.yaml: cannot be read as YAML",
        id="alerts-not-yaml",
    ),
    pytest.param(
        DASHBOARD,
        "order_sync_stale_fields_total",
        "order_sync_stale_field_total",
        "dashboard",
        "unknown metric order_sync_stale_field_total",
        id="dashboard-unknown-metric",
    ),
    pytest.param(
        DASHBOARD,
        "order_sync_api_request_duration_seconds_bucket",
        "order_sync_api_request_duration_seconds",
        "dashboard",
        "unknown metric order_sync_api_request_duration_seconds",
        id="dashboard-histogram-without-suffix",
    ),
    pytest.param(
        DASHBOARD,
        '"id": 5,',
        '"id": 4,',
        "dashboard",
        "panel 4 ('Queue depths'): needs an integer id of its own",
        id="dashboard-duplicate-panel-id",
    ),
    pytest.param(
        DASHBOARD,
        '"expr": "max by (queue) (order_sync_queue_messages)"',
        '"expr": ""',
        "dashboard",
        "panel 5 ('Queue depths'): no target with an expr",
        id="dashboard-panel-without-expr",
    ),
    pytest.param(
        DASHBOARD,
        '"uid": "order-sync"',
        '"uid": "ordersync"',
        "dashboard",
        "uid must be 'order-sync'",
        id="dashboard-uid",
    ),
    pytest.param(
        DASHBOARD,
        '"schemaVersion": 39',
        '"schemaVersion": 27',
        "dashboard",
        "schemaVersion must be 39",
        id="dashboard-schema-version",
    ),
    pytest.param(
        DASHBOARD,
        '"name": "DS_PROMETHEUS"',
        '"name": "DS_PROM"',
        "dashboard",
        "needs a Prometheus datasource input named DS_PROMETHEUS",
        id="dashboard-datasource-input",
    ),
    pytest.param(
        DASHBOARD,
        '"panels": [',
        '"panels": [[',
        "dashboard",
        "cannot be read as JSON",
        id="dashboard-not-json",
    ),
    pytest.param(
        PROMETHEUS,
        "job_name: order-sync",
        "job_name: workers",
        "prometheus",
        "no scrape job 'order-sync'",
        id="prometheus-job-renamed",
    ),
    pytest.param(
        PROMETHEUS,
        "  - alerts.yaml",
        "  - rules/alerts.yaml",
        "prometheus",
        "rule file rules/alerts.yaml does not exist",
        id="prometheus-rule-file-missing",
    ),
    pytest.param(
        PROMETHEUS,
        '"worker-2.example.internal:9108"',
        '"worker-2.example.internal:9100"',
        "prometheus",
        "worker-2.example.internal:9100 is not on ORDER_SYNC_METRICS_PORT (9108)",
        id="prometheus-wrong-port",
    ),
    pytest.param(
        README,
        "| `order_sync_rate_limit_pauses_total` |",
        "| `order_sync_rate_limit_pause_total` |",
        "metrics-doc",
        "metric order_sync_rate_limit_pauses_total is missing from the table",
        id="readme-table-missing-metric",
    ),
]


@pytest.mark.parametrize(("file", "old", "new", "subcommand", "message"), BROKEN)
def test_check_fails_on_broken_copy(
    deploy_copy: Path, file: str, old: str, new: str, subcommand: str, message: str
) -> None:
    replace_once(deploy_copy / file, old, new)
    result = run_check(deploy_copy, subcommand)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert message in output, output


def test_yamllint_covers_the_observability_files(deploy_copy: Path) -> None:
    replace_once(
        deploy_copy / "observability" / "prometheus.yml",
        "  scrape_interval: 30s",
        "   scrape_interval: 30s",
    )
    yamllint = Path(sys.prefix) / "bin" / "yamllint"
    config = deploy_copy / ".yamllint.yaml"
    result = subprocess.run(
        [str(yamllint), "-s", "-c", str(config), str(deploy_copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stdout
    assert "observability/prometheus.yml" in result.stdout


# --- the expression check itself ---------------------------------------------------------------


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(order_sync_events_applied_total[5m])) by (le)",
        'up{job="order-sync"} == 0 and on (instance) up offset 1h',
        "histogram_quantile(0.9, sum without (instance) "
        '(rate(order_sync_api_request_duration_seconds_bucket{status=~"5.."}[$__rate_interval])))',
        "delta(max(order_sync_queue_messages)[15m:1m]) > 0",
        'count_values("queue", order_sync_queue_messages)',
        'order_sync_dead_letters_total{reason!="invalid_json",}',
        'order_sync_api_request_duration_seconds_sum{endpoint="token", status="error"}',
        "sum(rate(order_sync_retries_total[${__rate_interval}]))",
    ],
)
def test_promql_accepts(expr: str) -> None:
    assert list(check_refs.promql_problems(expr)) == []


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ('{__name__="order_sync_events_applied_total"}', "a selector without a metric name"),
        ("order_sync_api_request_duration_seconds", "unknown metric"),
        ('order_sync_retries_total{why="stale"}', "has no label 'why'"),
        ('order_sync_retries_total{reason="timeout"}', "not a value the worker sets"),
        ('order_sync_api_request_duration_seconds_count{status="2000"}', "not a value"),
        ('order_sync_queue_messages{queue=~"order-sync\\.events"}', "is not valid PromQL"),
        ('order_sync_queue_messages{queue=~"("}', "is not valid PromQL: illegal regex"),
        ('order_sync_queue_messages{queue!~"events"}', "matches none of"),
        ("order_sync_events_applied_total)", "unexpected right parenthesis ')'"),
        ("order_sync_events_applied_total ; 1", "unexpected character: ';'"),
        ("increse(order_sync_events_applied_total[5m])", "unknown function with name 'increse'"),
        ('up{__name__="up"}', "metric name must not be set twice"),
        ('up{job="order-sync" or instance="a:9108"}', "`or` between label matchers is not PromQL"),
        ("rate(order_sync_events_applied_total[$__interval_ms])", "is not valid PromQL"),
        ("", "empty expression"),
    ],
)
def test_promql_rejects(expr: str, problem: str) -> None:
    problems = list(check_refs.promql_problems(expr))
    assert any(problem in found for found in problems), problems


def test_github_anchors() -> None:
    markdown = (
        "# Top\n## Dead-letter operations (`order-sync dlq`)\n### API errors\n"
        "```console\n# not a heading\n```\n### API errors\n#### Rate-limit pauses ##\n"
    )
    assert check_refs.github_anchors(markdown) == {
        "top",
        "dead-letter-operations-order-sync-dlq",
        "api-errors",
        "api-errors-1",
        "rate-limit-pauses",
    }


# --- what the files must keep -----------------------------------------------------------------


def test_alerts_cover_what_operators_rely_on() -> None:
    rules = alert_rules()
    dead_letters = rules["OrderSyncDeadLetters"]
    assert "increase(order_sync_dead_letters_total[15m])" in dead_letters["expr"]
    growing = rules["OrderSyncDeadLetterQueueGrowing"]
    assert "order_sync_dead_letters_waiting" in growing["expr"]
    assert growing["for"] == "1h"
    assert growing["labels"]["severity"] == "critical"
    waiting = rules["OrderSyncEventsWaiting"]
    assert "order_sync_events_applied_total" in waiting["expr"]
    assert waiting["for"] == "15m"
    assert 'outcome="failed"' in rules["OrderSyncTokenFetchFailing"]["expr"]
    api_errors = rules["OrderSyncApiErrors"]
    assert "order_sync_api_request_duration_seconds_count" in api_errors["expr"]
    assert re.search(r'status=~"5\.\.', api_errors["expr"])
    assert api_errors["for"] == "10m"
    assert "order_sync_rate_limit_pauses_total" in rules["OrderSyncRateLimited"]["expr"]
    assert rules["OrderSyncNoWorkerScraped"]["expr"].startswith('absent(up{job="order-sync"}')
    assert rules["OrderSyncWorkerNotScraped"]["expr"] == 'up{job="order-sync"} == 0'


QUEUE_DEPTH_TAKEN_AS = re.compile(r"(?:max|min|absent)(?:\s+by\s*\([^)]*\))?\s*\(\s*$")


def queue_depth_summed(expr: str) -> bool:
    """Whether any use of order_sync_queue_messages is not directly under max, min or absent."""
    return any(
        not QUEUE_DEPTH_TAKEN_AS.search(expr[: use.start()])
        for use in re.finditer(r"order_sync_queue_messages", expr)
    )


def test_queue_depth_is_never_summed_over_workers() -> None:
    # Every worker reports the same depth; a sum would multiply it by the number of workers.
    assert queue_depth_summed("sum by (queue) (order_sync_queue_messages)")
    assert queue_depth_summed("order_sync_queue_messages > 0")
    exprs = [rule["expr"] for rule in alert_rules().values()] + dashboard_exprs()
    assert any("order_sync_queue_messages" in expr for expr in exprs)
    for expr in exprs:
        assert not queue_depth_summed(expr), expr


def test_dashboard_shows_every_metric() -> None:
    used = " ".join(dashboard_exprs())
    for name in check_refs.METRICS:
        assert name in used, f"no dashboard panel shows {name}"
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, endpoint)" in used


# --- what the worker serves is what the files may name ----------------------------------------


def exposed_series(tmp_path: Path) -> dict[str, dict[str, set[str]]]:
    """Every series a worker exposes, with the values of each label: metrics.ALL as
    prometheus_client serves it (each labelled metric touched once, with a dummy value), the
    queue depths, asked of an embedded broker, and the fleet's gate, read from its store."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from worker.coordination.backlog import backlog_report
    from worker.coordination.gate import FleetGate, GateSettings
    from worker.coordination.orders import OrderCoordinator
    from worker.coordination.sqlite_store import SqliteStore
    from worker.observability import metrics
    from worker.observability.endpoint import (
        BacklogCollector,
        DeadLetterCollector,
        FleetGateCollector,
        QueueDepthCollector,
    )
    from worker.settings import broker_settings, fleet_settings

    registry = CollectorRegistry()
    for metric in metrics.ALL:
        registry.register(metric)
    broker = broker_settings({"ORDER_SYNC_DATA_DIR": str(tmp_path)})
    registry.register(QueueDepthCollector(broker))
    fleet = fleet_settings({"ORDER_SYNC_DATA_DIR": str(tmp_path)})
    store = SqliteStore(str(fleet.store_path))
    gate = FleetGate(store, GateSettings(5, 30.0))
    registry.register(FleetGateCollector(gate.state))
    coordinator = OrderCoordinator(store, 60.0, 30.0)
    registry.register(BacklogCollector(lambda: backlog_report(coordinator, fleet.rate_limit)))
    registry.register(DeadLetterCollector(lambda: {}))
    labelled = [metric for metric in metrics.ALL if metric._labelnames]
    for metric in labelled:
        metric.labels(*["dummy"] * len(metric._labelnames))
    try:
        text = generate_latest(registry).decode()
    finally:
        for metric in labelled:
            metric.remove(*["dummy"] * len(metric._labelnames))
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = series.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return series


def test_the_series_the_checks_allow_are_those_a_worker_exposes(tmp_path: Path) -> None:
    exposed = exposed_series(tmp_path)
    # _created: when a counter was created; no rule or panel needs it (multiprocess mode drops it).
    names = {name for name in exposed if not name.endswith("_created")}
    assert names == set(check_refs.SERIES) - {"up"}
    for name in names:
        expected = set(check_refs.SERIES[name]) - set(check_refs.TARGET_LABELS)
        assert set(exposed[name]) == expected, name
    # The queue names are the ones the broker is really asked about.
    queues = check_refs.SERIES["order_sync_queue_messages"]["queue"]
    assert exposed["order_sync_queue_messages"]["queue"] == set(queues)
    kinds = check_refs.SERIES["order_sync_fleet_paused"]["kind"]
    assert exposed["order_sync_fleet_paused"]["kind"] == set(kinds)
    reasons = check_refs.SERIES["order_sync_dead_letters_waiting"]["reason"]
    assert exposed["order_sync_dead_letters_waiting"]["reason"] == set(reasons)
    lanes = check_refs.SERIES["order_sync_backlog_orders"]["lane"]
    assert exposed["order_sync_backlog_orders"]["lane"] == set(lanes)


def test_a_metric_the_worker_gains_must_reach_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from worker.observability import metrics

    gained = Counter(
        "order_sync_widgets", "A metric the worker gains.", registry=CollectorRegistry()
    )
    assert list(check_refs.promql_problems("order_sync_widgets_total")) == [
        "unknown metric order_sync_widgets_total"
    ]
    monkeypatch.setattr(metrics, "ALL", (*metrics.ALL, gained))
    refs = load_check_refs()
    assert list(refs.promql_problems("rate(order_sync_widgets_total[5m])")) == []
    assert list(refs.promql_problems("order_sync_widgets")) == ["unknown metric order_sync_widgets"]
    assert list(refs.check_metrics_doc()) == [
        f"README.md: metric order_sync_widgets_total is missing from the table in "
        f"'{refs.METRICS_SECTION}'"
    ]
    used = " ".join(dashboard_exprs())
    assert [name for name in refs.METRICS if name not in used] == ["order_sync_widgets_total"]


def test_a_label_the_worker_gains_needs_its_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import CollectorRegistry, Counter

    from worker.observability import metrics

    gained = Counter("order_sync_widgets", "Widgets.", ["colour"], registry=CollectorRegistry())
    monkeypatch.setattr(metrics, "ALL", (*metrics.ALL, gained))
    with pytest.raises(
        ValueError, match=r"order_sync_widgets the labels \[\], the worker \['colour'\]"
    ):
        load_check_refs()
