//! Pods for the end-to-end tests and the benchmark.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use phalanx_api::RESOURCE_WHOLE_GPU;

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
