//! A `queueWait` target against a real Prometheus scraping a test exporter of
//! vLLM-shaped series, and the real control plane (KWOK GPU node,
//! kube-scheduler):
//!
//! * the exporter's gauges (requests running and waiting, KV-cache use) hold
//!   still while the inference-time histogram's `_sum` and `_count` counters
//!   climb, as a busy engine's do; the `vllmServing` preset reads them all,
//!   and the Deployment is scaled to the replicas `replicas_for_objective`
//!   gives for those numbers, with the series shown in the metric's status;
//! * garbage in one series (a NaN KV-cache gauge behind the preset, two
//!   series behind a `serving` block's waiting query) holds the replicas
//!   with `ScalingActive=False` naming the series.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::PostParams;
use kube::Api;
use phalanx_api::autoscaler::{
    AutoscalerMetric, MetricPreset, MetricTargetSpec, QueueWaitTarget, ServingQueries,
    CONDITION_SCALING_ACTIVE,
};
use phalanx_api::InferenceAutoscaler;
use phalanx_autoscaler::decision::{
    objective_defaults, replicas_for_objective, QueueObjective, ReplicaShape, ServingSignals,
};
use phalanx_e2e::autoscaler::{
    autoscaling_cluster, gpu_deployments, prometheus_for_test, quick_autoscaler, scale_replicas,
    wait_autoscaler_condition, PrometheusServer, TestExporter,
};
use phalanx_e2e::wait;
use phalanx_e2e::Binaries;

const WAIT: Duration = Duration::from_secs(60);

/// What the `llm` engine exports: a saturated replica (16 running of 8
/// slots' worth at half the KV cache, 8 waiting), requests holding a slot
/// 7.5 s each, 2 finishing per second.
const RUNNING: f64 = 16.0;
const WAITING: f64 = 8.0;
const KV: f64 = 0.5;
const SLOT_SECONDS: f64 = 7.5;
const FINISHED_PER_SECOND: f64 = 2.0;
const WAIT_SECONDS: f64 = 2.0;
const SLOTS: u32 = 8;

/// The exporter's text `elapsed` into the test: `llm`'s series, `other`'s
/// with a NaN KV-cache gauge, and a gauge with two series.
fn exporter_text(elapsed: f64) -> String {
    let count = FINISHED_PER_SECOND * elapsed;
    let sum = SLOT_SECONDS * count;
    let mut text = String::new();
    for (model, kv) in [("llm", KV.to_string()), ("other", "NaN".to_owned())] {
        text.push_str(&format!(
            "vllm:num_requests_running{{model=\"{model}\"}} {RUNNING}\n\
             vllm:num_requests_waiting{{model=\"{model}\"}} {WAITING}\n\
             vllm:kv_cache_usage_perc{{model=\"{model}\"}} {kv}\n\
             vllm:request_inference_time_seconds_sum{{model=\"{model}\"}} {sum}\n\
             vllm:request_inference_time_seconds_count{{model=\"{model}\"}} {count}\n"
        ));
    }
    text.push_str(
        "garbage_multi{shard=\"a\"} 1\n\
         garbage_multi{shard=\"b\"} 2\n",
    );
    text
}

/// The replicas the sizing gives for the exporter's `llm` numbers, unrounded.
fn expected_need() -> f64 {
    replicas_for_objective(
        &ServingSignals {
            running: RUNNING,
            waiting: WAITING,
            mean_slot_seconds: Some(SLOT_SECONDS),
            kv_cache_usage: Some(KV),
            // count(vllm:num_requests_running{model="llm"}): one exporter.
            ready_replicas: 1,
        },
        &ReplicaShape {
            slots: SLOTS,
            drain_seconds: objective_defaults::DRAIN_SECONDS,
        },
        &QueueObjective {
            wait_seconds: WAIT_SECONDS,
            attainment: objective_defaults::ATTAINMENT,
        },
    )
    .unwrap()
}

fn queue_wait() -> MetricTargetSpec {
    MetricTargetSpec {
        queue_wait: Some(QueueWaitTarget {
            seconds: WAIT_SECONDS,
            slots_per_replica: SLOTS,
            attainment: None,
            drain_seconds: None,
        }),
        ..MetricTargetSpec::default()
    }
}

fn vllm_serving(model: &str) -> AutoscalerMetric {
    AutoscalerMetric {
        name: "wait".into(),
        query: None,
        preset: Some(MetricPreset::VllmServing),
        match_labels: BTreeMap::from([("model".to_owned(), model.to_owned())]),
        serving: None,
        target: queue_wait(),
    }
}

/// A `serving` block like the preset's, but its waiting query returns two
/// series.
fn two_series_waiting() -> AutoscalerMetric {
    AutoscalerMetric {
        name: "wait".into(),
        query: None,
        preset: None,
        match_labels: BTreeMap::new(),
        serving: Some(ServingQueries {
            running: "sum(vllm:num_requests_running{model=\"llm\"})".into(),
            waiting: "garbage_multi".into(),
            mean_slot_seconds: "sum(rate(vllm:request_inference_time_seconds_sum[5m])) \
                / sum(rate(vllm:request_inference_time_seconds_count[5m]))"
                .into(),
            kv_cache_usage: None,
            ready_replicas: None,
        }),
        target: queue_wait(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scales_to_the_replicas_its_queue_wait_objective_needs() -> anyhow::Result<()>
{
    const TEST: &str = "a_deployment_scales_to_the_replicas_its_queue_wait_objective_needs";
    let Some(binaries) = Binaries::for_test(TEST) else {
        return Ok(());
    };
    let Some(prometheus_bin) = prometheus_for_test(TEST) else {
        return Ok(());
    };
    let need = expected_need();
    let want = need.ceil() as i32;
    assert!(
        (2..=6).contains(&want),
        "the numbers must ask for a scale-up that fits the node: {need}"
    );

    let started = Instant::now();
    let exporter = TestExporter::start(&exporter_text(0.0)).await?;
    let prometheus = PrometheusServer::start(&prometheus_bin, &[exporter.addr()]).await?;
    // The counters climb as requests finish; the gauges hold still.
    let climbing = {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let exporter = std::sync::Arc::new(exporter);
        let writer = exporter.clone();
        tokio::spawn(async move {
            loop {
                writer.set(&exporter_text(started.elapsed().as_secs_f64()));
                tokio::select! {
                    _ = &mut stopped => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        (stop, exporter)
    };

    let (_plane, client) = autoscaling_cluster(binaries, 1, 8).await?;
    let deployments = gpu_deployments(&client, &["llm", "other"], 1).await?;
    let autoscalers: Api<InferenceAutoscaler> = Api::namespaced(client.clone(), "default");
    for object in [
        quick_autoscaler("llm", "llm", 1..=8, vec![vllm_serving("llm")], 8, None),
        // Garbage, both aimed at `other`: acted on, either would scale it.
        quick_autoscaler(
            "nan-kv",
            "other",
            1..=8,
            vec![vllm_serving("other")],
            8,
            None,
        ),
        quick_autoscaler(
            "two-series",
            "other",
            1..=8,
            vec![two_series_waiting()],
            8,
            None,
        ),
    ] {
        autoscalers.create(&PostParams::default(), &object).await?;
    }
    let (stop, running) = common::start_autoscaler(&client, &prometheus.url(), "autoscaler-a")?;

    // The objective's replicas, and the series behind them in the status.
    wait::until_some(&format!("llm at {want} replicas"), WAIT, || {
        let deployments = deployments.clone();
        async move { Ok((scale_replicas(&deployments, "llm").await? == want).then_some(())) }
    })
    .await?;
    let shown = wait::until(
        "llm's status showing the sizing with a slot time",
        WAIT,
        || async {
            let object = autoscalers.get("llm").await?;
            let metric = object
                .status
                .as_ref()
                .and_then(|s| s.metrics.first().cloned());
            Ok(match metric {
                Some(m)
                    if m.detail
                        .as_deref()
                        .is_some_and(|d| d.contains("slot 7.5 s")) =>
                {
                    Ok(m)
                }
                other => Err(format!("last metric status: {other:?}")),
            })
        },
    )
    .await?;
    let detail = shown.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("running 16, waiting 8, slot 7.5 s, KV 0.5, ready 1 -> "),
        "{detail}"
    );
    let value = shown.value.expect("the need read");
    assert!((value - need).abs() < 1e-6, "read {value}, sized {need}");
    let query = shown.query.unwrap_or_default();
    assert!(
        query.contains("vllm:request_inference_time_seconds_count{model=\"llm\"}[5m]"),
        "{query}"
    );
    // It stays there: the sizing is steady while the numbers are.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(scale_replicas(&deployments, "llm").await?, want);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Garbage in one series holds, naming it; `other` keeps its replica.
    let message = wait_autoscaler_condition(
        &autoscalers,
        "nan-kv",
        CONDITION_SCALING_ACTIVE,
        ("False", "InvalidMetric"),
        "wait: kvCacheUsage: the query returned NaN",
        WAIT,
    )
    .await?;
    assert!(message.contains("replicas held at 1"), "{message}");
    let message = wait_autoscaler_condition(
        &autoscalers,
        "two-series",
        CONDITION_SCALING_ACTIVE,
        ("False", "InvalidMetric"),
        "wait: waiting: the query returned 2 series",
        WAIT,
    )
    .await?;
    assert!(message.contains("replicas held at 1"), "{message}");
    assert_eq!(scale_replicas(&deployments, "other").await?, 1);

    let _ = stop.send(());
    running.await??;
    let _ = climbing.0.send(());
    drop(prometheus);
    Ok(())
}
