//! One scheduling cycle (decide, commit, undo) for pods with inter-pod rules, at
//! 1,000 and 5,000 nodes of the benchmark cluster, each already running 1,000
//! replicas of the same workload: the cost of reading the per-domain counts the
//! snapshot keeps, against `schedule_one`'s plain figures.
//!
//! * `anti_affinity_hostname`: required anti-affinity to its own app on
//!   `kubernetes.io/hostname` (one replica per node);
//! * `spread_racks`: DoNotSchedule spread over racks, maxSkew 1;
//! * `preferred_affinity_rack`: a preferred affinity to a cache app by rack,
//!   which takes the blended scoring path;
//! * `labelled_no_terms`: a pod as the cluster translates it (namespace and
//!   labels) with no terms: the plain path plus the index look-ups.

mod support;

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use phalanx_engine::{
    ClusterSnapshot, CycleScratch, GpuAssignment, GpuDemand, InterPodSpec, LabelSelector,
    ModelConstraint, NamespaceScope, NodeId, NodeInclusionPolicy, Placement, PodAffinityRules,
    PodAffinityTerm, PodDemand, PolicyName, TopologySpreadConstraint, WeightedPodAffinityTerm,
    WhenUnsatisfiable,
};

/// Replicas placed before measuring, one per node from the first.
const REPLICAS: usize = 1_000;

fn app(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), name.to_string())])
}

fn term(target: &str, key: &str) -> PodAffinityTerm {
    PodAffinityTerm {
        selector: Some(LabelSelector::new("bench", app(target), vec![]).expect("valid")),
        namespaces: NamespaceScope::own("default"),
        topology_key: key.into(),
    }
}

fn pod(
    name: &str,
    app_name: &str,
    rules: PodAffinityRules,
    spread: Vec<TopologySpreadConstraint>,
) -> PodDemand {
    let spec = InterPodSpec::new(name, "default", app(app_name), rules, spread).expect("valid");
    PodDemand::new(name, 1_000, 1_024, GpuDemand::None, ModelConstraint::Any)
        .expect("valid")
        .with_inter_pod(spec)
}

fn workloads() -> Vec<(&'static str, PodDemand)> {
    let anti = PodAffinityRules {
        required_anti_affinity: vec![term("web", support::HOSTNAME_LABEL)],
        ..PodAffinityRules::default()
    };
    let spread = TopologySpreadConstraint {
        max_skew: 1,
        min_domains: None,
        topology_key: support::RACK_LABEL.into(),
        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
        selector: Some(LabelSelector::new("bench", app("spread"), vec![]).expect("valid")),
        node_affinity_policy: NodeInclusionPolicy::Honor,
        node_taints_policy: NodeInclusionPolicy::Ignore,
    };
    let preferred = PodAffinityRules {
        preferred_affinity: vec![WeightedPodAffinityTerm {
            weight: 50,
            term: term("cache", support::RACK_LABEL),
        }],
        ..PodAffinityRules::default()
    };
    vec![
        ("anti_affinity_hostname", pod("web", "web", anti, vec![])),
        (
            "spread_racks",
            pod(
                "spread",
                "spread",
                PodAffinityRules::default(),
                vec![spread],
            ),
        ),
        (
            "preferred_affinity_rack",
            pod("client", "client", preferred, vec![]),
        ),
        (
            "labelled_no_terms",
            pod("plain", "plain", PodAffinityRules::default(), vec![]),
        ),
    ]
}

/// Places `REPLICAS` copies of `pod` (and of a cache pod), one per node, so the
/// counts have something to count.
fn with_replicas(nodes: usize, pod: &PodDemand) -> ClusterSnapshot {
    let mut snapshot = support::cluster(nodes);
    let cache = pod_like("cache");
    for i in 0..REPLICAS.min(nodes) {
        let placement = Placement {
            node: NodeId(i as u32),
            gpus: GpuAssignment::default(),
        };
        // Full or cordoned nodes are skipped: a replica that does not fit is not placed.
        let _ = snapshot.place(pod, &placement);
        let _ = snapshot.place(&cache, &placement);
    }
    snapshot
}

fn pod_like(name: &str) -> PodDemand {
    pod(name, name, PodAffinityRules::default(), vec![])
}

fn inter_pod(c: &mut Criterion) {
    let mut group = c.benchmark_group("inter_pod");
    group.throughput(Throughput::Elements(1));
    for nodes in support::SIZES {
        for (name, pod) in workloads() {
            let mut snapshot = with_replicas(nodes, &pod);
            let mut policy = support::policy(PolicyName::Phalanx, &snapshot);
            let mut scratch = CycleScratch::default();
            group.bench_function(BenchmarkId::new(name, nodes), |b| {
                b.iter(|| {
                    black_box(support::cycle(
                        &mut snapshot,
                        policy.as_mut(),
                        &pod,
                        &mut scratch,
                    ))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, inter_pod);
criterion_main!(benches);
