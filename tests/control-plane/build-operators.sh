#!/usr/bin/env bash
# Builds the workload operators the end-to-end tests run against the test
# control plane (a user's custom resource in, the operator's pods out, Phalanx
# gangs them) from the Go module proxy into a per-machine cache:
#   ${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/operators/<name>-<version>/<name>
# Today: KubeRay's ray-operator. Idempotent: an operator whose binary exists
# and was built by this script as it is now (its stamp) is not built again.
# Usage: build-operators.sh [--force]
set -euo pipefail

# name, module@version, package inside the module. tests/src/operators.rs
# names the same directory and binary.
operators=(
    "ray-operator github.com/ray-project/kuberay/ray-operator@v1.5.0 ."
)

cache_root=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}
operators_root=$cache_root/operators

force=0
if [[ ${1:-} == --force ]]; then force=1; fi

# This file holds the pins and the build flags, so it is the stamp.
stamp=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)

mkdir -p "$operators_root"
# Two CI jobs or test runs on one machine must not build into the same place
# at once; a lock of its own, so it never waits on a Kubernetes build.
exec 9>"$operators_root/.lock"
if command -v flock >/dev/null; then flock 9; fi

built() {
    local dir=$1 name=$2
    [[ -x $dir/$name && -f $dir/.stamp && $(cat "$dir/.stamp") == "$stamp" ]]
}

gocache=
cleanup() { if [[ -n $gocache ]]; then rm -rf "$gocache"; fi; }
trap cleanup EXIT

# build NAME MODULE@VERSION PACKAGE
build() {
    local name=$1 module_at=$2 package=$3
    local version=${module_at##*@} module=${module_at%@*}
    local dir=$operators_root/$name-$version
    if [[ $force == 0 ]] && built "$dir" "$name"; then return 0; fi
    mkdir -p "$dir"
    rm -f "$dir/.stamp"

    # The Go build cache is scratch: the binary is what gets cached.
    if [[ -z $gocache ]]; then gocache=$(mktemp -d "$operators_root/.gocache.XXXXXX"); fi
    echo "phalanx-e2e: building $name $version; this takes minutes the first time" >&2
    local start=$SECONDS gobin
    gobin=$(mktemp -d "$dir/.gobin.XXXXXX")
    local target=$module
    if [[ $package != . ]]; then target=$module/$package; fi
    # The operator's go.mod has no replace directives, so `go install
    # pkg@version` builds it with exactly its pinned dependencies, checked
    # against the sum database. Static, no local paths, no symbols.
    (cd "$operators_root" && GOCACHE=$gocache GOBIN=$gobin CGO_ENABLED=0 GOFLAGS=-trimpath \
        go install -ldflags='-s -w' "$target@$version")
    # `go install` names the binary after the package's last element.
    local produced
    produced=$(find "$gobin" -maxdepth 1 -type f -perm -u+x | head -n1)
    if [[ -z $produced ]]; then
        echo "phalanx-e2e: go install $target@$version produced no binary" >&2
        return 1
    fi
    mv -f "$produced" "$dir/$name"
    rm -rf "$gobin"
    echo "$stamp" >"$dir/.stamp"
    echo "phalanx-e2e: built $name $version in $((SECONDS - start))s" >&2
}

for operator in "${operators[@]}"; do
    # shellcheck disable=SC2086 # one line of fields, split on purpose
    build $operator
done
echo "$operators_root"
