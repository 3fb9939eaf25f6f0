//! Pods for the end-to-end tests and the benchmark.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use phalanx_api::{
    GpuAssignmentAnnotation, ANNOTATION_GPU_ASSIGNMENT, MILLI_PER_GPU, RESOURCE_GPU_MILLI,
    RESOURCE_WHOLE_GPU,
};

/// Creates `pods` one by one; returns their names in order.
pub async fn create_pods(api: &Api<Pod>, pods: Vec<Pod>) -> crate::Result<Vec<String>> {
    let mut names = Vec::new();
    for pod in pods {
        names.push(pod.metadata.name.clone().unwrap_or_default());
        api.create(&PostParams::default(), &pod).await?;
    }
    Ok(names)
}

/// A container asking for `gpus` whole GPUs (request = limit). Its image never runs:
/// KWOK nodes only pretend to start it.
pub fn gpu_worker_container(gpus: u32) -> Container {
    let gpu = BTreeMap::from([(RESOURCE_WHOLE_GPU.to_owned(), Quantity(gpus.to_string()))]);
    Container {
        name: "worker".to_owned(),
        image: Some("example.invalid/worker:1".to_owned()),
        resources: Some(ResourceRequirements {
            requests: Some(gpu.clone()),
            limits: Some(gpu),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// A container asking for `milli` thousandths of one GPU
/// (`phalanx.dev/gpu-milli`, request = limit).
pub fn gpu_share_container(milli: u32) -> Container {
    let share = BTreeMap::from([(RESOURCE_GPU_MILLI.to_owned(), Quantity(milli.to_string()))]);
    Container {
        name: "worker".to_owned(),
        image: Some("example.invalid/worker:1".to_owned()),
        resources: Some(ResourceRequirements {
            requests: Some(share.clone()),
            limits: Some(share),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    }
}

/// A pod named `name` with one container, for `scheduler_name`.
pub fn pod_for(name: &str, scheduler_name: &str, container: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some(scheduler_name.to_owned()),
            containers: vec![container],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// What a pod asks of GPUs: whole GPUs and thousandths of one, summed over
/// its containers' requests.
pub fn gpu_request(pod: &Pod) -> (u32, u32) {
    let mut whole = 0;
    let mut milli = 0;
    for container in pod.spec.iter().flat_map(|s| &s.containers) {
        let Some(requests) = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
        else {
            continue;
        };
        let get = |key: &str| {
            requests
                .get(key)
                .and_then(|q| q.0.parse::<u32>().ok())
                .unwrap_or(0)
        };
        whole += get(RESOURCE_WHOLE_GPU);
        milli += get(RESOURCE_GPU_MILLI);
    }
    (whole, milli)
}

/// The node a pod is bound to.
pub fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// The pod's `phalanx.dev/gpu-assignment` annotation: `None` when absent.
pub fn assignment_of(pod: &Pod) -> Option<Result<GpuAssignmentAnnotation, String>> {
    let value = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_GPU_ASSIGNMENT)?;
    Some(GpuAssignmentAnnotation::parse(value).map_err(|e| e.to_string()))
}

/// Every way the bound pods' GPU assignments break the rules, as messages
/// (empty when all is well): each bound pod has an assignment naming its node;
/// it gives a whole-GPU pod that many distinct GPUs of 1000 and a share pod
/// one GPU with its share; indexes exist on the node (`gpus_per_node`, when
/// the node is listed); and no GPU is promised more than 1000 milli in total.
pub fn assignment_violations(pods: &[Pod], gpus_per_node: &HashMap<String, u32>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut per_gpu: BTreeMap<(String, u32), Vec<(String, u32)>> = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(node) = node_of(pod) else { continue };
        let assignment = match assignment_of(pod) {
            None => {
                problems.push(format!("{name} is bound to {node} without an assignment"));
                continue;
            }
            Some(Err(e)) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
            Some(Ok(a)) => a,
        };
        if assignment.node != node {
            problems.push(format!(
                "{name} is bound to {node} but its assignment names {}",
                assignment.node
            ));
        }
        let (whole, milli) = gpu_request(pod);
        let indexes: HashSet<u32> = assignment.gpus.iter().map(|g| g.index).collect();
        if indexes.len() != assignment.gpus.len() {
            problems.push(format!("{name} names a GPU twice: {assignment:?}"));
        }
        if whole > 0 {
            let all_full = assignment.gpus.iter().all(|g| g.milli == MILLI_PER_GPU);
            if assignment.gpus.len() != whole as usize || !all_full {
                problems.push(format!(
                    "{name} asks {whole} whole GPUs but was given {assignment:?}"
                ));
            }
        } else if milli > 0 {
            let total: u32 = assignment.gpus.iter().map(|g| g.milli).sum();
            if assignment.gpus.len() != 1 || total != milli {
                problems.push(format!(
                    "{name} asks {milli} milli of one GPU but was given {assignment:?}"
                ));
            }
        }
        for gpu in &assignment.gpus {
            if let Some(&count) = gpus_per_node.get(node) {
                if gpu.index >= count {
                    problems.push(format!(
                        "{name} was given GPU {} of {node}, which has {count}",
                        gpu.index
                    ));
                }
            }
            per_gpu
                .entry((node.to_owned(), gpu.index))
                .or_default()
                .push((name.clone(), gpu.milli));
        }
    }
    for ((node, index), holders) in per_gpu {
        let total: u32 = holders.iter().map(|(_, m)| m).sum();
        if total > MILLI_PER_GPU {
            problems.push(format!(
                "GPU {index} of {node} is over-committed ({total} milli): {holders:?}"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use phalanx_api::AssignedGpu;

    fn bound(name: &str, node: &str, container: Container, gpus: &[(u32, u32)]) -> Pod {
        let mut pod = pod_for(name, "phalanx", container);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(node.to_owned());
        }
        let assignment = GpuAssignmentAnnotation {
            node: node.to_owned(),
            gpus: gpus
                .iter()
                .map(|&(index, milli)| AssignedGpu {
                    index,
                    uuid: String::new(),
                    milli,
                })
                .collect(),
        };
        pod.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_GPU_ASSIGNMENT.to_owned(),
            assignment.to_json(),
        )]));
        pod
    }

    #[test]
    fn accepts_a_valid_packing_and_names_an_overcommitted_gpu() {
        let nodes = HashMap::from([("n".to_owned(), 2)]);
        let ok = vec![
            bound("a", "n", gpu_worker_container(1), &[(0, 1000)]),
            bound("b", "n", gpu_share_container(600), &[(1, 600)]),
            bound("c", "n", gpu_share_container(400), &[(1, 400)]),
        ];
        assert!(assignment_violations(&ok, &nodes).is_empty());
        let mut bad = ok;
        bad.push(bound("d", "n", gpu_share_container(100), &[(1, 100)]));
        bad.push(bound("e", "n", gpu_worker_container(1), &[(2, 1000)]));
        let problems = assignment_violations(&bad, &nodes);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("over-committed")));
        assert!(problems.iter().any(|p| p.contains("GPU 2 of n")));
    }
}
