//! Preemption and reclaim in the loop: after a pod or gang did not fit, the
//! engine chooses victims among the running pods ([`plan_preemption`]); this
//! module builds that pool from what the watches show, starts the evictions,
//! and holds the freed nodes for the preemptor until it lands there (or its
//! hold runs out): the preemptor's pods carry the hold's token, and every
//! other pod of its priority or lower is kept off those nodes
//! ([`NodeReservation`]). The preemptor's `status.nominatedNodeName` names the
//! node, as kube-scheduler's does.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use phalanx_engine::preemption::{
    plan_preemption, NoPreemption, PreemptionPlan, PreemptionPolicy, PreemptionRules, Preemptor,
    RunningPod,
};
use phalanx_engine::{GangSpec, NodeReservation, PodDemand, TopologyLevel};
use phalanx_kube::mirror::MirrorChange;
use phalanx_kube::translate::{disruption_budget, DisruptionBudget};
use phalanx_runtime::events::{pod_reference, EventSpec, EventType};
use serde_json::json;

use super::{SchedulerLoop, WorkKey};
use crate::controller::binder::PodRef;
use crate::controller::evictor::{self, Eviction};
use crate::controller::gangs::PreemptionPolicy as GroupPreemptionPolicy;
use crate::controller::queue::Tenant;

/// A bound pod as preemption needs to know it, beyond its demand.
#[derive(Debug, Clone)]
pub(super) struct RunningMeta {
    pod: PodRef,
    /// Being deleted or evicted: its room is coming free, it is no victim.
    leaving: bool,
    priority: i32,
    started_ms: u64,
    labels: BTreeMap<String, String>,
}

/// Nodes held for a preemptor whose victims are leaving, or for a gang that
/// waited too long while smaller pods kept taking the room it needs.
#[derive(Debug, Clone)]
pub(super) struct Hold {
    token: u64,
    /// A preemptor's hold runs out `preemption.reservationSeconds` after its
    /// last victim has gone (victims take their grace period to leave); a
    /// starving gang's lasts until it is placed or gone.
    expires: bool,
    /// The victims' UIDs, while any is still there.
    victims: Vec<String>,
    /// When the last victim was seen gone.
    victims_gone: Option<Instant>,
}

/// What the loop keeps for preemption.
#[derive(Debug, Default)]
pub(super) struct PreemptionBook {
    /// Bound, unfinished pods that may be evicted, by UID.
    running: HashMap<String, RunningMeta>,
    /// PodDisruptionBudgets by `namespace/name`.
    budgets: BTreeMap<String, DisruptionBudget>,
    holds: HashMap<WorkKey, Hold>,
    next_token: u64,
}

/// Who wants the room: the work key, its pods (waiting, in member order)
/// and their demands.
#[derive(Clone, Copy)]
pub(super) struct Wanting<'a> {
    pub key: &'a WorkKey,
    pub pods: &'a [Arc<Pod>],
    pub demands: &'a [PodDemand],
    pub min_member: usize,
    pub topology: &'a [TopologyLevel<'a>],
    pub priority: i32,
    /// An upstream PodGroup's own `preemptionPolicy`, if it sets one.
    pub group_policy: Option<GroupPreemptionPolicy>,
    /// Its queue's tenant when queues are in use (reclaim needs it).
    pub tenant: Option<Tenant>,
}

impl<'a> Wanting<'a> {
    /// The engine's view of it, as `name`, at `priority`, in `queue`.
    fn preemptor(
        &self,
        name: &'a str,
        priority: i32,
        queue: Option<phalanx_engine::queues::QueueId>,
        policy: PreemptionPolicy,
    ) -> Preemptor<'a> {
        Preemptor {
            gang: GangSpec {
                name,
                members: self.demands,
                min_member: self.min_member,
                topology: self.topology,
                ..GangSpec::default()
            },
            priority,
            queue,
            policy,
        }
    }
}

impl SchedulerLoop {
    /// Keeps the pool of possible victims current from a pod event: a bound,
    /// unfinished pod that is not a mirror (static) pod and not a DaemonSet's
    /// (it would come straight back). One being deleted stays, marked
    /// leaving: its room is already coming free and it is no victim.
    pub(super) fn note_running(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let bound = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        let evictable = bound
            && !phalanx_kube::mirror::is_finished(pod)
            && !pod
                .annotations()
                .contains_key("kubernetes.io/config.mirror")
            && !pod
                .owner_references()
                .iter()
                .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
        if !evictable {
            self.preemption.running.remove(&uid);
            return;
        }
        let started = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .or(pod.metadata.creation_timestamp.as_ref())
            .map_or(0, |t| u64::try_from(t.0.as_millisecond()).unwrap_or(0));
        self.preemption.running.insert(
            uid.clone(),
            RunningMeta {
                pod: PodRef {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    uid,
                },
                leaving: pod.metadata.deletion_timestamp.is_some(),
                priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
                started_ms: started,
                labels: pod.labels().clone(),
            },
        );
    }

    pub(super) fn forget_running(&mut self, uid: &str) {
        self.preemption.running.remove(uid);
    }

    pub(super) fn handle_pdb_event(&mut self, event: Event<PodDisruptionBudget>) -> MirrorChange {
        let book = &mut self.preemption.budgets;
        let mut apply = |pdb: &PodDisruptionBudget| {
            let key = format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any());
            match disruption_budget(pdb) {
                Ok(budget) => {
                    book.insert(key, budget);
                }
                Err(error) => {
                    // Its pods stay protected as if it allowed nothing: the
                    // Eviction API reads the same object.
                    tracing::warn!(%error, "PodDisruptionBudget not understood; its pods are not preempted");
                    book.insert(
                        key,
                        DisruptionBudget::protecting_namespace(
                            pdb.namespace().unwrap_or_default(),
                            pdb.name_any(),
                        ),
                    );
                }
            }
        };
        match event {
            Event::Init => book.clear(),
            Event::InitApply(pdb) | Event::Apply(pdb) => apply(&pdb),
            Event::Delete(pdb) => {
                book.remove(&format!(
                    "{}/{}",
                    pdb.namespace().unwrap_or_default(),
                    pdb.name_any()
                ));
            }
            Event::InitDone => {}
        }
        // A budget freeing disruptions may let a preemptor preempt.
        MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        }
    }

    /// The token a work key's pods carry while nodes are held for it.
    pub(super) fn hold_token(&self, key: &WorkKey) -> Option<u64> {
        self.preemption.holds.get(key).map(|h| h.token)
    }

    /// The preemptor landed, left, or waited too long: its nodes are free for
    /// everyone again.
    pub(super) fn release_hold(&mut self, key: &WorkKey) {
        if let Some(hold) = self.preemption.holds.remove(key) {
            self.mirror
                .state_mut()
                .snapshot_mut()
                .release_reservations(hold.token);
        }
    }

    /// Releases a preemptor's hold `preemption.reservationSeconds` after its
    /// last victim has gone: if the preemptor still does not fit by then, it
    /// tries again from scratch.
    pub(super) fn expire_holds(&mut self) {
        let limit = self.deps.config.preemption.reservation();
        let running = &self.preemption.running;
        for hold in self.preemption.holds.values_mut() {
            hold.victims.retain(|uid| running.contains_key(uid));
            if hold.victims.is_empty() && hold.victims_gone.is_none() {
                hold.victims_gone = Some(Instant::now());
            }
        }
        let expired: Vec<WorkKey> = self
            .preemption
            .holds
            .iter()
            .filter(|(_, h)| h.expires && h.victims_gone.is_some_and(|t| t.elapsed() >= limit))
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.release_hold(&key);
        }
    }

    /// After an attempt that did not fit: chooses victims, starts their
    /// evictions and holds their nodes. Returns what the preemptor's
    /// FailedScheduling message should add, or `None` when nothing was done.
    pub(super) fn try_preempt(&mut self, wanting: Wanting<'_>) -> Option<String> {
        let config = &self.deps.config.preemption;
        if !config.enabled || self.preemption.holds.contains_key(wanting.key) {
            // Victims of an earlier preemption are still leaving: wait for them.
            return None;
        }
        let policy = if wanting.group_policy == Some(GroupPreemptionPolicy::Never)
            || wanting.pods.iter().any(|p| {
                p.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) == Some("Never")
            }) {
            PreemptionPolicy::Never
        } else {
            PreemptionPolicy::PreemptLowerPriority
        };
        if policy == PreemptionPolicy::Never {
            return Some("preemption: not attempted, its preemptionPolicy is Never".into());
        }
        let now_ms = phalanx_runtime::clock::unix_millis();
        let (pool, budgets, uids) = self.victim_pool(&wanting);
        let name = preemptor_name(&wanting);
        let queue_id = wanting.tenant.and_then(|t| self.queues.id(t));
        let queue_name = wanting
            .tenant
            .and_then(|t| self.queues.name(t))
            .map(str::to_owned);
        let preemptor = wanting.preemptor(&name, wanting.priority, queue_id, policy);
        let rules = PreemptionRules {
            now_ms,
            min_runtime_ms: config.min_runtime().as_millis() as u64,
            ledger: self.queues.ledger().filter(|_| queue_id.is_some()),
            budgets: &budgets,
        };
        let started = Instant::now();
        let plan = plan_preemption(
            self.mirror.state_mut().snapshot_mut(),
            self.policy.as_mut(),
            &preemptor,
            &pool,
            &rules,
            &mut self.scratch,
        );
        self.deps
            .metrics
            .observe_victim_selection(started.elapsed());
        let plan = match plan {
            Ok(plan) if !plan.placements.is_empty() => plan,
            Ok(_) => return None,
            // Nothing of lower priority (or reclaimable) runs: the common
            // case of equal priorities keeps kube-scheduler's message as is.
            Err(NoPreemption::NoCandidates { .. }) => return None,
            Err(refusal) => return Some(format!("preemption: {refusal}")),
        };
        self.deps.metrics.preempted(&plan.victims);
        // Hold the room, then evict: nothing else of this priority lands in
        // the room the victims leave.
        let victims = plan.victims.iter().map(|v| uids[v.pod].clone()).collect();
        self.hold_room(&wanting, &plan, Some(victims));
        let queue = queue_name;
        for victim in &plan.victims {
            let uid = &uids[victim.pod];
            let Some(meta) = self.preemption.running.get(uid) else {
                continue;
            };
            let node_name = self
                .mirror
                .state()
                .snapshot()
                .node(pool[victim.pod].placement.node)
                .name
                .clone();
            let eviction = Eviction {
                victim: meta.pod.clone(),
                reason: victim.reason,
                preemptor: name.clone(),
                queue: queue.clone(),
                node: node_name,
            };
            self.start_eviction(eviction);
        }
        // nominatedNodeName on each member that has a planned node.
        for (member, placement) in &plan.placements {
            let Some(pod) = wanting.pods.get(*member) else {
                continue;
            };
            let node = self
                .mirror
                .state()
                .snapshot()
                .node(placement.node)
                .name
                .clone();
            let patch = json!({"status": {"nominatedNodeName": node}});
            self.condition_writer
                .send(pod.namespace().unwrap_or_default(), pod.name_any(), patch);
        }
        let nodes: Vec<String> = plan
            .nodes()
            .into_iter()
            .map(|n| self.mirror.state().snapshot().node(n).name.clone())
            .collect();
        Some(if plan.victims.is_empty() {
            format!(
                "preemption: pods already leaving {} make room for it; held for it until they go",
                nodes.join(", ")
            )
        } else {
            format!(
                "preemption: evicting {} pod(s) to make room on {}; held for it until they leave",
                plan.victims.len(),
                nodes.join(", ")
            )
        })
    }

    /// For a gang that did not fit: preempt if it may; otherwise, once it has
    /// waited `preemption.starvingGangSeconds`, hold the nodes it would use
    /// once the pods of its priority or lower there finish, so that a stream
    /// of smaller pods cannot keep taking the room as it frees up. Its wait is
    /// then bounded by that threshold plus the longest remaining run of the
    /// pods on the held nodes.
    pub(super) fn try_preempt_or_hold(
        &mut self,
        wanting: Wanting<'_>,
        waited: std::time::Duration,
    ) -> Option<String> {
        let preempted = self.try_preempt(wanting);
        if self.preemption.holds.contains_key(wanting.key) {
            return preempted;
        }
        let threshold = self.deps.config.preemption.starving_gang();
        if threshold.is_zero() || waited < threshold {
            return preempted;
        }
        self.hold_for_starving(wanting, waited).or(preempted)
    }

    fn hold_for_starving(
        &mut self,
        wanting: Wanting<'_>,
        waited: std::time::Duration,
    ) -> Option<String> {
        let (pool, budgets, _) = self.victim_pool(&wanting);
        // Nobody is evicted: every pod of its priority or lower counts as
        // one that will leave, whatever its age or budget.
        let budgets = vec![u32::MAX; budgets.len()];
        let name = preemptor_name(&wanting);
        let preemptor = wanting.preemptor(
            &name,
            wanting.priority.saturating_add(1),
            None,
            PreemptionPolicy::PreemptLowerPriority,
        );
        let rules = PreemptionRules {
            now_ms: phalanx_runtime::clock::unix_millis(),
            min_runtime_ms: 0,
            ledger: None,
            budgets: &budgets,
        };
        let plan = plan_preemption(
            self.mirror.state_mut().snapshot_mut(),
            self.policy.as_mut(),
            &preemptor,
            &pool,
            &rules,
            &mut self.scratch,
        )
        .ok()?;
        let nodes = plan.nodes();
        self.hold_room(&wanting, &plan, None);
        Some(format!(
            "it has waited {}s (over preemption.starvingGangSeconds): {} node(s) are held for it, \
             and pods of its priority or lower are kept off them until it fits",
            waited.as_secs(),
            nodes.len()
        ))
    }

    /// Holds the room `plan` gives the wanting pod or gang: what its members
    /// take on each planned node, under a new token its pods carry. With
    /// `victims`, the hold runs out after they have gone; without, it lasts
    /// until the holder is placed or gone.
    fn hold_room(
        &mut self,
        wanting: &Wanting<'_>,
        plan: &PreemptionPlan,
        victims: Option<Vec<String>>,
    ) {
        self.preemption.next_token += 1;
        let token = self.preemption.next_token;
        let snapshot = self.mirror.state_mut().snapshot_mut();
        for (node, held) in plan.held_rooms(wanting.demands) {
            snapshot.reserve(
                node,
                NodeReservation {
                    holder: token,
                    priority: wanting.priority,
                    held,
                },
            );
        }
        self.preemption.holds.insert(
            wanting.key.clone(),
            Hold {
                token,
                expires: victims.is_some(),
                victims: victims.unwrap_or_default(),
                victims_gone: None,
            },
        );
    }

    /// The running pods that might be evicted, with the disruption budgets
    /// that select them (as indices into the returned budget list) and their
    /// UIDs by pool index. The preemptor's own pods are left out.
    fn victim_pool(&self, wanting: &Wanting<'_>) -> (Vec<RunningPod>, Vec<u32>, Vec<String>) {
        let budgets: Vec<&DisruptionBudget> = self.preemption.budgets.values().collect();
        let allowed: Vec<u32> = budgets.iter().map(|b| b.disruptions_allowed).collect();
        let own: std::collections::HashSet<String> = wanting
            .pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        let mut pool = Vec::new();
        let mut uids = Vec::new();
        for (uid, demand, placement) in self.mirror.state().placed_pods() {
            let Some(meta) = self.preemption.running.get(uid) else {
                continue;
            };
            if own.contains(uid) || self.mirror.state().is_assumed(uid) {
                continue;
            }
            let gang = self.gang_of_member.get(uid).map(|key| {
                let mut hasher = DefaultHasher::new();
                key.hash(&mut hasher);
                hasher.finish()
            });
            let selecting: Vec<usize> = budgets
                .iter()
                .enumerate()
                .filter(|(_, b)| b.selects(&meta.pod.namespace, &meta.labels))
                .map(|(i, _)| i)
                .collect();
            pool.push(RunningPod {
                demand: demand.clone(),
                placement: *placement,
                priority: meta.priority,
                queue: self.queue_of_running(demand),
                gang,
                started_ms: meta.started_ms,
                budgets: selecting,
                leaving: meta.leaving,
            });
            uids.push(uid.to_owned());
        }
        (pool, allowed, uids)
    }

    fn start_eviction(&self, eviction: Eviction) {
        let client = self.deps.client.clone();
        let scheduler = self.deps.config.scheduler_name.clone();
        let events = self.deps.events.clone();
        let metrics = self.deps.metrics.clone();
        let fence = self.deps.fence.clone();
        tokio::spawn(async move {
            if !fence.allows(std::time::SystemTime::now()) {
                return;
            }
            let reference = pod_reference(
                &eviction.victim.namespace,
                &eviction.victim.name,
                &eviction.victim.uid,
            );
            let note = eviction.message(&scheduler);
            match evictor::evict(&client, &eviction, &scheduler).await {
                Ok(()) => {
                    events.record(EventSpec {
                        regarding: reference,
                        type_: EventType::Normal,
                        reason: "Preempted",
                        action: "Preempting",
                        note,
                        annotations: Default::default(),
                    });
                }
                Err(error) => {
                    metrics.eviction_failed();
                    tracing::warn!(%error, "eviction failed");
                }
            }
        });
    }
}

/// `namespace/name` of a lone pod, or of the gang.
fn preemptor_name(wanting: &Wanting<'_>) -> String {
    match wanting.key {
        WorkKey::Gang(key) => format!("pod group {}/{}", key.namespace, key.name),
        WorkKey::Pod(_) => wanting
            .pods
            .first()
            .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
            .unwrap_or_default(),
    }
}
