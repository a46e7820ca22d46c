"""Cross-references between the deployment files, which no schema sees.

A schema accepts a Deployment that mounts a Secret key nobody defines, or a Compose service that
depends on a renamed one; either fails only at deploy time. Run by deploy/check.sh:

    python deploy/check_refs.py compose|k8s|keda

Prints each problem and exits 1 if there is any.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

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


CHECKS: dict[str, Callable[[], Iterator[str]]] = {
    "compose": check_compose,
    "k8s": check_k8s,
    "keda": check_keda,
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
