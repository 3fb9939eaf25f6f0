//! Leader election: several replicas run, the holder of one Lease scales.
//!
//! The scheduler's [`Leadership`] and [`LeaseSettings`] are reused; only the
//! field manager differs, so the Lease's managed fields name the autoscaler.
//! Standby replicas keep their watches warm; a replica that loses the Lease
//! stops writing at its next period, and the scheduler's [`LeaseFence`] (which
//! follows the Lease object itself) stops it even before the elector notices.

use kube::Client;
use kube_lease_manager::LeaseManagerError;
pub use phalanx_scheduler::controller::leader::{
    always_leader, Leadership, LeaseFence, LeaseSettings,
};

/// Joins the election for `settings.name` and renews while elected.
pub async fn elect(
    client: Client,
    settings: &LeaseSettings,
) -> Result<Leadership, LeaseManagerError> {
    phalanx_scheduler::controller::leader::elect_as(client, settings, "phalanx-autoscaler").await
}
