#!/usr/bin/env bash
# Runs every check and test of the project, installing what the tests need first,
# so that it works on a fresh machine. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust with rustup (https://rustup.rs) first" >&2
    exit 1
fi

# One clean build, not an edit-compile loop: incremental caches would double the
# size of target/ for nothing (CI once ran out of disk building this workspace).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
echo "== disk: $(df -Ph "$target_dir" | awk 'NR==2 {print $4}') free for $target_dir (a clean build needs about 3 GiB)"

echo "== format and lints"
# Both ship with rustup's default profile; a toolchain without them cannot fetch
# them here (only package registries are reachable), so say so instead of failing.
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all -- --check
else
    echo "skipped: rustfmt is not installed in this toolchain"
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "skipped: clippy is not installed in this toolchain"
fi

echo "== purity: the engine, the simulator and the autoscaler's decisions build without Kubernetes"
scripts/check-purity.sh

# Installs Debian packages without starting their services (policy-rc.d answering
# 101), as root or through sudo.
apt_install() {
    local sudo="" policy=/usr/sbin/policy-rc.d added_policy=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
        added_policy=1
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
    if [ -n "$added_policy" ]; then $sudo rm -f "$policy"; fi
}

echo "== control plane for the end-to-end tests (built once per machine, then cached)"
# Needs Go and the Go module proxy; about 10 minutes the first time on 2 cores,
# plus about 8 for the workload operators (build-operators.sh).
tests/control-plane/ensure.sh
echo "== Helm engine for the chart tests (PyPI helm-python-sdk: Helm v4's Go SDK, no helm binary)"
# A virtualenv cached per machine, like the control plane; pip does nothing
# when the pinned version is already there.
helm_venv=${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-helm/venv
if [[ ! -x $helm_venv/bin/python ]]; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if ! python3 -m venv "$helm_venv" 2>/dev/null; then
        rm -rf "$helm_venv"
        apt_install python3-venv
        python3 -m venv "$helm_venv"
    fi
fi
"$helm_venv/bin/pip" install --quiet --disable-pip-version-check 'helm-python-sdk==0.2.2'
export PHALANX_HELM_PYTHON="$helm_venv/bin/python"

echo "== Prometheus for the autoscaler tests (Debian package; its service is never started)"
# The tests run the binary themselves with a temporary config and TSDB.
if [ ! -x /usr/bin/prometheus ] && [ -z "${PHALANX_PROMETHEUS_BIN:-}" ]; then
    command -v apt-get >/dev/null 2>&1 || {
        echo "no /usr/bin/prometheus and no apt-get: install Prometheus and set PHALANX_PROMETHEUS_BIN" >&2
        exit 1
    }
    apt_install prometheus
fi

echo "== alerts: the chart's PrometheusRule rendered, then promtool check rules and test rules"
# promtool comes with Debian's prometheus package; beside PHALANX_PROMETHEUS_BIN otherwise.
if [ -z "${PHALANX_PROMTOOL:-}" ] && [ -n "${PHALANX_PROMETHEUS_BIN:-}" ]; then
    PHALANX_PROMTOOL="$(dirname "$PHALANX_PROMETHEUS_BIN")/promtool"
    export PHALANX_PROMTOOL
fi
scripts/check-alerts.sh

export PHALANX_E2E=1   # from here on a missing binary fails the e2e tests instead of skipping them

echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One plain closing line over all test binaries (cargo's own last block is often a
# doc-test run with zero tests, which would read as "ran no test").
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
