//! Preemption and reclaim: who is evicted for a waiting pod or gang. Scenarios
//! for each rule (priority, whole gangs, PodDisruptionBudgets, minimum runtime,
//! `preemptionPolicy: Never`, reclaim across queues), and properties over
//! generated clusters: the preemptor fits once the victims are gone, no gang
//! is left partly running, no budget is overspent, no victim could have
//! stayed, and the snapshot is left exactly as it was.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::collections::{BTreeMap, BTreeSet};

use phalanx_engine::preemption::{
    plan_preemption, EvictionReason, NoPreemption, PreemptionPlan, PreemptionPolicy,
    PreemptionRules, Preemptor, RunningPod,
};
use phalanx_engine::queues::{
    QueueLedger, QueueResource, QueueSpec, QueueTree, Quota, ResourceAmounts,
};
use phalanx_engine::{
    build_policy, place_gang, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch, GangSpec,
    GpuDemand, GpuSpec, ModelConstraint, NodeSpec, PlacementPolicy, PodDemand, PolicyConfig,
    PolicyName, WorkloadSource,
};
use proptest::prelude::*;

const MINUTE: u64 = 60_000;

struct Cluster {
    snapshot: ClusterSnapshot,
    policy: Box<dyn PlacementPolicy>,
    pool: Vec<RunningPod>,
}

impl Cluster {
    fn new(nodes: usize, gpus: usize) -> Self {
        let mut snapshot = ClusterSnapshot::new();
        for i in 0..nodes {
            snapshot
                .add_node(NodeSpec {
                    name: format!("n{i}"),
                    cpu_milli: 64_000,
                    memory_mib: 256_000,
                    max_pods: 32,
                    gpu_model: Some("A100".into()),
                    gpus: vec![GpuSpec::default(); gpus],
                    ..NodeSpec::default()
                })
                .unwrap();
        }
        let policy = build_policy(
            PolicyName::Phalanx,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        Self {
            snapshot,
            policy,
            pool: Vec::new(),
        }
    }

    /// Runs a pod (placed where the policy puts it) and returns its index.
    fn run(&mut self, pod: RunSpec) -> usize {
        let demand = gpu_pod(&format!("r{}", self.pool.len()), pod.gpus);
        let mut scratch = CycleScratch::default();
        let placement =
            match schedule_one(&self.snapshot, self.policy.as_mut(), &demand, &mut scratch) {
                CycleOutcome::Placed(p) => p,
                other => panic!("test setup: {other:?}"),
            };
        self.snapshot.place(&demand, &placement).unwrap();
        self.pool.push(RunningPod {
            demand,
            placement,
            priority: pod.priority,
            queue: pod.queue.map(|q| self.queue_id(q)),
            gang: pod.gang,
            started_ms: pod.started_ms,
            budgets: pod.budgets,
            leaving: pod.leaving,
        });
        self.pool.len() - 1
    }

    fn queue_id(&self, index: usize) -> phalanx_engine::queues::QueueId {
        // Queues in these tests are named q0, q1, … and built in that order.
        TREE.with(|t| {
            t.borrow()
                .as_ref()
                .unwrap()
                .id(&format!("q{index}"))
                .unwrap()
        })
    }

    fn plan(
        &mut self,
        members: &[PodDemand],
        min_member: usize,
        priority: i32,
        rules: PreemptionRules<'_>,
    ) -> Result<PreemptionPlan, NoPreemption> {
        self.plan_in(
            members,
            min_member,
            priority,
            None,
            PreemptionPolicy::default(),
            rules,
        )
    }

    fn plan_in(
        &mut self,
        members: &[PodDemand],
        min_member: usize,
        priority: i32,
        queue: Option<phalanx_engine::queues::QueueId>,
        policy: PreemptionPolicy,
        rules: PreemptionRules<'_>,
    ) -> Result<PreemptionPlan, NoPreemption> {
        let preemptor = Preemptor {
            gang: GangSpec {
                name: "preemptor",
                members,
                min_member,
                ..GangSpec::default()
            },
            priority,
            queue,
            policy,
        };
        let before = free_of(&self.snapshot);
        let plan = plan_preemption(
            &mut self.snapshot,
            self.policy.as_mut(),
            &preemptor,
            &self.pool,
            &rules,
            &mut CycleScratch::default(),
        );
        assert_eq!(
            free_of(&self.snapshot),
            before,
            "the snapshot must be left as it was"
        );
        plan
    }
}

thread_local! {
    static TREE: std::cell::RefCell<Option<QueueTree>> = const { std::cell::RefCell::new(None) };
}

#[derive(Clone, Default)]
struct RunSpec {
    gpus: u32,
    priority: i32,
    queue: Option<usize>,
    gang: Option<u64>,
    started_ms: u64,
    budgets: Vec<usize>,
    leaving: bool,
}

fn gpu_pod(name: &str, gpus: u32) -> PodDemand {
    PodDemand::new(
        name,
        1_000,
        1_024,
        GpuDemand::Whole { count: gpus },
        ModelConstraint::Any,
    )
    .unwrap()
}

fn pods(n: usize, gpus: u32) -> Vec<PodDemand> {
    (0..n).map(|i| gpu_pod(&format!("m{i}"), gpus)).collect()
}

/// Free CPU, memory and per-GPU milli of every node.
fn free_of(snapshot: &ClusterSnapshot) -> Vec<(u64, u64, Vec<u32>)> {
    snapshot
        .nodes()
        .iter()
        .map(|n| {
            (
                n.cpu_milli_free(),
                n.memory_mib_free(),
                n.gpus.iter().map(|g| g.milli_free).collect(),
            )
        })
        .collect()
}

fn rules(now_ms: u64) -> PreemptionRules<'static> {
    PreemptionRules {
        now_ms,
        min_runtime_ms: 0,
        ledger: None,
        budgets: &[],
    }
}

fn victims(plan: &PreemptionPlan) -> BTreeSet<usize> {
    plan.victims.iter().map(|v| v.pod).collect()
}

#[test]
fn the_lowest_priority_pod_goes_and_only_it() {
    let mut c = Cluster::new(2, 1);
    c.run(RunSpec {
        gpus: 1,
        priority: 5,
        ..Default::default()
    });
    let low = c.run(RunSpec {
        gpus: 1,
        priority: 1,
        ..Default::default()
    });
    let plan = c.plan(&pods(1, 1), 1, 10, rules(MINUTE)).unwrap();
    assert_eq!(victims(&plan), BTreeSet::from([low]));
    assert_eq!(plan.victims[0].reason, EvictionReason::Preemption);
    assert_eq!(plan.nodes(), vec![c.pool[low].placement.node]);
}

#[test]
fn equal_or_higher_priority_is_never_preempted() {
    let mut c = Cluster::new(2, 1);
    c.run(RunSpec {
        gpus: 1,
        priority: 10,
        ..Default::default()
    });
    c.run(RunSpec {
        gpus: 1,
        priority: 11,
        ..Default::default()
    });
    let refusal = c.plan(&pods(1, 1), 1, 10, rules(MINUTE)).unwrap_err();
    assert_eq!(
        refusal,
        NoPreemption::NoCandidates {
            not_lower_priority: 2,
            not_reclaimable: 0,
            too_young: 0,
            budget_exhausted: 0
        }
    );
}

#[test]
fn preemption_policy_never_preempts_nothing() {
    let mut c = Cluster::new(1, 1);
    c.run(RunSpec {
        gpus: 1,
        priority: 0,
        ..Default::default()
    });
    let refusal = c
        .plan_in(
            &pods(1, 1),
            1,
            10,
            None,
            PreemptionPolicy::Never,
            rules(MINUTE),
        )
        .unwrap_err();
    assert_eq!(refusal, NoPreemption::PolicyNever);
    assert_eq!(refusal.to_string(), "its preemptionPolicy is Never");
}

#[test]
fn a_gang_goes_whole_or_not_at_all() {
    let mut c = Cluster::new(3, 1);
    let a = c.run(RunSpec {
        gpus: 1,
        priority: 0,
        gang: Some(7),
        ..Default::default()
    });
    let b = c.run(RunSpec {
        gpus: 1,
        priority: 0,
        gang: Some(7),
        ..Default::default()
    });
    let lone = c.run(RunSpec {
        gpus: 1,
        priority: 1,
        ..Default::default()
    });
    // One GPU is needed; the gang is the lowest priority, so both its members go.
    let plan = c.plan(&pods(1, 1), 1, 5, rules(MINUTE)).unwrap();
    assert_eq!(victims(&plan), BTreeSet::from([a, b]), "not {lone}");
}

#[test]
fn fewer_pods_win_among_equal_priorities() {
    let mut c = Cluster::new(3, 2);
    // n0: two one-GPU pods; n1: one two-GPU pod; n2: full with higher priority.
    c.run(RunSpec {
        gpus: 2,
        priority: 9,
        ..Default::default()
    });
    let big = c.run(RunSpec {
        gpus: 2,
        priority: 1,
        ..Default::default()
    });
    c.run(RunSpec {
        gpus: 1,
        priority: 1,
        ..Default::default()
    });
    c.run(RunSpec {
        gpus: 1,
        priority: 1,
        ..Default::default()
    });
    let plan = c.plan(&pods(1, 2), 1, 5, rules(MINUTE)).unwrap();
    assert_eq!(victims(&plan), BTreeSet::from([big]));
}

#[test]
fn a_disruption_budget_protects_its_pods() {
    let mut c = Cluster::new(2, 1);
    let guarded = c.run(RunSpec {
        gpus: 1,
        priority: 0,
        budgets: vec![0],
        ..Default::default()
    });
    let other = c.run(RunSpec {
        gpus: 1,
        priority: 3,
        ..Default::default()
    });
    let plan = c
        .plan(
            &pods(1, 1),
            1,
            5,
            PreemptionRules {
                budgets: &[0],
                ..rules(MINUTE)
            },
        )
        .unwrap();
    assert_eq!(victims(&plan), BTreeSet::from([other]), "not {guarded}");
    let plan = c
        .plan(
            &pods(1, 1),
            1,
            5,
            PreemptionRules {
                budgets: &[1],
                ..rules(MINUTE)
            },
        )
        .unwrap();
    assert_eq!(
        victims(&plan),
        BTreeSet::from([guarded]),
        "budget allows one"
    );
}

#[test]
fn a_pod_younger_than_the_minimum_runtime_stays() {
    let mut c = Cluster::new(1, 1);
    c.run(RunSpec {
        gpus: 1,
        priority: 0,
        started_ms: 50 * MINUTE,
        ..Default::default()
    });
    let refusal = c
        .plan(
            &pods(1, 1),
            1,
            5,
            PreemptionRules {
                min_runtime_ms: 15 * MINUTE,
                ..rules(60 * MINUTE)
            },
        )
        .unwrap_err();
    assert!(
        matches!(refusal, NoPreemption::NoCandidates { too_young: 1, .. }),
        "{refusal}"
    );
}

#[test]
fn a_gang_preemptor_takes_only_the_room_it_needs() {
    let mut c = Cluster::new(4, 2);
    for priority in [0, 0, 1, 1, 2, 2, 3, 3] {
        c.run(RunSpec {
            gpus: 1,
            priority,
            ..Default::default()
        });
    }
    let plan = c.plan(&pods(2, 2), 2, 5, rules(MINUTE)).unwrap();
    let gone = victims(&plan);
    assert_eq!(gone.len(), 4, "two nodes' worth: {gone:?}");
    assert!(gone.iter().all(|&v| c.pool[v].priority <= 1), "{gone:?}");
    assert_eq!(plan.placements.len(), 2);
}

#[test]
fn room_already_leaving_is_used_and_nothing_more_is_evicted() {
    let mut c = Cluster::new(2, 1);
    let leaving = c.run(RunSpec {
        gpus: 1,
        priority: 0,
        leaving: true,
        ..Default::default()
    });
    c.run(RunSpec {
        gpus: 1,
        priority: 0,
        ..Default::default()
    });
    let plan = c.plan(&pods(1, 1), 1, 5, rules(MINUTE)).unwrap();
    assert!(plan.victims.is_empty(), "{plan:?}");
    assert_eq!(plan.nodes(), vec![c.pool[leaving].placement.node]);
    // A second preemptor needing two GPUs takes the other pod and the
    // leaving one's room, evicting only the other.
    let plan = c.plan(&pods(2, 1), 2, 5, rules(MINUTE)).unwrap();
    assert_eq!(plan.victims.len(), 1);
    assert_ne!(plan.victims[0].pod, leaving);
}

#[test]
fn more_than_any_eviction_frees_is_refused() {
    let mut c = Cluster::new(2, 1);
    c.run(RunSpec {
        gpus: 1,
        priority: 0,
        ..Default::default()
    });
    assert_eq!(
        c.plan(&pods(1, 2), 1, 5, rules(MINUTE)).unwrap_err(),
        NoPreemption::DoesNotFit
    );
}

fn gpu_quota(guaranteed: u64) -> BTreeMap<QueueResource, Quota> {
    BTreeMap::from([(
        QueueResource::GpuMilli,
        Quota {
            guaranteed,
            limit: None,
            over_quota_weight: 1,
        },
    )])
}

/// Two queues guaranteed two GPUs each of four; q1 runs `q1_pods` one-GPU
/// pods at priority 10, q0 runs `q0_pods`.
fn two_queues(q0_pods: usize, q1_pods: usize) -> (Cluster, QueueLedger) {
    let tree = QueueTree::build(vec![
        QueueSpec {
            name: "q0".into(),
            parent: None,
            quotas: gpu_quota(2_000),
        },
        QueueSpec {
            name: "q1".into(),
            parent: None,
            quotas: gpu_quota(2_000),
        },
    ])
    .unwrap();
    TREE.with(|t| *t.borrow_mut() = Some(tree.clone()));
    let mut ledger = QueueLedger::new(tree);
    let mut c = Cluster::new(4, 1);
    for (queue, n) in [(0, q0_pods), (1, q1_pods)] {
        for _ in 0..n {
            let i = c.run(RunSpec {
                gpus: 1,
                priority: 10,
                queue: Some(queue),
                ..Default::default()
            });
            let pod = &c.pool[i];
            ledger.add_usage(
                pod.queue.unwrap(),
                &QueueLedger::placed_amounts(&c.snapshot, &pod.demand, pod.placement.node),
            );
        }
    }
    (c, ledger)
}

#[test]
fn a_queue_below_its_guarantee_reclaims_what_another_borrowed() {
    let (mut c, ledger) = two_queues(1, 3);
    let q0 = c.queue_id(0);
    let plan = c
        .plan_in(
            &pods(1, 1),
            1,
            0,
            Some(q0),
            PreemptionPolicy::default(),
            PreemptionRules {
                ledger: Some(&ledger),
                ..rules(MINUTE)
            },
        )
        .unwrap();
    assert_eq!(plan.victims.len(), 1);
    let victim = &c.pool[plan.victims[0].pod];
    assert_eq!(victim.queue, Some(c.queue_id(1)), "taken from the borrower");
    assert_eq!(plan.victims[0].reason, EvictionReason::Reclaim);
    assert_eq!(victim.priority, 10, "reclaim ignores priority");
}

#[test]
fn nothing_is_reclaimed_from_a_queue_within_its_guarantee() {
    // q0 already holds its guarantee: it may not reclaim a third GPU, and its
    // own pods are of its priority.
    let (mut c, ledger) = two_queues(2, 2);
    let q0 = c.queue_id(0);
    let refusal = c
        .plan_in(
            &pods(1, 1),
            1,
            10,
            Some(q0),
            PreemptionPolicy::default(),
            PreemptionRules {
                ledger: Some(&ledger),
                ..rules(MINUTE)
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            refusal,
            NoPreemption::NoCandidates {
                not_reclaimable: 2,
                not_lower_priority: 2,
                ..
            }
        ),
        "{refusal}"
    );
}

/// A generated running pod: GPUs (1–2), priority, gang (0: none), budget
/// (0: none).
fn running() -> impl Strategy<Value = (u32, i32, u64, usize)> {
    (1u32..=2, 0i32..4, 0u64..3, 0usize..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn plans_are_sound_and_minimal(
        nodes in 1usize..5,
        running in prop::collection::vec(running(), 0..10),
        members in 1usize..4,
        member_gpus in 1u32..=2,
        priority in 0i32..5,
        budgets in prop::collection::vec(0u32..3, 2),
    ) {
        let mut c = Cluster::new(nodes, 2);
        for (gpus, prio, gang, budget) in running {
            let spec = RunSpec {
                gpus,
                priority: prio,
                gang: (gang > 0).then_some(gang),
                budgets: if budget > 0 { vec![budget - 1] } else { vec![] },
                ..Default::default()
            };
            let demand = gpu_pod("probe", gpus);
            let fits = c.snapshot.nodes().iter().enumerate().any(|(i, _)| {
                c.snapshot.fits(phalanx_engine::NodeId(i as u32), &demand)
            });
            if fits {
                c.run(spec);
            }
        }
        let wanted = pods(members, member_gpus);
        let rules = PreemptionRules { budgets: &budgets, ..rules(MINUTE) };
        let Ok(plan) = c.plan(&wanted, members, priority, rules) else {
            return Ok(());
        };
        let gone = victims(&plan);
        for &v in &gone {
            prop_assert!(c.pool[v].priority < priority, "victim {v} not of lower priority");
        }
        // Whole gangs only.
        for (i, pod) in c.pool.iter().enumerate() {
            if let Some(g) = pod.gang {
                let any = c.pool.iter().enumerate().any(|(j, p)| p.gang == Some(g) && gone.contains(&j));
                prop_assert!(!any || gone.contains(&i), "gang {g} left partly running");
            }
        }
        // Budgets kept.
        for (b, &allowed) in budgets.iter().enumerate() {
            let spent = gone.iter().filter(|&&v| c.pool[v].budgets.contains(&b)).count();
            prop_assert!(spent <= allowed as usize, "budget {b}: {spent} > {allowed}");
        }
        // The preemptor fits where planned once the victims are gone.
        let mut after = c.snapshot.clone();
        for &v in &gone {
            after.release(&c.pool[v].demand, &c.pool[v].placement).unwrap();
        }
        for (member, placement) in &plan.placements {
            prop_assert!(after.place(&wanted[*member], placement).is_ok());
        }
        // No victim could have stayed: with any one victim unit back, the
        // gang no longer fits.
        let mut units: BTreeMap<Option<u64>, Vec<usize>> = BTreeMap::new();
        for &v in &gone {
            let key = c.pool[v].gang.or(Some(u64::MAX - v as u64));
            units.entry(key).or_default().push(v);
        }
        for unit in units.values() {
            let mut without = c.snapshot.clone();
            for &v in &gone {
                if !unit.contains(&v) {
                    without.release(&c.pool[v].demand, &c.pool[v].placement).unwrap();
                }
            }
            let spec = GangSpec { name: "preemptor", members: &wanted, min_member: members, ..GangSpec::default() };
            let fits = place_gang(&mut without, c.policy.as_mut(), &spec, &mut CycleScratch::default()).unwrap();
            prop_assert!(fits.is_err(), "victims {unit:?} did not need to go");
        }
    }

    #[test]
    fn reclaim_never_takes_a_queue_below_its_guarantee(
        q0_pods in 0usize..4,
        q1_pods in 0usize..4,
    ) {
        prop_assume!(q0_pods + q1_pods <= 4);
        let (mut c, ledger) = two_queues(q0_pods, q1_pods);
        let q0 = c.queue_id(0);
        let plan = c.plan_in(
            &pods(1, 1), 1, 0, Some(q0), PreemptionPolicy::default(),
            PreemptionRules { ledger: Some(&ledger), ..rules(MINUTE) },
        );
        let taken = plan.map(|p| p.victims.len()).unwrap_or(0);
        let q1_left = q1_pods - taken;
        if taken > 0 {
            prop_assert!(q1_left >= 2, "q1 left with {q1_left} GPUs, below its guarantee");
            prop_assert!(q0_pods < 2, "q0 reclaimed beyond its guarantee");
        }
        // Free room means no eviction at all.
        if q0_pods + q1_pods < 4 {
            prop_assert_eq!(taken, 0);
        }
        let _ = ResourceAmounts::new();
    }
}
