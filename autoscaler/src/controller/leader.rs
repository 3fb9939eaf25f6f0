//! Leader election: several replicas run, the holder of one Lease scales.
//!
//! The scheduler's [`Leadership`] and [`LeaseSettings`] are reused; only the
//! field manager differs, so the Lease's managed fields name the autoscaler.
//! Standby replicas keep their watches warm; a replica that loses the Lease
//! stops writing at its next period, and the scheduler's [`LeaseFence`] (which
//! follows the Lease object itself) stops it even before the elector notices.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
pub use phalanx_scheduler::controller::leader::{
    always_leader, Leadership, LeaseFence, LeaseSettings,
};

/// Joins the election for `settings.name` and renews while elected.
pub async fn elect(
    client: Client,
    settings: &LeaseSettings,
) -> Result<Leadership, LeaseManagerError> {
    let client_for_fence = client.clone();
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .with_field_manager("phalanx-autoscaler")
        .build()
        .await?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership {
        is_leader,
        task: Some(task),
        fence: LeaseFence::follow(client_for_fence, settings),
    })
}
