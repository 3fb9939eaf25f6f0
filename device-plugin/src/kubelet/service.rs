//! The `v1beta1.DevicePlugin` service for one resource.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};

use crate::allocation::{self, AllocationError, PreferredRequest, SchedulerChoice};
use crate::assignment_lookup::{AssignmentUnreadable, LookupRetry, LookupStep};
use crate::backend::GpuDevice;
use crate::health::HealthReport;
use crate::metrics::PluginMetrics;
use crate::pods::{self, AllocatedContainers, PodSource};
use crate::proto::v1beta1::device_plugin_server::DevicePlugin;
use crate::proto::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, Empty, ListAndWatchResponse,
    NumaNode, PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, TopologyInfo,
};
use crate::resources::{ResourceError, ResourceSpec};

/// The service for one resource. Clones share everything.
#[derive(Debug, Clone)]
pub struct GpuDevicePlugin {
    pub spec: ResourceSpec,
    pub node_name: String,
    pub gpus: Arc<Vec<GpuDevice>>,
    health: watch::Receiver<HealthReport>,
    pods: Arc<dyn PodSource>,
    pod_resources_socket: Option<PathBuf>,
    metrics: PluginMetrics,
    /// How long to keep reading the pods on this node before refusing.
    lookup_retry: LookupRetry,
    /// Turns true when this server is being stopped, so open streams end.
    stopping: Option<watch::Receiver<bool>>,
}

impl GpuDevicePlugin {
    pub fn new(
        spec: ResourceSpec,
        node_name: String,
        gpus: Arc<Vec<GpuDevice>>,
        health: watch::Receiver<HealthReport>,
        pods: Arc<dyn PodSource>,
        pod_resources_socket: Option<PathBuf>,
        metrics: PluginMetrics,
    ) -> Result<Self, ResourceError> {
        // Refuse device IDs kubelet would refuse before serving anything.
        spec.devices(&gpus, &HealthReport::default())?;
        Ok(GpuDevicePlugin {
            spec,
            node_name,
            gpus,
            health,
            pods,
            pod_resources_socket,
            metrics,
            lookup_retry: LookupRetry::default(),
            stopping: None,
        })
    }

    /// A copy that reads the pods on its node with `retry` (the default:
    /// [`LookupRetry::default`]).
    pub fn with_lookup_retry(mut self, retry: LookupRetry) -> Self {
        self.lookup_retry = retry;
        self
    }

    /// A copy whose streams end when `stopping` turns true.
    pub fn with_stop_signal(&self, stopping: watch::Receiver<bool>) -> Self {
        GpuDevicePlugin {
            stopping: Some(stopping),
            ..self.clone()
        }
    }

    fn device_list(&self, health: &HealthReport) -> Result<ListAndWatchResponse, Status> {
        let devices = self
            .spec
            .devices(&self.gpus, health)
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|d| Device {
                id: d.id,
                health: if d.healthy { "Healthy" } else { "Unhealthy" }.to_owned(),
                topology: d.numa_node.map(|n| TopologyInfo {
                    nodes: vec![NumaNode { id: i64::from(n) }],
                }),
            })
            .collect();
        Ok(ListAndWatchResponse { devices })
    }

    /// The pods bound to this node, read again with backoff while the API
    /// server does not answer; refused once [`LookupRetry`]'s budget is spent
    /// (see [`crate::assignment_lookup`] for why not fall back to topology).
    async fn pods_on_node(
        &self,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Pod>, AssignmentUnreadable> {
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            let timeout = self.lookup_retry.attempt_timeout(started.elapsed());
            let why = match tokio::time::timeout(timeout, self.pods.pods_on_node(&self.node_name))
                .await
            {
                Ok(Ok(pods)) => {
                    if failures > 0 {
                        tracing::info!(resource = %self.spec.name, failures, waited_ms = started.elapsed().as_millis(), "pods on the node readable again; following the scheduler's assignment");
                    }
                    return Ok(pods);
                }
                Ok(Err(why)) => why,
                Err(_) => format!("no answer within {} ms", timeout.as_millis()),
            };
            failures = failures.saturating_add(1);
            match self.lookup_retry.after_failure(failures, started.elapsed()) {
                LookupStep::RetryAfter(pause) => {
                    tracing::warn!(%why, resource = %self.spec.name, failures, retry_in_ms = pause.as_millis(), "cannot read the pods on this node; retrying before refusing the allocation");
                    tokio::time::sleep(pause).await;
                }
                LookupStep::Refuse => {
                    return Err(AssignmentUnreadable {
                        resource: self.spec.name.clone(),
                        node: self.node_name.clone(),
                        attempts: failures,
                        waited_ms: started.elapsed().as_millis(),
                        last_error: why,
                    });
                }
            }
        }
    }

    /// The pod being admitted and the scheduler's choice for it, if any.
    async fn scheduler_choice(
        &self,
        size: usize,
    ) -> Result<Option<(String, phalanx_api::GpuAssignmentAnnotation)>, Status> {
        let pods = self.pods_on_node().await.map_err(|refusal| {
            self.metrics
                .allocation_failed(&self.spec.name, "assignment_unreadable");
            tracing::error!(error = %refusal, "GetPreferredAllocation refused: the scheduler's assignment cannot be read");
            Status::unavailable(refusal.to_string())
        })?;
        let allocated: Option<AllocatedContainers> = match &self.pod_resources_socket {
            Some(socket) => {
                match super::pod_resources::list(socket, Duration::from_secs(5)).await {
                    Ok(response) => Some(pods::allocated_containers(&response)),
                    Err(why) => {
                        tracing::warn!(%why, "PodResources unavailable; only Pending pods are candidates");
                        None
                    }
                }
            }
            None => None,
        };
        let Some(pod) = pods::identify_pod(
            &pods,
            allocated.as_ref(),
            &self.node_name,
            &self.spec.name,
            size as u64,
        ) else {
            return Ok(None);
        };
        let key = pods::pod_key(pod);
        match pods::assignment_for_node(pod, &self.node_name) {
            Ok(Some(assignment)) => Ok(Some((key, assignment))),
            Ok(None) => Ok(None),
            Err(e) => {
                self.metrics
                    .allocation_failed(&self.spec.name, "malformed_annotation");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }
}

fn allocation_status(e: &AllocationError) -> Status {
    match e {
        AllocationError::UnknownDevice { .. }
        | AllocationError::DuplicateDevice { .. }
        | AllocationError::UnknownAssignedGpu { .. }
        | AllocationError::AssignmentTooSmall { .. } => Status::invalid_argument(e.to_string()),
        AllocationError::UnhealthyDevice { .. } | AllocationError::ChoiceUnavailable { .. } => {
            Status::failed_precondition(e.to_string())
        }
        AllocationError::NotEnoughDevices { .. } | AllocationError::ShareTooLarge { .. } => {
            Status::resource_exhausted(e.to_string())
        }
    }
}

fn error_kind(e: &AllocationError) -> &'static str {
    match e {
        AllocationError::UnknownDevice { .. } => "unknown_device",
        AllocationError::DuplicateDevice { .. } => "duplicate_device",
        AllocationError::UnhealthyDevice { .. } => "unhealthy_device",
        AllocationError::NotEnoughDevices { .. } => "not_enough_devices",
        AllocationError::UnknownAssignedGpu { .. } => "unknown_assigned_gpu",
        AllocationError::ChoiceUnavailable { .. } => "choice_unavailable",
        AllocationError::ShareTooLarge { .. } => "share_too_large",
        AllocationError::AssignmentTooSmall { .. } => "assignment_too_small",
    }
}

type DeviceStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for GpuDevicePlugin {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        }))
    }

    type ListAndWatchStream = DeviceStream;

    /// The full list now, and again whenever health changes, until the server stops.
    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let plugin = self.clone();
        let stopping = self.stopping.clone();
        let stop = async move {
            match stopping {
                // Ends on `true`, or when the sender is gone (server dropped).
                Some(mut stopping) => {
                    let _ = stopping.wait_for(|s| *s).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let stream = WatchStream::new(self.health.clone())
            .map(move |health| plugin.device_list(&health))
            .take_until(stop);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let health = self.health.borrow().clone();
        let mut container_responses = Vec::new();
        for container in request.into_inner().container_requests {
            let size = usize::try_from(container.allocation_size).map_err(|_| {
                Status::invalid_argument(format!(
                    "{}: allocation size {} is negative",
                    self.spec.name, container.allocation_size
                ))
            })?;
            let choice = self.scheduler_choice(size).await?;
            let request = PreferredRequest {
                available: container.available_device_i_ds,
                must_include: container.must_include_device_i_ds,
                size,
            };
            let chosen = allocation::preferred(
                &self.spec,
                &self.gpus,
                &health,
                &request,
                choice.as_ref().map(|(pod, assignment)| SchedulerChoice { pod, assignment }),
            )
            .map_err(|e| {
                self.metrics.allocation_failed(&self.spec.name, error_kind(&e));
                tracing::warn!(error = %e, resource = %self.spec.name, "GetPreferredAllocation refused");
                allocation_status(&e)
            })?;
            if let Some((pod, _)) = &choice {
                tracing::info!(%pod, resource = %self.spec.name, devices = chosen.len(), "steered to the scheduler's GPUs");
            }
            container_responses.push(ContainerPreferredAllocationResponse {
                device_i_ds: chosen,
            });
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let health = self.health.borrow().clone();
        let mut container_responses = Vec::new();
        for container in request.into_inner().container_requests {
            let allocation =
                allocation::allocate(&self.spec, &self.gpus, &health, &container.devices_ids)
                    .map_err(|e| {
                        self.metrics
                            .allocation_failed(&self.spec.name, error_kind(&e));
                        tracing::warn!(error = %e, resource = %self.spec.name, "Allocate refused");
                        allocation_status(&e)
                    })?;
            self.metrics.allocated(&self.spec.name);
            container_responses.push(ContainerAllocateResponse {
                envs: allocation.envs.into_iter().collect(),
                ..ContainerAllocateResponse::default()
            });
        }
        Ok(Response::new(AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
