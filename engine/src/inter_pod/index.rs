//! Per-topology-domain counts for every term a placed pod carries, kept current on
//! place and release so that a cycle reads counts instead of rescanning pods.
//!
//! One entry per distinct term. It lives while some placed pod carries the term
//! (replicas of one workload share their terms, so the second replica on finds
//! its counts here) and holds:
//! * the placed pods the term selects, per node and per domain (the value of the
//!   node label `topology_key`), for pods that carry the same term;
//! * the carriers' own effect on later pods (kube-scheduler's symmetry), per
//!   domain of the carrier's node.
//!
//! A term no placed pod carries yet is counted by one scan of the placed pods
//! ([`scan`]), the cost kube-scheduler pays for every term in every cycle.

use std::collections::{BTreeMap, HashMap};

use super::domain_hash::DomainMap;
use std::sync::Arc;

use super::terms::{CarriedRole, InterPodSpec, PodAffinityTerm, HARD_POD_AFFINITY_WEIGHT};
use crate::node::NodeState;

/// Counts of placed pods a term selects.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matching {
    /// By node index (shorter than the node list when the last nodes have none).
    pub per_node: Vec<u32>,
    /// By value of the term's topology key; nodes without the label count nowhere.
    pub per_domain: DomainMap<String, u32>,
}

impl Matching {
    pub fn on_node(&self, node: usize) -> u32 {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    pub fn in_domain(&self, domain: &str) -> u32 {
        self.per_domain.get(domain).copied().unwrap_or(0)
    }

    fn add(&mut self, node: usize, domain: Option<&str>, delta: i32) {
        if self.per_node.len() <= node {
            self.per_node.resize(node + 1, 0);
        }
        let slot = &mut self.per_node[node];
        *slot = slot.saturating_add_signed(delta);
        if let Some(domain) = domain {
            bump(&mut self.per_domain, domain, delta);
        }
    }
}

fn bump(map: &mut DomainMap<String, u32>, domain: &str, delta: i32) {
    match map.get_mut(domain) {
        Some(n) => {
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                map.remove(domain);
            }
        }
        None if delta > 0 => {
            map.insert(domain.to_owned(), delta as u32);
        }
        None => {}
    }
}

#[derive(Debug, Clone)]
pub(crate) struct TermEntry {
    pub term: PodAffinityTerm,
    pub matching: Matching,
    /// Placed pods carrying this term as required anti-affinity, per domain.
    pub anti_carriers: DomainMap<String, u32>,
    /// Σ score weights the carriers add to matching pods, per domain.
    pub score_carriers: DomainMap<String, i64>,
    /// Placed pods carrying the term in any role (the entry goes at 0).
    carriers: u32,
}

/// The index; the snapshot owns one and calls it on every change to placed pods.
#[derive(Debug, Clone, Default)]
pub(crate) struct TermIndex {
    pub entries: Vec<TermEntry>,
}

/// Namespace labels known to the snapshot.
pub(crate) type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// Counts the placed pods `term` selects by looking at every one.
pub(crate) fn scan(
    term: &PodAffinityTerm,
    nodes: &[NodeState],
    namespaces: &NamespaceLabels,
) -> Matching {
    let mut m = Matching::default();
    for (i, node) in nodes.iter().enumerate() {
        let domain = node.labels.get(&term.topology_key).map(String::as_str);
        for pod in &node.inter_pod {
            if term.selects(pod, |ns| namespaces.get(ns)) {
                m.add(i, domain, 1);
            }
        }
    }
    m
}

impl TermIndex {
    pub fn find(&self, term: &PodAffinityTerm) -> Option<&TermEntry> {
        self.entries.iter().find(|e| &e.term == term)
    }

    /// `pod` has been placed on `nodes[node]` (and is already in its `inter_pod`).
    pub fn on_place(
        &mut self,
        nodes: &[NodeState],
        node: usize,
        pod: &InterPodSpec,
        namespaces: &NamespaceLabels,
    ) {
        // New terms are scanned with the pod already placed, so it is counted there;
        // existing entries count it below. Remember which were new.
        let first_new = self.entries.len();
        for (term, _) in pod.carried_terms() {
            self.ensure_entry(term, nodes, namespaces);
        }
        let labels = &nodes[node].labels;
        for entry in &mut self.entries[..first_new] {
            if entry.term.selects(pod, |ns| namespaces.get(ns)) {
                let domain = labels.get(&entry.term.topology_key).map(String::as_str);
                entry.matching.add(node, domain, 1);
            }
        }
        self.carry(labels, pod, 1);
    }

    /// Adds an entry for `term` counted from a scan of `nodes`, unless it has one.
    fn ensure_entry(
        &mut self,
        term: &PodAffinityTerm,
        nodes: &[NodeState],
        namespaces: &NamespaceLabels,
    ) {
        if self.find(term).is_none() {
            self.entries.push(TermEntry {
                term: term.clone(),
                matching: scan(term, nodes, namespaces),
                anti_carriers: DomainMap::default(),
                score_carriers: DomainMap::default(),
                carriers: 0,
            });
        }
    }

    /// `pod` has been released from `nodes[node]` (and is no longer in its
    /// `inter_pod`).
    pub fn on_release(
        &mut self,
        nodes: &[NodeState],
        node: usize,
        pod: &InterPodSpec,
        namespaces: &NamespaceLabels,
    ) {
        let labels = &nodes[node].labels;
        for entry in &mut self.entries {
            if entry.term.selects(pod, |ns| namespaces.get(ns)) {
                let domain = labels.get(&entry.term.topology_key).map(String::as_str);
                entry.matching.add(node, domain, -1);
            }
        }
        self.carry(labels, pod, -1);
        self.entries.retain(|e| e.carriers > 0);
    }

    /// Recounts everything from the placed pods (after a node's labels changed, a
    /// node was removed, or namespace labels changed: rare, and then exact).
    pub fn rebuild(&mut self, nodes: &[NodeState], namespaces: &NamespaceLabels) {
        self.entries.clear();
        for node in nodes {
            for pod in &node.inter_pod {
                for (term, _) in pod.carried_terms() {
                    self.ensure_entry(term, nodes, namespaces);
                }
                self.carry(&node.labels, pod, 1);
            }
        }
    }

    /// Adds (`sign` 1) or removes (-1) the carrier effects of `pod`'s terms for a
    /// pod on a node with `labels`.
    fn carry(&mut self, labels: &BTreeMap<String, String>, pod: &InterPodSpec, sign: i32) {
        for (term, role) in pod.carried_terms() {
            let Some(entry) = self.entries.iter_mut().find(|e| &e.term == term) else {
                continue;
            };
            entry.carriers = entry.carriers.saturating_add_signed(sign);
            let Some(domain) = labels.get(&term.topology_key) else {
                continue;
            };
            let weight = match role {
                CarriedRole::RequiredAntiAffinity => {
                    bump(&mut entry.anti_carriers, domain, sign);
                    continue;
                }
                CarriedRole::Spread => continue,
                CarriedRole::RequiredAffinity => HARD_POD_AFFINITY_WEIGHT,
                CarriedRole::Score(w) => w,
            };
            let slot = entry.score_carriers.entry(domain.clone()).or_insert(0);
            *slot += weight * i64::from(sign);
            if *slot == 0 {
                entry.score_carriers.remove(domain);
            }
        }
    }
}

/// Convenience for callers holding an `Arc`.
pub(crate) fn same_pod(a: &Arc<InterPodSpec>, b: &Arc<InterPodSpec>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}
