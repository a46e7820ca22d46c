#!/usr/bin/env bash
# Static checks of everything under deploy/: Docker, a cluster and systemd cannot be run here, so
# each file goes through the linter or schema that knows its format. One line per check; exits 1
# if any check failed. Tools come from ${VENV:-.venv}/bin, relative to the repository root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${VENV:-.venv}/bin"

failed=0

# run NAME COMMAND...: one line for the check, the tool's own output indented below a failure.
run() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then
        printf 'ok    %s\n' "$name"
    else
        printf 'FAIL  %s\n' "$name"
        printf '%s\n' "$output" | sed 's/^/      /'
        failed=1
    fi
}

skip() {
    printf 'skip  %s: %s\n' "$1" "$2"
}

for tool in hadolint yamllint check-jsonschema kubernetes-validate python; do
    if [[ ! -x "$BIN/$tool" ]]; then
        printf 'FAIL  %s not found in %s (set VENV or run make test once)\n' "$tool" "$BIN"
        exit 1
    fi
done

# --failure-threshold style: every finding fails, down to style hints.
run "hadolint deploy/Dockerfile" \
    "$BIN/hadolint" --no-color --failure-threshold style deploy/Dockerfile

run "yamllint -s deploy/ (deploy/.yamllint.yaml)" \
    "$BIN/yamllint" -s -c deploy/.yamllint.yaml deploy

run "compose schema (check-jsonschema vendor.compose-spec) deploy/compose.yaml" \
    "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

run "compose schema (check-jsonschema vendor.compose-spec) deploy/compose.cluster.yaml" \
    "$BIN/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.cluster.yaml

run "compose references (services, build, env files, secrets, volumes)" \
    "$BIN/python" deploy/check_refs.py compose

# kubernetes-validate only warns about kinds it has no schema for, so a warning fails too: every
# file given to it must be a core kind.
kubernetes_validate() {
    local output
    output=$("$BIN/kubernetes-validate" --strict --quiet "$@" 2>&1) || { printf '%s\n' "$output"; return 1; }
    if [[ -n "$output" ]]; then
        printf '%s\n' "$output"
        return 1
    fi
}
for manifest in deploy/k8s/*.yaml; do
    case "$(basename "$manifest")" in
        kustomization.yaml | keda-scaledobject.yaml) continue ;;
    esac
    run "kubernetes-validate --strict $manifest" kubernetes_validate "$manifest"
done
skip "kubernetes-validate deploy/k8s/keda-scaledobject.yaml" \
    "no schema for the keda.sh CRDs here; checked by yamllint and the KEDA references check"
skip "kubernetes-validate deploy/k8s/kustomization.yaml" \
    "a kustomize file, not a Kubernetes object; checked by the manifest references check"
skip "kubernetes-validate deploy/k8s/rabbitmq/rabbitmqcluster.yaml" \
    "no schema for the rabbitmq.com CRD here; checked by yamllint"

run "manifest references (kustomization, ConfigMap, Secret keys, mounts, selectors)" \
    "$BIN/python" deploy/check_refs.py k8s

run "KEDA references (scale target, TriggerAuthentication, Secret key, triggers)" \
    "$BIN/python" deploy/check_refs.py keda

# Prometheus loads a rule on a misspelt metric and it never fires, so the names are checked against
# the metrics the worker serves; check_refs.py parses PromQL (promql-parser) for that.
run "alert rules (fields, runbook anchors in deploy/README.md, metric names) deploy/observability/alerts.yaml" \
    "$BIN/python" deploy/check_refs.py alerts

run "Grafana dashboard (uid, datasource input, panel ids, targets, metric names)" \
    "$BIN/python" deploy/check_refs.py dashboard

run "Prometheus example configuration (rule files, scrape job, metrics port)" \
    "$BIN/python" deploy/check_refs.py prometheus

run "metrics table in deploy/README.md (every metric, nothing more)" \
    "$BIN/python" deploy/check_refs.py metrics-doc

# promtool parses PromQL for real; it is not a Python package, so the venv cannot provide it.
promtool=$(command -v "$BIN/promtool" promtool 2>/dev/null | head -n 1 || true)
if [[ -n $promtool ]]; then
    run "promtool check config deploy/observability/prometheus.yml (and its rules)" \
        "$promtool" check config deploy/observability/prometheus.yml
else
    skip "promtool check config deploy/observability/prometheus.yml" \
        "promtool is not installed here; PromQL checked by check_refs.py (promql-parser) only"
fi

# systemd-analyze verify checks that ExecStart= points at an executable, which exists only on an
# installed host, and that the units' dependencies resolve. A scratch root supplies both: a stub
# at the install path and a copy of this machine's own units. It reports most mistakes (unknown
# keys, bad values) as warnings and still exits 0, so any output fails the check.
verify_units() {
    local scratch unit_dir output status=0
    scratch=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: $scratch is local
    trap "rm -rf '$scratch'" RETURN
    unit_dir=/usr/lib/systemd/system
    [[ -d $unit_dir ]] || unit_dir=/lib/systemd/system
    mkdir -p "$scratch/opt/order-sync/venv/bin" "$scratch/etc/systemd/system" "$scratch/usr/lib/systemd"
    printf '#!/bin/sh\n' >"$scratch/opt/order-sync/venv/bin/order-sync"
    chmod +x "$scratch/opt/order-sync/venv/bin/order-sync"
    cp -a "$unit_dir" "$scratch/usr/lib/systemd/system"
    cp deploy/systemd/*.service "$scratch/etc/systemd/system/"
    for unit in "$@"; do
        if ! output=$(systemd-analyze verify --root="$scratch" "$unit" 2>&1) || [[ -n "$output" ]]; then
            printf '%s: %s\n' "$unit" "${output:-systemd-analyze verify failed}"
            status=1
        fi
    done
    return $status
}
if command -v systemd-analyze >/dev/null 2>&1; then
    units=()
    for unit in deploy/systemd/*.service; do
        unit=$(basename "$unit")
        # A template is verified through an instance of it.
        units+=("${unit/%@.service/@1.service}")
    done
    run "systemd-analyze verify ${units[*]}" verify_units "${units[@]}"
else
    skip "systemd-analyze verify deploy/systemd/*.service" "systemd-analyze is not installed here"
fi

if ((failed)); then
    printf 'deploy checks failed\n'
    exit 1
fi
printf 'deploy checks passed\n'
