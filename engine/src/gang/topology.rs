//! Which node sets a gang is tried on, and in what order.
//!
//! A gang's topology is a list of node label keys, tightest first (NVLink
//! clique, rack, zone). Each level's label values are its domains. The gang is
//! tried in every fitting domain of the tightest level, then of the next, and so
//! on; inside a level the domain with the least free capacity that can still
//! hold every member comes first (best fit, so that roomy domains stay whole
//! for the gangs that need them), then those that hold only `minMember`,
//! roomiest first. A domain whose summed free capacity cannot hold `minMember`
//! members is skipped without an attempt ([`Need`]).
//!
//! A required level (upstream `PodGroup` `schedulingConstraints.topology[]`)
//! confines the gang to one of its domains: levels wider than the tightest
//! required one are never tried, nor is the whole cluster. A domain of a level
//! is only ever tried as its part inside one domain of every wider required
//! level: a clique label that crosses two required racks (a labelling mistake)
//! gives two candidates, one per rack, so no candidate ever spans a required
//! domain. Nodes without a level's label belong to none of its domains; without
//! a required level's label they can take no member of the gang.

use std::collections::{BTreeMap, HashSet};

use super::{DomainOrder, GangDomain, GangSpec};
use crate::node::NodeId;
use crate::pod::{GpuDemand, PodDemand};
use crate::snapshot::ClusterSnapshot;

/// One level of a gang's topology: a node label whose values are domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyLevel<'a> {
    pub key: &'a str,
    /// The gang must land inside one domain of this level (no spanning, no
    /// fallback to wider levels); otherwise the level is only a preference.
    pub required: bool,
}

impl<'a> TopologyLevel<'a> {
    /// A level the gang prefers and may span.
    pub fn preferred(key: &'a str) -> Self {
        TopologyLevel {
            key,
            required: false,
        }
    }

    /// A level the gang must not span.
    pub fn required(key: &'a str) -> Self {
        TopologyLevel {
            key,
            required: true,
        }
    }
}

/// What the gang takes, summed per dimension, for the capacity pre-check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Need {
    /// A lower bound on any `min_member` members: the `min_member` smallest
    /// demands of each dimension. A domain with less free in any dimension
    /// cannot hold the gang, whichever members it would place.
    min: Free,
    /// Every member.
    all: Free,
}

impl Need {
    pub fn of(gang: &GangSpec<'_>) -> Self {
        let sum = |value: fn(&PodDemand) -> u64, count: usize| {
            let mut values: Vec<u64> = gang.members.iter().map(value).collect();
            values.sort_unstable();
            values.iter().take(count).sum()
        };
        let of = |count| Free {
            gpu_milli: sum(|m| m.gpu.total_milli(), count),
            cpu_milli: sum(|m| m.cpu_milli, count),
            memory_mib: sum(|m| m.memory_mib, count),
            whole_gpus: sum(whole_gpus, count),
        };
        Need {
            min: of(gang.min_member),
            all: of(gang.members.len()),
        }
    }
}

/// Whole GPUs a member takes: they can only go to entirely free GPUs.
fn whole_gpus(member: &PodDemand) -> u64 {
    match member.gpu {
        GpuDemand::Whole { count } => u64::from(count),
        GpuDemand::None | GpuDemand::Share { .. } => 0,
    }
}

/// Free capacity of a domain's schedulable nodes, summed (or a demand, summed).
/// Ordered by GPU milli, then CPU, then memory (the tightest-fit order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Free {
    gpu_milli: u64,
    cpu_milli: u64,
    memory_mib: u64,
    /// Entirely free healthy GPUs (what whole-GPU members need).
    whole_gpus: u64,
}

impl Free {
    fn holds(&self, demand: &Free) -> bool {
        self.gpu_milli >= demand.gpu_milli
            && self.cpu_milli >= demand.cpu_milli
            && self.memory_mib >= demand.memory_mib
            && self.whole_gpus >= demand.whole_gpus
    }
}

/// A node set to try the gang on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    /// `None` for the whole cluster.
    pub domain: Option<GangDomain>,
    /// Sorted; `None` for the whole cluster.
    pub nodes: Option<Vec<NodeId>>,
}

/// The candidates of one gang, and what to say when there are none.
#[derive(Debug, Clone)]
pub(super) struct Candidates {
    pub list: Vec<Candidate>,
    /// The tightest required level's key, if any: the gang may not span its domains.
    pub required_key: Option<String>,
    /// Domains of the tightest required level skipped for too little free capacity.
    pub required_too_small: usize,
}

/// Domain identity within one level: its own label value, then the values of
/// every wider required level (so a domain never straddles a required one;
/// empty, so not allocated, when there is none).
type DomainKey<'n> = (&'n str, Vec<&'n str>);

/// The node sets to try, in order (see the module comment).
pub(super) fn candidates(
    snapshot: &ClusterSnapshot,
    gang: &GangSpec<'_>,
    need: &Need,
) -> Candidates {
    let levels = gang.topology;
    let tightest_required = levels.iter().position(|l| l.required);
    let tried_levels = tightest_required.map_or(levels.len(), |r| r + 1);
    let mut list = Vec::new();
    let mut seen: HashSet<Vec<NodeId>> = HashSet::new();
    let mut required_too_small = 0;
    for (i, level) in levels.iter().enumerate().take(tried_levels) {
        let wider_required: Vec<&str> = levels[i + 1..]
            .iter()
            .filter(|l| l.required)
            .map(|l| l.key)
            .collect();
        let mut domains: BTreeMap<DomainKey<'_>, (Free, Vec<NodeId>)> = BTreeMap::new();
        for (n, node) in snapshot.nodes().iter().enumerate() {
            if node.removed {
                continue;
            }
            let Some(own) = node.labels.get(level.key) else {
                continue;
            };
            let Some(wider) = wider_required
                .iter()
                .map(|k| node.labels.get(*k).map(String::as_str))
                .collect::<Option<Vec<&str>>>()
            else {
                continue;
            };
            let key = (own.as_str(), wider);
            let (free, nodes) = domains.entry(key).or_default();
            nodes.push(NodeId(n as u32));
            // A cordoned node takes no pod: its room is no room for the gang.
            if !node.unschedulable {
                free.gpu_milli += u64::from(node.gpu_milli_free());
                free.cpu_milli += node.cpu_milli_free();
                free.memory_mib += node.memory_mib_free();
                free.whole_gpus += u64::from(node.fully_free_gpus());
            }
        }
        let mut fitting: Vec<(DomainKey<'_>, Free, Vec<NodeId>)> = Vec::new();
        for (key, (free, nodes)) in domains {
            if free.holds(&need.min) {
                fitting.push((key, free, nodes));
            } else if Some(i) == tightest_required {
                required_too_small += 1;
            }
        }
        match gang.domain_order {
            // A domain that holds every member beats one that holds only
            // minMember (the rest would stay pending); among those that hold
            // every member the tightest wins, among the others the roomiest.
            DomainOrder::TightestFit => fitting.sort_by(|(ka, a, _), (kb, b, _)| {
                let (all_a, all_b) = (a.holds(&need.all), b.holds(&need.all));
                all_b
                    .cmp(&all_a)
                    .then_with(|| match all_a && all_b {
                        true => a.cmp(b),
                        false => b.cmp(a),
                    })
                    .then_with(|| ka.cmp(kb))
            }),
            DomainOrder::Emptiest => fitting
                .sort_by(|(ka, a, _), (kb, b, _)| b.gpu_milli.cmp(&a.gpu_milli).then(ka.cmp(kb))),
        }
        for (key, _, nodes) in fitting {
            // A domain that is also a tighter one already tried (a rack that is
            // one clique) would only fail the same way again.
            if !seen.insert(nodes.clone()) {
                continue;
            }
            list.push(Candidate {
                domain: Some(GangDomain {
                    key: level.key.to_owned(),
                    value: key.0.to_owned(),
                }),
                nodes: Some(nodes),
            });
        }
    }
    // The whole cluster, unless a tried domain already was all of it.
    let whole_tried = !seen.is_empty() && {
        let whole: Vec<NodeId> = (0..snapshot.len())
            .map(|n| NodeId(n as u32))
            .filter(|&id| !snapshot.node(id).removed)
            .collect();
        seen.contains(&whole)
    };
    if tightest_required.is_none() && !whole_tried {
        list.push(Candidate {
            domain: None,
            nodes: None,
        });
    }
    Candidates {
        list,
        required_key: tightest_required.map(|r| levels[r].key.to_owned()),
        required_too_small,
    }
}
