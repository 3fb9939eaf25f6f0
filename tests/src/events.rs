//! Scheduling events as the tests read them: `events.k8s.io/v1` Events about
//! pods, reduced to what assertions need.

use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use kube::Api;

use crate::error::Result;

/// One Event about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEvent {
    pub pod: String,
    /// `Scheduled`, `FailedScheduling`, …
    pub reason: String,
    pub note: String,
    pub reporting_controller: String,
    /// `series.count` or `deprecatedCount` when the event repeats, else 1.
    pub count: i32,
}

/// All Events about pods in `namespace`.
pub async fn pod_events(client: &kube::Client, namespace: &str) -> Result<Vec<PodEvent>> {
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|event| {
            let regarding = event.regarding?;
            if regarding.kind.as_deref() != Some("Pod") {
                return None;
            }
            let count = event
                .series
                .as_ref()
                .map(|s| s.count)
                .or(event.deprecated_count)
                .unwrap_or(1);
            Some(PodEvent {
                pod: regarding.name?,
                reason: event.reason.unwrap_or_default(),
                note: event.note.unwrap_or_default(),
                reporting_controller: event.reporting_controller.unwrap_or_default(),
                count,
            })
        })
        .collect())
}
