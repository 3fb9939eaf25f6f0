#!/usr/bin/env bash
# Fetches the KWOK stages the test control plane runs: how a fake node becomes
# Ready and keeps its heartbeat, and how a pod on it becomes Running, completes
# and is deleted. KWOK up to v0.7 built these in; from v0.8 it runs only the
# stages it is given, so they come from the same module release as the binary
# (the Go module proxy, checked against the checksum database) into
#   <cache>/<k8s-version>/bin/kwok-stages/
# beside the binaries, where the harness (tests/src/binaries.rs) finds them.
# Idempotent: returns at once when the files for the pinned KWOK are there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}
dest=${PHALANX_E2E_BIN_DIR:-$cache_root/$K8S_VERSION/bin}/kwok-stages
# The set KWOK v0.7 used by default with node leases on (the harness passes
# --node-lease-duration-seconds): node initialise + status heartbeat, and the
# "fast" pod lifecycle.
files=(
    node/fast/node-initialize.yaml
    node/heartbeat/node-heartbeat.yaml
    pod/fast/pod-ready.yaml
    pod/fast/pod-complete.yaml
    pod/fast/pod-delete.yaml
)

have_all() {
    [[ -f $dest/.version && $(cat "$dest/.version") == "$KWOK_VERSION" ]] || return 1
    local f
    for f in "${files[@]}"; do [[ -s $dest/$(basename "$f") ]] || return 1; done
}
if have_all; then
    echo "$dest"
    exit 0
fi

# Files of another KWOK release go first, so that only this one's are passed.
rm -f "$dest"/*.yaml "$dest/.version"
# shellcheck source=module-files.sh
source "$here/module-files.sh"
fetch_module_files "$dest" "sigs.k8s.io/kwok@$KWOK_VERSION" kustomize/stage "${files[@]}"
echo "$KWOK_VERSION" >"$dest/.version"
echo "phalanx-e2e: KWOK $KWOK_VERSION stages in $dest" >&2
echo "$dest"
