//! What the benchmark checks after each run, from the Pods and Nodes the API
//! server lists: the placements must obey the workload's rule (no two
//! anti-affinity pods on one node, the zone skew within maxSkew), no node may
//! hold more GPUs than it has, and how many GPUs were left fragmented.
//!
//! A fast scheduler that breaks the rule has not won anything, so a violation
//! is reported beside the figure for either scheduler.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Node, Pod};
use phalanx_api::RESOURCE_WHOLE_GPU;
use phalanx_e2e::nodes::LABEL_ZONE;

use crate::workload::{Workload, MEASURED_NAMESPACE, SPREAD_MAX_SKEW, WORKLOAD_LABEL};

/// A bound pod as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundPod {
    pub namespace: String,
    pub node: String,
    /// Value of [`WORKLOAD_LABEL`], if the pod has it.
    pub workload: Option<String>,
    pub gpus: u64,
}

impl BoundPod {
    /// The pod, if it is bound.
    pub fn of(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        let node = spec.node_name.clone()?;
        let gpus = spec
            .containers
            .iter()
            .filter_map(|c| {
                c.resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get(RESOURCE_WHOLE_GPU)
            })
            .filter_map(|q| q.0.parse::<u64>().ok())
            .sum();
        Some(Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            node,
            workload: pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(WORKLOAD_LABEL))
                .cloned(),
            gpus,
        })
    }
}

/// A node as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// Allocatable whole GPUs.
    pub gpus: u64,
    pub zone: Option<String>,
}

impl NodeInfo {
    pub fn of(node: &Node) -> (String, Self) {
        let gpus = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(RESOURCE_WHOLE_GPU))
            .and_then(|q| q.0.parse::<u64>().ok())
            .unwrap_or(0);
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_ZONE))
            .cloned();
        (
            node.metadata.name.clone().unwrap_or_default(),
            Self { gpus, zone },
        )
    }
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Broken rules: pods beyond the first of the workload on a node
    /// (anti-affinity), 1 when the zone skew exceeds maxSkew, plus nodes with
    /// more GPUs in use than they have.
    pub violations: usize,
    /// What was checked and found, in words.
    pub detail: String,
    /// Free whole GPUs on nodes that have some but not all GPUs in use.
    pub fragmented_gpus: u64,
}

/// Checks the placements of `pods` on `nodes` against `workload`'s rule.
pub fn check(workload: Workload, pods: &[BoundPod], nodes: &HashMap<String, NodeInfo>) -> Verdict {
    let (rule_violations, mut detail) = match workload {
        Workload::PlainGpu => (0, String::new()),
        Workload::AntiAffinity => anti_affinity(workload, pods),
        Workload::PreferredAffinity => (0, preferred_affinity(workload, pods)),
        Workload::ZoneSpread => zone_spread(workload, pods, nodes),
    };
    let (overcommitted, fragmented_gpus) = gpu_use(pods, nodes);
    if !detail.is_empty() {
        detail.push_str("; ");
    }
    if overcommitted == 0 {
        detail.push_str("no node over-committed");
    } else {
        detail.push_str(&format!(
            "{overcommitted} nodes hold more GPUs than they have"
        ));
    }
    Verdict {
        violations: rule_violations + overcommitted,
        detail,
        fragmented_gpus,
    }
}

fn of_workload(workload: Workload, pods: &[BoundPod]) -> impl Iterator<Item = &BoundPod> {
    pods.iter()
        .filter(move |p| p.workload.as_deref() == Some(workload.name()))
}

/// Required anti-affinity on the host name: at most one of the workload's
/// pods (init or measured) per node.
fn anti_affinity(workload: Workload, pods: &[BoundPod]) -> (usize, String) {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in of_workload(workload, pods) {
        *per_node.entry(pod.node.as_str()).or_default() += 1;
    }
    let crowded = per_node.values().filter(|n| **n > 1).count();
    let extra: usize = per_node.values().map(|n| n.saturating_sub(1)).sum();
    let detail = if crowded == 0 {
        format!(
            "anti-affinity kept: {} pods on {} nodes, one each",
            per_node.values().sum::<usize>(),
            per_node.len()
        )
    } else {
        format!("anti-affinity broken: {crowded} nodes hold {extra} pods too many")
    };
    (extra, detail)
}

/// Preferred affinity on the host name is no rule to break; how often it was
/// followed is reported: measured pods that share their node with another of
/// the workload's pods.
fn preferred_affinity(workload: Workload, pods: &[BoundPod]) -> String {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for pod in of_workload(workload, pods) {
        *per_node.entry(pod.node.as_str()).or_default() += 1;
    }
    let measured: Vec<&BoundPod> = of_workload(workload, pods)
        .filter(|p| p.namespace == MEASURED_NAMESPACE)
        .collect();
    let together = measured
        .iter()
        .filter(|p| per_node.get(p.node.as_str()).copied().unwrap_or(0) > 1)
        .count();
    format!(
        "preference followed by {together} of {} measured pods (a node shared with the workload's pods)",
        measured.len()
    )
}

/// Topology spread, DoNotSchedule: the measured pods' counts per zone differ
/// by at most maxSkew. Every zone with a node counts, even an empty one.
fn zone_spread(
    workload: Workload,
    pods: &[BoundPod],
    nodes: &HashMap<String, NodeInfo>,
) -> (usize, String) {
    let mut per_zone: BTreeMap<&str, usize> = nodes
        .values()
        .filter_map(|n| n.zone.as_deref())
        .map(|z| (z, 0))
        .collect();
    let mut unzoned = 0;
    for pod in of_workload(workload, pods).filter(|p| p.namespace == MEASURED_NAMESPACE) {
        match nodes.get(&pod.node).and_then(|n| n.zone.as_deref()) {
            Some(zone) => *per_zone.entry(zone).or_default() += 1,
            None => unzoned += 1,
        }
    }
    let max = per_zone.values().copied().max().unwrap_or(0);
    let min = per_zone.values().copied().min().unwrap_or(0);
    let skew = max - min;
    let counts: Vec<String> = per_zone.iter().map(|(z, n)| format!("{z}: {n}")).collect();
    let mut violations = usize::from(skew > SPREAD_MAX_SKEW);
    let mut detail = format!(
        "pods per zone {{{}}}, skew {skew} (maxSkew {SPREAD_MAX_SKEW}){}",
        counts.join(", "),
        if skew > SPREAD_MAX_SKEW {
            " BROKEN"
        } else {
            ""
        }
    );
    if unzoned > 0 {
        violations += unzoned;
        detail.push_str(&format!("; {unzoned} pods on nodes without a zone"));
    }
    (violations, detail)
}

/// Nodes with more GPUs in use than allocatable, and the free GPUs on nodes
/// partly in use (GPUs a later multi-GPU pod could not get together on one
/// node: the waste a bin-packing scheduler avoids).
fn gpu_use(pods: &[BoundPod], nodes: &HashMap<String, NodeInfo>) -> (usize, u64) {
    let mut used: HashMap<&str, u64> = HashMap::new();
    for pod in pods {
        *used.entry(pod.node.as_str()).or_default() += pod.gpus;
    }
    let mut overcommitted = 0;
    let mut fragmented = 0;
    for (name, node) in nodes {
        let in_use = used.get(name.as_str()).copied().unwrap_or(0);
        if in_use > node.gpus {
            overcommitted += 1;
        } else if in_use > 0 && in_use < node.gpus {
            fragmented += node.gpus - in_use;
        }
    }
    (overcommitted, fragmented)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, node: &str, workload: Option<Workload>) -> BoundPod {
        BoundPod {
            namespace: namespace.to_owned(),
            node: node.to_owned(),
            workload: workload.map(|w| w.name().to_owned()),
            gpus: 1,
        }
    }

    fn nodes(zones: &[Option<&str>]) -> HashMap<String, NodeInfo> {
        zones
            .iter()
            .enumerate()
            .map(|(i, z)| {
                (
                    format!("n{i}"),
                    NodeInfo {
                        gpus: 8,
                        zone: z.map(str::to_owned),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn one_anti_affinity_pod_per_node_passes_and_a_second_one_is_counted() {
        let w = Workload::AntiAffinity;
        let nodes = nodes(&[None, None, None]);
        let mut pods = vec![
            pod("bench-init", "n0", Some(w)),
            pod("default", "n1", Some(w)),
            // Pods of no workload do not count.
            pod("default", "n1", None),
        ];
        assert_eq!(check(w, &pods, &nodes).violations, 0);
        pods.push(pod("default", "n0", Some(w)));
        pods.push(pod("default", "n0", Some(w)));
        let verdict = check(w, &pods, &nodes);
        assert_eq!(verdict.violations, 2, "{}", verdict.detail);
        assert!(verdict.detail.contains("1 nodes hold 2 pods too many"));
    }

    #[test]
    fn zone_skew_within_max_skew_passes_and_beyond_it_fails() {
        let w = Workload::ZoneSpread;
        let nodes = nodes(&[Some("z0"), Some("z1"), Some("z2")]);
        let mut pods: Vec<BoundPod> = (0..5).map(|_| pod("default", "n0", Some(w))).collect();
        // Init pods (no workload label, other namespace) are not counted.
        pods.push(pod("bench-init", "n1", None));
        let verdict = check(w, &pods, &nodes);
        assert_eq!(verdict.violations, 0, "{}", verdict.detail);
        assert!(verdict.detail.contains("skew 5"), "{}", verdict.detail);
        pods.push(pod("default", "n0", Some(w)));
        let verdict = check(w, &pods, &nodes);
        assert_eq!(verdict.violations, 1, "skew 6: {}", verdict.detail);
        assert!(verdict.detail.contains("BROKEN"), "{}", verdict.detail);
    }

    #[test]
    fn an_over_committed_node_is_a_violation_for_any_workload() {
        let nodes = nodes(&[None, None]);
        let mut pods: Vec<BoundPod> = (0..8).map(|_| pod("default", "n0", None)).collect();
        pods.push(pod("default", "n1", None));
        let verdict = check(Workload::PlainGpu, &pods, &nodes);
        assert_eq!(verdict.violations, 0);
        assert_eq!(verdict.fragmented_gpus, 7, "n1 has 7 free of 8");
        pods.push(pod("default", "n0", None));
        let verdict = check(Workload::PlainGpu, &pods, &nodes);
        assert_eq!(verdict.violations, 1, "{}", verdict.detail);
    }

    #[test]
    fn preferred_affinity_reports_how_often_it_was_followed() {
        let w = Workload::PreferredAffinity;
        let nodes = nodes(&[None, None, None]);
        let pods = vec![
            pod("bench-init", "n0", Some(w)),
            pod("default", "n0", Some(w)),
            pod("default", "n1", Some(w)),
        ];
        let verdict = check(w, &pods, &nodes);
        assert_eq!(verdict.violations, 0);
        assert!(
            verdict.detail.contains("followed by 1 of 2"),
            "{}",
            verdict.detail
        );
    }
}
