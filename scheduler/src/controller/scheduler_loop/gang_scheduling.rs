//! Gang scheduling: a gang is one unit of work in the queue. Its members are
//! collected, placed together by the engine's `place_gang` (all of `minMember`
//! or nothing) and assumed in the snapshot; then the whole placement is written
//! on every member (the gang plan) before the first Binding, so that a leader
//! change between two Bindings is finished or undone by the next leader
//! (`gang_recovery.rs`). A gang that waits past its timeout is reported once,
//! and a scheduler-plugins PodGroup's status follows what happened.
//!
//! Each decision yields one PodGroup status, computed by
//! [`gangs::podgroup_status`] from the members' counts and whether the gang's
//! timeout was reported, and handed to the one
//! [`PodGroupStatusWriter`](crate::controller::podgroup_status_writer::PodGroupStatusWriter), which
//! writes them per PodGroup in the order they were decided. A timed-out gang is
//! therefore `Failed` until it is placed, and stays so.
//!
//! A Kubernetes (`scheduling.k8s.io/v1beta1`) PodGroup's
//! `PodGroupInitiallyScheduled` condition follows each decision the same way
//! ([`gangs::initially_scheduled`], its own writer), and a PodGroup with the
//! `basic` policy has its pods placed one by one in the group's queue slot.
//!
//! Which gang a pod belongs to and the gang's policy come from
//! [`crate::controller::gangs`]; this module is the loop's side of it (state
//! and I/O), a child of `scheduler_loop` so that the loop's state stays private.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1alpha3::CompositePodGroup;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::watcher::Event;
use phalanx_api::{GangPlanAnnotation, GangProgress, PodGroup, PodGroupStatus};
use phalanx_engine::queues::QueueLedger;
use phalanx_engine::{place_gang, DomainOrder, GangSpec, Placement, PodDemand, TopologyLevel};
use phalanx_kube::mirror::{pod_uid, MirrorChange};

use super::preempt::Wanting;
use super::{AloneOutcome, BindError, BindRequest, SchedulerLoop, WorkKey};
use crate::controller::gangs::{
    self, GangKey, GangMemberCounts, GangMembership, GangObjects, GangRule, GangSource,
    GroupOutcome,
};
use crate::controller::metrics::AttemptResult;
use crate::controller::pod_scheduled::NotScheduled;
use crate::controller::wait_reasons::WaitReason;

/// A gang's known members (UIDs), pending or bound, unfinished.
#[derive(Debug, Default)]
pub(super) struct GangEntry {
    pub(super) members: BTreeSet<String>,
    /// Members bound and in phase Running, for the PodGroup's `running` count.
    running: BTreeSet<String>,
    /// When the first member was seen: the gang's place in the queue.
    pub(super) first_seen: Option<Instant>,
    /// The PodGroup status last handed to the writer.
    reported: Option<PodGroupStatus>,
    /// The `PodGroupInitiallyScheduled` condition last handed to the writer,
    /// and the UID of the Kubernetes PodGroup it was for.
    upstream_reported: Option<(String, Condition)>,
    /// Members whose Binding this replica saw succeed (the watch may not
    /// show them bound yet).
    bound: BTreeSet<String>,
    /// The minimum and the declaration, as the last attempt read them.
    min_member: Option<(usize, GangMembership)>,
    /// Why its last attempt failed (`pending_gangs{reason}`).
    pub(super) wait: Option<WaitReason>,
    /// Its rule places each member alone: not counted as a waiting gang.
    pub(super) alone: bool,
}

impl GangEntry {
    /// Its minimum as the last attempt read it; `None` before one.
    pub(super) fn min_member(&self) -> Option<usize> {
        self.min_member.as_ref().map(|(n, _)| *n)
    }
}

impl SchedulerLoop {
    /// Keeps the PodGroups (scheduler-plugins) that gangs read their policy from.
    pub(super) fn handle_pod_group_event(&mut self, event: Event<PodGroup>) -> MirrorChange {
        let changed = self.pod_groups.apply(event, |a, b| a.spec == b.spec);
        gang_objects_changed(!changed.is_empty())
    }

    /// Keeps the Kubernetes PodGroups; a change of one re-queues its gang at
    /// the group's priority.
    pub(super) fn handle_upstream_pod_group_event(
        &mut self,
        event: Event<UpstreamPodGroup>,
    ) -> MirrorChange {
        let changed = self
            .upstream_pod_groups
            .apply(event, |a, b| a.spec == b.spec);
        for key in &changed {
            self.requeue_gang(key);
        }
        gang_objects_changed(!changed.is_empty())
    }

    /// Keeps the CompositePodGroups that Kubernetes PodGroups may name as parent.
    pub(super) fn handle_composite_event(
        &mut self,
        event: Event<CompositePodGroup>,
    ) -> MirrorChange {
        let changed = self
            .composite_pod_groups
            .apply(event, |a, b| a.spec == b.spec);
        gang_objects_changed(!changed.is_empty())
    }

    /// Puts a gang with waiting members back in the queue, at its priority now.
    fn requeue_gang(&mut self, key: &GangKey) {
        let Some(gang) = self.gangs.get(key) else {
            return;
        };
        let Some((pod, membership)) = gang.members.iter().find_map(|uid| {
            let p = self.pending.get(uid).filter(|p| !p.binding)?;
            Some((p.pod.clone(), p.gang.clone()?))
        }) else {
            return;
        };
        let now = Instant::now();
        let first_seen = gang.first_seen.unwrap_or(now);
        let priority = self.queue_priority(&pod, Some(&membership));
        self.queue
            .add(WorkKey::Gang(key.clone()), priority, first_seen, now);
    }

    /// Records that `uid` is a member of `gang` (or of none), leaving the gang
    /// it was in before when that changed. A gang left without members is
    /// forgotten entirely.
    pub(super) fn set_gang_membership(&mut self, uid: &str, gang: Option<&GangKey>) {
        let previous = self.gang_of_member.get(uid);
        if previous == gang {
            return;
        }
        if let Some(old) = self.gang_of_member.remove(uid) {
            let emptied = self.gangs.get_mut(&old).is_some_and(|entry| {
                entry.members.remove(uid);
                entry.running.remove(uid);
                entry.bound.remove(uid);
                entry.members.is_empty()
            });
            if emptied {
                self.gangs.remove(&old);
                self.tracker.forget(&old);
                let work = WorkKey::Gang(old);
                self.release_hold(&work);
                self.queue.remove(&work);
            }
        }
        if let Some(key) = gang {
            self.gangs
                .entry(key.clone())
                .or_default()
                .members
                .insert(uid.to_owned());
            self.gang_of_member.insert(uid.to_owned(), key.clone());
        }
    }

    /// Records whether a gang member is running (see [`GangEntry::running`]);
    /// no effect on a pod in no gang.
    pub(super) fn set_member_running(&mut self, uid: &str, running: bool) {
        let Some(entry) = self
            .gang_of_member
            .get(uid)
            .and_then(|key| self.gangs.get_mut(key))
        else {
            return;
        };
        if running {
            entry.running.insert(uid.to_owned());
        } else {
            entry.running.remove(uid);
        }
    }

    /// One attempt at a gang: waits for its members, places them all or none
    /// with the engine, assumes and binds what was placed, and reports a gang
    /// that waited past its timeout.
    pub(super) fn schedule_gang(&mut self, key: GangKey) {
        let work = WorkKey::Gang(key.clone());
        let now = Instant::now();
        let Some(gang) = self.gangs.get(&key) else {
            self.queue.done(&work);
            return;
        };
        let members: Vec<String> = gang.members.iter().cloned().collect();
        if members
            .iter()
            .any(|uid| self.pending.get(uid).is_some_and(|p| p.gated))
        {
            // A gated member holds its whole gang back, without events (each
            // gated member shows `SchedulingGated`): placing the others would
            // bind part of a gang that may never be released. Ungating the
            // member queues the gang again (`track`).
            self.queue.done(&work);
            return;
        }
        if members.iter().any(|uid| self.undoing.contains(uid)) {
            // Members of an undone plan are being deleted: placing the rest now
            // would count them and bind a partial gang again.
            self.queue.unschedulable(work, now);
            return;
        }
        let held = members
            .iter()
            .filter(|uid| self.mirror.state().holds(uid) || self.mirror.is_bound(uid))
            .count();
        let waiting: Vec<Arc<Pod>> = members
            .iter()
            .filter_map(|uid| self.pending.get(uid))
            .filter(|p| !p.binding)
            .map(|p| p.pod.clone())
            .collect();
        let Some(membership) = members
            .iter()
            .find_map(|uid| self.pending.get(uid).and_then(|p| p.gang.clone()))
        else {
            self.queue.done(&work);
            return;
        };
        if waiting.is_empty() {
            self.queue.done(&work);
            return;
        }
        let defaults = gangs::GangDefaults {
            timeout: self.deps.config.gangs.default_timeout(),
            topology_key: self.deps.config.gangs.topology_key.clone(),
        };
        let objects = GangObjects {
            pod_groups: self.pod_groups.as_map(),
            upstream: self.upstream_pod_groups.as_map(),
            composites: self.composite_pod_groups.as_map(),
        };
        let policy = match gangs::gang_policy(&membership, objects, &defaults) {
            Ok(GangRule::Gang(policy)) => policy,
            Ok(GangRule::EachAlone { .. }) => {
                self.gang_waits(&key, None);
                self.schedule_each_alone(work, &waiting);
                return;
            }
            Err(error) => {
                self.deps.metrics.record_attempt(AttemptResult::Error);
                let message = error.to_string();
                self.gang_waits(&key, Some(WaitReason::Other));
                self.fail_gang(&waiting, &message);
                let outcome = if error.is_invalid_group() {
                    GroupOutcome::SchedulerError(message)
                } else {
                    GroupOutcome::Unschedulable(message)
                };
                self.report_upstream_condition(&key, &membership, outcome);
                self.queue.unschedulable(work, now);
                return;
            }
        };
        if let Some(gang) = self.gangs.get_mut(&key) {
            gang.min_member = Some((policy.min_member, membership.clone()));
        }
        let need = policy.min_member.saturating_sub(held);
        let since = self.tracker.waiting_since(&key, now);
        if waiting.len() < need {
            let message = format!(
                // No running count in the text: it would make every arrival a new
                // message, and a new message is sent to every waiting member.
                "pod group {}/{}: fewer than its minMember {} pods exist; waiting for the rest",
                key.namespace, key.name, policy.min_member
            );
            self.check_gang_timeout(&key, &waiting, policy.timeout, now, &message);
            self.gang_waits(&key, Some(WaitReason::Gang));
            self.fail_gang(&waiting, &message);
            self.report_pod_group_status(&key, &membership, policy.min_member, held);
            self.report_upstream_condition(&key, &membership, GroupOutcome::Unschedulable(message));
            self.queue.unschedulable(work, now);
            return;
        }
        let snapshot = self.mirror.state().snapshot();
        let mut demands: Vec<PodDemand> = Vec::with_capacity(waiting.len());
        for pod in &waiting {
            match self.default_spread.pod_demand(pod, snapshot) {
                Ok(d) => demands.push(d),
                Err(error) => {
                    let message = format!(
                        "pod group {}/{} cannot be placed: member {}",
                        key.namespace, key.name, error
                    );
                    self.deps.metrics.record_attempt(AttemptResult::Error);
                    self.gang_waits(&key, Some(WaitReason::Other));
                    self.fail_gang(&waiting, &message);
                    self.report_upstream_condition(
                        &key,
                        &membership,
                        GroupOutcome::SchedulerError(message),
                    );
                    self.queue.unschedulable(work, now);
                    return;
                }
            }
        }
        for (pod, demand) in waiting.iter().zip(&demands) {
            self.observe_arrival(&pod_uid(pod), demand);
        }
        let name = format!("{}/{}", key.namespace, key.name);
        // The gang's levels as they are: an upstream topology key is required
        // (the engine keeps every member in one of its domains), the
        // annotation or config key preferred.
        let levels: Vec<TopologyLevel<'_>> = policy
            .topology
            .iter()
            .map(|l| TopologyLevel {
                key: &l.key,
                required: l.required,
            })
            .collect();
        if let Some(level) = policy.topology.iter().find(|l| l.required && held > 0) {
            // Members beyond the minimum, arriving after the gang was placed:
            // the engine cannot be told the domain the placed ones are in, so
            // they wait rather than risk another domain.
            let message = format!(
                "pod group {name}: {held} members are already placed; Phalanx cannot yet add \
                 members to a gang with the required topology key {} \
                 (spec.schedulingConstraints.topology) while keeping them in its domain",
                level.key
            );
            self.deps
                .metrics
                .record_attempt(AttemptResult::Unschedulable);
            self.gang_waits(&key, Some(WaitReason::Constraint));
            self.fail_gang(&waiting, &message);
            self.queue.unschedulable(work, now);
            return;
        }
        let tenant = self.queue.tenant_of(&work).unwrap_or(0);
        if self.queues_enabled() {
            if let Err(refusal) = self.admit_gang(&name, tenant, &waiting, &demands) {
                self.deps
                    .metrics
                    .record_attempt(AttemptResult::Unschedulable);
                self.gang_waits(&key, Some(WaitReason::Quota));
                self.fail_gang(&waiting, &refusal);
                self.report_upstream_condition(
                    &key,
                    &membership,
                    GroupOutcome::Unschedulable(refusal),
                );
                self.queue.unschedulable(work, now);
                return;
            }
        }
        let token = self.hold_token(&work);
        for demand in &mut demands {
            demand.reservation = token;
        }
        let spec = GangSpec {
            name: &name,
            members: &demands,
            min_member: need.max(1),
            topology: &levels,
            domain_order: DomainOrder::TightestFit,
        };
        let result = place_gang(
            self.mirror.state_mut().snapshot_mut(),
            self.policy.as_mut(),
            &spec,
            &mut self.scratch,
        );
        let result = result.map(|r| r.map_err(|unschedulable| unschedulable.to_string()));
        // The nodes' GPU models are known now: a per-model limit is checked
        // on what the plan places (the plan is undone if it would pass one).
        let result = match result {
            Ok(Ok(plan)) if self.queues_enabled() => {
                match self.admit_placed_gang(tenant, &demands, &plan.placements) {
                    Ok(()) => Ok(Ok(plan)),
                    Err(refusal) => {
                        let snapshot = self.mirror.state_mut().snapshot_mut();
                        for (index, placement) in plan.placements.iter().rev() {
                            // Cannot fail: place_gang committed exactly these.
                            let _ = snapshot.release(&demands[*index], placement);
                        }
                        Ok(Err(refusal))
                    }
                }
            }
            other => other,
        };
        match result {
            Ok(Ok(plan)) => {
                let mut placed = Vec::with_capacity(plan.placements.len());
                for (index, placement) in &plan.placements {
                    let uid = pod_uid(&waiting[*index]);
                    let demand = demands[*index].clone();
                    self.mirror
                        .state_mut()
                        .record_assumed(&uid, demand.clone(), *placement);
                    if self.queues_enabled() {
                        let snapshot = self.mirror.state().snapshot();
                        let amounts =
                            QueueLedger::placed_amounts(snapshot, &demand, placement.node);
                        self.queues.placed(tenant, &amounts);
                    }
                    placed.push((uid, demand, *placement));
                }
                self.release_hold(&work);
                self.start_gang_bind(&name, &placed);
                if need > 0 {
                    self.deps
                        .metrics
                        .observe_gang_wait(now.duration_since(since));
                }
                self.tracker.forget(&key);
                let scheduled = held + plan.placements.len();
                self.report_pod_group_status(&key, &membership, policy.min_member, scheduled);
                // PodGroupInitiallyScheduled=True waits for the Bindings (see
                // `gang_member_bound`): a plan whose writes fail is released,
                // and True is final.
                self.gang_member_bound(&key);
                if plan.unplaced.is_empty() {
                    self.queue.done(&work);
                } else {
                    self.queue.unschedulable(work, now);
                }
            }
            Ok(Err(message)) => {
                self.deps
                    .metrics
                    .record_attempt(AttemptResult::Unschedulable);
                let priority = self.queue_priority(&waiting[0], Some(&membership));
                let wanting = Wanting {
                    key: &work,
                    pods: &waiting,
                    demands: &demands,
                    min_member: need.max(1),
                    topology: &levels,
                    priority,
                    group_policy: policy.preemption,
                    tenant: self.queues_enabled().then_some(tenant),
                };
                let waited = now.duration_since(since);
                let message = match self.try_preempt_or_hold(wanting, waited) {
                    Some(preemption) => format!("{message}; {preemption}"),
                    None => message,
                };
                self.check_gang_timeout(&key, &waiting, policy.timeout, now, &message);
                self.gang_waits(&key, Some(WaitReason::Gang));
                self.fail_gang(&waiting, &message);
                self.report_pod_group_status(&key, &membership, policy.min_member, held);
                self.report_upstream_condition(
                    &key,
                    &membership,
                    GroupOutcome::Unschedulable(message),
                );
                self.queue.unschedulable(work, now);
            }
            Err(error) => {
                self.deps.metrics.record_attempt(AttemptResult::Error);
                let message = error.to_string();
                self.gang_waits(&key, Some(WaitReason::Other));
                self.fail_gang(&waiting, &message);
                self.report_upstream_condition(
                    &key,
                    &membership,
                    GroupOutcome::SchedulerError(message),
                );
                self.queue.unschedulable(work, now);
            }
        }
    }

    /// Member `uid` is bound: its Binding succeeded, or the watch shows it
    /// (whichever comes first). No effect on a pod in no gang.
    pub(super) fn gang_member_bound_now(&mut self, uid: &str) {
        let Some(key) = self.gang_of_member.get(uid).cloned() else {
            return;
        };
        if let Some(gang) = self.gangs.get_mut(&key) {
            gang.bound.insert(uid.to_owned());
        }
        self.gang_member_bound(&key);
    }

    /// Once at least the gang's minimum is bound, a Kubernetes PodGroup
    /// becomes `PodGroupInitiallyScheduled=True`. Counted from state (members
    /// bound, as the watch or this replica's Bindings show), not from events,
    /// so a plan released and placed again counts right.
    fn gang_member_bound(&mut self, key: &GangKey) {
        let Some(gang) = self.gangs.get(key) else {
            return;
        };
        let Some((min_member, membership)) = gang.min_member.clone() else {
            return;
        };
        if membership.source != GangSource::Upstream {
            return;
        }
        let bound = gang
            .members
            .iter()
            .filter(|uid| gang.bound.contains(*uid) || self.mirror.is_bound(uid))
            .count();
        if bound < min_member {
            return;
        }
        let message =
            format!("pod group {key}: {bound} members bound, at least its minimum {min_member}");
        self.report_upstream_condition(key, &membership, GroupOutcome::Scheduled(message));
    }

    /// The members of a `basic` Kubernetes PodGroup, each placed alone; the
    /// group's queue slot comes back when any could not be.
    fn schedule_each_alone(&mut self, work: WorkKey, waiting: &[Arc<Pod>]) {
        let mut outcome = AloneOutcome::Placed;
        for pod in waiting {
            match self.place_alone(&pod_uid(pod)) {
                AloneOutcome::Placed | AloneOutcome::Gone => {}
                AloneOutcome::Unschedulable => {
                    if !matches!(outcome, AloneOutcome::Error) {
                        outcome = AloneOutcome::Unschedulable;
                    }
                }
                AloneOutcome::Error => outcome = AloneOutcome::Error,
            }
        }
        match outcome {
            AloneOutcome::Placed | AloneOutcome::Gone => self.queue.done(&work),
            AloneOutcome::Unschedulable => self.queue.unschedulable(work, Instant::now()),
            AloneOutcome::Error => self.queue.retry_after_error(work, Instant::now()),
        }
    }

    /// Hands the Kubernetes PodGroup's `PodGroupInitiallyScheduled` after this
    /// decision to its writer (upstream gangs only, and only while the object
    /// exists), unless nothing changes (see [`gangs::initially_scheduled`]).
    fn report_upstream_condition(
        &mut self,
        key: &GangKey,
        m: &GangMembership,
        outcome: GroupOutcome,
    ) {
        if m.source != GangSource::Upstream {
            return;
        }
        let Some(group) = self.upstream_pod_groups.get(key) else {
            return;
        };
        let Some(gang) = self.gangs.get_mut(key) else {
            return;
        };
        let uid = group.metadata.uid.clone().unwrap_or_default();
        let observed = gangs::find_initially_scheduled(
            group.status.as_ref().and_then(|s| s.conditions.as_deref()),
        );
        let sent = gang
            .upstream_reported
            .as_ref()
            .filter(|(for_uid, _)| *for_uid == uid)
            .map(|(_, condition)| condition);
        // True on the object is terminal whoever wrote it; otherwise what was
        // sent last is newer than what the watch shows.
        let current = match observed {
            Some(c) if c.status == "True" => Some(c),
            _ => sent.or(observed),
        };
        let Some(condition) = gangs::initially_scheduled(
            current,
            &outcome,
            group.metadata.generation,
            &Time(Timestamp::now()),
        ) else {
            return;
        };
        gang.upstream_reported = Some((uid, condition.clone()));
        self.upstream_condition_writer.send(key.clone(), condition);
    }

    /// Binds a placed gang in two phases: its plan on every member, then the
    /// Bindings. If any plan write fails, nothing is bound and every member is
    /// released and retried (a Binding after a missing plan could leave a
    /// partial gang that no later leader knows how to finish).
    fn start_gang_bind(&mut self, gang: &str, placed: &[(String, PodDemand, Placement)]) {
        self.plan_seq += 1;
        let plan_id = format!("{}#{}", self.term, self.plan_seq);
        let members = u32::try_from(placed.len()).unwrap_or(u32::MAX);
        let mut steps: Vec<(BindRequest, GangPlanAnnotation)> = Vec::new();
        for (uid, demand, placement) in placed {
            let Some(request) = self.bind_request(uid, demand, *placement) else {
                continue;
            };
            let plan = GangPlanAnnotation {
                plan: plan_id.clone(),
                gang: gang.to_owned(),
                members,
                node: request.node.clone(),
                gpus: request
                    .annotation
                    .as_ref()
                    .map(|a| a.gpus.clone())
                    .unwrap_or_default(),
            };
            steps.push((request, plan));
        }
        let worker = self.bind_worker();
        let gang = gang.to_owned();
        // As many plan writes in flight as Bindings may be.
        let concurrency = self.deps.config.binding.concurrency.max(1);
        tokio::spawn(async move {
            let started = Instant::now();
            // Owned futures: a stream of futures borrowing `steps` cannot be
            // proven Send inside a spawned task.
            let writes: Vec<_> = steps
                .iter()
                .map(|(request, plan)| {
                    let (binder, fence) = (worker.binder.clone(), worker.fence.clone());
                    let (pod, plan) = (request.pod.clone(), plan.clone());
                    async move {
                        if !fence.allows(std::time::SystemTime::now()) {
                            return Err(BindError::Fenced {
                                pod: pod.to_string(),
                            });
                        }
                        binder.write_plan(&pod, &plan).await
                    }
                })
                .collect();
            let written: Vec<Result<(), BindError>> = futures::stream::iter(writes)
                .buffered(concurrency)
                .collect()
                .await;
            if let Some(failed) = written.iter().find_map(|r| r.as_ref().err()) {
                let why = failed.to_string();
                for ((request, _), result) in steps.into_iter().zip(written) {
                    let result = result.and_then(|()| {
                        Err(BindError::GangPlanNotWritten {
                            pod: request.pod.to_string(),
                            why: why.clone(),
                        })
                    });
                    worker.report(request, started, result).await;
                }
                return;
            }
            worker.fault.plan_written(&gang);
            join_all(
                steps
                    .into_iter()
                    .map(|(request, _)| worker.bind(request, true)),
            )
            .await;
        });
    }

    /// Reports a gang that has waited past its timeout, once per wait: an event
    /// for each waiting member and the metric. Its PodGroup's status follows
    /// from [`GangTracker::reported`](gangs::GangTracker::reported).
    fn check_gang_timeout(
        &mut self,
        key: &GangKey,
        waiting: &[Arc<Pod>],
        timeout: Duration,
        now: Instant,
        why: &str,
    ) {
        if !self.tracker.timed_out(key, now, timeout) || self.tracker.reported(key) {
            return;
        }
        self.tracker.mark_reported(key);
        self.deps.metrics.gang_timed_out();
        let message = format!(
            "pod group {}/{} timed out after {}s without placing its minMember pods; nothing was bound. {why}",
            key.namespace,
            key.name,
            timeout.as_secs()
        );
        let progress = self.progress_of_members(waiting);
        for pod in waiting {
            let condition = NotScheduled::unschedulable(message.clone());
            self.fail_event_with_progress(pod, condition, true, progress.clone());
        }
    }

    /// Records why a gang's attempt failed; `None` for a gang whose rule
    /// places each member alone (not a waiting gang).
    fn gang_waits(&mut self, key: &GangKey, reason: Option<WaitReason>) {
        if let Some(gang) = self.gangs.get_mut(key) {
            gang.alone = reason.is_none();
            gang.wait = reason;
        }
    }

    /// Its members wait for the gang: `pending_pods{reason="gang"}`.
    fn fail_gang(&mut self, waiting: &[Arc<Pod>], message: &str) {
        let progress = self.progress_of_members(waiting);
        for pod in waiting {
            if let Some(p) = self.pending.get_mut(&pod_uid(pod)) {
                p.wait = Some(WaitReason::Gang);
            }
            let condition = NotScheduled::unschedulable(message.to_owned());
            self.fail_event_with_progress(pod, condition, false, progress.clone());
        }
    }

    /// The progress of the gang `waiting` (members of one gang) belong to.
    fn progress_of_members(&self, waiting: &[Arc<Pod>]) -> Option<GangProgress> {
        waiting
            .first()
            .and_then(|pod| self.gang_progress(&pod_uid(pod)))
    }

    /// Hands the PodGroup's status after this decision to the writer
    /// (PodGroup gangs only), unless it is what was handed over last.
    /// `scheduled`: members bound or assumed. Finished members have left the
    /// gang, so `succeeded` and `failed` stay 0.
    fn report_pod_group_status(
        &mut self,
        key: &GangKey,
        m: &GangMembership,
        min_member: usize,
        scheduled: usize,
    ) {
        if m.source != GangSource::PodGroup {
            return;
        }
        let Some(gang) = self.gangs.get_mut(key) else {
            return;
        };
        let counts = GangMemberCounts {
            total: gang.members.len(),
            scheduled,
            running: gang.running.len(),
            succeeded: 0,
            failed: 0,
        };
        // What this replica wrote last, else what the watch last saw (after a
        // restart): scheduleStartTime and occupiedBy are kept from it.
        let previous = gang
            .reported
            .as_ref()
            .or_else(|| self.pod_groups.get(key).and_then(|pg| pg.status.as_ref()));
        let status = gangs::podgroup_status(
            previous,
            &counts,
            min_member,
            self.tracker.reported(key),
            &Time(Timestamp::now()),
        );
        if gang.reported.as_ref() == Some(&status) {
            return;
        }
        gang.reported = Some(status.clone());
        self.status_writer.send(key.clone(), status);
    }
}

/// A change to gang objects may make a waiting gang placeable.
fn gang_objects_changed(changed: bool) -> MirrorChange {
    MirrorChange {
        cluster_changed: changed,
        ..MirrorChange::default()
    }
}
