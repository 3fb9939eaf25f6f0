//! Builders for the volume tests: a tracked cluster of CPU nodes, claims, PVs
//! and classes with kube-scheduler test names' defaults.

use std::collections::BTreeMap;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::{
    build_policy, schedule_one, AccessMode, BindingMode, ClaimSpec, ClusterSnapshot, CycleOutcome,
    CycleScratch, GpuDemand, ModelConstraint, NodeSelectorRequirement, NodeSpec, PodDemand,
    PodVolumes, PolicyName, SelectorOperator, StorageClassSpec, UnfitReason, VolumeSpec,
    WorkloadSource, NO_PROVISIONER,
};

pub const GI: u64 = 1 << 30;
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// Nodes `names`, each labelled with its hostname; volumes tracked.
pub fn cluster(names: &[&str]) -> ClusterSnapshot {
    let mut c = ClusterSnapshot::new();
    for name in names {
        c.add_node(NodeSpec {
            name: (*name).into(),
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            max_pods: 100,
            labels: BTreeMap::from([(HOSTNAME.to_owned(), (*name).to_owned())]),
            ..NodeSpec::default()
        })
        .unwrap();
    }
    c.volumes_mut().set_tracked(true);
    c.volumes_mut().upsert_class(class(
        "wait",
        BindingMode::WaitForFirstConsumer,
        NO_PROVISIONER,
    ));
    c.volumes_mut()
        .upsert_class(class("immediate", BindingMode::Immediate, NO_PROVISIONER));
    c.volumes_mut().upsert_class(class(
        "dynamic",
        BindingMode::WaitForFirstConsumer,
        "csi.example.com",
    ));
    c
}

pub fn class(name: &str, mode: BindingMode, provisioner: &str) -> StorageClassSpec {
    StorageClassSpec {
        name: name.into(),
        binding_mode: mode,
        provisioner: provisioner.into(),
        allowed_topologies: Vec::new(),
    }
}

/// An unbound 1Gi ReadWriteOnce claim in `default`.
pub fn claim(name: &str, class: &str) -> ClaimSpec {
    ClaimSpec {
        namespace: "default".into(),
        name: name.into(),
        storage_class: class.into(),
        access_modes: vec![AccessMode::ReadWriteOnce],
        request_bytes: GI,
        ..ClaimSpec::default()
    }
}

pub fn bound_claim(name: &str, class: &str, volume: &str) -> ClaimSpec {
    ClaimSpec {
        volume_name: Some(volume.into()),
        ..claim(name, class)
    }
}

/// An available PV of `gib` Gi, pinned to `node` when given.
pub fn pv(name: &str, class: &str, gib: u64, node: Option<&str>) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        storage_class: class.into(),
        capacity_bytes: gib * GI,
        access_modes: vec![AccessMode::ReadWriteOnce],
        node_affinity: node.map(|n| {
            vec![vec![NodeSelectorRequirement {
                key: HOSTNAME.into(),
                operator: SelectorOperator::In(vec![n.into()]),
            }]]
        }),
        ..VolumeSpec::default()
    }
}

pub fn pod(name: &str, claims: &[&str]) -> PodDemand {
    PodDemand::new(
        format!("default/{name}"),
        100,
        64,
        GpuDemand::None,
        ModelConstraint::Any,
    )
    .unwrap()
    .with_volumes(PodVolumes {
        claims: claims.iter().map(|c| format!("default/{c}")).collect(),
        inline_csi: Vec::new(),
    })
}

/// The node chosen, or the reasons with their counts.
pub fn schedule(
    c: &ClusterSnapshot,
    pod: &PodDemand,
) -> Result<String, BTreeMap<UnfitReason, usize>> {
    let mut policy = build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Online,
        },
    );
    match schedule_one(c, policy.as_mut(), pod, &mut CycleScratch::default()) {
        CycleOutcome::Placed(p) => Ok(c.node(p.node).name.clone()),
        CycleOutcome::Unschedulable { reasons, .. } => Err(reasons),
    }
}

/// Schedules and commits, returning the node.
pub fn schedule_and_place(c: &mut ClusterSnapshot, pod: &PodDemand) -> Option<String> {
    let mut policy = build_policy(
        PolicyName::Phalanx,
        &PolicyConfig {
            seed: 1,
            workload: WorkloadSource::Online,
        },
    );
    match schedule_one(c, policy.as_mut(), pod, &mut CycleScratch::default()) {
        CycleOutcome::Placed(p) => {
            c.place(pod, &p).unwrap();
            Some(c.node(p.node).name.clone())
        }
        CycleOutcome::Unschedulable { .. } => None,
    }
}
