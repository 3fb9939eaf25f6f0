//! Scale from zero and back, against a real Prometheus scraping a test
//! exporter and the real control plane (KWOK GPU node, kube-scheduler).
//!
//! A Deployment at zero replicas, `minReplicas: 0`, a vLLM queue that exists
//! only while a replica runs, and a gateway's queue as `spec.activation`:
//!
//! * at zero with the gateway empty it stays at zero, the absent vLLM queue
//!   being expected there, not stale;
//! * requests at the gateway wake it, `perReplica`-sized, with an `Activated`
//!   event that says why;
//! * with the gateway and the replicas idle, the metrics alone would scale to
//!   zero within seconds; the last replica stays for the whole cooldown, then
//!   goes with a `ScaledToZero` event;
//! * `minReplicas: 0` without an activation is refused, naming the field.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::autoscaler::{
    ActivationSpec, AutoscalerMetric, MetricPreset, MetricTargetSpec, CONDITION_METRICS_STALE,
    CONDITION_SCALING_ACTIVE,
};
use phalanx_api::InferenceAutoscaler;
use phalanx_e2e::autoscaler::{
    autoscaler_condition, autoscaling_cluster, events_about, gpu_deployments, prometheus_for_test,
    quick_autoscaler, scale_replicas, wait_autoscaler_condition, PrometheusServer, TestExporter,
};
use phalanx_e2e::wait;
use phalanx_e2e::Binaries;

const WAIT: Duration = Duration::from_secs(30);
/// Long against the metrics' own way to zero (2 s windows): a replica gone
/// before it is the activation failing, not the decider being slow.
const COOLDOWN_SECONDS: u32 = 8;
const ACTIVATION_QUERY: &str = "sum(gateway_queue_depth{model=\"llm\"})";

/// The exporter's text: the gateway's queue always, vLLM's only while a
/// replica runs (`None`: absent, as at zero).
fn exporter_text(gateway: u32, vllm: Option<u32>) -> String {
    let mut text = format!("gateway_queue_depth{{model=\"llm\"}} {gateway}\n");
    if let Some(waiting) = vllm {
        text.push_str(&format!(
            "vllm:num_requests_waiting{{model=\"llm\"}} {waiting}\n"
        ));
    }
    text
}

fn autoscaler(name: &str, target: &str, activation: Option<ActivationSpec>) -> InferenceAutoscaler {
    let queue = AutoscalerMetric {
        name: "queue".into(),
        query: None,
        preset: Some(MetricPreset::VllmQueueDepth),
        match_labels: BTreeMap::from([("model".to_owned(), "llm".to_owned())]),
        serving: None,
        target: MetricTargetSpec {
            per_replica: Some(10.0),
            total: None,
            queue_wait: None,
        },
    };
    quick_autoscaler(name, target, 0..=4, vec![queue], 4, activation)
}

async fn wait_replicas(deployments: &Api<Deployment>, count: i32) -> anyhow::Result<()> {
    wait::until_some(&format!("llm at {count} replicas"), WAIT, || {
        let deployments = deployments.clone();
        async move { Ok((scale_replicas(&deployments, "llm").await? == count).then_some(())) }
    })
    .await
}

/// Checks every 250 ms for `period` that `llm` keeps `count` replicas.
async fn stays_at(
    deployments: &Api<Deployment>,
    count: i32,
    period: Duration,
) -> anyhow::Result<()> {
    let until = Instant::now() + period;
    while Instant::now() < until {
        let now = scale_replicas(deployments, "llm").await?;
        anyhow::ensure!(now == count, "llm moved from {count} to {now} replicas");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Waits for an event about `llm` with `reason`; returns its note.
async fn wait_event(client: &kube::Client, reason: &str) -> anyhow::Result<String> {
    wait::until_some(&format!("a {reason} event"), WAIT, || async move {
        let events = events_about(client, "default", "llm").await?;
        Ok(events
            .into_iter()
            .find(|(r, _)| r == reason)
            .map(|(_, note)| note))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_wakes_on_its_gateway_and_sleeps_after_the_cooldown() -> anyhow::Result<()> {
    const TEST: &str = "a_deployment_wakes_on_its_gateway_and_sleeps_after_the_cooldown";
    let Some(binaries) = Binaries::for_test(TEST) else {
        return Ok(());
    };
    let Some(prometheus_bin) = prometheus_for_test(TEST) else {
        return Ok(());
    };
    let exporter = TestExporter::start(&exporter_text(0, None)).await?;
    let prometheus = PrometheusServer::start(&prometheus_bin, &[exporter.addr()]).await?;
    let (_plane, client) = autoscaling_cluster(binaries, 1, 4).await?;
    let deployments = gpu_deployments(&client, &["llm", "other"], 0).await?;
    let autoscalers: Api<InferenceAutoscaler> = Api::namespaced(client.clone(), "default");
    let activation = ActivationSpec {
        query: ACTIVATION_QUERY.into(),
        threshold: None,
        per_replica: Some(2.0),
        cooldown_seconds: Some(COOLDOWN_SECONDS),
    };
    autoscalers
        .create(
            &PostParams::default(),
            &autoscaler("llm", "llm", Some(activation)),
        )
        .await?;
    // Bad input: at zero nothing could ever wake this one.
    autoscalers
        .create(&PostParams::default(), &autoscaler("asleep", "other", None))
        .await?;
    let (stop, running) = common::start_autoscaler(&client, &prometheus.url(), "autoscaler-a")?;

    let message = wait_autoscaler_condition(
        &autoscalers,
        "asleep",
        CONDITION_SCALING_ACTIVE,
        ("False", "InvalidSpec"),
        "spec.minReplicas: 0 needs spec.activation",
        WAIT,
    )
    .await?;
    assert!(
        message.contains("serving metrics vanish with the last replica"),
        "{message}"
    );

    // (a) At zero, the gateway empty: idle, and it stays at zero.
    wait_autoscaler_condition(
        &autoscalers,
        "llm",
        CONDITION_SCALING_ACTIVE,
        ("True", "Idle"),
        "spec.activation 0 is at or below 0",
        WAIT,
    )
    .await?;
    stays_at(&deployments, 0, Duration::from_secs(5)).await?;
    let object = autoscalers.get("llm").await?;
    let status = object.status.clone().unwrap_or_default();
    let shown = status.activation.clone().expect("status.activation");
    assert_eq!((shown.value, shown.active), (Some(0.0), false), "{shown:?}");
    assert_eq!(shown.query.as_deref(), Some(ACTIVATION_QUERY));
    // The vLLM queue is absent at zero, as expected: not stale.
    let stale = autoscaler_condition(&object, CONDITION_METRICS_STALE).unwrap();
    assert_eq!(stale.status, "False", "{stale:?}");

    // (b) Three requests wait at the gateway: woken to ceil(3 / 2) = 2.
    exporter.set(&exporter_text(3, None));
    wait_replicas(&deployments, 2).await?;
    let note = wait_event(&client, "Activated").await?;
    assert_eq!(note, "spec.activation 3 > 0; New size: 2");
    let status = autoscalers.get("llm").await?.status.unwrap_or_default();
    assert!(
        status.activation.as_ref().is_some_and(|a| a.active),
        "{status:?}"
    );
    // The replicas serve: the gateway drains, vLLM reports a short queue.
    exporter.set(&exporter_text(1, Some(5)));
    wait::until_some("llm at 1 or 2 replicas, serving", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let now = scale_replicas(&deployments, "llm").await?;
            anyhow::ensure!(now >= 1, "scaled to zero with requests at the gateway");
            Ok((now == 1).then_some(()))
        }
    })
    .await?;

    // (c) All idle: the metrics want zero at once, the cooldown holds one.
    exporter.set(&exporter_text(0, Some(0)));
    let quiet = Instant::now();
    wait_autoscaler_condition(
        &autoscalers,
        "llm",
        CONDITION_SCALING_ACTIVE,
        ("True", "ActivationCooldown"),
        "the metrics allow zero replicas",
        WAIT,
    )
    .await?;
    wait::until_some("llm back at zero", WAIT, || {
        let deployments = deployments.clone();
        async move {
            let now = scale_replicas(&deployments, "llm").await?;
            anyhow::ensure!(
                now == 0 || now == 1,
                "llm at {now} replicas during the cooldown"
            );
            Ok((now == 0).then_some(()))
        }
    })
    .await?;
    let slept_after = quiet.elapsed();
    assert!(
        slept_after >= Duration::from_secs(COOLDOWN_SECONDS.into()),
        "the last replica went {slept_after:?} after the gateway emptied, within the cooldown"
    );
    let note = wait_event(&client, "ScaledToZero").await?;
    assert!(
        note.starts_with("spec.activation 0 is at or below 0 for ")
            && note.ends_with(&format!(
                "(cooldownSeconds {COOLDOWN_SECONDS}); New size: 0"
            )),
        "{note}"
    );

    // At zero again the vLLM queue vanishes; nothing wakes without requests.
    exporter.set(&exporter_text(0, None));
    wait_autoscaler_condition(
        &autoscalers,
        "llm",
        CONDITION_SCALING_ACTIVE,
        ("True", "Idle"),
        "",
        WAIT,
    )
    .await?;
    stays_at(&deployments, 0, Duration::from_secs(3)).await?;
    assert_eq!(scale_replicas(&deployments, "other").await?, 0);

    assert!(!running.is_finished(), "the autoscaler stopped");
    let _ = stop.send(());
    running.await??;
    drop(prometheus);
    Ok(())
}
