"""Cross-references between the deployment files, which no schema sees.

A schema accepts a Deployment that mounts a Secret key nobody defines, or a Compose service that
depends on a renamed one; either fails only at deploy time. Likewise Prometheus loads an alert on
a misspelt metric without complaint, and it simply never fires. Run by deploy/check.sh:

    python deploy/check_refs.py compose|k8s|keda|alerts|dashboard|prometheus|metrics-doc

Prints each problem and exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.metrics import MetricWrapperBase

# Run as a script, Python puts deploy/ on the path, not the repository root with the worker package.
if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from worker.apply import retry
from worker.broker.topology import DEAD_LETTER_QUEUE, EVENT_QUEUES, TASKS_QUEUE
from worker.coordination import gate, orders
from worker.deadletter import reasons as deadletter
from worker.observability import metrics
from worker.sellercloud.client import ENDPOINTS

DEPLOY = Path(__file__).resolve().parent
K8S = DEPLOY / "k8s"
# Not applied by kustomize: the real Secret is created out of band.
PLACEHOLDER_FILE = "secret.example.yaml"
KUSTOMIZATION = "kustomization.yaml"
KEDA_FILE = "keda-scaledobject.yaml"


def load_docs(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def check_compose() -> Iterator[str]:
    compose = load_docs(DEPLOY / "compose.yaml")[0]
    services: dict[str, Any] = compose.get("services", {})
    secrets = set(compose.get("secrets") or {})
    volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target in service.get("depends_on") or {}:
            if target not in services:
                yield f"compose: {name} depends on undefined service {target!r}"
        build = service.get("build")
        if isinstance(build, dict):
            context = (DEPLOY / build.get("context", ".")).resolve()
            dockerfile = context / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                yield f"compose: {name} builds from {dockerfile}, which does not exist"
        for entry in service.get("env_file") or []:
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required"))
            )
            if required is not False and not (DEPLOY / path).is_file():
                yield f"compose: {name} needs env file {path}, which does not exist"
        for secret in service.get("secrets") or []:
            secret_name = secret if isinstance(secret, str) else secret["source"]
            if secret_name not in secrets:
                yield f"compose: {name} uses undeclared secret {secret_name!r}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")) and source not in volumes:
                yield f"compose: {name} uses undeclared volume {source!r}"


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: load_docs(path)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != KUSTOMIZATION
    }


def _of_kind(manifests: dict[str, list[dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [doc for docs in manifests.values() for doc in docs if doc.get("kind") == kind]


def _secret_keys(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    return {
        doc["metadata"]["name"]: set(doc.get("stringData") or {}) | set(doc.get("data") or {})
        for doc in _of_kind(manifests, "Secret")
    }


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_k8s() -> Iterator[str]:
    manifests = _manifests()
    kustomization = load_docs(K8S / KUSTOMIZATION)[0]
    listed = list(kustomization.get("resources") or [])
    for resource in listed:
        if not (K8S / resource).is_file():
            yield f"kustomization: lists {resource}, which does not exist"
    if PLACEHOLDER_FILE in listed:
        yield f"kustomization: must not list {PLACEHOLDER_FILE} (placeholder values)"
    for name in manifests:
        if name != PLACEHOLDER_FILE and name not in listed:
            yield f"kustomization: {name} is not listed, so it would never be applied"

    config_maps = {
        doc["metadata"]["name"]: doc.get("data") or {} for doc in _of_kind(manifests, "ConfigMap")
    }
    secrets = _secret_keys(manifests)
    image_names = {image["name"] for image in kustomization.get("images") or []}
    deployments = _of_kind(manifests, "Deployment")
    for deployment in deployments:
        yield from _check_deployment(deployment, config_maps, secrets, image_names)

    worker_labels = {
        doc["metadata"]["name"]: doc["spec"]["template"]["metadata"].get("labels", {})
        for doc in deployments
    }
    for pdb in _of_kind(manifests, "PodDisruptionBudget"):
        selector = pdb["spec"].get("selector", {}).get("matchLabels", {})
        if not any(_matches(selector, labels) for labels in worker_labels.values()):
            yield f"pdb {pdb['metadata']['name']}: its selector matches no Deployment's pods"


def _check_deployment(
    deployment: dict[str, Any],
    config_maps: dict[str, dict[str, str]],
    secrets: dict[str, set[str]],
    image_names: set[str],
) -> Iterator[str]:
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]
    selector = deployment["spec"].get("selector", {}).get("matchLabels", {})
    if not _matches(selector, pod["metadata"].get("labels", {})):
        yield f"{name}: spec.selector does not match the pod template's labels"
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    for volume in volumes.values():
        secret = volume.get("secret")
        if secret:
            yield from _secret_ref(
                name, secret["secretName"], [i["key"] for i in secret.get("items") or []], secrets
            )
    for container in pod["spec"]["containers"]:
        image = container["image"].rsplit(":", 1)[0]
        if image_names and image not in image_names:
            yield f"{name}: image {image!r} is not rewritten by kustomization.yaml images"
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("configMapRef")
            if ref and ref["name"] not in config_maps:
                yield f"{name}: envFrom names undefined ConfigMap {ref['name']!r}"
            elif ref:
                env.update(config_maps[ref["name"]])
        for variable in container.get("env") or []:
            ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                yield from _secret_ref(name, ref["name"], [ref["key"]], secrets)
        mounted: set[str] = set()
        for mount in container.get("volumeMounts") or []:
            volume = volumes.get(mount["name"])
            if volume is None:
                yield f"{name}: mounts undefined volume {mount['name']!r}"
                continue
            for item in (volume.get("secret") or {}).get("items") or []:
                mounted.add(f"{mount['mountPath'].rstrip('/')}/{item['path']}")
        # Only the worker talks to Sellercloud; beat never reads the password.
        is_worker = (container.get("args") or [""])[0] == "worker"
        password_file = env.get("SELLERCLOUD_PASSWORD_FILE")
        if is_worker and password_file and password_file not in mounted:
            yield f"{name}: SELLERCLOUD_PASSWORD_FILE={password_file} is not a mounted Secret file"


def _secret_ref(
    owner: str, secret: str, keys: list[str], secrets: dict[str, set[str]]
) -> Iterator[str]:
    if secret not in secrets:
        yield f"{owner}: refers to Secret {secret!r}, which {PLACEHOLDER_FILE} does not define"
        return
    for key in keys:
        if key not in secrets[secret]:
            yield f"{owner}: key {key!r} of Secret {secret!r} is missing in {PLACEHOLDER_FILE}"


def check_keda() -> Iterator[str]:
    manifests = _manifests()
    docs = manifests.get(KEDA_FILE, [])
    for doc in docs:
        if doc.get("apiVersion") != "keda.sh/v1alpha1":
            yield f"keda: {doc.get('kind')} has apiVersion {doc.get('apiVersion')!r}"
    auths = {
        doc["metadata"]["name"]: doc for doc in docs if doc.get("kind") == "TriggerAuthentication"
    }
    scaled = [doc for doc in docs if doc.get("kind") == "ScaledObject"]
    if not scaled:
        yield f"keda: {KEDA_FILE} holds no ScaledObject"
    deployments = {doc["metadata"]["name"] for doc in _of_kind(manifests, "Deployment")}
    secrets = _secret_keys(manifests)
    for auth_name, auth in auths.items():
        for ref in auth["spec"].get("secretTargetRef") or []:
            yield from _secret_ref(
                f"TriggerAuthentication {auth_name}", ref["name"], [ref["key"]], secrets
            )
    for obj in scaled:
        name = obj["metadata"]["name"]
        target = obj["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            yield f"keda: ScaledObject {name} scales {target!r}, which is no Deployment here"
        for trigger in obj["spec"].get("triggers") or []:
            meta = trigger.get("metadata") or {}
            if trigger.get("type") != "rabbitmq":
                continue
            if meta.get("mode") not in {"QueueLength", "MessageRate"}:
                yield f"keda: {name}: unknown rabbitmq trigger mode {meta.get('mode')!r}"
            if not isinstance(meta.get("value"), str) or not meta.get("queueName"):
                yield f"keda: {name}: rabbitmq trigger needs queueName and a string value"
            auth_ref = (trigger.get("authenticationRef") or {}).get("name")
            if "host" not in meta and auth_ref not in auths:
                yield f"keda: {name}: no host and no known authenticationRef ({auth_ref!r})"


# --- observability: alerts, dashboard, Prometheus configuration ---------------------------------

OBSERVABILITY = DEPLOY / "observability"
README = DEPLOY / "README.md"
ALERTS_FILE = OBSERVABILITY / "alerts.yaml"
DASHBOARD_FILE = OBSERVABILITY / "grafana-dashboard.json"
PROMETHEUS_FILE = OBSERVABILITY / "prometheus.yml"
SCRAPE_JOB = "order-sync"
DASHBOARD_UID = "order-sync"
DASHBOARD_SCHEMA_VERSION = 39
DATASOURCE_UID = "${DS_PROMETHEUS}"
SEVERITIES = {"critical", "warning"}
METRICS_SECTION = "Metrics and alerts"

# What the worker serves, from the worker's own declarations. For each label: its possible values,
# or a pattern where the set is open.
LabelValues = frozenset[str] | re.Pattern[str]
RETRY_REASONS = frozenset(retry.RETRY_REASONS)
DEAD_LETTER_REASONS = frozenset(deadletter.REASONS)
QUEUES = frozenset(queue.name for queue in (*EVENT_QUEUES, TASKS_QUEUE, DEAD_LETTER_QUEUE))
# The values of every label of metrics.ALL. Those the worker declares are imported; the others are
# literals at the call sites that set them (intake, apply, observe_api_call), copied here.
LABEL_VALUES: dict[MetricWrapperBase, dict[str, LabelValues]] = {
    metrics.EVENTS_SKIPPED: {"why": frozenset(metrics.SKIPPED_WHY)},
    metrics.RETRIES: {"reason": RETRY_REASONS},
    metrics.DEAD_LETTERS: {"reason": DEAD_LETTER_REASONS},
    metrics.API_DURATION: {
        "endpoint": frozenset(ENDPOINTS),
        "status": re.compile(rf"[1-5][0-9][0-9]|{metrics.NO_ANSWER}"),
    },
    metrics.TOKEN_FETCHES: {"outcome": frozenset(metrics.TOKEN_OUTCOMES)},
}
# Prometheus adds these to every scraped series; `up` carries nothing else.
TARGET_LABELS: dict[str, LabelValues] = {
    "job": frozenset({SCRAPE_JOB}),
    "instance": re.compile(r".+"),
}


def served(
    worker_metrics: Iterable[MetricWrapperBase],
) -> dict[str, tuple[str, dict[str, LabelValues]]]:
    """Every metric the worker serves, by the name the README lists: its type and labels.

    A label without values in LABEL_VALUES (or values for a label the metric lacks) is an error:
    the checks could not tell a typo from a new value.
    """
    found: dict[str, tuple[str, dict[str, LabelValues]]] = {
        metrics.QUEUE_MESSAGES: ("gauge", {"queue": QUEUES}),
        metrics.FLEET_PAUSED: ("gauge", {"kind": frozenset(gate.KINDS)}),
        metrics.FLEET_PAUSED_SECONDS: ("gauge", {}),
        metrics.DEAD_LETTERS_WAITING: ("gauge", {"reason": DEAD_LETTER_REASONS}),
        metrics.BACKLOG_ORDERS: ("gauge", {"lane": frozenset(orders.LANES)}),
        metrics.BACKLOG_EVENTS: ("gauge", {}),
        metrics.BACKLOG_DRAIN_SECONDS: ("gauge", {}),
    }
    for metric in worker_metrics:
        labels = LABEL_VALUES.get(metric, {})
        if set(labels) != set(metric._labelnames):
            raise ValueError(
                f"check_refs.py: LABEL_VALUES gives {metric._name} the labels {sorted(labels)}, "
                f"the worker {sorted(metric._labelnames)}"
            )
        kind = str(metric._type)
        if kind not in {"counter", "gauge", "histogram"}:
            raise ValueError(
                f"check_refs.py: does not know how a {kind} ({metric._name}) is served"
            )
        # prometheus_client serves a counter as <name>_total, and takes the name without it.
        found[metric._name + ("_total" if kind == "counter" else "")] = (kind, labels)
    return found


SERVED = served(metrics.ALL)
METRICS = {name: labels for name, (_, labels) in SERVED.items()}


# The RabbitMQ nodes' own series (rabbitmq_prometheus, aggregated metrics) that the rules may
# select, scraped by job "rabbitmq": the names are RabbitMQ's, listed here as the worker's are.
RABBITMQ_JOB = "rabbitmq"
RABBITMQ_TARGET_LABELS: dict[str, LabelValues] = {
    "job": frozenset({RABBITMQ_JOB}),
    "instance": re.compile(r".+"),
}
RABBITMQ_SERIES: dict[str, dict[str, LabelValues]] = {
    name: dict(RABBITMQ_TARGET_LABELS)
    for name in (
        "rabbitmq_alarms_memory_used_watermark",
        "rabbitmq_alarms_free_disk_space_watermark",
        "rabbitmq_identity_info",
        "rabbitmq_queues",
        "rabbitmq_raft_term_total",
    )
}


def _series() -> dict[str, dict[str, LabelValues]]:
    """Every series name an expression may select, with its labels.

    A histogram exists only as its _bucket, _count and _sum series, so its bare name is not one,
    and a counter never has those suffixes.
    """
    series: dict[str, dict[str, LabelValues]] = {"up": dict(TARGET_LABELS)}
    for name, (kind, own) in SERVED.items():
        labels = {**own, **TARGET_LABELS}
        if kind == "histogram":
            series[f"{name}_bucket"] = {**labels, "le": re.compile(r".+")}
            series[f"{name}_count"] = labels
            series[f"{name}_sum"] = labels
        else:
            series[name] = labels
    return series


SERIES = _series()
# What a rule or panel may select: the worker's series, and the RabbitMQ nodes' (with `up` for
# either job).
SELECTABLE: dict[str, dict[str, LabelValues]] = {
    **SERIES,
    **RABBITMQ_SERIES,
    "up": {**TARGET_LABELS, "job": frozenset({SCRAPE_JOB, RABBITMQ_JOB})},
}

# Grafana replaces its interval variables before Prometheus sees a query; for the parser any
# duration will do. Quoted strings are matched first so that they are left as they are.
GRAFANA_INTERVAL = re.compile(
    r"""("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
    r"|\$(?:__(?:rate_interval|interval|range)\b|\{__(?:rate_interval|interval|range)\})"
)


def _selector_problems(selector: promql_parser.VectorSelector) -> Iterator[str]:
    name = selector.name
    if name is None:
        yield f"a selector without a metric name: {selector}"
        return
    if name not in SELECTABLE:
        yield f"unknown metric {name}"
        return
    if selector.matchers.or_matchers:
        # The parser accepts MetricsQL's `or` between matchers; Prometheus does not.
        yield f"{name}: `or` between label matchers is not PromQL"
        return
    labels = SELECTABLE[name]
    # The parser rejects __name__ beside a metric name, so every matcher here is a label's.
    for matcher in selector.matchers.matchers:
        label, value = matcher.name, matcher.value
        if label not in labels:
            yield f"{name} has no label {label!r} (it has: {', '.join(sorted(labels))})"
            continue
        known = labels[label]
        if matcher.op in (promql_parser.MatchOp.Equal, promql_parser.MatchOp.NotEqual):
            ok = bool(known.fullmatch(value)) if isinstance(known, re.Pattern) else value in known
            if not ok:
                yield f"{name}: {label}={value!r} is not a value the worker sets"
            continue
        try:
            pattern = re.compile(value)
        except re.error:
            continue  # valid for Prometheus (the parser checked it), beyond Python's re
        # Prometheus anchors label regexes; one matching no known value is surely a typo.
        if isinstance(known, frozenset) and not any(pattern.fullmatch(v) for v in known):
            yield f"{name}: {matcher} matches none of {', '.join(sorted(known))}"


def promql_problems(expr: str) -> Iterator[str]:
    """What is wrong with one expression: syntax and unknown functions (found by the parser),
    unknown series, labels or values."""
    if not expr.strip():
        yield "empty expression"
        return
    try:
        tree = promql_parser.parse(GRAFANA_INTERVAL.sub(lambda m: m.group(1) or "1m", expr))
    except ValueError as error:
        yield f"{expr!r} is not valid PromQL: {error}"
        return
    selectors: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            selectors.append(node)

    promql_parser.walk(tree, visit)
    for selector in selectors:
        yield from _selector_problems(selector)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (code blocks left out)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = ""
    for line in markdown.splitlines():
        marker = re.match(r"\s*(```|~~~)", line)
        if marker:
            fence = "" if fence == marker.group(1) else fence or marker.group(1)
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fence or not heading:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
        text = re.sub(r"[`*]", "", text).lower()
        slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(f"{slug}-{count}" if count else slug)
    return anchors


DURATION = re.compile(r"(?:\d+(?:ms|[smhdwy]))+")
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
RUNBOOK = re.compile(r"deploy/README\.md#([a-z0-9_-]+)")


def _load_yaml_file(path: Path) -> tuple[Any, str | None]:
    try:
        with path.open(encoding="utf-8") as handle:
            return yaml.safe_load(handle), None
    except (OSError, yaml.YAMLError) as error:
        return None, f"{path.name}: cannot be read as YAML: {error}"


def check_alerts() -> Iterator[str]:
    rules_file, error = _load_yaml_file(ALERTS_FILE)
    if error:
        yield error
        return
    groups = rules_file.get("groups") if isinstance(rules_file, dict) else None
    if not isinstance(groups, list) or not groups:
        yield "alerts.yaml: no groups"
        return
    anchors = github_anchors(README.read_text(encoding="utf-8"))
    names: set[str] = set()
    for group in groups:
        rules = group.get("rules") if isinstance(group, dict) else None
        if not isinstance(rules, list) or not rules or not group.get("name"):
            yield f"alerts.yaml: group {group!r} needs a name and rules"
            continue
        for rule in rules:
            yield from _check_rule(rule, anchors, names)


def _check_rule(rule: Any, anchors: set[str], names: set[str]) -> Iterator[str]:
    if not isinstance(rule, dict) or "alert" not in rule:
        yield f"alerts.yaml: {rule!r} is not an alerting rule"
        return
    name = rule["alert"]
    where = f"alerts.yaml: {name}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", name):
        yield f"{where}: the alert name must be a valid metric name"
    if name in names:
        yield f"{where}: defined twice"
    names.add(name)
    if set(rule) - RULE_KEYS:
        yield f"{where}: unknown keys {sorted(set(rule) - RULE_KEYS)}"
    expr = rule.get("expr")
    if not isinstance(expr, str) or not expr.strip():
        yield f"{where}: no expr"
    else:
        yield from (f"{where}: {problem}" for problem in promql_problems(expr))
    # Without `for`, one bad scrape pages; the duration is also what Prometheus parses.
    if not isinstance(rule.get("for"), str) or not DURATION.fullmatch(rule["for"]):
        yield f"{where}: `for` must be a duration such as 5m, not {rule.get('for')!r}"
    labels = rule.get("labels") or {}
    if labels.get("severity") not in SEVERITIES:
        yield f"{where}: labels.severity must be one of {sorted(SEVERITIES)}"
    annotations = rule.get("annotations") or {}
    for key, value in {**labels, **annotations}.items():
        if not isinstance(value, str):
            yield f"{where}: {key} must be a string, not {value!r}"
    if not str(annotations.get("summary", "")).strip():
        yield f"{where}: no annotations.summary"
    runbook = RUNBOOK.fullmatch(str(annotations.get("runbook", "")))
    if not runbook:
        yield f"{where}: annotations.runbook must be deploy/README.md#<section>"
    elif runbook.group(1) not in anchors:
        yield f"{where}: runbook anchor #{runbook.group(1)} is no heading in deploy/README.md"


def _dashboard_panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        # A collapsed row keeps its panels inside it.
        yield from _dashboard_panels(panel.get("panels") or [])


def check_dashboard() -> Iterator[str]:
    try:
        dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        yield f"{DASHBOARD_FILE.name}: cannot be read as JSON: {error}"
        return
    where = DASHBOARD_FILE.name
    if dashboard.get("uid") != DASHBOARD_UID:
        yield f"{where}: uid must be {DASHBOARD_UID!r}; links and provisioning rely on it"
    if dashboard.get("schemaVersion") != DASHBOARD_SCHEMA_VERSION:
        yield f"{where}: schemaVersion must be {DASHBOARD_SCHEMA_VERSION}"
    inputs = {entry.get("name"): entry for entry in dashboard.get("__inputs") or []}
    if (inputs.get("DS_PROMETHEUS") or {}).get("pluginId") != "prometheus":
        yield f"{where}: needs a Prometheus datasource input named DS_PROMETHEUS"
    ids: set[Any] = set()
    panels = list(_dashboard_panels(dashboard.get("panels") or []))
    if not panels:
        yield f"{where}: no panels"
    for panel in panels:
        title = f"{where}: panel {panel.get('id')} ({panel.get('title')!r})"
        if not isinstance(panel.get("id"), int) or panel["id"] in ids:
            yield f"{title}: needs an integer id of its own"
        ids.add(panel.get("id"))
        grid = panel.get("gridPos") or {}
        if not 0 < grid.get("w", 0) <= 24 - grid.get("x", 0) or grid.get("h", 0) <= 0:
            yield f"{title}: gridPos {grid} does not fit the 24-column grid"
        # A row is a heading between panels and has no query of its own.
        if panel.get("type") == "row":
            continue
        if (panel.get("datasource") or {}).get("uid") != DATASOURCE_UID:
            yield f"{title}: datasource must be {DATASOURCE_UID}, the import input"
        targets = panel.get("targets") or []
        if not any(str(target.get("expr", "")).strip() for target in targets):
            yield f"{title}: no target with an expr"
        ref_ids = [target.get("refId") for target in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            yield f"{title}: every target needs a refId of its own"
        for target in targets:
            datasource = target.get("datasource")
            if datasource is not None and datasource.get("uid") != DATASOURCE_UID:
                yield f"{title}: target {target.get('refId')} uses another datasource"
            for problem in promql_problems(str(target.get("expr", ""))):
                yield f"{title}: target {target.get('refId')}: {problem}"


def check_prometheus() -> Iterator[str]:
    config, error = _load_yaml_file(PROMETHEUS_FILE)
    if error:
        yield error
        return
    where = PROMETHEUS_FILE.name
    rule_files = config.get("rule_files") or []
    for rule_file in rule_files:
        if not (PROMETHEUS_FILE.parent / rule_file).is_file():
            yield f"{where}: rule file {rule_file} does not exist next to it"
    if ALERTS_FILE.name not in rule_files:
        yield f"{where}: does not load {ALERTS_FILE.name}"
    jobs = {job.get("job_name"): job for job in config.get("scrape_configs") or []}
    job = jobs.get(SCRAPE_JOB)
    if job is None:
        yield f"{where}: no scrape job {SCRAPE_JOB!r}, which the alerts select"
        return
    port = _env_example().get("ORDER_SYNC_METRICS_PORT")
    targets = [t for static in job.get("static_configs") or [] for t in static.get("targets") or []]
    if not targets:
        yield f"{where}: job {SCRAPE_JOB} has no targets"
    for target in targets:
        if target.rpartition(":")[2] != port:
            yield f"{where}: target {target} is not on ORDER_SYNC_METRICS_PORT ({port})"


def _env_example() -> dict[str, str]:
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    return dict(re.findall(r"^([A-Z][A-Z0-9_]+)=(.*)$", text, re.MULTILINE))


def check_metrics_doc() -> Iterator[str]:
    readme = README.read_text(encoding="utf-8")
    section = re.search(
        rf"^## {re.escape(METRICS_SECTION)}\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL
    )
    if not section:
        yield f"README.md: no '## {METRICS_SECTION}' section"
        return
    listed = set(re.findall(r"^\| `([a-z_:]+)(?:\{[^`]*\})?` \|", section.group(1), re.MULTILINE))
    for name in sorted(set(METRICS) - listed):
        yield f"README.md: metric {name} is missing from the table in '{METRICS_SECTION}'"
    for name in sorted(listed - set(METRICS)):
        yield f"README.md: the table lists {name}, which the worker does not serve"
    if "ORDER_SYNC_METRICS_PORT" not in section.group(1):
        yield f"README.md: '{METRICS_SECTION}' does not say how to enable the metrics"


CHECKS: dict[str, Callable[[], Iterator[str]]] = {
    "compose": check_compose,
    "k8s": check_k8s,
    "keda": check_keda,
    "alerts": check_alerts,
    "dashboard": check_dashboard,
    "prometheus": check_prometheus,
    "metrics-doc": check_metrics_doc,
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: check_refs.py {'|'.join(CHECKS)}", file=sys.stderr)
        return 2
    problems = list(CHECKS[argv[0]]())
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
