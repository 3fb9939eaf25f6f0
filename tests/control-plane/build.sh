#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
# from the Go module proxy into a per-machine cache outside the repository:
#   ${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/<k8s-version>/bin
# Idempotent: when every binary exists and was built from the current pins
# (a stamp of go.mod, go.sum and versions.env), it returns at once.
# Usage: build.sh [--force]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}
bin_dir=$cache_root/$K8S_VERSION/bin
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

force=0
if [[ ${1:-} == --force ]]; then force=1; fi

stamp=$(cat "$here/versions.env" "$here/go.mod" "$here/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)

up_to_date() {
    [[ -f $bin_dir/.stamp && $(cat "$bin_dir/.stamp") == "$stamp" ]] || return 1
    local b
    for b in "${binaries[@]}"; do [[ -x $bin_dir/$b ]] || return 1; done
}

mkdir -p "$bin_dir"
# Two CI jobs or test runs on one machine must not build into the same place at once.
exec 9>"$cache_root/.lock"
if command -v flock >/dev/null; then flock 9; fi

if [[ $force == 0 ]] && up_to_date; then
    exit 0
fi
rm -f "$bin_dir/.stamp"

# The Go build cache these builds fill is about 3.5 GiB and is never read again
# (the binaries themselves are what gets cached), so it lives in a scratch
# directory that goes when the build ends instead of staying on a CI disk.
GOCACHE=$(mktemp -d "$cache_root/.gocache.XXXXXX")
export GOCACHE
trap 'rm -rf "$GOCACHE"' EXIT

# Static, reproducible, small binaries: no cgo, no local paths, no symbols.
export CGO_ENABLED=0
export GOFLAGS="-trimpath -mod=readonly"
ldflags='-s -w'
# Kubernetes stamps its release into the binaries at build time (upstream's
# hack/lib/version.sh); without it a server built from the module reports
# v0.0.0 and a chart's kubeVersion constraint could not be checked against it.
k8s_minor=${K8S_VERSION#v1.}
k8s_minor=${k8s_minor%%.*}
version_pkg=k8s.io/component-base/version
k8s_ldflags="$ldflags -X $version_pkg.gitVersion=$K8S_VERSION -X $version_pkg.gitMajor=1 -X $version_pkg.gitMinor=$k8s_minor -X $version_pkg.gitTreeState=clean"

# Each binary goes to a temporary name first, so an interrupted build never
# leaves a truncated binary that looks finished.
install_bin() {
    local name=$1 tmp=$2
    chmod +x "$tmp"
    mv -f "$tmp" "$bin_dir/$name"
}

for name in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    if [[ $force == 0 && -x $bin_dir/$name ]] && [[ -f $bin_dir/.built-$name && $(cat "$bin_dir/.built-$name") == "$stamp" ]]; then
        continue
    fi
    echo "phalanx-e2e: building $name (Kubernetes $K8S_VERSION); this takes minutes the first time" >&2
    start=$SECONDS
    flags=$ldflags
    [[ $name == etcd ]] || flags=$k8s_ldflags
    (cd "$here" && go build -ldflags="$flags" -o "$bin_dir/.$name.tmp" "./cmd/$name")
    install_bin "$name" "$bin_dir/.$name.tmp"
    echo "$stamp" >"$bin_dir/.built-$name"
    echo "phalanx-e2e: built $name in $((SECONDS - start))s" >&2
done

if ! [[ $force == 0 && -x $bin_dir/kwok && -f $bin_dir/.built-kwok && $(cat "$bin_dir/.built-kwok") == "$stamp" ]]; then
    echo "phalanx-e2e: building kwok $KWOK_VERSION" >&2
    start=$SECONDS
    gobin=$(mktemp -d "$bin_dir/.kwok.XXXXXX")
    # KWOK's own go.mod has no replace directives, so `go install pkg@version`
    # builds it with exactly its pinned dependencies (checked against the sum database).
    (cd "$here" && GOBIN=$gobin GOFLAGS=-trimpath go install -ldflags="$ldflags" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION")
    install_bin kwok "$gobin/kwok"
    rmdir "$gobin"
    echo "$stamp" >"$bin_dir/.built-kwok"
    echo "phalanx-e2e: built kwok in $((SECONDS - start))s" >&2
fi

echo "$stamp" >"$bin_dir/.stamp"
