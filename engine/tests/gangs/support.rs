//! Clusters, workers and gangs shared by the gang tests.

use std::collections::BTreeSet;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, place_gang, ClusterSnapshot, CycleScratch, GangPlan, GangSpec, GangUnschedulable,
    GpuDemand, GpuSpec, ModelConstraint, NodeSpec, PlacementPolicy, PodDemand, PolicyName,
    TopologyLevel, WorkloadSource,
};

pub const RACK: &str = "topology.phalanx.dev/rack";
pub const CLIQUE: &str = "nvidia.com/gpu.clique";
pub const ZONE: &str = "topology.kubernetes.io/zone";

/// An H100 node with `gpus` GPUs, plenty of CPU and memory, and `labels`.
pub fn labelled_node(name: &str, gpus: usize, labels: &[(&str, &str)]) -> NodeSpec {
    NodeSpec {
        name: name.into(),
        cpu_milli: 96_000,
        memory_mib: 1 << 20,
        max_pods: 110,
        gpu_model: Some("H100".into()),
        gpus: vec![GpuSpec::default(); gpus],
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..NodeSpec::default()
    }
}

/// A node in `rack`.
pub fn node(name: &str, gpus: usize, rack: &str) -> NodeSpec {
    labelled_node(name, gpus, &[(RACK, rack)])
}

/// Nodes `n0`, `n1`, … of (GPUs, rack).
pub fn cluster(nodes: &[(usize, &str)]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for (i, (gpus, rack)) in nodes.iter().enumerate() {
        c.add_node(node(&format!("n{i}"), *gpus, rack)).unwrap();
    }
    c
}

/// Nodes `n0`, `n1`, … of (GPUs, labels).
pub fn labelled_cluster(nodes: &[(usize, &[(&str, &str)])]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for (i, (gpus, labels)) in nodes.iter().enumerate() {
        c.add_node(labelled_node(&format!("n{i}"), *gpus, labels))
            .unwrap();
    }
    c
}

/// `n` workers of `gpus` whole GPUs each.
pub fn workers(n: usize, gpus: u32) -> Vec<PodDemand> {
    (0..n)
        .map(|i| {
            PodDemand::new(
                format!("worker-{i}"),
                4_000,
                1_024,
                GpuDemand::Whole { count: gpus },
                ModelConstraint::Any,
            )
            .unwrap()
        })
        .collect()
}

pub fn policy() -> Box<dyn PlacementPolicy> {
    build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Online,
        },
    )
}

/// The accounting that must be exactly restored when a gang does not fit.
pub fn accounting(c: &ClusterSnapshot) -> Vec<(u64, u64, u32, Vec<u32>)> {
    c.nodes()
        .iter()
        .map(|n| {
            (
                n.cpu_milli_used,
                n.memory_mib_used,
                n.pods,
                n.gpus.iter().map(|g| g.milli_free).collect(),
            )
        })
        .collect()
}

pub fn gang<'a>(
    members: &'a [PodDemand],
    min_member: usize,
    topology: &'a [TopologyLevel<'a>],
) -> GangSpec<'a> {
    GangSpec {
        name: "job",
        members,
        min_member,
        topology,
        ..GangSpec::default()
    }
}

/// Places `gang` with the default policy; a `GangError` fails the test.
pub fn place(c: &mut ClusterSnapshot, gang: &GangSpec<'_>) -> Result<GangPlan, GangUnschedulable> {
    place_gang(c, policy().as_mut(), gang, &mut CycleScratch::default()).unwrap()
}

/// The values of `key` on the nodes the plan placed members on.
pub fn values_used(c: &ClusterSnapshot, plan: &GangPlan, key: &str) -> BTreeSet<String> {
    plan.placements
        .iter()
        .map(|(_, p)| c.node(p.node).labels.get(key).cloned().unwrap_or_default())
        .collect()
}

/// The plan's domain as (key, value).
pub fn domain(plan: &GangPlan) -> Option<(&str, &str)> {
    plan.domain
        .as_ref()
        .map(|d| (d.key.as_str(), d.value.as_str()))
}
