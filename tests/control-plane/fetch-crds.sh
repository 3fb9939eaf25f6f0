#!/usr/bin/env bash
# Fetches other projects' CRDs from the Go module proxy, so that tests use
# their real schemas instead of hand-written stand-ins:
#   - prometheus-operator's ServiceMonitor and PrometheusRule, which the Helm
#     chart's optional objects are validated against;
#   - the workload operators whose pods Phalanx gangs without a PodGroup
#     (KubeRay, JobSet, LeaderWorkerSet, Kubeflow Trainer and the Kubeflow
#     training-operator), which the end-to-end tests install
#     (tests/src/crds.rs).
# Cached per machine beside the control-plane binaries, one directory per
# project and release:
#   ${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/crds/<project>-<version>/
# Idempotent: a project whose pinned files are all there is not downloaded
# again. Prints the root of that tree (the harness computes the same path).
set -euo pipefail

# The pins; tests/src/crds.rs and tests/src/binaries.rs name the same
# releases and files. Each line: directory name, module@version, directory of
# the CRDs inside the module, files.
projects=(
    "prometheus-operator-v0.79.2 github.com/prometheus-operator/prometheus-operator@v0.79.2 example/prometheus-operator-crd monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml"
    "kuberay-v1.5.0 github.com/ray-project/kuberay/ray-operator@v1.5.0 config/crd/bases ray.io_rayclusters.yaml ray.io_rayjobs.yaml ray.io_rayservices.yaml"
    "jobset-v0.11.0 sigs.k8s.io/jobset@v0.11.0 config/components/crd/bases jobset.x-k8s.io_jobsets.yaml"
    "lws-v0.7.0 sigs.k8s.io/lws@v0.7.0 config/crd/bases leaderworkerset.x-k8s.io_leaderworkersets.yaml"
    "trainer-v2.0.0 github.com/kubeflow/trainer/v2@v2.0.0 manifests/base/crds trainer.kubeflow.org_trainjobs.yaml"
    "training-operator-v1.8.1 github.com/kubeflow/training-operator@v1.8.1 manifests/base/crds kubeflow.org_pytorchjobs.yaml kubeflow.org_tfjobs.yaml kubeflow.org_mpijobs.yaml"
)

cache_root=${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}
crd_root=$cache_root/crds

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=module-files.sh
source "$here/module-files.sh"

# fetch DIR MODULE@VERSION SUBDIR FILE...
fetch() {
    local name=$1
    shift
    fetch_module_files "$crd_root/$name" "$@"
}

for project in "${projects[@]}"; do
    # shellcheck disable=SC2086 # one line of fields, split on purpose
    fetch $project
done
echo "$crd_root"
