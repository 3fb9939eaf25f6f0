//! `phalanx-e2e`: end-to-end tests against a real control plane.
//!
//! `tests/control-plane/build.sh` builds etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and KWOK from their Go modules
//! into a per-machine cache; [`ControlPlane`] starts them on loopback for a
//! test, hands it a [`kube::Client`] and stops them all when dropped.
//! [`nodes`] creates fake GPU nodes in bulk for KWOK to run.

pub mod binaries;
pub mod cluster;
pub mod error;
pub mod janitor;
pub mod nodes;
pub mod pki;
pub mod ports;
pub mod probe;
pub mod process;

pub use binaries::{Binaries, K8S_VERSION};
pub use cluster::{ControlPlane, ControlPlaneOptions, SchedulerOptions};
pub use error::{HarnessError, Result};
pub use nodes::{create_gpu_nodes, fake_gpu_node, wait_fake_nodes_ready, GpuNodeSpec};
