//! The pod shapes the benchmark measures: today's plain one-GPU pods, and three
//! shapes of kube-scheduler's scheduler_perf suite that exercise the inter-pod
//! plugins (InterPodAffinity, PodTopologySpread) at 5,000 nodes.
//!
//! A shape has pods that are already running when the measurement starts (the
//! "init" pods, created by the benchmark with `spec.nodeName` set, so that both
//! schedulers start from the same cluster and neither is timed placing them) and
//! the measured pods. Counts follow upstream's 5,000-node cases; every pod asks
//! for one whole GPU, as the plain workload's do.
//!
//! | workload | upstream case | init pods | measured | the term every pod carries |
//! |---|---|---|---|---|
//! | `anti-affinity` | SchedulingPodAntiAffinity, 5000Nodes_2000Pods | 1,000 | 2,000 | required anti-affinity to the workload's pods on `kubernetes.io/hostname` |
//! | `preferred-affinity` | SchedulingPreferredPodAffinity, 5000Nodes_5000Pods | 5,000 | 5,000 | preferred affinity (weight 1) to the workload's pods on `kubernetes.io/hostname` |
//! | `zone-spread` | TopologySpreading, 5000Nodes_5000Pods | 5,000, no term | 5,000 | spread over `topology.kubernetes.io/zone` (3 zones), maxSkew 5, DoNotSchedule |
//!
//! As upstream, init and measured pods live in two namespaces and the affinity
//! terms name both, so that the scheduler has to match pods across namespaces.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::ValueEnum;
use k8s_openapi::api::core::v1::{
    Affinity, Pod, PodAffinity, PodAffinityTerm, PodAntiAffinity, TopologySpreadConstraint,
    WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use phalanx_e2e::nodes::{LABEL_HOSTNAME, LABEL_ZONE};
use phalanx_e2e::{gpu_worker_container, PodBuilder};

/// Where the measured pods are created (the benchmark's historical namespace).
pub const MEASURED_NAMESPACE: &str = "default";
/// Where the init pods are created.
pub const INIT_NAMESPACE: &str = "bench-init";
/// Label on every pod of an inter-pod workload (init and measured), valued
/// with the workload's name; the workload's terms select it.
pub const WORKLOAD_LABEL: &str = "phalanx.dev/e2e-bench-workload";
/// Zones of the `zone-spread` nodes (upstream uses three).
pub const SPREAD_ZONES: usize = 3;
/// `maxSkew` of the `zone-spread` constraint (upstream's value).
pub const SPREAD_MAX_SKEW: usize = 5;

/// What `--workload` accepts: a shape, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadChoice {
    /// One-GPU pods with no inter-pod rule (the benchmark's historical workload).
    PlainGpu,
    /// Required pod anti-affinity on the host name.
    AntiAffinity,
    /// Preferred pod affinity on the host name.
    PreferredAffinity,
    /// Topology spread across zones, DoNotSchedule.
    ZoneSpread,
    /// Every workload above, in that order.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    PlainGpu,
    AntiAffinity,
    PreferredAffinity,
    ZoneSpread,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Self::PlainGpu,
        Self::AntiAffinity,
        Self::PreferredAffinity,
        Self::ZoneSpread,
    ];

    /// The workloads `choices` name, each once, in the order first named.
    pub fn expand(choices: &[WorkloadChoice]) -> Vec<Workload> {
        let mut workloads = Vec::new();
        for choice in choices {
            let named: &[Workload] = match choice {
                WorkloadChoice::PlainGpu => &[Self::PlainGpu],
                WorkloadChoice::AntiAffinity => &[Self::AntiAffinity],
                WorkloadChoice::PreferredAffinity => &[Self::PreferredAffinity],
                WorkloadChoice::ZoneSpread => &[Self::ZoneSpread],
                WorkloadChoice::All => &Self::ALL,
            };
            for w in named {
                if !workloads.contains(w) {
                    workloads.push(*w);
                }
            }
        }
        workloads
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::PlainGpu => "plain-gpu",
            Self::AntiAffinity => "anti-affinity",
            Self::PreferredAffinity => "preferred-affinity",
            Self::ZoneSpread => "zone-spread",
        }
    }

    /// Init pods of upstream's 5,000-node case.
    pub fn default_init_pods(self) -> usize {
        match self {
            Self::PlainGpu => 0,
            Self::AntiAffinity => 1000,
            Self::PreferredAffinity | Self::ZoneSpread => 5000,
        }
    }

    /// Measured pods of upstream's 5,000-node case (5,000 for the plain
    /// workload, as before).
    pub fn default_measured_pods(self) -> usize {
        match self {
            Self::AntiAffinity => 2000,
            Self::PlainGpu | Self::PreferredAffinity | Self::ZoneSpread => 5000,
        }
    }

    /// Zones the nodes are labelled with (node `i` in zone `i % zones`); 0
    /// for no zone label.
    pub fn zones(self) -> usize {
        match self {
            Self::ZoneSpread => SPREAD_ZONES,
            Self::PlainGpu | Self::AntiAffinity | Self::PreferredAffinity => 0,
        }
    }

    /// How many init pods share a node. Anti-affinity allows one. Preferred
    /// affinity half-fills nodes, so that a measured pod has a real choice
    /// between a node with the workload's pods and free GPUs and an empty one
    /// (a scheduler following the preference fills those halves first). The
    /// spread's plain init pods take one GPU on each node, as a spreading
    /// scheduler would place them.
    fn init_pods_per_node(self, gpus_per_node: u32) -> usize {
        match self {
            Self::PreferredAffinity => (gpus_per_node as usize / 2).max(1),
            Self::PlainGpu | Self::AntiAffinity | Self::ZoneSpread => 1,
        }
    }

    /// The index of the node init pod `i` is created on.
    pub fn init_node(self, i: usize, gpus_per_node: u32) -> usize {
        i / self.init_pods_per_node(gpus_per_node)
    }

    /// Refuses counts the cluster cannot hold, before any control plane starts.
    pub fn check_fits(
        self,
        nodes: usize,
        gpus_per_node: u32,
        init: usize,
        measured: usize,
    ) -> anyhow::Result<()> {
        let name = self.name();
        let per_node = self.init_pods_per_node(gpus_per_node);
        if init.div_ceil(per_node) > nodes {
            bail!("{name}: {init} init pods, {per_node} per node, need more than {nodes} nodes");
        }
        if per_node > gpus_per_node as usize && init > 0 {
            bail!("{name}: {per_node} init pods per node need {per_node} GPUs per node");
        }
        if self == Self::AntiAffinity && init + measured > nodes {
            bail!(
                "{name}: {init} init and {measured} measured pods need one node each; \
                 there are {nodes}"
            );
        }
        let gpus = nodes * gpus_per_node as usize;
        if init + measured > gpus {
            bail!("{name}: {init} init and {measured} measured pods need one GPU each; there are {gpus}");
        }
        Ok(())
    }

    /// An init pod named `name`, bound at creation to `node`, in
    /// [`INIT_NAMESPACE`], labelled `init_label=true`.
    pub fn init_pod(self, name: &str, scheduler_name: &str, init_label: &str, node: &str) -> Pod {
        let pod = PodBuilder::new(name, scheduler_name, gpu_worker_container(1))
            .namespace(INIT_NAMESPACE)
            .label(init_label, "true");
        let mut pod = match self {
            // Upstream's spreading case starts from plain pods: they take
            // resources but are not counted by the constraint.
            Self::PlainGpu | Self::ZoneSpread => pod.build(),
            Self::AntiAffinity | Self::PreferredAffinity => self.with_terms(pod),
        };
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        pod
    }

    /// A measured pod named `name`, in [`MEASURED_NAMESPACE`], labelled
    /// `label=true`.
    pub fn measured_pod(self, name: &str, scheduler_name: &str, label: &str) -> Pod {
        let pod = PodBuilder::new(name, scheduler_name, gpu_worker_container(1))
            .namespace(MEASURED_NAMESPACE)
            .label(label, "true");
        match self {
            Self::PlainGpu => pod.build(),
            Self::AntiAffinity | Self::PreferredAffinity | Self::ZoneSpread => self.with_terms(pod),
        }
    }

    /// The workload's label and its term on `pod`.
    fn with_terms(self, pod: PodBuilder) -> Pod {
        let mut pod = pod.label(WORKLOAD_LABEL, self.name()).build();
        let Some(spec) = pod.spec.as_mut() else {
            return pod;
        };
        match self {
            Self::PlainGpu => {}
            Self::AntiAffinity => {
                spec.affinity = Some(Affinity {
                    pod_anti_affinity: Some(PodAntiAffinity {
                        required_during_scheduling_ignored_during_execution: Some(vec![
                            self.hostname_term()
                        ]),
                        ..PodAntiAffinity::default()
                    }),
                    ..Affinity::default()
                });
            }
            Self::PreferredAffinity => {
                spec.affinity = Some(Affinity {
                    pod_affinity: Some(PodAffinity {
                        preferred_during_scheduling_ignored_during_execution: Some(vec![
                            WeightedPodAffinityTerm {
                                weight: 1,
                                pod_affinity_term: self.hostname_term(),
                            },
                        ]),
                        ..PodAffinity::default()
                    }),
                    ..Affinity::default()
                });
            }
            Self::ZoneSpread => {
                spec.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
                    max_skew: SPREAD_MAX_SKEW as i32,
                    topology_key: LABEL_ZONE.to_owned(),
                    when_unsatisfiable: "DoNotSchedule".to_owned(),
                    label_selector: Some(self.selector()),
                    ..TopologySpreadConstraint::default()
                }]);
            }
        }
        pod
    }

    /// The workload's pods in both namespaces, per host.
    fn hostname_term(self) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(self.selector()),
            namespaces: Some(vec![
                MEASURED_NAMESPACE.to_owned(),
                INIT_NAMESPACE.to_owned(),
            ]),
            topology_key: LABEL_HOSTNAME.to_owned(),
            ..PodAffinityTerm::default()
        }
    }

    fn selector(self) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                WORKLOAD_LABEL.to_owned(),
                self.name().to_owned(),
            )])),
            ..LabelSelector::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_expands_to_every_workload_once_in_order() {
        let workloads = Workload::expand(&[WorkloadChoice::ZoneSpread, WorkloadChoice::All]);
        assert_eq!(
            workloads,
            vec![
                Workload::ZoneSpread,
                Workload::PlainGpu,
                Workload::AntiAffinity,
                Workload::PreferredAffinity,
            ]
        );
    }

    #[test]
    fn plain_pods_carry_no_inter_pod_rule() {
        let pod = Workload::PlainGpu.measured_pod("bench-0", "phalanx", "bench");
        let spec = pod.spec.unwrap_or_default();
        assert!(spec.affinity.is_none());
        assert!(spec.topology_spread_constraints.is_none());
        let labels = pod.metadata.labels.unwrap_or_default();
        assert!(!labels.contains_key(WORKLOAD_LABEL));
    }

    #[test]
    fn anti_affinity_pods_repel_each_other_across_both_namespaces() {
        let w = Workload::AntiAffinity;
        for pod in [
            w.measured_pod("bench-0", "phalanx", "bench"),
            w.init_pod("init-0", "phalanx", "init", "gpu-0"),
        ] {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            assert_eq!(
                labels.get(WORKLOAD_LABEL).map(String::as_str),
                Some("anti-affinity")
            );
            let spec = pod.spec.unwrap_or_default();
            let terms = spec
                .affinity
                .and_then(|a| a.pod_anti_affinity)
                .and_then(|a| a.required_during_scheduling_ignored_during_execution)
                .unwrap_or_default();
            assert_eq!(terms.len(), 1);
            assert_eq!(terms[0].topology_key, LABEL_HOSTNAME);
            assert_eq!(
                terms[0].namespaces.as_deref(),
                Some(&["default".to_owned(), "bench-init".to_owned()][..])
            );
            let selected = terms[0]
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .and_then(|l| l.get(WORKLOAD_LABEL));
            assert_eq!(
                selected,
                labels.get(WORKLOAD_LABEL),
                "a pod selects its kind"
            );
        }
    }

    #[test]
    fn init_pods_are_bound_at_creation_in_their_own_namespace() {
        let pod = Workload::PreferredAffinity.init_pod("init-3", "phalanx", "init", "gpu-7");
        assert_eq!(pod.metadata.namespace.as_deref(), Some(INIT_NAMESPACE));
        let spec = pod.spec.unwrap_or_default();
        assert_eq!(spec.node_name.as_deref(), Some("gpu-7"));
        let weighted = spec
            .affinity
            .and_then(|a| a.pod_affinity)
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution)
            .unwrap_or_default();
        assert_eq!(weighted.len(), 1);
        assert_eq!(weighted[0].weight, 1);
    }

    #[test]
    fn spread_init_pods_are_plain_and_measured_pods_spread_over_zones() {
        let init = Workload::ZoneSpread.init_pod("init-0", "phalanx", "init", "gpu-0");
        let labels = init.metadata.labels.unwrap_or_default();
        assert!(
            !labels.contains_key(WORKLOAD_LABEL),
            "not counted by the spread"
        );
        let measured = Workload::ZoneSpread.measured_pod("bench-0", "phalanx", "bench");
        let constraints = measured
            .spec
            .unwrap_or_default()
            .topology_spread_constraints
            .unwrap_or_default();
        assert_eq!(constraints.len(), 1);
        assert_eq!(constraints[0].max_skew, 5);
        assert_eq!(constraints[0].topology_key, LABEL_ZONE);
        assert_eq!(constraints[0].when_unsatisfiable, "DoNotSchedule");
    }

    #[test]
    fn init_pods_fill_nodes_as_the_workload_says() {
        assert_eq!(Workload::AntiAffinity.init_node(999, 8), 999);
        assert_eq!(Workload::ZoneSpread.init_node(4999, 8), 4999);
        // Four per node: half of each node's eight GPUs.
        assert_eq!(Workload::PreferredAffinity.init_node(3, 8), 0);
        assert_eq!(Workload::PreferredAffinity.init_node(4, 8), 1);
        assert_eq!(Workload::PreferredAffinity.init_node(4999, 8), 1249);
    }

    #[test]
    fn counts_the_cluster_cannot_hold_are_refused() {
        assert!(Workload::AntiAffinity
            .check_fits(5000, 8, 1000, 2000)
            .is_ok());
        let err = Workload::AntiAffinity
            .check_fits(2500, 8, 1000, 2000)
            .unwrap_err();
        assert!(err.to_string().contains("need one node each"), "{err}");
        assert!(Workload::PreferredAffinity
            .check_fits(5000, 8, 5000, 5000)
            .is_ok());
        assert!(Workload::ZoneSpread.check_fits(100, 8, 5000, 0).is_err());
        assert!(Workload::PlainGpu.check_fits(10, 8, 0, 81).is_err());
    }
}
