//! The queue hierarchy as written: each queue's parent and, per resource, what
//! it is guaranteed, what it may never exceed, and its weight for sharing what
//! others leave idle. Built once from the specs and checked whole, so that
//! every later computation can rely on a tree without cycles whose limits are
//! never below their guarantees.
//! [`QueueTree::build`] refuses a set with any fault; the scheduler uses
//! [`QueueTree::build_valid`], which keeps what is usable and reports each
//! queue it leaves out, so one team's typo does not stop the others.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

/// A resource a queue is measured in. GPUs are in milli-GPU: a whole GPU
/// (`nvidia.com/gpu`) is 1000, a share (`phalanx.dev/gpu-milli`) its own
/// amount, so whole and shared GPUs count against one quota.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QueueResource {
    CpuMilli,
    MemoryMib,
    GpuMilli,
    /// GPUs of one model (the model's name as the engine knows it), milli-GPU.
    ModelGpuMilli(String),
}

impl std::fmt::Display for QueueResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CpuMilli => f.write_str("cpu"),
            Self::MemoryMib => f.write_str("memory"),
            Self::GpuMilli => f.write_str("gpu"),
            Self::ModelGpuMilli(model) => write!(f, "gpu:{model}"),
        }
    }
}

/// A queue's terms for one resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Always available to the queue when it asks (taken back from borrowers).
    pub guaranteed: u64,
    /// Never exceeded; `None` is no limit beyond the parent's.
    pub limit: Option<u64>,
    /// The queue's weight when what is left after guarantees is shared; 0
    /// borrows nothing beyond its guarantee.
    pub over_quota_weight: u32,
}

impl Default for Quota {
    /// A queue that names no terms for a resource: nothing guaranteed, no
    /// limit of its own, an equal weight in what is idle.
    fn default() -> Self {
        Self {
            guaranteed: 0,
            limit: None,
            over_quota_weight: 1,
        }
    }
}

/// One queue as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    pub name: String,
    pub parent: Option<String>,
    pub quotas: BTreeMap<QueueResource, Quota>,
}

/// Why a set of queues cannot be used. Each names the queue and what to fix.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum QueueTreeError {
    #[error("queue {queue}: {resource} limit {limit} is below its guarantee {guaranteed}")]
    LimitBelowGuarantee {
        queue: String,
        resource: QueueResource,
        limit: u64,
        guaranteed: u64,
    },
    #[error("queue {queue}: parent {parent} does not exist")]
    UnknownParent { queue: String, parent: String },
    #[error("queue {queue}: its parents form a cycle ({})", cycle.join(" -> "))]
    ParentCycle { queue: String, cycle: Vec<String> },
    #[error("queue {name} is defined twice")]
    Duplicate { name: String },
    #[error(
        "queue {parent}: its children are guaranteed {children} {resource}, more than its own \
         guarantee {guaranteed}"
    )]
    ChildrenGuaranteeExceedsParent {
        parent: String,
        resource: QueueResource,
        children: u64,
        guaranteed: u64,
    },
    /// Left out by [`QueueTree::build_valid`] because an ancestor is: a queue
    /// is only usable when every queue above it is.
    #[error("queue {queue}: its ancestor {ancestor} is not valid")]
    AncestorInvalid { queue: String, ancestor: String },
}

impl QueueTreeError {
    /// The queue the error is about (for the children's guarantees, the
    /// parent that cannot back them).
    pub fn queue(&self) -> &str {
        match self {
            Self::LimitBelowGuarantee { queue, .. }
            | Self::UnknownParent { queue, .. }
            | Self::ParentCycle { queue, .. }
            | Self::AncestorInvalid { queue, .. } => queue,
            Self::Duplicate { name } => name,
            Self::ChildrenGuaranteeExceedsParent { parent, .. } => parent,
        }
    }
}

/// Index of a queue in its [`QueueTree`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub(crate) usize);

impl QueueId {
    /// The queue's position in the per-queue vectors that
    /// [`fair_shares`](super::fair_shares) takes and returns.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A checked hierarchy: queues by name, each parent before its children.
#[derive(Clone, Debug)]
pub struct QueueTree {
    queues: Vec<QueueSpec>,
    parents: Vec<Option<QueueId>>,
    children: Vec<Vec<QueueId>>,
    by_name: BTreeMap<String, QueueId>,
}

impl QueueTree {
    /// Checks `specs` whole: unique names, parents that exist and form no
    /// cycle, limits at or above guarantees, and children guaranteed no more
    /// than their parent (a guarantee must be backed all the way up).
    pub fn build(specs: Vec<QueueSpec>) -> Result<Self, QueueTreeError> {
        let mut by_name = BTreeMap::new();
        for spec in &specs {
            if by_name.insert(spec.name.clone(), ()).is_some() {
                return Err(QueueTreeError::Duplicate {
                    name: spec.name.clone(),
                });
            }
            for (resource, quota) in &spec.quotas {
                if let Some(limit) = quota.limit.filter(|l| *l < quota.guaranteed) {
                    return Err(QueueTreeError::LimitBelowGuarantee {
                        queue: spec.name.clone(),
                        resource: resource.clone(),
                        limit,
                        guaranteed: quota.guaranteed,
                    });
                }
            }
        }
        let parent_of: BTreeMap<String, Option<String>> = specs
            .iter()
            .map(|s| (s.name.clone(), s.parent.clone()))
            .collect();
        let parent_of = |name: &str| parent_of.get(name).cloned().flatten();
        for spec in &specs {
            if let Some(parent) = spec.parent.as_deref() {
                if !by_name.contains_key(parent) {
                    return Err(QueueTreeError::UnknownParent {
                        queue: spec.name.clone(),
                        parent: parent.to_owned(),
                    });
                }
            }
            let mut seen = BTreeSet::from([spec.name.clone()]);
            let mut path = vec![spec.name.clone()];
            let mut at = spec.parent.clone();
            while let Some(name) = at {
                path.push(name.clone());
                if !seen.insert(name.clone()) {
                    return Err(QueueTreeError::ParentCycle {
                        queue: spec.name.clone(),
                        cycle: path,
                    });
                }
                at = parent_of(&name);
            }
        }
        let tree = Self::assemble(specs);
        tree.check_children_guarantees()?;
        Ok(tree)
    }

    /// Indexes `specs`, parents before children. The caller has checked that
    /// names are unique and every parent exists without a cycle.
    fn assemble(specs: Vec<QueueSpec>) -> Self {
        let parent_of: BTreeMap<String, Option<String>> = specs
            .iter()
            .map(|s| (s.name.clone(), s.parent.clone()))
            .collect();
        let parent_of = |name: &str| parent_of.get(name).cloned().flatten();
        // Parents before children: order by depth, then name.
        let depth = |name: &str| {
            let mut d = 0usize;
            let mut at = parent_of(name);
            while let Some(p) = at {
                d += 1;
                at = parent_of(&p);
            }
            d
        };
        let mut queues = specs;
        queues.sort_by(|a, b| {
            depth(&a.name)
                .cmp(&depth(&b.name))
                .then_with(|| a.name.cmp(&b.name))
        });
        let by_name: BTreeMap<String, QueueId> = queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.name.clone(), QueueId(i)))
            .collect();
        let parents: Vec<Option<QueueId>> = queues
            .iter()
            .map(|q| q.parent.as_ref().and_then(|p| by_name.get(p).copied()))
            .collect();
        let mut children = vec![Vec::new(); queues.len()];
        for (i, parent) in parents.iter().enumerate() {
            if let Some(parent) = parent {
                children[parent.0].push(QueueId(i));
            }
        }
        Self {
            queues,
            parents,
            children,
            by_name,
        }
    }

    /// The usable part of `specs`: every queue that is valid together with
    /// all its ancestors, and one error for each queue left out, in input
    /// order. Where [`build`](Self::build) refuses the whole set, this keeps
    /// one team's mistake from stopping every other team's work.
    ///
    /// Left out, with the error that names the queue:
    /// * a second queue of a name already seen (the first is kept);
    /// * a queue with a limit below its guarantee, a parent that does not
    ///   exist, or on a cycle of parents (every queue on the cycle);
    /// * a parent whose children are guaranteed more than it is. The parent,
    ///   not a child, is the one left out: which child's guarantee is "too
    ///   much" depends on all of them, and keeping the parent with only some
    ///   children would change the guarantees the others get without anyone
    ///   having written so. Parents are checked top-down, each against the
    ///   children still kept, so the kept tree passes `build`'s check;
    /// * every descendant of a queue left out, as
    ///   [`QueueTreeError::AncestorInvalid`] naming the nearest ancestor left
    ///   out for its own error: a queue's guarantee is only real when every
    ///   queue above it backs it.
    ///
    /// A queue with several faults of its own reports one: its limit, else
    /// its parent's existence, else the cycle.
    pub fn build_valid(specs: Vec<QueueSpec>) -> (Self, Vec<QueueTreeError>) {
        // Errors by input position; `None` is kept so far.
        let mut errors: Vec<Option<QueueTreeError>> = vec![None; specs.len()];
        let mut position: BTreeMap<String, usize> = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if position.contains_key(&spec.name) {
                errors[i] = Some(QueueTreeError::Duplicate {
                    name: spec.name.clone(),
                });
            } else {
                position.insert(spec.name.clone(), i);
            }
        }
        let parent_of = |i: usize| -> Option<usize> {
            specs[i]
                .parent
                .as_ref()
                .and_then(|p| position.get(p).copied())
        };
        // The queue's own faults.
        for &i in position.values() {
            let spec = &specs[i];
            let limit_error = spec.quotas.iter().find_map(|(resource, quota)| {
                let limit = quota.limit.filter(|l| *l < quota.guaranteed)?;
                Some(QueueTreeError::LimitBelowGuarantee {
                    queue: spec.name.clone(),
                    resource: resource.clone(),
                    limit,
                    guaranteed: quota.guaranteed,
                })
            });
            let parent_error = spec
                .parent
                .as_ref()
                .filter(|p| !position.contains_key(*p))
                .map(|parent| QueueTreeError::UnknownParent {
                    queue: spec.name.clone(),
                    parent: parent.clone(),
                });
            errors[i] = limit_error.or(parent_error);
        }
        for &i in position.values() {
            if errors[i].is_none() {
                if let Some(cycle) = cycle_through(i, &parent_of, specs.len()) {
                    errors[i] = Some(QueueTreeError::ParentCycle {
                        queue: specs[i].name.clone(),
                        cycle: cycle.iter().map(|&q| specs[q].name.clone()).collect(),
                    });
                }
            }
        }
        // Descendants of a queue with its own fault. Every walk up ends at a
        // root, an unknown parent or a cycle, and the last two have errors.
        let own_fault: Vec<bool> = errors.iter().map(Option::is_some).collect();
        for &i in position.values() {
            if own_fault[i] {
                continue;
            }
            let mut at = parent_of(i);
            while let Some(p) = at {
                if own_fault[p] {
                    errors[i] = Some(QueueTreeError::AncestorInvalid {
                        queue: specs[i].name.clone(),
                        ancestor: specs[p].name.clone(),
                    });
                    break;
                }
                at = parent_of(p);
            }
        }
        // Children's guarantees, top-down over what is left (now a forest).
        let depth = |i: usize| {
            let mut d = 0usize;
            let mut at = parent_of(i);
            while let Some(p) = at {
                d += 1;
                at = parent_of(p);
            }
            d
        };
        let mut kept: Vec<usize> = position
            .values()
            .copied()
            .filter(|&i| errors[i].is_none())
            .collect();
        kept.sort_by_key(|&i| depth(i));
        for &i in &kept {
            if errors[i].is_some() || specs[i].parent.is_none() {
                continue;
            }
            let children = kept
                .iter()
                .copied()
                .filter(|&c| parent_of(c) == Some(i) && errors[c].is_none());
            let mut sums: BTreeMap<&QueueResource, u64> = BTreeMap::new();
            for child in children {
                for (resource, quota) in &specs[child].quotas {
                    let sum = sums.entry(resource).or_default();
                    *sum = sum.saturating_add(quota.guaranteed);
                }
            }
            let own = |resource: &QueueResource| {
                specs[i]
                    .quotas
                    .get(resource)
                    .map_or(0, |quota| quota.guaranteed)
            };
            let Some((resource, children)) = sums.into_iter().find(|(r, sum)| *sum > own(r)) else {
                continue;
            };
            errors[i] = Some(QueueTreeError::ChildrenGuaranteeExceedsParent {
                parent: specs[i].name.clone(),
                resource: resource.clone(),
                children,
                guaranteed: own(resource),
            });
            for &d in &kept {
                let mut at = parent_of(d);
                while let Some(p) = at {
                    if p == i {
                        errors[d] = Some(QueueTreeError::AncestorInvalid {
                            queue: specs[d].name.clone(),
                            ancestor: specs[i].name.clone(),
                        });
                        break;
                    }
                    at = parent_of(p);
                }
            }
        }
        let mut valid = Vec::new();
        let mut refused = Vec::new();
        for (spec, error) in specs.iter().zip(errors) {
            match error {
                Some(error) => refused.push(error),
                None => valid.push(spec.clone()),
            }
        }
        (Self::assemble(valid), refused)
    }

    fn check_children_guarantees(&self) -> Result<(), QueueTreeError> {
        for (i, spec) in self.queues.iter().enumerate() {
            let mut sums: BTreeMap<&QueueResource, u64> = BTreeMap::new();
            for child in &self.children[i] {
                for (resource, quota) in &self.queues[child.0].quotas {
                    let sum = sums.entry(resource).or_default();
                    *sum = sum.saturating_add(quota.guaranteed);
                }
            }
            for (resource, children) in sums {
                let guaranteed = self.quota(QueueId(i), resource).guaranteed;
                if children > guaranteed && spec.parent.is_some() {
                    return Err(QueueTreeError::ChildrenGuaranteeExceedsParent {
                        parent: spec.name.clone(),
                        resource: resource.clone(),
                        children,
                        guaranteed,
                    });
                }
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<QueueId> {
        self.by_name.get(name).copied()
    }

    pub fn spec(&self, id: QueueId) -> &QueueSpec {
        &self.queues[id.0]
    }

    pub fn parent(&self, id: QueueId) -> Option<QueueId> {
        self.parents[id.0]
    }

    pub fn children(&self, id: QueueId) -> &[QueueId] {
        &self.children[id.0]
    }

    /// Queues without a parent, by name.
    pub fn roots(&self) -> impl Iterator<Item = QueueId> + '_ {
        (0..self.queues.len())
            .map(QueueId)
            .filter(|id| self.parents[id.0].is_none())
    }

    /// Every queue, each parent before its children.
    pub fn ids(&self) -> impl Iterator<Item = QueueId> {
        (0..self.queues.len()).map(QueueId)
    }

    /// The queue's terms for `resource` (the defaults when it names none).
    pub fn quota(&self, id: QueueId, resource: &QueueResource) -> Quota {
        self.queues[id.0]
            .quotas
            .get(resource)
            .copied()
            .unwrap_or_default()
    }
}

/// The cycle of parents that `start` is on, from `start` back to it, or
/// `None` when following its parents ends (or enters a cycle it is not on).
fn cycle_through(
    start: usize,
    parent_of: &impl Fn(usize) -> Option<usize>,
    len: usize,
) -> Option<Vec<usize>> {
    let mut path = vec![start];
    let mut at = parent_of(start);
    // A walk longer than the number of queues has repeated one.
    while let Some(p) = at {
        path.push(p);
        if p == start {
            return Some(path);
        }
        if path.len() > len {
            return None;
        }
        at = parent_of(p);
    }
    None
}
