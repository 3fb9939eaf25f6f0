//! Resources other than CPU, memory, pod count and GPUs (ephemeral storage, huge
//! pages, extended resources): which names they are, and what a node offers.
//! kube-scheduler's NodeResourcesFit checks every one of them by name, so the
//! engine does too rather than ignore any.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Node;
use phalanx_api::{RESOURCE_GPU_MILLI, RESOURCE_WHOLE_GPU};

use super::quantity::Rounding;
use super::{convert_quantity, TranslateError};

/// Resources the engine accounts in dimensions of their own.
const OWN_DIMENSIONS: [&str; 5] = [
    "cpu",
    "memory",
    "pods",
    RESOURCE_WHOLE_GPU,
    RESOURCE_GPU_MILLI,
];

/// True for a resource accounted by name (bytes for storage and huge pages).
pub(crate) fn is_scalar_resource(name: &str) -> bool {
    !OWN_DIMENSIONS.contains(&name)
}

/// The node's scalar resources from `status.allocatable`, or `status.capacity`
/// for a name allocatable does not report yet, rounded down.
pub(crate) fn node_scalar_resources(
    object: &str,
    node: &Node,
) -> Result<Vec<(String, u64)>, TranslateError> {
    let status = node.status.as_ref();
    let lists = [
        (
            "status.allocatable",
            status.and_then(|s| s.allocatable.as_ref()),
        ),
        ("status.capacity", status.and_then(|s| s.capacity.as_ref())),
    ];
    let names: BTreeSet<&String> = lists
        .iter()
        .filter_map(|(_, list)| *list)
        .flat_map(|list| list.keys())
        .filter(|name| is_scalar_resource(name))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Some((path, raw)) = lists
            .iter()
            .find_map(|(path, list)| Some((path, list.as_ref()?.get(name)?)))
        else {
            continue;
        };
        let amount = convert_quantity(object, format!("{path}[{name:?}]"), raw, |q| {
            q.scaled(1, 1, Rounding::Down)
        })?;
        out.push((name.clone(), amount));
    }
    Ok(out)
}
