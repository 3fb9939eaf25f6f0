//! Watches the gang objects the server serves, and keeps asking.
//!
//! At start, and then every `gangs.discoveryIntervalSeconds`, the task asks the
//! server which gang object kinds it serves (`ServedApis::discover`, the one
//! discovery of optional kinds), starts a watch for each newly served kind and
//! stops the watch of one no longer served, so that a CRD or API group
//! installed after the scheduler started is picked up without a restart. The
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
use kube::runtime::watcher::Event;
use kube::{Api, Client};
use phalanx_api::PodGroup;
use phalanx_runtime::watch::spawn_watch;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Input;
use crate::controller::gangs::sources::{
    active_sources, kinds_of, ActiveSources, GangSourceKind, COMPOSITE_POD_GROUP,
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
    ) -> (Self, bool) {
        metrics.set_gang_sources(&active_sources(&ServedApis::default(), GANG_OBJECT_SOURCES));
        let mut watch = Self {
            client,
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
        let kinds = kinds_of(GANG_OBJECT_SOURCES);
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
        let active = active_sources(&served, GANG_OBJECT_SOURCES);
        if self.current.as_ref() == Some(&active) {
            return true;
        }
        if self.current.is_none() {
            tracing::info!("gang sources: {active}");
        } else {
            tracing::info!("gang sources changed: {active}");
        }
        self.metrics.set_gang_sources(&active);
        self.reconcile(&active);
        self.current = Some(active);
        true
    }

    /// Starts the watches of newly served kinds, stops those no longer served.
    fn reconcile(&mut self, active: &ActiveSources) {
        let wanted: Vec<&GangSourceKind> = active.watched().collect();
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
        for source in wanted {
            if !self.watches.contains_key(source.name) {
                if let Some(handle) = self.spawn(source) {
                    self.watches.insert(source.name, handle);
                }
            }
        }
    }

    fn spawn(&self, source: &GangSourceKind) -> Option<JoinHandle<()>> {
        let (client, tx) = (self.client.clone(), self.tx.clone());
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

    /// A stopped kind's objects are gone from the loop's view: an empty relist.
    fn forget_all(&self, name: &str) {
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
