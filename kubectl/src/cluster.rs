//! The plugin's reads from the API server: the pod asked about, the events
//! about it, and the objects a snapshot is built from. Nothing is written.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::{
    Event, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use phalanx_api::GpuNode;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::sim::ClusterObjects;

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("pod {namespace}/{name} not found")]
    NoSuchPod { namespace: String, name: String },
    #[error("reading {what} from the API server: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ReadError {
    let what = what.into();
    move |source| ReadError::Api { what, source }
}

/// The pod, or [`ReadError::NoSuchPod`].
pub async fn pod(client: &Client, namespace: &str, name: &str) -> Result<Pod, ReadError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.get_opt(name)
        .await
        .map_err(api_error(format!("pod {namespace}/{name}")))?
        .ok_or_else(|| ReadError::NoSuchPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

/// The FailedScheduling events about the pod with `uid` (core/v1 view of
/// the events.k8s.io objects the scheduler writes; same storage).
pub async fn scheduling_events(
    client: &Client,
    namespace: &str,
    uid: &str,
) -> Result<Vec<Event>, ReadError> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params =
        ListParams::default().fields(&format!("involvedObject.uid={uid},reason=FailedScheduling"));
    Ok(events
        .list(&params)
        .await
        .map_err(api_error(format!("events in {namespace}")))?
        .items)
}

/// Every object of a kind, cluster-wide; a kind the API server does not
/// serve (the GpuNode CRD not installed) lists as none.
pub async fn all<K>(client: &Client) -> Result<Vec<K>, ReadError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let api: Api<K> = Api::all(client.clone());
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Vec::new()),
        Err(source) => Err(ReadError::Api {
            what: K::plural(&()).into_owned(),
            source,
        }),
    }
}

/// What `sim` builds its snapshot from.
pub async fn cluster_objects(client: &Client) -> Result<ClusterObjects, ReadError> {
    Ok(ClusterObjects {
        nodes: all::<Node>(client).await?,
        gpu_nodes: all::<GpuNode>(client).await?,
        pods: all::<Pod>(client).await?,
        namespaces: all::<Namespace>(client).await?,
        claims: all::<PersistentVolumeClaim>(client).await?,
        volumes: all::<PersistentVolume>(client).await?,
        storage_classes: all::<StorageClass>(client).await?,
        csi_nodes: all::<CSINode>(client).await?,
    })
}
