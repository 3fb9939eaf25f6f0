//! Which devices a container gets, and what it is told about them. Pure: no
//! kubelet, no API server; the gRPC service feeds it and maps its errors.
//!
//! * [`preferred`] answers `GetPreferredAllocation`: the GPUs the scheduler wrote
//!   into the pod's annotation when the pod is known, otherwise the
//!   topology-best set (NVLink peers first, then the same NUMA node, then the
//!   lowest index); for shares, the fullest GPU that still fits (best fit keeps
//!   whole GPUs free), units in order.
//! * [`allocate`] answers `Allocate` for the devices kubelet picked (after our
//!   preference): `NVIDIA_VISIBLE_DEVICES` with GPU UUIDs, and for shares the
//!   limits HAMi-core (`libvgpu.so`) enforces: `CUDA_DEVICE_MEMORY_LIMIT_<i>`
//!   (MiB, suffix `m`, per visible device) and `CUDA_DEVICE_SM_LIMIT` (percent).

use std::collections::{BTreeMap, BTreeSet};

use phalanx_api::{GpuAssignmentAnnotation, MILLI_PER_GPU};
use thiserror::Error;

use crate::backend::GpuDevice;
use crate::health::HealthReport;
use crate::resources::{by_uuid, share_device_id, ResourceKind, ResourceSpec};

/// Environment variables a container is given.
pub const ENV_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";
pub const ENV_MEMORY_LIMIT_PREFIX: &str = "CUDA_DEVICE_MEMORY_LIMIT_";
pub const ENV_SM_LIMIT: &str = "CUDA_DEVICE_SM_LIMIT";
/// Milli of each visible GPU the container holds, comma-separated, for tools.
pub const ENV_SHARE_MILLI: &str = "PHALANX_GPU_SHARE_MILLI";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AllocationError {
    #[error("{resource}: unknown device ID {id:?} (not a device this plugin advertised)")]
    UnknownDevice { resource: String, id: String },
    #[error("{resource}: device {id:?} listed twice")]
    DuplicateDevice { resource: String, id: String },
    #[error("{resource}: device {id:?} is on GPU {gpu}, which is unhealthy ({reason})")]
    UnhealthyDevice {
        resource: String,
        id: String,
        gpu: String,
        reason: String,
    },
    #[error("{resource}: asked for {size} devices but only {available} are available")]
    NotEnoughDevices {
        resource: String,
        size: usize,
        available: usize,
    },
    #[error(
        "pod {pod}: the scheduler's assignment names GPU {what}, which this node does not have"
    )]
    UnknownAssignedGpu { pod: String, what: String },
    #[error(
        "pod {pod}: the scheduler chose GPUs {chosen:?} for {resource} but only {available:?} of them \
         are available to kubelet; the container needs {size}"
    )]
    ChoiceUnavailable {
        pod: String,
        resource: String,
        chosen: Vec<String>,
        available: Vec<String>,
        size: usize,
    },
    #[error(
        "pod {pod}: share of {wanted} units of GPU {gpu} is larger than the {left} units left on it"
    )]
    ShareTooLarge {
        pod: String,
        gpu: String,
        wanted: usize,
        left: usize,
    },
    #[error(
        "pod {pod}: the container asks for {wanted} units of {resource} but the scheduler assigned \
         only {assigned} units"
    )]
    AssignmentTooSmall {
        pod: String,
        resource: String,
        wanted: usize,
        assigned: usize,
    },
}

/// One `ContainerPreferredAllocationRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreferredRequest {
    pub available: Vec<String>,
    pub must_include: Vec<String>,
    pub size: usize,
}

/// The scheduler's choice for the pod being admitted, when it is known.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerChoice<'a> {
    /// `namespace/name`, for messages.
    pub pod: &'a str,
    pub assignment: &'a GpuAssignmentAnnotation,
}

/// What `Allocate` returns for one container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerAllocation {
    /// GPU UUIDs in the order the container sees them.
    pub gpus: Vec<String>,
    pub envs: BTreeMap<String, String>,
}

/// Devices of `available` grouped by GPU UUID (units sorted), for one resource.
fn available_by_gpu<'a>(
    spec: &ResourceSpec,
    ids: &'a [String],
) -> BTreeMap<&'a str, Vec<(u32, &'a str)>> {
    let mut out: BTreeMap<&str, Vec<(u32, &str)>> = BTreeMap::new();
    for id in ids {
        if let Some((uuid, unit)) = spec.parse_device_id(id) {
            out.entry(uuid).or_default().push((unit, id.as_str()));
        }
    }
    for units in out.values_mut() {
        units.sort_unstable();
    }
    out
}

/// The devices to prefer for one container.
pub fn preferred(
    spec: &ResourceSpec,
    gpus: &[GpuDevice],
    health: &HealthReport,
    request: &PreferredRequest,
    choice: Option<SchedulerChoice<'_>>,
) -> Result<Vec<String>, AllocationError> {
    // Kubelet offers only healthy devices, but it may not have heard yet.
    let usable: Vec<String> = request
        .available
        .iter()
        .filter(|id| {
            spec.parse_device_id(id)
                .is_some_and(|(uuid, _)| health.is_healthy(uuid))
        })
        .cloned()
        .collect();
    for id in &request.must_include {
        check_device(spec, gpus, health, id)?;
    }
    if usable.len() < request.size {
        return Err(AllocationError::NotEnoughDevices {
            resource: spec.name.clone(),
            size: request.size,
            available: usable.len(),
        });
    }
    match (spec.kind, choice) {
        (ResourceKind::WholeGpu, Some(choice)) => {
            whole_from_choice(spec, gpus, health, &usable, request, choice)
        }
        (ResourceKind::WholeGpu, None) => Ok(topology_best(gpus, &usable, request)),
        (ResourceKind::GpuShare { units_per_gpu }, Some(choice)) => {
            share_from_choice(spec, gpus, health, &usable, request, choice, units_per_gpu)
        }
        (ResourceKind::GpuShare { .. }, None) => Ok(best_fit_share(spec, gpus, &usable, request)),
    }
}

/// The inventory GPU an assignment entry names: by UUID when it has one (its
/// index must then agree), else by index.
fn assigned_gpu<'a>(
    gpus: &'a [GpuDevice],
    pod: &str,
    index: u32,
    uuid: &str,
) -> Result<&'a GpuDevice, AllocationError> {
    let found = if uuid.is_empty() {
        gpus.iter().find(|g| g.index == index)
    } else {
        gpus.iter().find(|g| g.uuid == uuid && g.index == index)
    };
    found.ok_or_else(|| AllocationError::UnknownAssignedGpu {
        pod: pod.to_owned(),
        what: if uuid.is_empty() {
            format!("index {index}")
        } else {
            format!("{uuid} at index {index}")
        },
    })
}

fn unhealthy_error(
    spec: &ResourceSpec,
    health: &HealthReport,
    gpu: &GpuDevice,
    id: &str,
) -> AllocationError {
    AllocationError::UnhealthyDevice {
        resource: spec.name.clone(),
        id: id.to_owned(),
        gpu: gpu.uuid.clone(),
        reason: health.reason(&gpu.uuid).unwrap_or_default().to_owned(),
    }
}

fn whole_from_choice(
    spec: &ResourceSpec,
    gpus: &[GpuDevice],
    health: &HealthReport,
    usable: &[String],
    request: &PreferredRequest,
    choice: SchedulerChoice<'_>,
) -> Result<Vec<String>, AllocationError> {
    let mut chosen = Vec::new();
    for assigned in choice
        .assignment
        .gpus
        .iter()
        .filter(|a| a.milli >= MILLI_PER_GPU)
    {
        let gpu = assigned_gpu(gpus, choice.pod, assigned.index, &assigned.uuid)?;
        if !health.is_healthy(&gpu.uuid) {
            return Err(unhealthy_error(spec, health, gpu, &gpu.uuid));
        }
        chosen.push(gpu.uuid.clone());
    }
    let mut out: Vec<String> = request.must_include.clone();
    for uuid in &chosen {
        if out.len() >= request.size {
            break;
        }
        if usable.contains(uuid) && !out.contains(uuid) {
            out.push(uuid.clone());
        }
    }
    if out.len() < request.size {
        return Err(AllocationError::ChoiceUnavailable {
            pod: choice.pod.to_owned(),
            resource: spec.name.clone(),
            available: chosen
                .iter()
                .filter(|u| usable.contains(u))
                .cloned()
                .collect(),
            chosen,
            size: request.size,
        });
    }
    Ok(out)
}

fn share_from_choice(
    spec: &ResourceSpec,
    gpus: &[GpuDevice],
    health: &HealthReport,
    usable: &[String],
    request: &PreferredRequest,
    choice: SchedulerChoice<'_>,
    units_per_gpu: u32,
) -> Result<Vec<String>, AllocationError> {
    let by_gpu = available_by_gpu(spec, usable);
    let mut out: Vec<String> = request.must_include.clone();
    let mut assigned_units = 0usize;
    for assigned in &choice.assignment.gpus {
        let gpu = assigned_gpu(gpus, choice.pod, assigned.index, &assigned.uuid)?;
        if !health.is_healthy(&gpu.uuid) {
            return Err(unhealthy_error(spec, health, gpu, &gpu.uuid));
        }
        // Milli → units, rounding up so a share never shrinks.
        let units = (u64::from(assigned.milli) * u64::from(units_per_gpu))
            .div_ceil(u64::from(MILLI_PER_GPU)) as usize;
        assigned_units += units;
        let wanted = request.size.saturating_sub(out.len()).min(units);
        if wanted == 0 {
            continue;
        }
        let free: Vec<&str> = by_gpu
            .get(gpu.uuid.as_str())
            .map(|units| {
                units
                    .iter()
                    .map(|(_, id)| *id)
                    .filter(|id| !out.iter().any(|o| o == id))
                    .collect()
            })
            .unwrap_or_default();
        if free.len() < wanted {
            return Err(AllocationError::ShareTooLarge {
                pod: choice.pod.to_owned(),
                gpu: gpu.uuid.clone(),
                wanted,
                left: free.len(),
            });
        }
        out.extend(free.into_iter().take(wanted).map(str::to_owned));
    }
    if out.len() < request.size {
        return Err(AllocationError::AssignmentTooSmall {
            pod: choice.pod.to_owned(),
            resource: spec.name.clone(),
            wanted: request.size,
            assigned: assigned_units,
        });
    }
    Ok(out)
}

/// Whole GPUs: grow a set from each seed (or from `must_include`), always adding
/// the candidate with the most NVLinks into the set, then the most same-NUMA
/// members, then the lowest index; keep the best-scoring set.
fn topology_best(gpus: &[GpuDevice], usable: &[String], request: &PreferredRequest) -> Vec<String> {
    let index = by_uuid(gpus);
    let candidates: Vec<&GpuDevice> = {
        let mut c: Vec<&GpuDevice> = usable
            .iter()
            .filter_map(|id| index.get(id.as_str()).copied())
            .collect();
        c.sort_by_key(|g| g.index);
        c
    };
    let must: Vec<&GpuDevice> = request
        .must_include
        .iter()
        .filter_map(|id| index.get(id.as_str()).copied())
        .collect();
    let seeds: Vec<Vec<&GpuDevice>> = if !must.is_empty() || request.size == 0 {
        vec![must.clone()]
    } else {
        candidates.iter().map(|g| vec![*g]).collect()
    };
    let mut best: Option<(SetScore, Vec<&GpuDevice>)> = None;
    for seed in seeds {
        let mut set = seed;
        while set.len() < request.size {
            let next = candidates
                .iter()
                .filter(|c| !set.iter().any(|s| s.uuid == c.uuid))
                .max_by_key(|c| {
                    (
                        links_into(c, &set),
                        same_numa_into(c, &set),
                        std::cmp::Reverse(c.index),
                    )
                });
            match next {
                Some(gpu) => set.push(*gpu),
                None => break,
            }
        }
        let score = set_score(&set);
        if best.as_ref().is_none_or(|(b, _)| score > *b) {
            best = Some((score, set));
        }
    }
    let mut chosen = best.map(|(_, set)| set).unwrap_or_default();
    // must_include first, in kubelet's order; the rest by index.
    let must_count = must.len().min(chosen.len());
    chosen[must_count..].sort_by_key(|g| g.index);
    chosen.into_iter().map(|g| g.uuid.clone()).collect()
}

fn links_into(gpu: &GpuDevice, set: &[&GpuDevice]) -> usize {
    set.iter()
        .filter(|s| gpu.nvlink_peers.contains(&s.uuid) || s.nvlink_peers.contains(&gpu.uuid))
        .count()
}

fn same_numa_into(gpu: &GpuDevice, set: &[&GpuDevice]) -> usize {
    set.iter()
        .filter(|s| gpu.numa_node.is_some() && s.numa_node == gpu.numa_node)
        .count()
}

/// NVLinked pairs, same-NUMA pairs, then lower indices: bigger is better.
type SetScore = (usize, usize, std::cmp::Reverse<u64>);

fn set_score(set: &[&GpuDevice]) -> SetScore {
    let mut links = 0;
    let mut numa = 0;
    for (i, a) in set.iter().enumerate() {
        for b in &set[i + 1..] {
            links +=
                usize::from(a.nvlink_peers.contains(&b.uuid) || b.nvlink_peers.contains(&a.uuid));
            numa += usize::from(a.numa_node.is_some() && a.numa_node == b.numa_node);
        }
    }
    let indices: u64 = set.iter().map(|g| u64::from(g.index)).sum();
    (links, numa, std::cmp::Reverse(indices))
}

/// Shares: `must_include` first, then units of the GPU with the fewest free
/// units that still has enough (ties: lowest index); if none has enough, the
/// fullest-free GPUs in turn.
fn best_fit_share(
    spec: &ResourceSpec,
    gpus: &[GpuDevice],
    usable: &[String],
    request: &PreferredRequest,
) -> Vec<String> {
    let mut out: Vec<String> = request.must_include.clone();
    let taken: BTreeSet<String> = out.iter().cloned().collect();
    let by_gpu = available_by_gpu(spec, usable);
    let index_of = |uuid: &str| {
        gpus.iter()
            .find(|g| g.uuid == uuid)
            .map_or(u32::MAX, |g| g.index)
    };
    let mut free: Vec<(&str, Vec<&str>)> = by_gpu
        .iter()
        .map(|(uuid, units)| {
            (
                *uuid,
                units
                    .iter()
                    .map(|(_, id)| *id)
                    .filter(|id| !taken.contains(*id))
                    .collect(),
            )
        })
        .collect();
    let need = request.size.saturating_sub(out.len());
    if need == 0 {
        return out;
    }
    free.sort_by_key(|(uuid, units)| (units.len(), index_of(uuid)));
    if let Some((_, units)) = free.iter().find(|(_, units)| units.len() >= need) {
        out.extend(units.iter().take(need).map(|id| (*id).to_owned()));
        return out;
    }
    for (_, units) in free.iter().rev() {
        let need = request.size.saturating_sub(out.len());
        out.extend(units.iter().take(need).map(|id| (*id).to_owned()));
    }
    out
}

/// Resolves one device ID to its GPU, refusing unknown and unhealthy devices.
fn check_device<'a>(
    spec: &ResourceSpec,
    gpus: &'a [GpuDevice],
    health: &HealthReport,
    id: &str,
) -> Result<&'a GpuDevice, AllocationError> {
    let gpu = spec
        .parse_device_id(id)
        .and_then(|(uuid, _)| gpus.iter().find(|g| g.uuid == uuid))
        .ok_or_else(|| AllocationError::UnknownDevice {
            resource: spec.name.clone(),
            id: id.to_owned(),
        })?;
    if !health.is_healthy(&gpu.uuid) {
        return Err(unhealthy_error(spec, health, gpu, id));
    }
    Ok(gpu)
}

/// The container's GPUs and environment for the devices kubelet allocated.
pub fn allocate(
    spec: &ResourceSpec,
    gpus: &[GpuDevice],
    health: &HealthReport,
    device_ids: &[String],
) -> Result<ContainerAllocation, AllocationError> {
    let mut seen = BTreeSet::new();
    // Units per GPU, keyed by index so the container sees GPUs in NVML order.
    let mut units: BTreeMap<u32, (&GpuDevice, u32)> = BTreeMap::new();
    for id in device_ids {
        if !seen.insert(id.as_str()) {
            return Err(AllocationError::DuplicateDevice {
                resource: spec.name.clone(),
                id: id.clone(),
            });
        }
        let gpu = check_device(spec, gpus, health, id)?;
        units.entry(gpu.index).or_insert((gpu, 0)).1 += 1;
    }
    let visible: Vec<String> = units.values().map(|(g, _)| g.uuid.clone()).collect();
    let mut envs = BTreeMap::new();
    envs.insert(ENV_VISIBLE_DEVICES.to_owned(), visible.join(","));
    if let ResourceKind::GpuShare { units_per_gpu } = spec.kind {
        let per_gpu = u64::from(units_per_gpu);
        let mut smallest_percent = 100u64;
        let mut milli = Vec::new();
        for (position, (gpu, held)) in units.values().enumerate() {
            let held = u64::from(*held);
            let memory_mib = gpu.memory_total_mib * held / per_gpu;
            envs.insert(
                format!("{ENV_MEMORY_LIMIT_PREFIX}{position}"),
                format!("{memory_mib}m"),
            );
            smallest_percent = smallest_percent.min((held * 100 / per_gpu).max(1));
            milli.push((held * u64::from(MILLI_PER_GPU) / per_gpu).to_string());
        }
        if !units.is_empty() {
            envs.insert(ENV_SM_LIMIT.to_owned(), smallest_percent.to_string());
            envs.insert(ENV_SHARE_MILLI.to_owned(), milli.join(","));
        }
    }
    Ok(ContainerAllocation {
        gpus: visible,
        envs,
    })
}

/// Every device ID of `gpu` for `spec` (used by tests and the fake kubelet).
pub fn all_device_ids(spec: &ResourceSpec, gpus: &[GpuDevice]) -> Vec<String> {
    gpus.iter()
        .flat_map(|g| match spec.kind {
            ResourceKind::WholeGpu => vec![g.uuid.clone()],
            ResourceKind::GpuShare { units_per_gpu } => (0..units_per_gpu)
                .map(|u| share_device_id(&g.uuid, u))
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use phalanx_api::AssignedGpu;

    use super::*;
    use crate::backend::FakeNode;

    /// 4 GPUs: 0-1 NVLinked on NUMA 0, 2-3 NVLinked on NUMA 1, no links across.
    fn two_pairs() -> Vec<GpuDevice> {
        let mut gpus: Vec<GpuDevice> = FakeNode::uniform(4, "NVIDIA H100 80GB HBM3", 81_920)
            .gpus
            .into_iter()
            .map(|g| g.device)
            .collect();
        let uuids: Vec<String> = gpus.iter().map(|g| g.uuid.clone()).collect();
        for (i, g) in gpus.iter_mut().enumerate() {
            let partner = i ^ 1;
            g.nvlink_peers = vec![uuids[partner].clone()];
            g.numa_node = Some((i / 2) as u32);
        }
        gpus
    }

    fn whole() -> ResourceSpec {
        ResourceSpec::whole("nvidia.com/gpu").unwrap()
    }

    fn milli() -> ResourceSpec {
        ResourceSpec::share("phalanx.dev/gpu-milli", 1000).unwrap()
    }

    fn request(available: Vec<String>, size: usize) -> PreferredRequest {
        PreferredRequest {
            available,
            must_include: Vec::new(),
            size,
        }
    }

    fn assignment(entries: &[(u32, &str, u32)]) -> GpuAssignmentAnnotation {
        GpuAssignmentAnnotation {
            node: "n1".into(),
            gpus: entries
                .iter()
                .map(|(index, uuid, milli)| AssignedGpu {
                    index: *index,
                    uuid: (*uuid).into(),
                    milli: *milli,
                })
                .collect(),
        }
    }

    #[test]
    fn topology_prefers_nvlink_pairs_then_numa() {
        let gpus = two_pairs();
        let health = HealthReport::default();
        let u = |i: usize| gpus[i].uuid.clone();
        // 0 is taken: of 1, 2, 3 the linked pair 2-3 wins over 1 + anything.
        let got = preferred(
            &whole(),
            &gpus,
            &health,
            &request(vec![u(1), u(2), u(3)], 2),
            None,
        )
        .unwrap();
        assert_eq!(got, vec![u(2), u(3)]);
        // must include 1: its NVLink partner 0 joins it.
        let mut req = request(vec![u(0), u(1), u(2), u(3)], 2);
        req.must_include = vec![u(1)];
        assert_eq!(
            preferred(&whole(), &gpus, &health, &req, None).unwrap(),
            vec![u(1), u(0)]
        );
        // Without links, same NUMA wins.
        let mut unlinked = gpus.clone();
        for g in &mut unlinked {
            g.nvlink_peers.clear();
        }
        let got = preferred(
            &whole(),
            &unlinked,
            &health,
            &request(vec![u(1), u(2), u(3)], 2),
            None,
        )
        .unwrap();
        assert_eq!(got, vec![u(2), u(3)]);
        // An unhealthy GPU is never preferred.
        let mut sick = HealthReport::default();
        sick.mark_unhealthy(&u(2), "XID 79");
        let got = preferred(
            &whole(),
            &gpus,
            &sick,
            &request(vec![u(1), u(2), u(3)], 2),
            None,
        )
        .unwrap();
        assert_eq!(got, vec![u(1), u(3)]);
    }

    #[test]
    fn the_schedulers_choice_wins_over_topology() {
        let gpus = two_pairs();
        let health = HealthReport::default();
        let u = |i: usize| gpus[i].uuid.clone();
        let a = assignment(&[(1, &u(1), 1000), (2, "", 1000)]);
        let choice = SchedulerChoice {
            pod: "ns/p",
            assignment: &a,
        };
        let all = all_device_ids(&whole(), &gpus);
        let got = preferred(
            &whole(),
            &gpus,
            &health,
            &request(all.clone(), 2),
            Some(choice),
        )
        .unwrap();
        assert_eq!(got, vec![u(1), u(2)]);

        // The chosen GPU is taken by someone else: a clear error, not a silent swap.
        let without_2: Vec<String> = all.iter().filter(|id| **id != u(2)).cloned().collect();
        let err = preferred(
            &whole(),
            &gpus,
            &health,
            &request(without_2, 2),
            Some(choice),
        )
        .unwrap_err();
        assert!(
            matches!(err, AllocationError::ChoiceUnavailable { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("ns/p"), "{err}");

        // Unknown GPU and mismatched uuid/index.
        let bad = assignment(&[(7, "", 1000)]);
        let err = preferred(
            &whole(),
            &gpus,
            &health,
            &request(all.clone(), 1),
            Some(SchedulerChoice {
                pod: "ns/p",
                assignment: &bad,
            }),
        )
        .unwrap_err();
        assert_eq!(
            err,
            AllocationError::UnknownAssignedGpu {
                pod: "ns/p".into(),
                what: "index 7".into()
            }
        );
        let bad = assignment(&[(0, &u(1), 1000)]);
        assert!(preferred(
            &whole(),
            &gpus,
            &health,
            &request(all.clone(), 1),
            Some(SchedulerChoice {
                pod: "ns/p",
                assignment: &bad
            })
        )
        .is_err());

        // The chosen GPU turned unhealthy after scheduling.
        let mut sick = HealthReport::default();
        sick.mark_unhealthy(&u(1), "XID 48: double-bit ECC error");
        let err = preferred(&whole(), &gpus, &sick, &request(all, 2), Some(choice)).unwrap_err();
        assert!(err.to_string().contains("unhealthy (XID 48"), "{err}");
    }

    #[test]
    fn shares_follow_the_choice_and_refuse_what_does_not_fit() {
        let gpus = two_pairs();
        let health = HealthReport::default();
        let spec = milli();
        let all = all_device_ids(&spec, &gpus);
        let a = assignment(&[(2, &gpus[2].uuid, 300)]);
        let choice = SchedulerChoice {
            pod: "ns/s",
            assignment: &a,
        };
        let got = preferred(
            &spec,
            &gpus,
            &health,
            &request(all.clone(), 300),
            Some(choice),
        )
        .unwrap();
        assert_eq!(got.len(), 300);
        assert!(got
            .iter()
            .all(|id| id.starts_with(&format!("{}::", gpus[2].uuid))));

        // Only 200 units of GPU 2 left.
        let tight: Vec<String> = all
            .iter()
            .filter(|id| {
                !id.starts_with(&gpus[2].uuid) || id.ends_with("::0") || {
                    let unit: u32 = id.rsplit("::").next().unwrap().parse().unwrap();
                    unit >= 800
                }
            })
            .cloned()
            .collect();
        let err = preferred(&spec, &gpus, &health, &request(tight, 300), Some(choice)).unwrap_err();
        assert_eq!(
            err,
            AllocationError::ShareTooLarge {
                pod: "ns/s".into(),
                gpu: gpus[2].uuid.clone(),
                wanted: 300,
                left: 201
            }
        );
        let err = preferred(&spec, &gpus, &health, &request(all, 400), Some(choice)).unwrap_err();
        assert!(
            matches!(
                err,
                AllocationError::AssignmentTooSmall {
                    wanted: 400,
                    assigned: 300,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn shares_without_a_choice_best_fit_one_gpu() {
        let gpus = two_pairs();
        let spec = milli();
        // GPU 0 has 1000 free, GPU 1 has 400 free: 300 goes to GPU 1.
        let available: Vec<String> = all_device_ids(&spec, &gpus[..1])
            .into_iter()
            .chain((600..1000).map(|u| share_device_id(&gpus[1].uuid, u)))
            .collect();
        let got = preferred(
            &spec,
            &gpus[..2],
            &HealthReport::default(),
            &request(available.clone(), 300),
            None,
        )
        .unwrap();
        assert!(
            got.iter().all(|id| id.starts_with(&gpus[1].uuid)),
            "{got:?}"
        );
        let got = preferred(
            &spec,
            &gpus[..2],
            &HealthReport::default(),
            &request(available, 500),
            None,
        )
        .unwrap();
        assert!(
            got.iter().all(|id| id.starts_with(&gpus[0].uuid)),
            "{got:?}"
        );
    }

    #[test]
    fn allocate_sets_visible_devices_and_share_limits() {
        let gpus = two_pairs();
        let health = HealthReport::default();
        let got = allocate(
            &whole(),
            &gpus,
            &health,
            &[gpus[3].uuid.clone(), gpus[1].uuid.clone()],
        )
        .unwrap();
        assert_eq!(got.gpus, vec![gpus[1].uuid.clone(), gpus[3].uuid.clone()]);
        assert_eq!(
            got.envs[ENV_VISIBLE_DEVICES],
            format!("{},{}", gpus[1].uuid, gpus[3].uuid)
        );
        assert!(!got.envs.contains_key(ENV_SM_LIMIT));

        let spec = milli();
        let ids: Vec<String> = (0..250)
            .map(|u| share_device_id(&gpus[2].uuid, u))
            .collect();
        let got = allocate(&spec, &gpus, &health, &ids).unwrap();
        assert_eq!(got.envs[ENV_VISIBLE_DEVICES], gpus[2].uuid);
        assert_eq!(got.envs["CUDA_DEVICE_MEMORY_LIMIT_0"], "20480m");
        assert_eq!(got.envs[ENV_SM_LIMIT], "25");
        assert_eq!(got.envs[ENV_SHARE_MILLI], "250");
    }

    #[test]
    fn allocate_refuses_unknown_duplicate_and_unhealthy_devices() {
        let gpus = two_pairs();
        let mut health = HealthReport::default();
        let err = allocate(&whole(), &gpus, &health, &["GPU-nope".into()]).unwrap_err();
        assert_eq!(
            err,
            AllocationError::UnknownDevice {
                resource: "nvidia.com/gpu".into(),
                id: "GPU-nope".into()
            }
        );
        let err = allocate(
            &milli(),
            &gpus,
            &health,
            &[format!("{}::1000", gpus[0].uuid)],
        )
        .unwrap_err();
        assert!(
            matches!(err, AllocationError::UnknownDevice { .. }),
            "unit beyond the configured units"
        );
        let twice = vec![gpus[0].uuid.clone(), gpus[0].uuid.clone()];
        assert!(matches!(
            allocate(&whole(), &gpus, &health, &twice),
            Err(AllocationError::DuplicateDevice { .. })
        ));
        health.mark_unhealthy(&gpus[0].uuid, "XID 79: GPU has fallen off the bus");
        let err = allocate(&whole(), &gpus, &health, &[gpus[0].uuid.clone()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("unhealthy") && err.contains("XID 79"), "{err}");
    }
}
