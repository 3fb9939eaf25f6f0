//! `phalanx-e2e`: end-to-end tests against a real control plane.
//!
//! `tests/control-plane/ensure.sh` builds etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler (Kubernetes v1.37.2) and KWOK
//! from their Go modules into a per-machine cache, once; [`ControlPlane`]
//! starts them on loopback for a test, hands it a [`kube::Client`] and stops
//! them all when dropped. [`nodes`] creates fake GPU nodes in bulk for KWOK.
//! Other projects' CRDs (KubeRay, JobSet, LeaderWorkerSet, Kubeflow) are
//! fetched into the same cache and applied by [`crds`]; real operators
//! (KubeRay's ray-operator) are built there too and run by [`operators`].
//!
//! ```text
//! tests/control-plane/ensure.sh            # first time: ~15 min on 2 cores
//! PHALANX_E2E=1 cargo test -p phalanx-e2e  # PHALANX_E2E=1: missing binaries fail
//! cargo run --release -p phalanx-e2e --bin throughput -- \
//!     --scheduler kube-scheduler --nodes 1000 --pods 5000 --json out.json
//! ```
//!
//! Phalanx's scheduler is started by [`ControlPlane::start_phalanx_scheduler`]
//! from the binary `cargo build -p phalanx-scheduler` leaves in the target
//! directory (or `$PHALANX_SCHEDULER_BIN`); see [`phalanx`]. A binary in the
//! target directory that is older than its sources is refused, with the
//! `cargo build` command that refreshes it ([`freshness`];
//! `PHALANX_ALLOW_STALE_BINARIES=1` runs it anyway).
//!
//! What a test case builds on: [`PodBuilder`] (names or `generateName`,
//! labels, selectors, affinity, a PriorityClass, Deployments of it),
//! [`GpuNodeSpec`] (fake GPU nodes with any labels: zones, racks, models),
//! [`priority`] (PriorityClasses), [`PodSelector`] (pods by name, name prefix
//! or label) and [`wait`] (pods bound, pods that stay pending, events, CRDs).
//!
//! Without the binaries and without `PHALANX_E2E`, each end-to-end test
//! prints `skipped: <test>: <why>` on the real stdout and stderr (shown even
//! though the test passes; see [`report`]), so `cargo test` works on a
//! machine without Go.

pub mod autoscaler;
pub mod binaries;
pub mod cluster;
pub mod crds;
pub mod device_plugin;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod freshness;
pub mod helm;
pub mod janitor;
pub mod ledger;
pub mod nodes;
pub mod operators;
pub mod phalanx;
pub mod pki;
pub mod pods;
pub mod ports;
pub mod priority;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod report;
pub mod tokens;
pub mod wait;

pub use binaries::{Binaries, K8S_VERSION};
pub use cluster::{ControlPlane, ControlPlaneOptions, SchedulerOptions};
pub use error::{HarnessError, Result};
pub use events::{pod_events, PodEvent};
pub use nodes::{
    create_gpu_nodes, fake_gpu_node, node_facts, wait_fake_nodes_ready, GpuNodeSpec, NodeFacts,
};
pub use phalanx::{
    install_phalanx_crds, lease_holder, locate_phalanx_scheduler, phalanx_scheduler_for_test,
    LeaderElectionOptions, PhalanxHandle, PhalanxOptions,
};
pub use pods::{
    assignment_of, assignment_violations, create_pods, gpu_request, gpu_share_container,
    gpu_worker_container, match_labels, node_of, pod_for, pod_group, pod_term, pods_named,
    pods_with_prefix, upstream_pod_group, PodBuilder, PodSelector,
};
pub use priority::{create_priority_class, PreemptionPolicy};
