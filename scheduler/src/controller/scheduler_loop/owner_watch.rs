//! The loop's side of gangs found from the pods' owners (`gangs/owners`): the
//! watches of batch/v1 Jobs and of the operator kinds the server serves, the
//! owner index they fill, and the decision for each pod that declares no gang.
//!
//! A pod whose owner has not been seen is held (not queued) for at most
//! [`OWNER_WAIT`], then scheduled on its own with a `GangNotDerived` event, as
//! is a pod whose owner is inconsistent. When an owner's summary changes (not
//! its status), the pods whose gang was decided from it are decided again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::watcher::Event;
use kube::{Api, ResourceExt};
use phalanx_kube::mirror::{pod_uid, MirrorChange};
use phalanx_runtime::events;
use phalanx_runtime::watch::spawn_watch;
use tokio::sync::mpsc;

use super::{Input, SchedulerLoop, WorkKey};
use crate::controller::gangs::owners::OwnerId;
use crate::controller::gangs::{
    auto_gang_of, AutoGang, GangMembership, OwnerIndex, OwnerKind, OwnerRecord,
};
use crate::controller::scheduling_events;

/// How long a pod waits for its owner object to be seen before it is
/// scheduled on its own. The owner normally exists before its pods (its
/// controller created them), so this only covers the two watches' skew and a
/// fresh start's initial lists.
pub(super) const OWNER_WAIT: Duration = Duration::from_secs(30);

/// The owner index and what the loop remembers about the pods it decided.
#[derive(Debug, Default)]
pub(super) struct OwnerGangs {
    enabled: bool,
    index: OwnerIndex,
    /// Pods (UIDs) whose gang was decided from each owner.
    dependents: HashMap<OwnerId, HashSet<String>>,
    /// The owners each pod's decision looked at.
    consulted: HashMap<String, Vec<OwnerId>>,
    /// Pods held for their owner, or scheduled alone after waiting for it.
    waiting: HashMap<String, OwnerWait>,
    /// Pods told they are scheduled on their own, and why: told once.
    told_single: HashMap<String, String>,
    /// Owners listed so far in a relist of each kind.
    relisting: HashMap<OwnerKind, HashSet<OwnerId>>,
}

/// A pod whose owner has not been seen.
#[derive(Debug)]
struct OwnerWait {
    pod: Arc<Pod>,
    since: Instant,
    /// Waited [`OWNER_WAIT`] already: scheduled on its own, kept here only so
    /// that its owner's arrival decides it again.
    expired: bool,
}

/// A pod's gang as the loop acts on it.
pub(super) enum OwnerGang {
    /// In this gang, or in none.
    Decided(Option<GangMembership>),
    /// Not to be queued now: waiting for its owner, or refused (the event
    /// was sent).
    Hold,
}

impl SchedulerLoop {
    /// Starts the watch of Jobs (when `gangs.autoGroup` is on); the operator
    /// kinds are watched where served, by `gang_source_watch.rs`.
    pub(super) async fn spawn_owner_watches(&mut self, tx: mpsc::Sender<Input>) {
        if !self.deps.config.gangs.auto_group {
            return;
        }
        self.owner_gangs.enabled = true;
        let client = self.deps.client.clone();
        let jobs = Api::<Job>::all(client.clone());
        if may_list(&jobs, "jobs.batch").await {
            self.owner_gangs.index.watch(OwnerKind::Job);
            spawn_watch(jobs, tx.clone(), |e| Input::Job(Box::new(e)));
        }
        // The operator kinds: asked with the gang object kinds, at start and
        // at the discovery interval (`gang_source_watch.rs`).
    }

    /// `gang_source_watch.rs` started (or stopped) watching an owner kind.
    pub(super) fn owner_kind_watched(&mut self, kind: OwnerKind, watched: bool) -> MirrorChange {
        if watched {
            self.owner_gangs.index.watch(kind);
        } else {
            self.owner_gangs.index.unwatch(kind);
        }
        // Pending pods decided without a gang may belong to this kind's
        // owners (installed after the scheduler started): decide them again.
        let loners: Vec<Arc<Pod>> = self
            .pending
            .values()
            .filter(|p| p.gang.is_none() && !p.binding)
            .map(|p| p.pod.clone())
            .collect();
        for pod in loners {
            self.queue.remove(&WorkKey::Pod(pod_uid(&pod)));
            self.track((*pod).clone());
        }
        MirrorChange::default()
    }

    pub(super) fn handle_job_event(&mut self, event: Event<Job>) -> MirrorChange {
        self.owner_event(OwnerKind::Job, event, OwnerRecord::from_job)
    }

    pub(super) fn handle_owner_event(
        &mut self,
        kind: OwnerKind,
        event: Event<DynamicObject>,
    ) -> MirrorChange {
        self.owner_event(kind, event, |object| {
            OwnerRecord::from_dynamic(kind, object)
        })
    }

    fn owner_event<K: ResourceExt>(
        &mut self,
        kind: OwnerKind,
        event: Event<K>,
        summarise: impl Fn(&K) -> OwnerRecord,
    ) -> MirrorChange {
        match event {
            Event::Init => {
                self.owner_gangs.relisting.insert(kind, HashSet::new());
            }
            Event::InitApply(object) | Event::Apply(object) => {
                let record = summarise(&object);
                if let Some(listed) = self.owner_gangs.relisting.get_mut(&kind) {
                    listed.insert(record.id.clone());
                }
                let id = record.id.clone();
                if self.owner_gangs.index.apply(record) {
                    self.owner_changed(&id);
                }
            }
            Event::Delete(object) => {
                let record = summarise(&object);
                self.owner_gangs.index.delete(&record.id);
            }
            Event::InitDone => {
                if let Some(listed) = self.owner_gangs.relisting.remove(&kind) {
                    self.owner_gangs.index.retain_listed(kind, &listed);
                }
            }
        }
        MirrorChange::default()
    }

    /// Decides again the gangs of the pods that depend on `id` or wait for an
    /// owner in its namespace.
    fn owner_changed(&mut self, id: &OwnerId) {
        let mut uids: Vec<String> = self
            .owner_gangs
            .dependents
            .get(id)
            .map(|uids| uids.iter().cloned().collect())
            .unwrap_or_default();
        uids.extend(
            self.owner_gangs
                .waiting
                .iter()
                .filter(|(_, wait)| wait.pod.metadata.namespace.as_deref() == Some(&id.namespace))
                .map(|(uid, _)| uid.clone()),
        );
        uids.sort_unstable();
        uids.dedup();
        for uid in uids {
            let pod = match self.pending.get(&uid) {
                Some(pending) if !pending.binding => pending.pod.clone(),
                Some(_) => continue,
                // Held, so never queued nor bound by us. One let go alone
                // and no longer pending is bound (or finished): leave it.
                None => match self.owner_gangs.waiting.get(&uid) {
                    Some(wait) if !wait.expired => wait.pod.clone(),
                    _ => continue,
                },
            };
            // It may move between a gang and scheduling on its own.
            self.queue.remove(&WorkKey::Pod(uid));
            self.track((*pod).clone());
        }
    }

    /// The gang of a pod for this scheduler that declares none, from its owner.
    pub(super) fn owner_gang(&mut self, pod: &Pod) -> OwnerGang {
        if !self.owner_gangs.enabled {
            return OwnerGang::Decided(None);
        }
        let uid = pod_uid(pod);
        let decision = match auto_gang_of(pod, &self.owner_gangs.index) {
            Ok(decision) => decision,
            Err(error) => {
                // A malformed Phalanx annotation: refused, as in `track`.
                self.forget_owner_gang(&uid);
                if is_unbound(pod) {
                    self.fail_event(pod, error.to_string(), true);
                }
                self.stop_pending(&uid);
                return OwnerGang::Hold;
            }
        };
        self.remember_consulted(&uid, decision.consulted);
        match decision.gang {
            AutoGang::NotGrouped => {
                self.owner_gangs.waiting.remove(&uid);
                OwnerGang::Decided(None)
            }
            AutoGang::Gang(membership) => {
                self.owner_gangs.waiting.remove(&uid);
                self.owner_gangs.told_single.remove(&uid);
                OwnerGang::Decided(Some(membership))
            }
            AutoGang::Single { reason } => {
                self.owner_gangs.waiting.remove(&uid);
                self.tell_single(pod, reason);
                OwnerGang::Decided(None)
            }
            AutoGang::WaitingForOwner { owner } => {
                let now = Instant::now();
                let since = self
                    .owner_gangs
                    .waiting
                    .get(&uid)
                    .map_or(now, |wait| wait.since);
                let expired = now.duration_since(since) >= OWNER_WAIT;
                self.owner_gangs.waiting.insert(
                    uid.clone(),
                    OwnerWait {
                        pod: Arc::new(pod.clone()),
                        since,
                        expired,
                    },
                );
                if expired {
                    // Stays in `waiting` so that its owner's arrival still
                    // decides it again; scheduled alone meanwhile.
                    self.tell_single(
                        pod,
                        format!(
                            "{owner}, which owns this pod, was not seen within {}s; \
                             the pod is scheduled on its own, not as a gang",
                            OWNER_WAIT.as_secs()
                        ),
                    );
                    return OwnerGang::Decided(None);
                }
                self.stop_pending(&uid);
                self.set_gang_membership(&uid, None);
                OwnerGang::Hold
            }
        }
    }

    /// Pods whose owner has not come within [`OWNER_WAIT`] are decided again
    /// (and scheduled on their own). Called from housekeeping.
    pub(super) fn expire_owner_waits(&mut self) {
        let now = Instant::now();
        let expired: Vec<Arc<Pod>> = self
            .owner_gangs
            .waiting
            .values()
            .filter(|wait| !wait.expired && now.duration_since(wait.since) >= OWNER_WAIT)
            .map(|wait| wait.pod.clone())
            .collect();
        for pod in expired {
            self.track((*pod).clone());
        }
    }

    /// The pod is gone: forget what was decided for it.
    pub(super) fn forget_owner_gang(&mut self, uid: &str) {
        self.remember_consulted(uid, Vec::new());
        self.owner_gangs.waiting.remove(uid);
        self.owner_gangs.told_single.remove(uid);
    }

    fn remember_consulted(&mut self, uid: &str, consulted: Vec<OwnerId>) {
        let gangs = &mut self.owner_gangs;
        for id in gangs.consulted.remove(uid).unwrap_or_default() {
            if let Some(uids) = gangs.dependents.get_mut(&id) {
                uids.remove(uid);
                if uids.is_empty() {
                    gangs.dependents.remove(&id);
                }
            }
        }
        if consulted.is_empty() {
            return;
        }
        for id in &consulted {
            gangs
                .dependents
                .entry(id.clone())
                .or_default()
                .insert(uid.to_owned());
        }
        gangs.consulted.insert(uid.to_owned(), consulted);
    }

    /// A `GangNotDerived` event, once per pod and reason, for a pod not yet bound.
    fn tell_single(&mut self, pod: &Pod, why: String) {
        let uid = pod_uid(pod);
        if !is_unbound(pod) || self.owner_gangs.told_single.get(&uid) == Some(&why) {
            return;
        }
        tracing::info!(pod = %pod.name_any(), %why, "scheduled on its own");
        let reference =
            events::pod_reference(&pod.namespace().unwrap_or_default(), &pod.name_any(), &uid);
        self.deps
            .events
            .record(scheduling_events::gang_not_derived(reference, why.clone()));
        self.owner_gangs.told_single.insert(uid, why);
    }
}

/// Whether this scheduler may list `api` (one object asked for). A kind it
/// may not watch (RBAC narrower than the chart's) is left out, so that its
/// pods are not held [`OWNER_WAIT`] for owners that cannot arrive.
pub(super) async fn may_list<K>(api: &Api<K>, what: &str) -> bool
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(%error, kind = what, "cannot list; gangs are not found from these owners");
            false
        }
    }
}

fn is_unbound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
}
