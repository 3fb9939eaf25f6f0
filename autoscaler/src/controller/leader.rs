//! Leader election: several replicas run, the holder of one Lease scales.
//!
//! The scheduler's [`Leadership`] and [`LeaseSettings`] are reused; only the
//! field manager differs, so the Lease's managed fields name the autoscaler.
//! Standby replicas keep their watches warm; a replica that loses the Lease
//! stops writing at its next period.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
pub use phalanx_scheduler::controller::leader::{always_leader, Leadership, LeaseSettings};

/// Joins the election for `settings.name` and renews while elected.
pub async fn elect(
    client: Client,
    settings: &LeaseSettings,
) -> Result<Leadership, LeaseManagerError> {
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
    })
}
