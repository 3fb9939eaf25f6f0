//! Serving each plugin on its socket, registering it with kubelet, and doing
//! both again when kubelet restarts.
//!
//! Kubelet's rules (shared/specs/kubelet-device-plugin.md): serve first, then
//! `Register`; a restarted kubelet deletes every socket in the directory, so a
//! missing plugin socket, or a `kubelet.sock` that is not the file we
//! registered with, means: serve and register again. A refused `Register` is
//! fatal.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use super::service::GpuDevicePlugin;
use super::API_VERSION;
use crate::metrics::PluginMetrics;
use crate::proto::v1beta1::device_plugin_server::DevicePluginServer;
use crate::proto::v1beta1::registration_client::RegistrationClient;
use crate::proto::v1beta1::{DevicePluginOptions, RegisterRequest};
use crate::socket::{check_socket_path, dial, listen, SocketError};

#[derive(Debug, Error)]
pub enum KubeletError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("kubelet refused to register {resource}: {message}")]
    Refused { resource: String, message: String },
    #[error("kubelet at {socket} did not answer Register for {resource} within {waited:?}: {why}")]
    Unreachable {
        socket: String,
        resource: String,
        waited: Duration,
        why: String,
    },
}

/// Where kubelet's device-plugin sockets live.
#[derive(Debug, Clone)]
pub struct KubeletPaths {
    pub device_plugin_dir: PathBuf,
    /// `<dir>/kubelet.sock` normally.
    pub kubelet_socket: PathBuf,
    /// How often to look for a kubelet restart.
    pub poll_interval: Duration,
    /// How long `Register` may keep failing to connect before giving up.
    pub register_timeout: Duration,
}

impl KubeletPaths {
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let device_plugin_dir = dir.into();
        KubeletPaths {
            kubelet_socket: device_plugin_dir.join(super::KUBELET_SOCKET_NAME),
            device_plugin_dir,
            poll_interval: Duration::from_millis(500),
            register_timeout: Duration::from_secs(30),
        }
    }

    /// Checks every socket path up front so a bad directory fails at start.
    pub fn check(&self, plugins: &[GpuDevicePlugin]) -> Result<(), SocketError> {
        check_socket_path(&self.kubelet_socket)?;
        for plugin in plugins {
            check_socket_path(&self.device_plugin_dir.join(plugin.spec.socket_file_name()))?;
        }
        Ok(())
    }
}

/// One plugin serving on its socket.
#[derive(Debug)]
pub struct ServedPlugin {
    pub socket: PathBuf,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ServedPlugin {
    /// Listens on `socket` and serves `plugin` there (ready when this returns).
    pub fn start(plugin: &GpuDevicePlugin, socket: PathBuf) -> Result<Self, SocketError> {
        let listener = listen(&socket)?;
        let (stop, stopping) = watch::channel(false);
        let service = DevicePluginServer::new(plugin.with_stop_signal(stopping.clone()));
        let mut shutdown = stopping;
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                }),
        );
        Ok(ServedPlugin { socket, stop, task })
    }

    /// Ends open streams, stops serving, and removes the socket if it is still ours.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }

    pub fn socket_exists(&self) -> bool {
        self.socket.exists()
    }
}

/// Calls `Register` on kubelet's socket, retrying connection failures (kubelet
/// may be starting) for `paths.register_timeout`; a refusal is returned at once.
pub async fn register(paths: &KubeletPaths, plugin: &GpuDevicePlugin) -> Result<(), KubeletError> {
    let request = RegisterRequest {
        version: API_VERSION.to_owned(),
        endpoint: plugin.spec.socket_file_name(),
        resource_name: plugin.spec.name.clone(),
        options: Some(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }),
    };
    let started = tokio::time::Instant::now();
    loop {
        let attempt = async {
            let channel = dial(&paths.kubelet_socket)
                .await
                .map_err(|e| Err(e.to_string()))?;
            RegistrationClient::new(channel)
                .register(request.clone())
                .await
                .map(|_| ())
                .map_err(|status| {
                    // Unavailable: the connection broke (kubelet restarting);
                    // anything else is kubelet's answer.
                    if status.code() == tonic::Code::Unavailable {
                        Err(status.message().to_owned())
                    } else {
                        Ok(status)
                    }
                })
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => {
                tracing::info!(resource = %plugin.spec.name, endpoint = %request.endpoint, "registered with kubelet");
                return Ok(());
            }
            Ok(Err(Ok(status))) => {
                return Err(KubeletError::Refused {
                    resource: plugin.spec.name.clone(),
                    message: status.message().to_owned(),
                })
            }
            Ok(Err(Err(why))) => {
                if started.elapsed() >= paths.register_timeout {
                    return Err(KubeletError::Unreachable {
                        socket: paths.kubelet_socket.display().to_string(),
                        resource: plugin.spec.name.clone(),
                        waited: paths.register_timeout,
                        why,
                    });
                }
            }
            Err(_) => {
                if started.elapsed() >= paths.register_timeout {
                    return Err(KubeletError::Unreachable {
                        socket: paths.kubelet_socket.display().to_string(),
                        resource: plugin.spec.name.clone(),
                        waited: paths.register_timeout,
                        why: "Register timed out".to_owned(),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Identity of the file at `path` (device, inode, change time): a re-created
/// socket differs even if the path is the same.
fn file_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()))
}

/// True when asked to stop, or when nobody can ask any more (the sender is
/// gone): otherwise a dropped sender would make `changed()` return at once
/// forever and the loops spin.
fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Serves and registers every plugin, re-doing both after each kubelet restart,
/// until `stop` turns true (then the sockets are removed) or registration fails.
pub async fn run_plugins(
    paths: KubeletPaths,
    plugins: Vec<GpuDevicePlugin>,
    metrics: PluginMetrics,
    mut stop: watch::Receiver<bool>,
) -> Result<(), KubeletError> {
    paths.check(&plugins)?;
    loop {
        // Kubelet may not be up yet (or is restarting): wait for its socket.
        let kubelet = loop {
            if stop_requested(&stop) {
                return Ok(());
            }
            if let Some(id) = file_identity(&paths.kubelet_socket) {
                break id;
            }
            tokio::select! {
                _ = tokio::time::sleep(paths.poll_interval) => {}
                _ = stop.changed() => {}
            }
        };
        let mut served = Vec::with_capacity(plugins.len());
        for plugin in &plugins {
            let socket = paths.device_plugin_dir.join(plugin.spec.socket_file_name());
            served.push(ServedPlugin::start(plugin, socket)?);
        }
        for plugin in &plugins {
            if let Err(e) = register(&paths, plugin).await {
                for s in served {
                    s.stop().await;
                }
                return Err(e);
            }
            metrics.registered(&plugin.spec.name);
        }
        // Watch for a kubelet restart (or our stop).
        loop {
            tokio::select! {
                _ = tokio::time::sleep(paths.poll_interval) => {}
                _ = stop.changed() => {}
            }
            if stop_requested(&stop) {
                for s in served {
                    s.stop().await;
                }
                return Ok(());
            }
            let socket_gone = served.iter().any(|s| !s.socket_exists());
            let kubelet_changed = file_identity(&paths.kubelet_socket) != Some(kubelet);
            if socket_gone || kubelet_changed {
                tracing::warn!(
                    socket_gone,
                    kubelet_changed,
                    "kubelet restarted; serving and registering again"
                );
                for s in served {
                    s.stop().await;
                }
                break;
            }
        }
    }
}
