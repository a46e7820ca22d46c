"""The deployment files under deploy/: their checks pass, and they agree with the code and README.

Docker, Kubernetes and systemd cannot run here, so deploy/check.sh validates the files statically;
these tests run it and pin the facts the files must keep as the project changes.
"""

from __future__ import annotations

import configparser
import contextlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from worker import settings
from worker.broker.topology import EVENTS_QUEUE, TASKS_QUEUE

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"

# Named in env.example ahead of the feature that will read it.
UPCOMING_SETTINGS = {"ORDER_SYNC_METRICS_PORT"}
DEFAULT_HTTP_TIMEOUT = 30


def run_check_script(root: Path) -> subprocess.CompletedProcess[str]:
    # VENV names this interpreter's environment, so the script finds its tools from a copy too.
    env = {**os.environ, "VENV": sys.prefix}
    return subprocess.run(
        ["bash", str(root / "deploy" / "check.sh")],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
        timeout=110,
    )


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def only_doc(path: Path, kind: str) -> dict[str, Any]:
    docs = [doc for doc in load_yaml(path) if doc.get("kind") == kind]
    assert len(docs) == 1, f"{path.name}: expected one {kind}, found {len(docs)}"
    return docs[0]


def readme_settings() -> set[str]:
    """The variables in the README's configuration table."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Configuration\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Configuration' section"
    names = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", match.group(1), re.MULTILINE))
    assert "CELERY_BROKER_URL" in names, "the configuration table was not found or not parsed"
    return names


class RecordingEnviron(dict[str, str]):
    """An empty environment that records every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return False


def code_settings() -> set[str]:
    """The variables worker.settings reads: each of its public functions that takes ``environ`` is
    called with an empty environment that records what it is asked."""
    environ = RecordingEnviron()
    for name, function in inspect.getmembers(settings, inspect.isfunction):
        if name.startswith("_") or function.__module__ != settings.__name__:
            continue
        if "environ" in inspect.signature(function).parameters:
            with contextlib.suppress(settings.ConfigError):
                function(environ=environ)
    names = {
        key for key in environ.asked if key.startswith(("CELERY_", "SELLERCLOUD_", "ORDER_SYNC_"))
    }
    assert "SELLERCLOUD_PASSWORD_FILE" in names, "worker.settings was not asked for its settings"
    return names


def known_settings() -> set[str]:
    return readme_settings() | code_settings() | UPCOMING_SETTINGS


def env_example_settings() -> set[str]:
    """Every name in env.example, set or shown commented out with its default."""
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]+)=", text, re.MULTILINE))


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for entry in logical:
        instruction, _, arguments = entry.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def unit_file(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string((SYSTEMD / name).read_text(encoding="utf-8"))
    return parser


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", value)
    assert match, f"unexpected duration {value!r}"
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


# --- the check script -------------------------------------------------------------------------


def test_check_script_passes() -> None:
    result = run_check_script(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "FAIL" not in output
    for expected in (
        "ok    hadolint deploy/Dockerfile",
        "ok    yamllint -s deploy/",
        "ok    compose schema",
        "ok    kubernetes-validate --strict deploy/k8s/worker-deployment.yaml",
        "ok    kubernetes-validate --strict deploy/k8s/beat-deployment.yaml",
        "ok    manifest references",
        "ok    KEDA references",
        "skip  kubernetes-validate deploy/k8s/keda-scaledobject.yaml",
    ):
        assert expected in output, f"missing line {expected!r} in:\n{output}"
    # Where systemd-analyze exists the units must be verified, not skipped.
    systemd_line = "ok    systemd-analyze verify" if shutil.which("systemd-analyze") else "skip  "
    assert systemd_line in output, output


def test_check_script_fails_on_broken_files(tmp_path: Path) -> None:
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    dockerfile = tmp_path / "deploy" / "Dockerfile"
    dockerfile.write_text(
        dockerfile.read_text(encoding="utf-8").replace("USER 10001:10001", "USER root"),
        encoding="utf-8",
    )
    kustomization = tmp_path / "deploy" / "k8s" / "kustomization.yaml"
    kustomization.write_text(
        kustomization.read_text(encoding="utf-8").replace("  - pdb.yaml\n", ""),
        encoding="utf-8",
    )
    compose = tmp_path / "deploy" / "compose.yaml"
    compose.write_text(
        compose.read_text(encoding="utf-8").replace("stop_grace_period:", "stop_grace:"),
        encoding="utf-8",
    )

    result = run_check_script(tmp_path)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "FAIL  hadolint deploy/Dockerfile" in output
    assert "DL3002" in output  # last USER should not be root
    assert "FAIL  manifest references" in output
    assert "pdb.yaml is not listed" in output
    assert "FAIL  compose schema" in output
    assert "deploy checks failed" in output


# --- Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_final_stage_runs_order_sync_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a final stage"
    final = stages[-1]
    assert final[0][1] == "python:3.11-slim"
    users = [args for instruction, args in final if instruction == "USER"]
    assert users, "the final stage sets no USER, so it runs as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    entrypoint = [args for instruction, args in final if instruction == "ENTRYPOINT"]
    assert entrypoint, "no ENTRYPOINT in the final stage"
    # Exec form (a JSON array): the shell form would put /bin/sh between SIGTERM and Celery.
    assert json.loads(entrypoint[-1]) == ["order-sync"]
    cmd = [args for instruction, args in final if instruction == "CMD"]
    assert cmd, "no CMD in the final stage"
    assert json.loads(cmd[-1]) == ["worker"]
    env = " ".join(args for instruction, args in final if instruction == "ENV")
    assert "PYTHONUNBUFFERED=1" in env.split()
    assert "ORDER_SYNC_LOG_FORMAT=json" in env.split()


def test_dockerfile_final_stage_takes_only_the_virtualenv() -> None:
    final = dockerfile_stages()[-1]
    copies = [args for instruction, args in final if instruction in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/venv /opt/venv"]
    runs = " ".join(args for instruction, args in final if instruction == "RUN")
    for tool in ("apt-get", "apk", "gcc", "pip install", "build-essential"):
        assert tool not in runs, f"the final stage installs with {tool}"


def test_dockerfile_copies_files_that_exist() -> None:
    builder = dockerfile_stages()[0]
    copied = [args for instruction, args in builder if instruction == "COPY"]
    sources = [source for args in copied for source in args.split()[:-1]]
    assert {"pyproject.toml", "worker", "schemas"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"the builder copies {source}, missing at the repo root"


# --- env.example ------------------------------------------------------------------------------


def test_env_example_names_every_setting_in_the_readme() -> None:
    missing = readme_settings() - env_example_settings()
    assert not missing, f"in README's configuration table but not in deploy/env.example: {missing}"


def test_env_example_names_every_setting_the_code_reads() -> None:
    missing = code_settings() - env_example_settings()
    assert not missing, f"read by worker/settings.py but not in deploy/env.example: {missing}"


def test_env_example_invents_no_settings() -> None:
    unknown = env_example_settings() - known_settings()
    assert not unknown, f"deploy/env.example names settings nobody reads: {unknown}"
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    for name in UPCOMING_SETTINGS - code_settings():
        assert re.search(rf"^# Upcoming.*\n(?:#.*\n)*{name}=", text, re.MULTILINE), (
            f"{name} must be marked as upcoming"
        )


def test_env_example_prefers_the_password_file() -> None:
    text = (DEPLOY / "env.example").read_text(encoding="utf-8")
    assert re.search(r"^SELLERCLOUD_PASSWORD_FILE=\S", text, re.MULTILINE)
    assert not re.search(r"^SELLERCLOUD_PASSWORD=", text, re.MULTILINE)


# --- Kubernetes -------------------------------------------------------------------------------


def test_k8s_worker_outlives_the_longest_api_call() -> None:
    worker = only_doc(K8S / "worker-deployment.yaml", "Deployment")
    config = only_doc(K8S / "configmap.yaml", "ConfigMap")["data"]
    http_timeout = float(config.get("ORDER_SYNC_HTTP_TIMEOUT", DEFAULT_HTTP_TIMEOUT))
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > DEFAULT_HTTP_TIMEOUT
    assert grace > http_timeout


def test_k8s_worker_container() -> None:
    worker = only_doc(K8S / "worker-deployment.yaml", "Deployment")
    assert worker["spec"]["replicas"] == 2
    pod = worker["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["worker", "--concurrency", "16"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Probes are HTTP requests the worker answers itself, on the port its metrics use.
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert [p["name"] for p in container["ports"]] == ["metrics"]
    assert {"requests", "limits"} <= set(container["resources"])


def test_k8s_beat_runs_exactly_one_at_a_time() -> None:
    beat = only_doc(K8S / "beat-deployment.yaml", "Deployment")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"]["type"] == "Recreate"
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["beat"]


def test_k8s_beat_can_write_its_schedule_file() -> None:
    env = " ".join(args for instruction, args in dockerfile_stages()[-1] if instruction == "ENV")
    match = re.search(r"\bORDER_SYNC_DATA_DIR=(\S+)", env)
    assert match, "the image sets no ORDER_SYNC_DATA_DIR"
    beat = only_doc(K8S / "beat-deployment.yaml", "Deployment")
    (container,) = beat["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert match.group(1) in mounts, "beat's data directory is on the read-only root filesystem"
    compose_beat = load_yaml(DEPLOY / "compose.yaml")[0]["services"]["beat"]
    targets = {volume.split(":")[1] for volume in compose_beat["volumes"]}
    assert match.group(1) in targets, "compose: beat's data directory is read-only"


def test_k8s_pdb_keeps_a_worker() -> None:
    pdb = only_doc(K8S / "pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1


def test_k8s_configmap_keys_are_known_settings() -> None:
    config = only_doc(K8S / "configmap.yaml", "ConfigMap")["data"]
    unknown = set(config) - known_settings()
    assert not unknown, f"configmap.yaml sets names nobody reads: {unknown}"


def test_kustomization_leaves_out_the_secret_example() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")[0]
    assert "secret.example.yaml" not in kustomization["resources"]
    assert "worker-deployment.yaml" in kustomization["resources"]


def test_keda_scales_workers_on_the_project_queues() -> None:
    scaled = only_doc(K8S / "keda-scaledobject.yaml", "ScaledObject")
    worker = only_doc(K8S / "worker-deployment.yaml", "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    triggers = {
        trigger["metadata"]["queueName"]: trigger
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "rabbitmq"
    }
    assert "order-sync.events" in triggers
    # The queue names must be the ones the workers declare.
    assert set(triggers) == {EVENTS_QUEUE.name, TASKS_QUEUE.name}
    for trigger in triggers.values():
        assert trigger["metadata"]["mode"] == "QueueLength"


# --- Compose ----------------------------------------------------------------------------------


def test_compose_worker_can_scale_and_waits_for_healthy_services() -> None:
    services = load_yaml(DEPLOY / "compose.yaml")[0]["services"]
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container_name forbids --scale worker=N"
    assert worker["depends_on"], "the worker must wait for the broker"
    for name, condition in worker["depends_on"].items():
        assert condition == {"condition": "service_healthy"}, name
        assert "healthcheck" in services[name], f"{name} has no healthcheck to wait for"
    assert seconds(worker["stop_grace_period"]) > DEFAULT_HTTP_TIMEOUT


def test_compose_beat_is_a_single_replica() -> None:
    beat = load_yaml(DEPLOY / "compose.yaml")[0]["services"]["beat"]
    assert beat["command"] == ["beat"]
    assert beat["deploy"]["replicas"] == 1
    assert "container_name" not in beat


# --- systemd ----------------------------------------------------------------------------------


def test_systemd_units_stop_warmly_and_run_sandboxed() -> None:
    for name, command in (
        ("order-sync-worker.service", "order-sync worker"),
        ("order-sync-worker@.service", "order-sync worker"),
        ("order-sync-beat.service", "order-sync beat"),
    ):
        service = unit_file(name)["Service"]
        assert service["ExecStart"].startswith(f"/opt/order-sync/venv/bin/{command}"), name
        assert service["EnvironmentFile"] == "/etc/order-sync/env", name
        assert service["User"] not in {"root", "0"}, name
        assert service["KillSignal"] == "SIGTERM", name
        assert int(service["TimeoutStopSec"]) > DEFAULT_HTTP_TIMEOUT, name
        assert service["Restart"] == "on-failure", name
        assert service["NoNewPrivileges"] == "yes", name
        assert service["ProtectSystem"] == "strict", name
        assert service["PrivateTmp"] == "yes", name
        assert "/var/lib/order-sync" in service["ReadWritePaths"].split(), name
