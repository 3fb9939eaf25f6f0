//! The scheduler's live cluster gauges against a real control plane: once
//! 300 GPU shares are bound, `phalanx_scheduler_cluster_gpus` says per pool
//! what the simulator's fragmentation measure says for those placements, and
//! pods that cannot be placed are counted under the reason they wait for.
//!
//! Needs the control-plane binaries and `cargo build -p phalanx-scheduler`;
//! without them the test prints `skipped: <test>: <why>`, and with
//! `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::ListParams;
use kube::Api;
use phalanx_api::{ANNOTATION_GPU_MODELS, SCHEDULER_NAME};
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::wait::{self, wait_bound, WithLogs};
use phalanx_e2e::{
    assignment_of, create_gpu_nodes, create_pods, gpu_share_container, gpu_worker_container,
    node_of, wait_fake_nodes_ready, GpuNodeSpec, PhalanxOptions, PodBuilder,
};

const NS: &str = "default";
const POOL_LABEL: &str = "phalanx.dev/pool";
const GPUS_PER_NODE: u32 = 4;
const SHARE_MILLI: u32 = 300;

/// The value of the series `name{labels}` in a metrics text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Per pool: (allocated milli, fragmented milli, GPUs holding a share),
/// computed from the bound pods' GPU assignments the way the simulator
/// measures fragmentation when every pod of the workload is a 300-milli share
/// with no CPU: a GPU's free milli below 300 is of no use to it.
fn expected_by_pool(
    bound: &[Pod],
    pool_of_node: &HashMap<String, String>,
) -> BTreeMap<String, (u64, u64, u64)> {
    let mut used: HashMap<(String, u32), u32> = HashMap::new();
    for pod in bound {
        let assignment = assignment_of(pod).unwrap().unwrap();
        for gpu in &assignment.gpus {
            *used
                .entry((assignment.node.clone(), gpu.index))
                .or_default() += gpu.milli;
        }
    }
    let mut by_pool: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for (node, pool) in pool_of_node {
        let entry = by_pool.entry(pool.clone()).or_default();
        for index in 0..GPUS_PER_NODE {
            let taken = used.get(&(node.clone(), index)).copied().unwrap_or(0);
            let free = 1000 - taken;
            entry.0 += u64::from(taken);
            if free < SHARE_MILLI {
                entry.1 += u64::from(free);
            }
            entry.2 += u64::from(taken > 0);
        }
    }
    by_pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_gauges_match_the_measure_of_the_bound_pods_and_count_waits_by_reason(
) -> anyhow::Result<()> {
    let test = "cluster_gauges_match_the_measure_of_the_bound_pods_and_count_waits_by_reason";
    let Some((mut plane, binary)) = plane_with_scheduler(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    let train = GpuNodeSpec::with_gpus(GPUS_PER_NODE, "A100").label(POOL_LABEL, "train");
    create_gpu_nodes(&client, "train", 15, &train).await?;
    create_gpu_nodes(
        &client,
        "spare",
        15,
        &GpuNodeSpec::with_gpus(GPUS_PER_NODE, "A100"),
    )
    .await?;
    wait_fake_nodes_ready(&client, 30, Duration::from_secs(60)).await?;
    let scheduler = plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // More than the 256 pods the gauges learn the workload from.
    let shares: Vec<Pod> = (0..300)
        .map(|i| {
            PodBuilder::new(
                &format!("share-{i}"),
                SCHEDULER_NAME,
                gpu_share_container(SHARE_MILLI),
            )
            .build()
        })
        .collect();
    let names = create_pods(&pods, shares).await?;
    let bound = wait_bound(&pods, &names, Duration::from_secs(120))
        .await
        .with_logs(&plane)?;
    assert!(bound.iter().all(|p| node_of(p).is_some()));

    let nodes: Api<Node> = Api::all(client.clone());
    let pool_of_node: HashMap<String, String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|node| {
            let labels = node.metadata.labels.unwrap_or_default();
            labels.get("phalanx.dev/gpu-model")?;
            let pool = labels.get(POOL_LABEL).cloned().unwrap_or_default();
            Some((node.metadata.name?, pool))
        })
        .collect();
    let expected = expected_by_pool(&bound, &pool_of_node);
    assert_eq!(expected.len(), 2, "{expected:?}");
    let fragmented: u64 = expected.values().map(|e| e.1).sum();
    assert!(
        fragmented > 0,
        "300-milli shares leave GPUs with under 300 free: {expected:?}"
    );

    let series = |pool: &str, state: &str| {
        format!(
            "phalanx_scheduler_cluster_gpus{{model=\"A100\",pool=\"{pool}\",state=\"{state}\"}}"
        )
    };
    wait::until(
        "the gauges to show the bound pods",
        Duration::from_secs(30),
        || async {
            let text = scheduler.metrics().await.map_err(anyhow::Error::msg)?;
            for (pool, (allocated, fragmented, shared)) in &expected {
                let wanted = [
                    ("capacity", f64::from(GPUS_PER_NODE * 15)),
                    ("allocated", *allocated as f64 / 1000.0),
                    ("fragmented", *fragmented as f64 / 1000.0),
                ];
                for (state, value) in wanted {
                    let got = sample(&text, &series(pool, state));
                    if got.is_none_or(|got| (got - value).abs() > 1e-6) {
                        return Ok(Err(format!(
                            "{}: {got:?}, the bound pods say {value}",
                            series(pool, state)
                        )));
                    }
                }
                let shared_series =
                    format!("phalanx_scheduler_shared_gpus{{model=\"A100\",pool=\"{pool}\"}}");
                let got = sample(&text, &shared_series);
                if got != Some(*shared as f64) {
                    return Ok(Err(format!("{shared_series}: {got:?}, want {shared}")));
                }
            }
            Ok(Ok(()))
        },
    )
    .await
    .with_logs(&plane)?;

    // A pod for a model no node has waits on a constraint; one asking for
    // more GPUs than any node has waits for GPUs.
    create_pods(
        &pods,
        vec![
            PodBuilder::new("wants-v100", SCHEDULER_NAME, gpu_worker_container(1))
                .annotation(ANNOTATION_GPU_MODELS, "V100")
                .build(),
            PodBuilder::new("wants-eight", SCHEDULER_NAME, gpu_worker_container(8)).build(),
        ],
    )
    .await?;
    wait::until(
        "the waiting pods to be counted by reason",
        Duration::from_secs(30),
        || async {
            let text = scheduler.metrics().await.map_err(anyhow::Error::msg)?;
            let by_reason = |reason: &str| {
                sample(
                    &text,
                    &format!("phalanx_scheduler_pending_pods_by_reason{{reason=\"{reason}\"}}"),
                )
            };
            let oldest = sample(&text, "phalanx_scheduler_oldest_pending_seconds");
            Ok(
                if by_reason("constraint") == Some(1.0)
                    && by_reason("insufficient_gpu") == Some(1.0)
                    && by_reason("other") == Some(0.0)
                    && oldest.is_some_and(|age| age > 0.0)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "constraint {:?}, insufficient_gpu {:?}, other {:?}, oldest {oldest:?}",
                        by_reason("constraint"),
                        by_reason("insufficient_gpu"),
                        by_reason("other")
                    ))
                },
            )
        },
    )
    .await
    .with_logs(&plane)?;
    Ok(())
}
