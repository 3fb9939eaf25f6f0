//! Leader election: several replicas run, one Lease holder schedules.
//!
//! Every replica watches the cluster all the time, so a standby's snapshot is warm;
//! only the holder of the Lease takes pods from the queue. A replica that loses
//! the Lease after holding it stops at once (as kube-scheduler does), so two
//! replicas never bind at the same time; the Binding's UID precondition and the
//! API server's refusal to re-bind a bound pod cover the moments in between.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How a replica learns whether it may schedule.
#[derive(Debug)]
pub struct Leadership {
    /// `true` while this replica holds the Lease (always `true` without election).
    pub is_leader: watch::Receiver<bool>,
    /// The task renewing the Lease; dropping `is_leader` makes it release the Lease.
    pub task: Option<JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>>,
}

/// Lease settings (from the config's `leaderElection`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration_seconds: u64,
    pub grace_seconds: u64,
}

/// Without election this replica always leads (a single-replica install).
pub fn always_leader() -> Leadership {
    let (tx, rx) = watch::channel(true);
    // Keep the sender alive for the life of the process so `changed()` never errors.
    std::mem::forget(tx);
    Leadership {
        is_leader: rx,
        task: None,
    }
}

/// Joins the election for `settings.name` and starts renewing when elected.
pub async fn elect(
    client: Client,
    settings: &LeaseSettings,
) -> Result<Leadership, LeaseManagerError> {
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .with_field_manager("phalanx-scheduler")
        .build()
        .await?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership {
        is_leader,
        task: Some(task),
    })
}
