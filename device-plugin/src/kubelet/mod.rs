//! Kubelet's side of the node: the device plugin gRPC service for each
//! resource ([`service`]), serving and registering it and doing so again when
//! kubelet restarts ([`lifecycle`]), and reading kubelet's PodResources API
//! ([`pod_resources`]).

pub mod lifecycle;
pub mod pod_resources;
pub mod service;

pub use lifecycle::{register, run_plugins, KubeletError, KubeletPaths, ServedPlugin};
pub use service::GpuDevicePlugin;

/// The device plugin API version kubelet is told.
pub const API_VERSION: &str = "v1beta1";
/// Default device-plugin directory on a node.
pub const DEFAULT_DEVICE_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// Kubelet's registration socket's file name in that directory.
pub const KUBELET_SOCKET_NAME: &str = "kubelet.sock";
/// Default PodResources socket.
pub const DEFAULT_POD_RESOURCES_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
