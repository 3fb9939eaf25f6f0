//! Which pods hold which GPU, from kubelet's PodResources `List` answer.

use std::collections::BTreeMap;

use phalanx_api::{GpuHolder, MILLI_PER_GPU};

use crate::proto::podresources::ListPodResourcesResponse;
use crate::resources::ResourceSpec;

/// Holders per GPU UUID: a whole GPU counts 1000 milli; shares count their units
/// converted to milli (rounded down). A pod holding a GPU through several
/// containers is listed once with the sum. Devices of other resources, or of
/// GPUs this node does not have, are ignored.
pub fn gpu_holders(
    response: &ListPodResourcesResponse,
    resources: &[ResourceSpec],
) -> BTreeMap<String, Vec<GpuHolder>> {
    // (uuid, namespace, name) → units per resource spec index
    let mut held: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for pod in &response.pod_resources {
        for container in &pod.containers {
            for devices in &container.devices {
                let Some(spec) = resources.iter().find(|r| r.name == devices.resource_name) else {
                    continue;
                };
                let milli_per_device =
                    u64::from(MILLI_PER_GPU) * 1_000_000 / u64::from(spec.units_per_gpu());
                for id in &devices.device_ids {
                    if let Some((uuid, _)) = spec.parse_device_id(id) {
                        *held
                            .entry((uuid.to_owned(), pod.namespace.clone(), pod.name.clone()))
                            .or_default() += milli_per_device;
                    }
                }
            }
        }
    }
    let mut out: BTreeMap<String, Vec<GpuHolder>> = BTreeMap::new();
    for ((uuid, namespace, name), micro_milli) in held {
        out.entry(uuid).or_default().push(GpuHolder {
            namespace,
            name,
            milli: u32::try_from(micro_milli / 1_000_000).unwrap_or(u32::MAX),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::podresources::{ContainerDevices, ContainerResources, PodResources};

    fn pod(name: &str, containers: Vec<(&str, Vec<String>)>) -> PodResources {
        PodResources {
            name: name.into(),
            namespace: "ml".into(),
            containers: containers
                .into_iter()
                .enumerate()
                .map(|(i, (resource, ids))| ContainerResources {
                    name: format!("c{i}"),
                    devices: vec![ContainerDevices {
                        resource_name: resource.into(),
                        device_ids: ids,
                        topology: None,
                    }],
                    ..ContainerResources::default()
                })
                .collect(),
        }
    }

    #[test]
    fn whole_gpus_and_shares_become_milli_per_pod() {
        let whole = ResourceSpec::whole("nvidia.com/gpu").unwrap();
        let share = ResourceSpec::share("phalanx.dev/gpu-milli", 1000).unwrap();
        let units = |uuid: &str, n: u32| (0..n).map(|u| format!("{uuid}::{u}")).collect::<Vec<_>>();
        let response = ListPodResourcesResponse {
            pod_resources: vec![
                pod(
                    "trainer",
                    vec![("nvidia.com/gpu", vec!["GPU-a".into(), "GPU-b".into()])],
                ),
                pod(
                    "infer",
                    vec![
                        ("phalanx.dev/gpu-milli", units("GPU-c", 250)),
                        ("phalanx.dev/gpu-milli", units("GPU-c", 100)),
                    ],
                ),
                pod("cpu-only", vec![("example.com/fpga", vec!["f0".into()])]),
            ],
        };
        let holders = gpu_holders(&response, &[whole, share]);
        assert_eq!(holders.len(), 3);
        assert_eq!(
            holders["GPU-a"],
            vec![GpuHolder {
                namespace: "ml".into(),
                name: "trainer".into(),
                milli: 1000
            }]
        );
        assert_eq!(
            holders["GPU-c"][0].milli, 350,
            "two containers of one pod add up"
        );

        let quarters = ResourceSpec::share("phalanx.dev/gpu-milli", 4).unwrap();
        let response = ListPodResourcesResponse {
            pod_resources: vec![pod("q", vec![("phalanx.dev/gpu-milli", units("GPU-d", 1))])],
        };
        assert_eq!(gpu_holders(&response, &[quarters])["GPU-d"][0].milli, 250);
    }
}
