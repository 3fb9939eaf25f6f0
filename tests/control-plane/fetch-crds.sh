#!/usr/bin/env bash
# Fetches the CRDs of other projects that the chart's optional objects need
# (prometheus-operator's ServiceMonitor) from the Go module proxy, so that the
# Helm test validates those objects against their real schema instead of
# skipping them. Cached per machine beside the control-plane binaries:
#   ${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/crds/
# Idempotent: returns at once when the pinned files are there.
set -euo pipefail

# The release whose CRDs the chart's ServiceMonitor is written against.
PROMETHEUS_OPERATOR_VERSION=v0.79.2
module=github.com/prometheus-operator/prometheus-operator
files=(monitoring.coreos.com_servicemonitors.yaml)

cache_root=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}
dest=$cache_root/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION

have_all() {
    local f
    for f in "${files[@]}"; do [[ -s $dest/$f ]] || return 1; done
}
if have_all; then
    echo "$dest"
    exit 0
fi

# Outside any module, so nothing here (tests/control-plane/go.mod) changes;
# the download is checked against the Go checksum database like any module.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
module_dir=$(cd "$scratch" && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$module@$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $module_dir || ! -d $module_dir ]]; then
    echo "phalanx-e2e: could not download $module@$PROMETHEUS_OPERATOR_VERSION" >&2
    exit 1
fi
mkdir -p "$dest"
for f in "${files[@]}"; do
    install -m 0644 "$module_dir/example/prometheus-operator-crd/$f" "$dest/.$f.tmp"
    mv -f "$dest/.$f.tmp" "$dest/$f"
done
echo "phalanx-e2e: CRDs from $module@$PROMETHEUS_OPERATOR_VERSION in $dest" >&2
echo "$dest"
