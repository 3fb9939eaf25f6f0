//! Gang plans across a leader change: which recorded gang placements a new
//! leader must finish, and which it must undo.
//!
//! Before the first Binding of a gang, the leader writes the whole gang's
//! placement on every member (`phalanx.dev/gang-plan`: plan id, gang, member
//! count, node and GPUs); then it binds. A leader that dies between two
//! Bindings leaves some members bound and the rest carrying the plan. The next
//! leader reads every plan here and, before it schedules anything else, finishes
//! a plan that still holds (all its members exist, none is leaving, the bound
//! ones are where the plan put them) or undoes one that cannot be finished.
//! Whether the recorded nodes and GPUs are still free is the cluster state's
//! call (`ClusterState::assume_recorded`), made by the loop right after.
//!
//! A plan whose carriers are all bound is complete and needs nothing: plans are
//! never cleared from bound pods (that would cost a write per member for no
//! gain), so a complete plan is simply history. Plans written by this leader's
//! own term are its own gangs in flight, not something to recover.
//!
//! Pure: fed Pods, no client.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use phalanx_api::{GangPlanAnnotation, GangPlanParseError, ANNOTATION_GANG_PLAN};
use phalanx_kube::mirror::pod_uid;

/// A pod that carries a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCarrier {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `spec.nodeName`, once bound.
    pub bound_to: Option<String>,
    /// Being deleted or finished: it will not run the plan.
    pub leaving: bool,
    pub plan: GangPlanAnnotation,
}

impl PlanCarrier {
    /// The pod's plan, if it carries one.
    pub fn of(pod: &Pod) -> Result<Option<PlanCarrier>, GangPlanParseError> {
        let Some(value) = pod.annotations().get(ANNOTATION_GANG_PLAN) else {
            return Ok(None);
        };
        let plan = GangPlanAnnotation::parse(value)?;
        Ok(Some(PlanCarrier {
            uid: pod_uid(pod),
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            bound_to: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            leaving: pod.metadata.deletion_timestamp.is_some()
                || phalanx_kube::translate::is_finished(pod),
            plan,
        }))
    }

    fn waits(&self) -> bool {
        self.bound_to.is_none() && !self.leaving
    }
}

/// What to do with a plan another term wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanVerdict {
    /// The plan still holds as far as the pods tell: bind the unbound members
    /// to their recorded nodes and GPUs (`bound`: the members already there,
    /// to delete if the cluster state refuses the rest).
    Finish {
        bound: Vec<PlanCarrier>,
        unbound: Vec<PlanCarrier>,
    },
    /// The plan cannot be finished: delete the bound members (their owners
    /// recreate them and the gang is placed again, whole) and clear the plan
    /// from the unbound ones.
    Undo {
        reason: UndoReason,
        bound: Vec<PlanCarrier>,
        unbound: Vec<PlanCarrier>,
    },
}

/// Why a plan is undone, in words for an Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UndoReason {
    #[error("the plan placed {expected} members but only {found} still carry it (a member was deleted or replaced)")]
    MissingMembers { expected: u32, found: usize },
    #[error("member {pod} is being deleted or has finished")]
    Leaving { pod: String },
    #[error("member {pod} is bound to {node}, not to {planned} as planned")]
    BoundElsewhere {
        pod: String,
        node: String,
        planned: String,
    },
    #[error("member {pod} cannot go where it was planned: {why}")]
    CannotPlace { pod: String, why: String },
}

/// Every plan carried by a pod the watch shows, indexed by plan id.
#[derive(Debug, Default)]
pub struct PlanBook {
    carriers: HashMap<String, BTreeMap<String, PlanCarrier>>,
    plan_of: HashMap<String, String>,
    /// Plans with a member still waiting to be bound and one not leaving: the
    /// only ones that may need recovery. Kept incrementally so that a turn of
    /// the loop does not scan every plan ever written.
    open: BTreeSet<String>,
}

impl PlanBook {
    /// Records the pod's plan (or that it has none any more). A malformed plan
    /// is reported and the pod counts as carrying none.
    pub fn observe(&mut self, pod: &Pod) -> Result<(), GangPlanParseError> {
        let uid = pod_uid(pod);
        match PlanCarrier::of(pod) {
            Ok(Some(carrier)) => {
                if self.plan_of.get(&uid) != Some(&carrier.plan.plan) {
                    self.forget(&uid);
                }
                let plan = carrier.plan.plan.clone();
                self.plan_of.insert(uid.clone(), plan.clone());
                self.carriers
                    .entry(plan.clone())
                    .or_default()
                    .insert(uid, carrier);
                self.refresh(&plan);
                Ok(())
            }
            Ok(None) => {
                self.forget(&uid);
                Ok(())
            }
            Err(error) => {
                self.forget(&uid);
                Err(error)
            }
        }
    }

    /// The pod is gone.
    pub fn forget(&mut self, uid: &str) {
        let Some(plan) = self.plan_of.remove(uid) else {
            return;
        };
        if let Some(carriers) = self.carriers.get_mut(&plan) {
            carriers.remove(uid);
            if carriers.is_empty() {
                self.carriers.remove(&plan);
            }
        }
        self.refresh(&plan);
    }

    /// The pods recorded as carrying a plan (for forgetting those a relist no
    /// longer shows).
    pub fn uids(&self) -> impl Iterator<Item = &str> {
        self.plan_of.keys().map(String::as_str)
    }

    /// Plans that another term wrote and that may still need finishing or
    /// undoing, in a stable order.
    pub fn open_plans(&self, own_term: &str) -> Vec<String> {
        self.open
            .iter()
            .filter(|plan| {
                self.carriers
                    .get(*plan)
                    .and_then(|c| c.values().next())
                    .is_some_and(|c| c.plan.term() != own_term)
            })
            .cloned()
            .collect()
    }

    /// Whether `plan` still has a member waiting to be bound (and one not
    /// leaving).
    pub fn is_open(&self, plan: &str) -> bool {
        self.open.contains(plan)
    }

    /// What to do with `plan`; `None` when it needs nothing (complete, gone,
    /// or every member leaving anyway).
    pub fn judge(&self, plan: &str) -> Option<PlanVerdict> {
        if !self.open.contains(plan) {
            return None;
        }
        let carriers = self.carriers.get(plan)?;
        let all: Vec<&PlanCarrier> = carriers.values().collect();
        let expected = all.first()?.plan.members;
        let bound = || -> Vec<PlanCarrier> {
            all.iter()
                .filter(|c| c.bound_to.is_some() && !c.leaving)
                .map(|c| (*c).clone())
                .collect()
        };
        let unbound: Vec<PlanCarrier> = all
            .iter()
            .filter(|c| c.waits())
            .map(|c| (*c).clone())
            .collect();
        let undo = |reason| {
            Some(PlanVerdict::Undo {
                reason,
                bound: bound(),
                unbound: unbound.clone(),
            })
        };
        if let Some(c) = all.iter().find(|c| c.leaving) {
            return undo(UndoReason::Leaving {
                pod: format!("{}/{}", c.namespace, c.name),
            });
        }
        if let Some(c) = all
            .iter()
            .find(|c| c.bound_to.as_ref().is_some_and(|n| *n != c.plan.node))
        {
            return undo(UndoReason::BoundElsewhere {
                pod: format!("{}/{}", c.namespace, c.name),
                node: c.bound_to.clone().unwrap_or_default(),
                planned: c.plan.node.clone(),
            });
        }
        if usize::try_from(expected).map_or(true, |e| all.len() < e) {
            return undo(UndoReason::MissingMembers {
                expected,
                found: all.len(),
            });
        }
        Some(PlanVerdict::Finish {
            bound: bound(),
            unbound,
        })
    }

    fn refresh(&mut self, plan: &str) {
        let open = self.carriers.get(plan).is_some_and(|c| {
            c.values().any(|c| c.bound_to.is_none()) && c.values().any(|c| !c.leaving)
        });
        if open {
            self.open.insert(plan.to_owned());
        } else {
            self.open.remove(plan);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_openapi::jiff::Timestamp;
    use phalanx_api::AssignedGpu;

    use super::*;

    const OLD: &str = "phalanx-0@1000";
    const NEW: &str = "phalanx-1@2000";

    /// Member `i` of gang ml/train under plan `plan` (of `members`), on node
    /// `gpu-i`, bound there when `bound`.
    fn member(plan: &str, members: u32, i: usize, bound: bool) -> Pod {
        let annotation = GangPlanAnnotation {
            plan: plan.to_owned(),
            gang: "ml/train".into(),
            members,
            node: format!("gpu-{i}"),
            gpus: vec![AssignedGpu {
                index: 0,
                uuid: String::new(),
                milli: 1000,
            }],
        };
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("train-{i}")),
                namespace: Some("ml".into()),
                uid: Some(format!("u{i}")),
                annotations: Some(
                    [(ANNOTATION_GANG_PLAN.to_owned(), annotation.to_json())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: bound.then(|| format!("gpu-{i}")),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn book(pods: &[Pod]) -> PlanBook {
        let mut book = PlanBook::default();
        for pod in pods {
            book.observe(pod).unwrap();
        }
        book
    }

    fn plan(i: u32) -> String {
        format!("{OLD}#{i}")
    }

    fn names(carriers: &[PlanCarrier]) -> Vec<&str> {
        carriers.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_plan_cut_between_bindings_is_finished_with_its_unbound_members() {
        let p = plan(1);
        let book = book(&[
            member(&p, 4, 0, true),
            member(&p, 4, 1, true),
            member(&p, 4, 2, false),
            member(&p, 4, 3, false),
        ]);
        assert_eq!(book.open_plans(NEW), vec![p.clone()]);
        let Some(PlanVerdict::Finish { bound, unbound }) = book.judge(&p) else {
            panic!("{:?}", book.judge(&p));
        };
        assert_eq!(names(&bound), vec!["train-0", "train-1"]);
        assert_eq!(names(&unbound), vec!["train-2", "train-3"]);
        assert_eq!(unbound[0].plan.node, "gpu-2");
    }

    #[test]
    fn a_plan_cut_before_any_binding_is_finished_whole() {
        let p = plan(2);
        let pods: Vec<Pod> = (0..3).map(|i| member(&p, 3, i, false)).collect();
        let Some(PlanVerdict::Finish { unbound, .. }) = book(&pods).judge(&p) else {
            panic!("not finished");
        };
        assert_eq!(unbound.len(), 3);
    }

    #[test]
    fn a_complete_plan_needs_nothing_and_is_not_open() {
        let p = plan(3);
        let book = book(&[member(&p, 2, 0, true), member(&p, 2, 1, true)]);
        assert!(book.open_plans(NEW).is_empty());
        assert_eq!(book.judge(&p), None);
    }

    #[test]
    fn a_complete_plan_stays_complete_when_a_member_is_replaced() {
        // The owner replaced a finished member with a pod without the plan:
        // all remaining carriers are bound, so nothing is undone.
        let p = plan(4);
        let book = book(&[member(&p, 3, 0, true), member(&p, 3, 1, true)]);
        assert_eq!(book.judge(&p), None);
    }

    #[test]
    fn the_own_terms_plans_are_gangs_in_flight_not_recovery() {
        let own = format!("{NEW}#1");
        let book = book(&[member(&own, 2, 0, true), member(&own, 2, 1, false)]);
        assert!(book.open_plans(NEW).is_empty());
        assert_eq!(book.open_plans("phalanx-2@3000"), vec![own]);
    }

    #[test]
    fn a_plan_missing_a_member_is_undone_deleting_the_bound_ones() {
        let p = plan(5);
        // train-3 was deleted while no leader was up.
        let book = book(&[
            member(&p, 4, 0, true),
            member(&p, 4, 1, false),
            member(&p, 4, 2, false),
        ]);
        let Some(PlanVerdict::Undo {
            reason,
            bound,
            unbound,
        }) = book.judge(&p)
        else {
            panic!("not undone");
        };
        assert_eq!(
            reason,
            UndoReason::MissingMembers {
                expected: 4,
                found: 3
            }
        );
        assert_eq!(names(&bound), vec!["train-0"]);
        assert_eq!(names(&unbound), vec!["train-1", "train-2"]);
    }

    #[test]
    fn a_plan_whose_writer_died_midway_through_writing_it_is_undone() {
        // Two of four plans written, nothing bound: only the plans are cleared.
        let p = plan(6);
        let book = book(&[member(&p, 4, 0, false), member(&p, 4, 1, false)]);
        let Some(PlanVerdict::Undo { bound, unbound, .. }) = book.judge(&p) else {
            panic!("not undone");
        };
        assert!(bound.is_empty());
        assert_eq!(unbound.len(), 2);
    }

    #[test]
    fn a_leaving_member_undoes_the_plan_but_is_not_deleted_again() {
        let p = plan(7);
        let mut leaving = member(&p, 3, 2, false);
        leaving.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let book = book(&[member(&p, 3, 0, true), member(&p, 3, 1, false), leaving]);
        let Some(PlanVerdict::Undo {
            reason,
            bound,
            unbound,
        }) = book.judge(&p)
        else {
            panic!("not undone");
        };
        assert_eq!(
            reason.to_string(),
            "member ml/train-2 is being deleted or has finished"
        );
        assert_eq!(names(&bound), vec!["train-0"]);
        assert_eq!(names(&unbound), vec!["train-1"]);
    }

    #[test]
    fn a_member_bound_elsewhere_undoes_the_plan() {
        let p = plan(8);
        let mut elsewhere = member(&p, 2, 1, true);
        elsewhere.spec.as_mut().unwrap().node_name = Some("gpu-9".into());
        let book = book(&[member(&p, 2, 0, false), elsewhere]);
        let Some(PlanVerdict::Undo { reason, .. }) = book.judge(&p) else {
            panic!("not undone");
        };
        assert!(
            matches!(reason, UndoReason::BoundElsewhere { ref node, .. } if node == "gpu-9"),
            "{reason}"
        );
    }

    #[test]
    fn deletions_and_cleared_plans_leave_the_book() {
        let p = plan(9);
        let mut book = book(&[member(&p, 2, 0, true), member(&p, 2, 1, false)]);
        assert_eq!(book.open_plans(NEW).len(), 1);
        assert!(book.is_open(&p));
        // The unbound member's plan was cleared (an undo).
        let mut cleared = member(&p, 2, 1, false);
        cleared.metadata.annotations = None;
        book.observe(&cleared).unwrap();
        assert!(book.open_plans(NEW).is_empty());
        assert!(!book.is_open(&p));
        book.forget("u0");
        assert_eq!(book.uids().count(), 0);
        assert_eq!(book.judge(&p), None);
    }

    #[test]
    fn a_malformed_plan_is_reported_and_carries_nothing() {
        let mut pod = member(&plan(10), 2, 0, false);
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION_GANG_PLAN.into(), "{not json".into());
        let mut book = PlanBook::default();
        let err = book.observe(&pod).unwrap_err().to_string();
        assert!(err.contains("phalanx.dev/gang-plan"), "{err}");
        assert_eq!(book.uids().count(), 0);
    }
}
