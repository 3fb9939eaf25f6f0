//! Finishing or undoing the gang plans an earlier leader left behind.
//!
//! Runs at the start of every scheduling slice, before the queue, so a plan is
//! handled as soon as this replica leads and its caches have synced, before
//! anything else can take the plan's GPUs. Which plans need what is decided by
//! [`gangs::PlanBook`](crate::controller::gangs::PlanBook) (pure); whether the
//! recorded nodes and GPUs are still free by the cluster state's
//! `assume_recorded`. This module does the rest: assume and bind a plan that
//! holds; otherwise delete its bound members (their owners recreate them and
//! the gang is placed again, whole), clear the plan from the unbound ones, and
//! say so in Events on every member.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use kube::ResourceExt;
use phalanx_api::GpuAssignmentAnnotation;
use phalanx_engine::{Placement, PodDemand};
use phalanx_kube::mirror::pod_uid;
use phalanx_kube::translate;
use phalanx_runtime::events::{self, EventSpec, EventType};

use super::{BindError, PodRef, SchedulerLoop};
use crate::controller::gangs::{PlanCarrier, PlanVerdict, UndoReason};

/// What became of an attempt to finish a plan.
enum Finishing {
    /// Every unbound member is assumed and its Binding started.
    Started,
    /// A member's own Binding is in flight: judge the plan again later.
    NotYet,
}

/// How often a failed deletion or plan removal of an undo is tried again
/// before it is left to the next leader (and to the Event that names it).
const UNDO_ATTEMPTS: u32 = 4;

impl SchedulerLoop {
    /// Keeps the plan book in step with the pod watch.
    pub(super) fn observe_plans(&mut self, event: &Event<Pod>) {
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => {
                if let Err(error) = self.plans.observe(pod) {
                    tracing::warn!(
                        %error,
                        pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                        "ignoring a malformed gang plan"
                    );
                }
            }
            Event::Delete(pod) => self.plans.forget(&pod_uid(pod)),
            Event::Init | Event::InitDone => {}
        }
    }

    /// Finishes or undoes every open plan of an earlier term not handled yet.
    pub(super) fn recover_gang_plans(&mut self) {
        // A plan handled and no longer open (bound, undone, gone) is done for
        // good; one still open stays handled, so it is not acted on twice.
        let plans = &self.plans;
        self.settled_plans.retain(|plan| plans.is_open(plan));
        for plan in self.plans.open_plans(&self.term) {
            if self.settled_plans.contains(&plan) {
                continue;
            }
            let Some(verdict) = self.plans.judge(&plan) else {
                continue;
            };
            self.settled_plans.insert(plan.clone());
            match verdict {
                PlanVerdict::Finish { bound, unbound } => match self.finish_plan(&unbound) {
                    Ok(Finishing::NotYet) => {
                        self.settled_plans.remove(&plan);
                    }
                    Ok(Finishing::Started) => {
                        self.deps.metrics.gang_plan_recovered(true);
                        tracing::info!(
                            %plan,
                            members = unbound.len(),
                            "finishing a gang plan an earlier leader left partly bound"
                        );
                        for carrier in &unbound {
                            let note = format!(
                                "pod group {}: binding to {} as planned (plan {plan}) by a \
                                 leader that stopped before binding every member",
                                carrier.plan.gang, carrier.plan.node
                            );
                            self.plan_event(carrier, EventType::Normal, "GangPlanResumed", note);
                        }
                    }
                    Err(reason) => self.undo_plan(&plan, reason, bound, unbound),
                },
                PlanVerdict::Undo {
                    reason,
                    bound,
                    unbound,
                } => self.undo_plan(&plan, reason, bound, unbound),
            }
        }
    }

    /// Assumes every unbound member where the plan put it and starts its
    /// Binding; assumes nothing if any member cannot go there.
    fn finish_plan(&mut self, unbound: &[PlanCarrier]) -> Result<Finishing, UndoReason> {
        let models = self.mirror.state().snapshot().models();
        let mut demands: Vec<PodDemand> = Vec::with_capacity(unbound.len());
        for carrier in unbound {
            let cannot = |why: String| UndoReason::CannotPlace {
                pod: format!("{}/{}", carrier.namespace, carrier.name),
                why,
            };
            let pending = self
                .pending
                .get(&carrier.uid)
                .ok_or_else(|| cannot("it is not waiting for this scheduler".to_owned()))?;
            if pending.binding {
                // A Binding of ours is in flight for it (a plan written by a
                // deposed leader after this one placed the pod): look again
                // once it has landed or failed, rather than undo a gang that
                // may be fine.
                return Ok(Finishing::NotYet);
            }
            demands.push(
                translate::pod_demand(&pending.pod, models).map_err(|e| cannot(e.to_string()))?,
            );
        }
        let mut assumed: Vec<(String, PodDemand, Placement)> = Vec::new();
        for (carrier, demand) in unbound.iter().zip(demands) {
            let recorded = GpuAssignmentAnnotation {
                node: carrier.plan.node.clone(),
                gpus: carrier.plan.gpus.clone(),
            };
            match self.mirror.state_mut().assume_recorded(
                &carrier.uid,
                &carrier.plan.node,
                demand.clone(),
                &recorded,
            ) {
                Ok(placement) => assumed.push((carrier.uid.clone(), demand, placement)),
                Err(error) => {
                    for (uid, _, _) in &assumed {
                        self.mirror.state_mut().forget_assumed(uid);
                    }
                    return Err(UndoReason::CannotPlace {
                        pod: format!("{}/{}", carrier.namespace, carrier.name),
                        why: error.to_string(),
                    });
                }
            }
        }
        for (uid, demand, placement) in assumed {
            self.start_bind(&uid, &demand, placement);
        }
        Ok(Finishing::Started)
    }

    /// Deletes the bound members (so that their owners recreate them), clears
    /// the plan from the unbound ones, and holds the gang until the deleted
    /// members are gone.
    fn undo_plan(
        &mut self,
        plan: &str,
        reason: UndoReason,
        bound: Vec<PlanCarrier>,
        unbound: Vec<PlanCarrier>,
    ) {
        let gang = bound
            .iter()
            .chain(&unbound)
            .next()
            .map(|c| c.plan.gang.clone())
            .unwrap_or_default();
        self.deps.metrics.gang_plan_recovered(false);
        tracing::warn!(
            %plan,
            %gang,
            %reason,
            deleting = bound.len(),
            "undoing a gang plan an earlier leader left partly bound"
        );
        let note = format!(
            "pod group {gang}: the placement an earlier leader recorded (plan {plan}) cannot be \
             finished: {reason}; deleting its {} bound member(s) so that their owners recreate \
             them and the gang is placed again whole",
            bound.len()
        );
        for carrier in bound.iter().chain(&unbound) {
            self.plan_event(
                carrier,
                EventType::Warning,
                "GangPlanAbandoned",
                note.clone(),
            );
        }
        for carrier in &bound {
            self.undoing.insert(carrier.uid.clone());
        }
        let binder = self.deps.binder.clone();
        let fence = self.deps.fence.clone();
        let refs = |carriers: Vec<PlanCarrier>| -> Vec<PodRef> {
            carriers
                .into_iter()
                .map(|c| PodRef {
                    namespace: c.namespace,
                    name: c.name,
                    uid: c.uid,
                })
                .collect()
        };
        let (bound, unbound) = (refs(bound), refs(unbound));
        tokio::spawn(async move {
            for pod in &bound {
                retry(&fence, pod, "deleting a member of an undone gang", || {
                    binder.delete_member(pod)
                })
                .await;
            }
            for pod in &unbound {
                retry(&fence, pod, "clearing the plan of an undone gang", || {
                    binder.clear_plan(pod)
                })
                .await;
            }
        });
    }

    fn plan_event(
        &self,
        carrier: &PlanCarrier,
        type_: EventType,
        reason: &'static str,
        note: String,
    ) {
        let regarding = events::pod_reference(&carrier.namespace, &carrier.name, &carrier.uid);
        self.deps.events.record(EventSpec {
            regarding,
            type_,
            reason,
            action: "Binding",
            note,
            annotations: Default::default(),
        });
    }
}

/// Tries a write of an undo a few times, while this replica may still write;
/// a pod already gone is done.
async fn retry<F, Fut>(
    fence: &phalanx_runtime::leader::LeaseFence,
    pod: &PodRef,
    what: &str,
    mut write: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), BindError>>,
{
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=UNDO_ATTEMPTS {
        if !fence.allows(std::time::SystemTime::now()) {
            tracing::warn!(%pod, "{what}: stopped, this replica's Lease is ending; the next leader undoes it");
            return;
        }
        match write().await {
            Ok(()) | Err(BindError::Gone { .. }) => return,
            Err(error) if attempt == UNDO_ATTEMPTS => {
                tracing::error!(%pod, %error, "{what}: giving up; the next leader tries again");
            }
            Err(error) => {
                tracing::warn!(%pod, %error, attempt, "{what}: retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
