#!/usr/bin/env bash
# Makes sure the end-to-end control-plane binaries, other projects' CRDs and
# the workload operators exist (building them once per machine, reusing them
# afterwards) and prints where the binaries are. CI calls this before
# `cargo test`; the harness finds the same directories by itself.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
"$here/build.sh"
# KWOK's node and pod stages, from the same release as the kwok binary.
"$here/fetch-kwok-stages.sh" >/dev/null
# Other projects' CRDs: the chart's optional objects are validated against
# them, and the operator tests install them (tests/src/crds.rs).
"$here/fetch-crds.sh" >/dev/null
# The workload operators the operator tests run (KubeRay's ray-operator).
"$here/build-operators.sh" >/dev/null
bin_dir=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/$K8S_VERSION/bin
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    [[ -x $bin_dir/$b ]] || { echo "phalanx-e2e: $bin_dir/$b missing after build" >&2; exit 1; }
done
echo "phalanx-e2e: control-plane binaries (Kubernetes $K8S_VERSION) in $bin_dir"
