//! `phalanx-e2e`: end-to-end tests against a real control plane.
//!
//! It will hold (issue 3) a harness that builds etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and KWOK from their Go modules
//! (cached outside the repository), starts them on loopback for a test, and
//! hands the test a client; plus the `throughput` benchmark binary.
