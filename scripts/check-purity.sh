#!/usr/bin/env bash
# Keeps the pure crates pure: the engine, the simulator and the autoscaler's
# decision module must build, each on its own, with no Kubernetes client,
# Kubernetes types, async runtime or phalanx-api in their dependency trees, and
# the autoscaler must reach the scheduler's placement only through the engine
# and phalanx-kube, never through the scheduler crate. Fails with the offending
# path when one creeps in. scripts/test-all.sh runs it; it is cheap to run alone.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(kube|kube-client|kube-runtime|k8s-openapi|tokio|phalanx-api|phalanx-kube|phalanx-runtime|phalanx-scheduler) '
failed=0

# `cargo tree` of one package, as that package alone resolves its features (not
# the merged workspace, where another member may switch features on).
pure_tree() {
    local package=$1; shift
    cargo tree --locked -p "$package" "$@" -e normal,build --prefix none --format '{p}' | sort -u
}

check_tree() {
    local label=$1; shift
    local hits
    hits=$(pure_tree "$@" | grep -E "$forbidden" || true)
    if [[ -n $hits ]]; then
        echo "purity: $label pulls in what a pure build must not:" >&2
        echo "$hits" | sed 's/^/  /' >&2
        echo "  (cargo tree -p $* -i <crate> shows the path)" >&2
        failed=1
    else
        echo "purity: $label: no kube, k8s-openapi, tokio or phalanx-api"
    fi
}

check_tree "phalanx-engine" phalanx-engine
check_tree "phalanx-sim" phalanx-sim
check_tree "phalanx-autoscaler (decision only)" phalanx-autoscaler --no-default-features

# The autoscaler's controller may use phalanx-kube and phalanx-runtime, but not
# the scheduler's queue, gangs, binder or extender.
if cargo tree --locked -p phalanx-autoscaler -e normal --prefix none --format '{p}' | grep -q '^phalanx-scheduler '; then
    echo "purity: phalanx-autoscaler depends on phalanx-scheduler" >&2
    failed=1
fi
if grep -rn 'phalanx_scheduler' autoscaler/src; then
    echo "purity: the autoscaler's sources name the scheduler crate (above)" >&2
    failed=1
fi

# The pure builds themselves, not only the merged workspace build, where
# feature unification could hide a missing cfg.
for build in "-p phalanx-engine" "-p phalanx-sim" \
    "-p phalanx-autoscaler --no-default-features" \
    "-p phalanx-autoscaler --no-default-features --features spec"; do
    # shellcheck disable=SC2086
    if ! cargo check --locked --quiet $build --all-targets; then
        echo "purity: cargo check $build failed" >&2
        failed=1
    fi
done

exit "$failed"
