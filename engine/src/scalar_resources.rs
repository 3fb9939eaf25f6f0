//! Resources other than CPU, memory, pods and GPUs that kube-scheduler's
//! NodeResourcesFit checks: `ephemeral-storage`, `hugepages-<size>` and every
//! extended resource (`vendor.example/device`). Each is a plain count (bytes for
//! storage and huge pages) compared by name: a pod asking for one the node does
//! not offer does not fit, in kube-scheduler's words "Insufficient `<name>`".

use std::sync::Arc;

/// A resource name, shared between the pod demands and nodes that carry it.
pub type ResourceName = Arc<str>;

/// What a pod asks of one such resource (never 0: zero requests are dropped).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScalarRequest {
    pub name: ResourceName,
    pub amount: u64,
}

/// One such resource on a node: what it offers and what placed pods took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeScalar {
    pub name: ResourceName,
    pub allocatable: u64,
    pub requested: u64,
}

/// The index of the first request `node` cannot satisfy, if any. `requests` is
/// the pod's (at most a handful), `node` the node's; both are short, so a scan
/// beats a map.
pub(crate) fn first_insufficient(node: &[NodeScalar], requests: &[ScalarRequest]) -> Option<usize> {
    requests.iter().position(|r| r.amount > free(node, &r.name))
}

/// What the node has left of resource `name` (0 for one it does not offer).
pub(crate) fn free(node: &[NodeScalar], name: &ResourceName) -> u64 {
    node.iter()
        .find(|n| n.name == *name)
        .map_or(0, |n| n.allocatable.saturating_sub(n.requested))
}

/// Adds the pod's requests to the node (after the fit check passed).
pub(crate) fn add(node: &mut Vec<NodeScalar>, requests: &[ScalarRequest]) {
    for r in requests {
        match node.iter_mut().find(|n| n.name == r.name) {
            Some(n) => n.requested = n.requested.saturating_add(r.amount),
            None => node.push(NodeScalar {
                name: r.name.clone(),
                allocatable: 0,
                requested: r.amount,
            }),
        }
    }
}

/// True when every request can be taken back from the node without underflow.
pub(crate) fn can_subtract(node: &[NodeScalar], requests: &[ScalarRequest]) -> bool {
    requests.iter().all(|r| {
        node.iter()
            .find(|n| n.name == r.name)
            .is_some_and(|n| n.requested >= r.amount)
    })
}

/// Takes the pod's requests back (after [`can_subtract`] said it may).
pub(crate) fn subtract(node: &mut [NodeScalar], requests: &[ScalarRequest]) {
    for r in requests {
        if let Some(n) = node.iter_mut().find(|n| n.name == r.name) {
            n.requested = n.requested.saturating_sub(r.amount);
        }
    }
}

/// Brings a node's allocatable up to date, keeping what placed pods requested
/// (also of a resource the node no longer offers: those pods still hold it).
pub(crate) fn set_allocatable(node: &mut Vec<NodeScalar>, allocatable: &[(String, u64)]) {
    node.retain(|n| n.requested > 0);
    for n in node.iter_mut() {
        n.allocatable = 0;
    }
    for (name, amount) in allocatable {
        match node.iter_mut().find(|n| &*n.name == name.as_str()) {
            Some(n) => n.allocatable = *amount,
            None => node.push(NodeScalar {
                name: name.as_str().into(),
                allocatable: *amount,
                requested: 0,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str, amount: u64) -> ScalarRequest {
        ScalarRequest {
            name: name.into(),
            amount,
        }
    }

    #[test]
    fn fit_add_subtract_by_name() {
        let mut node = Vec::new();
        set_allocatable(
            &mut node,
            &[
                ("example.com/foo".into(), 2),
                ("hugepages-2Mi".into(), 4 << 21),
            ],
        );
        let foo = [request("example.com/foo", 2)];
        assert_eq!(first_insufficient(&node, &foo), None);
        add(&mut node, &foo);
        assert_eq!(
            first_insufficient(&node, &[request("example.com/foo", 1)]),
            Some(0)
        );
        let absent = [request("rdma/hca", 1)];
        assert_eq!(
            first_insufficient(&node, &absent),
            Some(0),
            "a resource the node does not offer is insufficient"
        );
        assert!(can_subtract(&node, &foo));
        assert!(!can_subtract(&node, &absent));
        // The node stops offering foo while a pod holds it: the hold is kept.
        set_allocatable(&mut node, &[]);
        assert!(can_subtract(&node, &foo));
        subtract(&mut node, &foo);
        set_allocatable(&mut node, &[]);
        assert!(node.is_empty());
    }

    #[test]
    fn every_fixed_reason_knows_its_slot() {
        use crate::UnfitReason;
        for (i, reason) in UnfitReason::ALL.iter().enumerate() {
            assert_eq!(reason.fixed_index(), Some(i), "{reason:?}");
        }
        assert_eq!(
            UnfitReason::InsufficientResource("rdma/hca".into()).fixed_index(),
            None
        );
    }
}
