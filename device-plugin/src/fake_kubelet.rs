//! A stand-in for kubelet's side of the device plugin API, for tests and for
//! trying the plugin on a machine without a kubelet: it serves
//! `v1beta1.Registration` on `<dir>/kubelet.sock` (checking requests the way
//! kubelet does), serves `v1.PodResourcesLister` with a list the caller sets,
//! dials plugins as kubelet would, and can "restart" (delete every socket in
//! the directory and listen again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::proto::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use crate::proto::podresources::{
    AllocatableResourcesRequest, AllocatableResourcesResponse, GetPodResourcesRequest,
    GetPodResourcesResponse, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use crate::proto::v1beta1::device_plugin_client::DevicePluginClient;
use crate::proto::v1beta1::registration_server::{Registration, RegistrationServer};
use crate::proto::v1beta1::{Empty, RegisterRequest};
use crate::socket::{dial, listen, SocketError};

#[derive(Debug, Clone)]
struct RegistrationService {
    registered: mpsc::UnboundedSender<RegisterRequest>,
    /// Resource names already registered, as kubelet refuses a second plugin
    /// for one resource while the first is alive (approximated: same endpoint allowed).
    seen: Arc<Mutex<HashMap<String, String>>>,
}

#[tonic::async_trait]
impl Registration for RegistrationService {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        if r.version != crate::kubelet::API_VERSION {
            return Err(Status::invalid_argument(format!(
                "unsupported device plugin API version {:?}, expected {:?}",
                r.version,
                crate::kubelet::API_VERSION
            )));
        }
        if crate::resources::ResourceSpec::whole(&r.resource_name).is_err() {
            return Err(Status::invalid_argument(format!(
                "invalid extended resource name {:?}",
                r.resource_name
            )));
        }
        if r.endpoint.is_empty() || r.endpoint.contains('/') {
            return Err(Status::invalid_argument(format!(
                "endpoint {:?} must be a file name in the device-plugin directory",
                r.endpoint
            )));
        }
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(endpoint) = seen.get(&r.resource_name) {
                if *endpoint != r.endpoint {
                    return Err(Status::already_exists(format!(
                        "resource {} is already registered by {endpoint}",
                        r.resource_name
                    )));
                }
            }
            seen.insert(r.resource_name.clone(), r.endpoint.clone());
        }
        let _ = self.registered.send(r);
        Ok(Response::new(Empty {}))
    }
}

#[derive(Debug, Clone, Default)]
struct PodResourcesService {
    pods: Arc<Mutex<Vec<PodResources>>>,
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesService {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Ok(Response::new(ListPodResourcesResponse {
            pod_resources: pods,
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _request: Request<AllocatableResourcesRequest>,
    ) -> Result<Response<AllocatableResourcesResponse>, Status> {
        Ok(Response::new(AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        request: Request<GetPodResourcesRequest>,
    ) -> Result<Response<GetPodResourcesResponse>, Status> {
        let r = request.into_inner();
        let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        pods.iter()
            .find(|p| p.name == r.pod_name && p.namespace == r.pod_namespace)
            .map(|p| {
                Response::new(GetPodResourcesResponse {
                    pod_resources: Some(p.clone()),
                })
            })
            .ok_or_else(|| {
                Status::not_found(format!("pod {}/{} not found", r.pod_namespace, r.pod_name))
            })
    }
}

#[derive(Debug)]
struct Served {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Served {
    async fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// The fake kubelet.
#[derive(Debug)]
pub struct FakeKubelet {
    dir: PathBuf,
    pod_resources_socket: PathBuf,
    registrations: mpsc::UnboundedReceiver<RegisterRequest>,
    registration: RegistrationService,
    pod_resources: PodResourcesService,
    registration_server: Option<Served>,
    pod_resources_server: Option<Served>,
}

impl FakeKubelet {
    /// Listens on `<dir>/kubelet.sock` and on `pod_resources_socket` (kubelet
    /// keeps the latter in a directory of its own; put it outside `dir`, or a
    /// [`FakeKubelet::restart`] deletes it too). Missing directories are created.
    pub fn start(dir: &Path, pod_resources_socket: &Path) -> Result<Self, SocketError> {
        for d in [Some(dir), pod_resources_socket.parent()]
            .into_iter()
            .flatten()
        {
            std::fs::create_dir_all(d).map_err(|source| SocketError::Bind {
                path: d.display().to_string(),
                source,
            })?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let registration = RegistrationService {
            registered: tx,
            seen: Arc::default(),
        };
        let pod_resources = PodResourcesService::default();
        let mut kubelet = FakeKubelet {
            dir: dir.to_owned(),
            pod_resources_socket: pod_resources_socket.to_owned(),
            registrations: rx,
            registration,
            pod_resources,
            registration_server: None,
            pod_resources_server: None,
        };
        kubelet.serve_registration()?;
        let listener = listen(pod_resources_socket)?;
        let (stop, mut stopping) = watch::channel(false);
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(PodResourcesListerServer::new(kubelet.pod_resources.clone()))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stopping.wait_for(|s| *s).await;
                }),
        );
        kubelet.pod_resources_server = Some(Served { stop, task });
        Ok(kubelet)
    }

    fn serve_registration(&mut self) -> Result<(), SocketError> {
        let listener = listen(&self.kubelet_socket())?;
        let (stop, mut stopping) = watch::channel(false);
        let task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(self.registration.clone()))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                    let _ = stopping.wait_for(|s| *s).await;
                }),
        );
        self.registration_server = Some(Served { stop, task });
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn kubelet_socket(&self) -> PathBuf {
        self.dir.join(crate::kubelet::KUBELET_SOCKET_NAME)
    }

    pub fn pod_resources_socket(&self) -> &Path {
        &self.pod_resources_socket
    }

    /// The next `Register` call received, waiting up to `timeout`.
    pub async fn next_registration(&mut self, timeout: Duration) -> Option<RegisterRequest> {
        tokio::time::timeout(timeout, self.registrations.recv())
            .await
            .ok()
            .flatten()
    }

    /// Dials a registered plugin, as kubelet does after `Register`.
    pub async fn dial_plugin(
        &self,
        endpoint: &str,
    ) -> Result<DevicePluginClient<Channel>, SocketError> {
        Ok(DevicePluginClient::new(
            dial(&self.dir.join(endpoint)).await?,
        ))
    }

    /// What PodResources `List` answers from now on.
    pub fn set_pod_resources(&self, pods: Vec<PodResources>) {
        *self
            .pod_resources
            .pods
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = pods;
    }

    /// A kubelet restart: stop serving, delete every socket in the directory
    /// (the plugins' too), forget registrations, and listen again.
    pub async fn restart(&mut self) -> Result<(), SocketError> {
        if let Some(served) = self.registration_server.take() {
            served.stop().await;
        }
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let is_socket = entry
                    .file_type()
                    .map(|t| std::os::unix::fs::FileTypeExt::is_socket(&t))
                    .unwrap_or(false);
                if is_socket {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        self.registration
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.serve_registration()
    }

    /// Stops both servers.
    pub async fn stop(mut self) {
        if let Some(s) = self.registration_server.take() {
            s.stop().await;
        }
        if let Some(s) = self.pod_resources_server.take() {
            s.stop().await;
        }
    }
}
