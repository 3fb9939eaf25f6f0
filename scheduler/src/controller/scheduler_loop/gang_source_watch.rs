//! Watches the gang objects the server serves, and keeps asking.
//!
//! At start, and then every `gangs.discoveryIntervalSeconds`, the task asks the
//! server which gang object kinds it serves (`ServedApis::discover`, the one
//! discovery of optional kinds), starts a watch for each newly served kind and
//! stops the watch of one no longer served, so that a CRD or API group
//! installed after the scheduler started is picked up without a restart. The
//! The operator kinds gangs are found from (`gangs.autoGroup`) are asked about
//! in the same round: a newly served one gets its watch and the loop is told to
//! hold its pods for their owners (`Input::OwnerKindWatched`). The
//! set is logged at start and whenever it changes, and exported as
//! `phalanx_scheduler_gang_source_active`. A failed discovery is logged and
//! retried at the interval; scheduling goes on with the sources already known
//! (none, at start: pods of the annotation form and pods in no gang are
//! scheduled as usual).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::scheduling::v1alpha3::CompositePodGroup;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use phalanx_api::PodGroup;
use phalanx_runtime::watch::spawn_watch;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::owner_watch::may_list;
use super::Input;
use crate::controller::gangs::owners::{OwnerKind, OWNER_KINDS};
use crate::controller::gangs::sources::{
    active_sources, kinds_of, owner_sources, ActiveSources, GangSourceKind, COMPOSITE_POD_GROUP,
    GANG_OBJECT_SOURCES, SCHEDULER_PLUGINS_POD_GROUP, UPSTREAM_POD_GROUP,
};
use crate::controller::metrics::SchedulerMetrics;
use crate::controller::served_apis::ServedApis;

/// How soon a failed discovery is retried when the interval is 0 (only at
/// start): a discovery that never succeeded has not happened "at start".
const RETRY_WITHOUT_INTERVAL: Duration = Duration::from_secs(60);

/// The watches of the gang object kinds found served.
pub(super) struct GangSourceWatch {
    client: Client,
    /// The gang object kinds, then the owner kinds when gangs are found from
    /// owners.
    sources: Vec<GangSourceKind>,
    tx: mpsc::Sender<Input>,
    metrics: Arc<SchedulerMetrics>,
    current: Option<ActiveSources>,
    watches: HashMap<&'static str, JoinHandle<()>>,
}

impl GangSourceWatch {
    /// Asks once and starts the watches of what is served (so that gangs see
    /// their objects as early as possible); [`Self::keep_asking`] goes on.
    pub(super) async fn start(
        client: Client,
        tx: mpsc::Sender<Input>,
        metrics: Arc<SchedulerMetrics>,
        find_owners: bool,
    ) -> (Self, bool) {
        let mut sources = GANG_OBJECT_SOURCES.to_vec();
        if find_owners {
            sources.extend(owner_sources(OWNER_KINDS));
        }
        metrics.set_gang_sources(&active_sources(&ServedApis::default(), &sources));
        let mut watch = Self {
            client,
            sources,
            tx,
            metrics,
            current: None,
            watches: HashMap::new(),
        };
        let ok = watch.discover().await;
        (watch, ok)
    }

    /// Asks again at `interval` (`None`: only retries a start that failed).
    pub(super) async fn keep_asking(mut self, interval: Option<Duration>, mut ok: bool) {
        loop {
            let wait = match interval {
                Some(interval) => interval,
                None if ok => return,
                None => RETRY_WITHOUT_INTERVAL,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.tx.closed() => return,
            }
            ok = self.discover().await;
        }
    }

    /// One round: false when the server could not be asked.
    async fn discover(&mut self) -> bool {
        let kinds = kinds_of(&self.sources);
        let served = match ServedApis::discover(&self.client, &kinds).await {
            Ok(served) => served,
            Err(error) => {
                tracing::warn!(
                    %error,
                    "asking the API server which gang object kinds it serves failed; \
                     scheduling goes on with the gang sources already known and asks again later"
                );
                return false;
            }
        };
        let active = active_sources(&served, &self.sources);
        if self.current.as_ref() == Some(&active) {
            return true;
        }
        if self.current.is_none() {
            tracing::info!("gang sources: {active}");
        } else {
            tracing::info!("gang sources changed: {active}");
        }
        self.metrics.set_gang_sources(&active);
        self.reconcile(&active).await;
        self.current = Some(active);
        true
    }

    /// Starts the watches of newly served kinds, stops those no longer served.
    async fn reconcile(&mut self, active: &ActiveSources) {
        let wanted: Vec<GangSourceKind> = active.watched().copied().collect();
        let stopped: Vec<&'static str> = self
            .watches
            .keys()
            .copied()
            .filter(|name| !wanted.iter().any(|s| s.name == *name))
            .collect();
        for name in stopped {
            if let Some(handle) = self.watches.remove(name) {
                handle.abort();
            }
            self.forget_all(name);
        }
        for source in &wanted {
            if !self.watches.contains_key(source.name) {
                if let Some(handle) = self.spawn(source).await {
                    self.watches.insert(source.name, handle);
                }
            }
        }
    }

    async fn spawn(&self, source: &GangSourceKind) -> Option<JoinHandle<()>> {
        let (client, tx) = (self.client.clone(), self.tx.clone());
        if let Some(owner) = OwnerKind::of(&source.kind) {
            return self.spawn_owner_watch(owner, source).await;
        }
        let handle = if *source == SCHEDULER_PLUGINS_POD_GROUP {
            spawn_watch(Api::<PodGroup>::all(client), tx, |e| {
                Input::PodGroup(Box::new(e))
            })
        } else if *source == UPSTREAM_POD_GROUP {
            spawn_watch(Api::<UpstreamPodGroup>::all(client), tx, |e| {
                Input::UpstreamPodGroup(Box::new(e))
            })
        } else if *source == COMPOSITE_POD_GROUP {
            spawn_watch(Api::<CompositePodGroup>::all(client), tx, |e| {
                Input::CompositePodGroup(Box::new(e))
            })
        } else {
            return None;
        };
        Some(handle)
    }

    /// An owner kind's watch, once this scheduler may list it (RBAC narrower
    /// than the chart's leaves it out, rather than hold its pods for owners
    /// that cannot arrive); the loop is told first, so that pods created from
    /// now on wait for their owners.
    async fn spawn_owner_watch(
        &self,
        owner: OwnerKind,
        source: &GangSourceKind,
    ) -> Option<JoinHandle<()>> {
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &source.kind.api_resource());
        if !may_list(&api, &source.kind.to_string()).await {
            return None;
        }
        tracing::info!(kind = %source.kind, "finding gangs from these owners");
        self.tx
            .send(Input::OwnerKindWatched(owner, true))
            .await
            .ok()?;
        Some(spawn_watch(api, self.tx.clone(), move |e| {
            Input::Owner(owner, Box::new(e))
        }))
    }

    /// A stopped kind's objects are gone from the loop's view: an empty relist.
    fn forget_all(&self, name: &str) {
        if let Some(owner) = self
            .sources
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| OwnerKind::of(&s.kind))
        {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                for input in [
                    Input::Owner(owner, Box::new(Event::Init)),
                    Input::Owner(owner, Box::new(Event::InitDone)),
                    Input::OwnerKindWatched(owner, false),
                ] {
                    if tx.send(input).await.is_err() {
                        return;
                    }
                }
            });
            return;
        }
        let inputs: [Input; 2] = if name == SCHEDULER_PLUGINS_POD_GROUP.name {
            [
                Input::PodGroup(Box::new(Event::Init)),
                Input::PodGroup(Box::new(Event::InitDone)),
            ]
        } else if name == UPSTREAM_POD_GROUP.name {
            [
                Input::UpstreamPodGroup(Box::new(Event::Init)),
                Input::UpstreamPodGroup(Box::new(Event::InitDone)),
            ]
        } else if name == COMPOSITE_POD_GROUP.name {
            [
                Input::CompositePodGroup(Box::new(Event::Init)),
                Input::CompositePodGroup(Box::new(Event::InitDone)),
            ]
        } else {
            return;
        };
        let tx = self.tx.clone();
        tokio::spawn(async move {
            for input in inputs {
                if tx.send(input).await.is_err() {
                    return;
                }
            }
        });
    }
}
