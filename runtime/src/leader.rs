//! Leader election: several replicas run, one Lease holder acts (schedules,
//! scales).
//!
//! Every replica watches the cluster all the time, so a standby's snapshot is warm;
//! only the holder of the Lease takes pods from the queue. A replica that loses
//! the Lease after holding it stops at once (as kube-scheduler does), so two
//! replicas never bind at the same time; the Binding's UID precondition and the
//! API server's refusal to re-bind a bound pod cover the moments in between.
//!
//! The elector only learns that it lost the Lease when a renewal fails, and on an
//! overloaded machine that can be after the Lease has expired and another replica
//! has taken it. [`LeaseFence`] closes that window: it follows the Lease object
//! itself and says "stop binding" shortly before this replica's last recorded
//! renewal runs out, whatever the elector believes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ControllerDefaults, LeaderElectionConfig};

/// How a replica learns whether it may schedule.
#[derive(Debug)]
pub struct Leadership {
    /// `true` while this replica holds the Lease (always `true` without election).
    pub is_leader: watch::Receiver<bool>,
    /// The task renewing the Lease; dropping `is_leader` makes it release the Lease.
    pub task: Option<JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>>,
    /// Whether this replica's hold on the Lease is still good for binding.
    pub fence: LeaseFence,
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

impl LeaseSettings {
    /// The settings of a `leaderElection` section, for replica `identity`.
    pub fn from_config<C: ControllerDefaults>(
        config: &LeaderElectionConfig<C>,
        identity: &str,
    ) -> Self {
        LeaseSettings {
            name: config.lease_name.clone(),
            namespace: config.lease_namespace.clone(),
            identity: identity.to_owned(),
            duration_seconds: config.lease_duration_seconds,
            grace_seconds: config.renew_grace_seconds,
        }
    }
}

/// Without election this replica always leads (a single-replica install).
pub fn always_leader() -> Leadership {
    let (tx, rx) = watch::channel(true);
    // Keep the sender alive for the life of the process so `changed()` never errors.
    std::mem::forget(tx);
    Leadership {
        is_leader: rx,
        task: None,
        fence: LeaseFence::unfenced(),
    }
}

/// Joins the election `config` describes as `identity`, or leads alone when
/// election is off. `C::NAME` is the field manager of the Lease writes, so the
/// Lease's managed fields name the component.
pub async fn join<C: ControllerDefaults>(
    client: Client,
    config: &LeaderElectionConfig<C>,
    identity: &str,
) -> Result<Leadership, LeaseManagerError> {
    if !config.enabled {
        return Ok(always_leader());
    }
    elect_as(
        client,
        &LeaseSettings::from_config(config, identity),
        C::NAME,
    )
    .await
}

/// Joins the election for `settings.name` and starts renewing when elected;
/// the Lease writes carry `field_manager`.
pub async fn elect_as(
    client: Client,
    settings: &LeaseSettings,
    field_manager: &str,
) -> Result<Leadership, LeaseManagerError> {
    let client_for_fence = client.clone();
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_seconds)
        .with_grace(settings.grace_seconds)
        .with_field_manager(field_manager)
        .build()
        .await?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership {
        is_leader,
        task: Some(task),
        fence: LeaseFence::follow(client_for_fence, settings),
    })
}

/// How much earlier than the Lease's expiry binding stops: a Binding sent just
/// before the fence closes still needs time to reach the API server.
pub const FENCE_MARGIN: Duration = Duration::from_secs(1);

/// Whether this replica may still bind, judged from the Lease object.
#[derive(Debug, Clone)]
pub struct LeaseFence {
    /// `None` without election (always open); otherwise when this replica's
    /// hold ends according to the Lease last seen (`None` inside: not ours).
    valid_until: Option<watch::Receiver<Option<SystemTime>>>,
}

impl LeaseFence {
    /// A fence that never closes (a single replica without election).
    pub fn unfenced() -> Self {
        LeaseFence { valid_until: None }
    }

    /// A fence fed by hand (tests).
    pub fn from_channel(valid_until: watch::Receiver<Option<SystemTime>>) -> Self {
        LeaseFence {
            valid_until: Some(valid_until),
        }
    }

    /// Follows the Lease named in `settings` and closes the fence
    /// [`FENCE_MARGIN`] before this replica's last renewal runs out.
    pub fn follow(client: Client, settings: &LeaseSettings) -> Self {
        let (tx, rx) = watch::channel(None);
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
        let identity = settings.identity.clone();
        tokio::spawn(async move {
            let mut stream = watcher(api, config)
                .backoff(crate::watch::recovery_backoff())
                .boxed();
            while let Some(event) = stream.next().await {
                let until = match event {
                    Ok(Event::Apply(lease) | Event::InitApply(lease)) => {
                        lease_valid_until(&lease, &identity)
                    }
                    Ok(Event::Delete(_)) => None,
                    Ok(Event::Init | Event::InitDone) => continue,
                    Err(error) => {
                        tracing::warn!(%error, "lease watch error; retrying with backoff");
                        continue;
                    }
                };
                if tx.send(until).is_err() {
                    return;
                }
            }
        });
        LeaseFence::from_channel(rx)
    }

    /// May this replica send a Binding at `now`?
    pub fn allows(&self, now: SystemTime) -> bool {
        match &self.valid_until {
            None => true,
            Some(rx) => rx.borrow().is_some_and(|until| now + FENCE_MARGIN < until),
        }
    }
}

/// When `identity`'s hold on the Lease ends: its last renewal (or acquisition)
/// plus the lease duration, or `None` if someone else holds it or the record is
/// incomplete.
pub fn lease_valid_until(lease: &Lease, identity: &str) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let seconds = u64::try_from(spec.lease_duration_seconds?).ok()?;
    let renewed_ms = u64::try_from(renewed.0.as_millisecond()).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(renewed_ms) + Duration::from_secs(seconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: &str, seconds: i32) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "phalanx-scheduler", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": holder,
                "renewTime": renewed,
                "leaseDurationSeconds": seconds,
            }
        }))
        .unwrap()
    }

    fn at(rfc3339: &str) -> SystemTime {
        let ts: k8s_openapi::jiff::Timestamp = rfc3339.parse().unwrap();
        UNIX_EPOCH + Duration::from_millis(u64::try_from(ts.as_millisecond()).unwrap())
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Controller;

    impl ControllerDefaults for Controller {
        const NAME: &'static str = "phalanx-test";
        const HTTP_PORT: u16 = 1;
    }

    #[test]
    fn settings_come_from_the_config_section_and_the_identity() {
        let mut config = LeaderElectionConfig::<Controller>::default();
        config.lease_namespace = "phalanx-system".to_owned();
        config.lease_duration_seconds = 20;
        assert_eq!(
            LeaseSettings::from_config(&config, "replica-0"),
            LeaseSettings {
                name: "phalanx-test".to_owned(),
                namespace: "phalanx-system".to_owned(),
                identity: "replica-0".to_owned(),
                duration_seconds: 20,
                grace_seconds: 5,
            }
        );
    }

    #[tokio::test]
    async fn without_election_this_replica_leads_and_is_never_fenced() {
        let mut config = LeaderElectionConfig::<Controller>::default();
        config.enabled = false;
        // A client that fails every request: joining must not touch the API.
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(service, "default");
        let leadership = join(client, &config, "replica-0").await.unwrap();
        assert!(*leadership.is_leader.borrow());
        assert!(leadership.task.is_none());
        assert!(leadership.fence.allows(SystemTime::now()));
    }

    #[test]
    fn our_lease_is_valid_until_renewal_plus_duration() {
        let l = lease("phalanx-0", "2026-11-23T04:00:00.000000Z", 15);
        assert_eq!(
            lease_valid_until(&l, "phalanx-0"),
            Some(at("2026-11-23T04:00:15Z"))
        );
        assert_eq!(lease_valid_until(&l, "phalanx-1"), None);
    }

    #[test]
    fn fence_closes_a_margin_before_expiry_and_when_someone_else_holds_it() {
        let (tx, rx) = watch::channel(None);
        let fence = LeaseFence::from_channel(rx);
        let now = at("2026-11-23T04:00:10Z");
        assert!(!fence.allows(now), "no lease seen yet: closed");
        tx.send(lease_valid_until(
            &lease("phalanx-0", "2026-11-23T04:00:00Z", 15),
            "phalanx-0",
        ))
        .unwrap();
        assert!(fence.allows(now));
        assert!(fence.allows(at("2026-11-23T04:00:13.9Z")));
        assert!(
            !fence.allows(at("2026-11-23T04:00:14Z")),
            "inside the margin"
        );
        assert!(!fence.allows(at("2026-11-23T04:00:20Z")), "expired");
        tx.send(lease_valid_until(
            &lease("phalanx-1", "2026-11-23T04:00:09Z", 15),
            "phalanx-0",
        ))
        .unwrap();
        assert!(!fence.allows(now), "taken over");
        assert!(LeaseFence::unfenced().allows(at("2099-01-01T00:00:00Z")));
    }
}
