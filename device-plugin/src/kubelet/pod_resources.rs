//! Kubelet's PodResources API: which containers hold which devices.

use std::path::Path;
use std::time::Duration;

use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::{ListPodResourcesRequest, ListPodResourcesResponse};
use crate::socket::dial;

/// One `List` call; errors are strings because callers only log them.
pub async fn list(socket: &Path, timeout: Duration) -> Result<ListPodResourcesResponse, String> {
    let call = async {
        let channel = dial(socket).await.map_err(|e| e.to_string())?;
        PodResourcesListerClient::new(channel)
            .list(ListPodResourcesRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                format!(
                    "PodResources List on {}: {}",
                    socket.display(),
                    status.message()
                )
            })
    };
    tokio::time::timeout(timeout, call).await.map_err(|_| {
        format!(
            "PodResources List on {} timed out after {timeout:?}",
            socket.display()
        )
    })?
}
