//! Code generated at build time (see `build.rs`) from `proto/`: the kubelet
//! device plugin API v1beta1 and the kubelet PodResources API v1.

#![allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]

/// `v1beta1`: `Registration` (served by kubelet) and `DevicePlugin` (served by us).
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// `v1`: kubelet's `PodResourcesLister`.
pub mod podresources {
    tonic::include_proto!("v1");
}
