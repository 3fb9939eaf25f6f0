//! The autoscaler against real things: a real Prometheus server scraping a
//! test exporter, and the real control plane with KWOK GPU nodes, a
//! Deployment and kube-scheduler.
//!
//! * Readings are real PromQL results; the vLLM KV-cache metric name in use is
//!   detected; a vanished series is absent (stale), never zero; several series,
//!   NaN and a query Prometheus rejects are invalid; with the namespace label
//!   enforced, queries read only their own namespace's series.
//! * A Deployment is scaled up and down through `/scale` on the exporter's
//!   queue depth; with too few free GPUs it stops at what fits and sets
//!   `CapacityLimited` with the numbers; a free GPU that another workload's
//!   pending pod will get is not counted as room for a replica.
//! * Bad input (target 0, min above max, several series, NaN) gives clear
//!   conditions and never moves the replicas.
//! * Two replicas share a Lease: the standby takes over when the leader stops
//!   and performs the scale-down.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::anyhow;
use common::{start_autoscaler, LEASE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use phalanx_api::autoscaler::{
    ActivationSpec, AutoscalerMetric, MetricPreset, MetricTargetSpec, CONDITION_CAPACITY_LIMITED,
    CONDITION_SCALING_ACTIVE,
};
use phalanx_api::InferenceAutoscaler;
use phalanx_autoscaler::controller::namespace_label::NamespaceBoundary;
use phalanx_autoscaler::controller::prometheus::{MetricRead, MetricsReader, Reading};
use phalanx_autoscaler::decision::{Behavior, MetricTarget};
use phalanx_autoscaler::promql::Matchers;
use phalanx_autoscaler::spec::{AutoscalerPlan, MetricPlan, MetricSource};
use phalanx_e2e::autoscaler::{
    autoscaling_cluster, events_about, prometheus_for_test, quick_autoscaler, scale_replicas,
    wait_autoscaler_condition, PrometheusServer, TestExporter,
};
use phalanx_e2e::wait::{self, wait_selected_bound};
use phalanx_e2e::{gpu_worker_container, lease_holder, Binaries, PodBuilder, PodSelector};

const WAIT: Duration = Duration::from_secs(30);

fn plan(name: &str, source: MetricSource, target: MetricTarget) -> MetricPlan {
    MetricPlan {
        name: name.to_owned(),
        source,
        target,
    }
}

fn preset(preset: MetricPreset) -> MetricSource {
    MetricSource::Preset {
        preset,
        matchers: Matchers::default(),
    }
}

fn raw(query: &str) -> MetricSource {
    MetricSource::Query(query.to_owned())
}

/// Reads `plan` until `accept` likes the reading; returns it.
async fn read_until(
    reader: &MetricsReader,
    plan: &MetricPlan,
    what: &str,
    accept: impl FnMut(&MetricRead) -> bool,
) -> anyhow::Result<MetricRead> {
    // Each look's future borrows it: one look at a time, so a RefCell.
    let accept = &std::cell::RefCell::new(accept);
    wait::until(
        &format!("{}: {what}", plan.name),
        WAIT,
        move || async move {
            let read = reader.read(plan, 1).await;
            let accepted = (accept.borrow_mut())(&read);
            Ok(if accepted {
                Ok(read)
            } else {
                Err(format!("last reading {read:?}"))
            })
        },
    )
    .await
}

fn value_of(read: &MetricRead) -> Option<f64> {
    match read.reading {
        Reading::Value { value, .. } => Some(value),
        _ => None,
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

const OLD_VLLM: &str = "\
vllm:num_requests_waiting{pod=\"a\"} 3
vllm:num_requests_waiting{pod=\"b\"} 4
vllm:gpu_cache_usage_perc{pod=\"a\"} 0.5
vllm:gpu_cache_usage_perc{pod=\"b\"} 0.7
odd_gauge NaN
";

const NEW_VLLM: &str = "\
vllm:num_requests_waiting{pod=\"a\"} 5
vllm:kv_cache_usage_perc{pod=\"a\"} 0.25
";

const ONLY_KV: &str = "vllm:kv_cache_usage_perc{pod=\"a\"} 0.25\n";

/// Two tenants' queues, each labelled with its namespace as Prometheus labels
/// what it scrapes in a cluster.
const TWO_TENANTS: &str = "\
vllm:num_requests_waiting{namespace=\"serving\",pod=\"a\"} 3
vllm:num_requests_waiting{namespace=\"billing\",pod=\"b\"} 40
";

/// `prometheus.enforceNamespaceLabel` against a real Prometheus: the rewritten
/// queries are PromQL Prometheus accepts, and they read only the autoscaler's
/// own namespace, where the same queries unbounded read the other tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_namespace_label_keeps_queries_in_their_namespace() -> anyhow::Result<()> {
    let Some(binary) =
        prometheus_for_test("enforced_namespace_label_keeps_queries_in_their_namespace")
    else {
        return Ok(());
    };
    let exporter = TestExporter::start(TWO_TENANTS).await?;
    let prometheus = PrometheusServer::start(&binary, &[exporter.addr()]).await?;
    let reader =
        MetricsReader::new(&prometheus.url(), Duration::from_secs(5)).map_err(|e| anyhow!(e))?;
    let unbounded = AutoscalerPlan {
        behavior: Behavior::with_bounds(1, 4),
        metrics: vec![
            plan(
                "raw",
                raw("sum(vllm:num_requests_waiting) + 0 * count(vllm:num_requests_waiting)"),
                MetricTarget::PerReplica(1.0),
            ),
            plan(
                "preset",
                preset(MetricPreset::VllmQueueDepth),
                MetricTarget::PerReplica(1.0),
            ),
        ],
        activation: None,
    };
    // Unbounded, both read the other tenant's queue too: 3 + 40.
    for metric in &unbounded.metrics {
        read_until(&reader, metric, "both tenants' queues", |r| {
            close(value_of(r), 43.0)
        })
        .await?;
    }
    let boundary = NamespaceBoundary {
        label: "namespace",
        namespace: "serving",
    };
    let bounded = boundary
        .enforce(unbounded.clone())
        .map_err(|problems| anyhow!("{problems:?}"))?;
    for metric in &bounded.metrics {
        let read = read_until(&reader, metric, "only its own namespace's queue", |r| {
            close(value_of(r), 3.0)
        })
        .await?;
        assert!(
            read.query.contains("namespace=\"serving\""),
            "{}",
            read.query
        );
    }
    // Asking for the other namespace is refused before anything is queried.
    let mut prying = unbounded;
    prying.metrics.truncate(1);
    prying.metrics[0].source = raw("sum(vllm:num_requests_waiting{namespace=\"billing\"})");
    let problems = boundary.enforce(prying).unwrap_err();
    assert_eq!(problems[0].field, "spec.metrics[0].query");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_readings_are_real_promql_results() -> anyhow::Result<()> {
    let Some(binary) = prometheus_for_test("prometheus_readings_are_real_promql_results") else {
        return Ok(());
    };
    let exporter = TestExporter::start(OLD_VLLM).await?;
    let prometheus = PrometheusServer::start(&binary, &[exporter.addr()]).await?;
    let reader =
        MetricsReader::new(&prometheus.url(), Duration::from_secs(5)).map_err(|e| anyhow!(e))?;

    // The vLLM queue preset sums both pods' gauges, as Prometheus computes it.
    let queue = plan(
        "queue",
        preset(MetricPreset::VllmQueueDepth),
        MetricTarget::PerReplica(10.0),
    );
    let read = read_until(&reader, &queue, "the sum 3 + 4", |r| {
        close(value_of(r), 7.0)
    })
    .await?;
    assert_eq!(read.query, "sum(vllm:num_requests_waiting)");
    // The sample time is Prometheus's scrape time, not ours and not zero.
    let Reading::Value { sampled_at, .. } = read.reading else {
        unreachable!("accepted a value")
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    assert!(
        sampled_at <= now + Duration::from_secs(2) && now.saturating_sub(sampled_at) < WAIT,
        "sampled at {sampled_at:?}, now {now:?}"
    );

    // Only the older KV-cache name is exported: it is detected and averaged.
    let kv = plan(
        "kv",
        preset(MetricPreset::VllmKvCacheUsage),
        MetricTarget::Total(0.8),
    );
    let read = read_until(&reader, &kv, "the old KV-cache metric", |r| {
        close(value_of(r), 0.6)
    })
    .await?;
    assert_eq!(read.query, "avg(vllm:gpu_cache_usage_perc)");

    // Garbage is refused, whatever a sum of it would have said.
    let several = reader
        .read(
            &plan(
                "raw",
                raw("vllm:num_requests_waiting"),
                MetricTarget::PerReplica(1.0),
            ),
            1,
        )
        .await;
    assert!(
        matches!(&several.reading, Reading::Invalid(why) if why.contains("returned 2 series")),
        "{several:?}"
    );
    let nan = reader
        .read(
            &plan("nan", raw("odd_gauge"), MetricTarget::PerReplica(1.0)),
            1,
        )
        .await;
    assert!(
        matches!(&nan.reading, Reading::Invalid(why) if why.contains("NaN")),
        "{nan:?}"
    );
    let bad = reader
        .read(
            &plan(
                "bad",
                raw("sum(vllm:num_requests_waiting"),
                MetricTarget::PerReplica(1.0),
            ),
            1,
        )
        .await;
    assert!(
        matches!(&bad.reading, Reading::Invalid(why) if why.contains("Prometheus rejected the query")),
        "{bad:?}"
    );

    // The fleet upgrades vLLM: the new name is found and preferred.
    exporter.set(NEW_VLLM);
    let read = read_until(&reader, &kv, "the new KV-cache metric", |r| {
        r.query == "avg(vllm:kv_cache_usage_perc)" && close(value_of(r), 0.25)
    })
    .await?;
    assert_eq!(read.name, "kv");
    read_until(&reader, &queue, "pod b's queue gone from the sum", |r| {
        close(value_of(r), 5.0)
    })
    .await?;

    // The queue series vanishes: absent, never a zero that would scale down.
    exporter.set(ONLY_KV);
    let mut zero_seen = false;
    read_until(
        &reader,
        &queue,
        "the vanished series to read as absent",
        |r| {
            zero_seen |= close(value_of(r), 0.0);
            r.reading == Reading::Absent
        },
    )
    .await?;
    assert!(!zero_seen, "a vanished series read as zero");

    // Prometheus itself unreachable: unavailable, not a number.
    let nowhere =
        MetricsReader::new("http://127.0.0.1:1", Duration::from_secs(2)).map_err(|e| anyhow!(e))?;
    let down = nowhere.read(&queue, 1).await;
    assert!(matches!(down.reading, Reading::Unavailable(_)), "{down:?}");
    drop(prometheus);
    Ok(())
}

/// A Deployment of one-GPU pods for kube-scheduler, deleted at once.
fn gpu_deployment(name: &str, replicas: i32) -> Deployment {
    PodBuilder::template("default-scheduler", gpu_worker_container(1))
        .termination_grace_seconds(0)
        .deployment(name, replicas)
}

/// A one-GPU pod for a scheduler that does not run here: it stays pending.
fn waiting_gpu_pod(name: &str) -> Pod {
    PodBuilder::new(name, "held-scheduler", gpu_worker_container(1))
        .termination_grace_seconds(0)
        .build()
}

fn autoscaler(
    name: &str,
    target: &str,
    min: u32,
    max: u32,
    metric: AutoscalerMetric,
) -> InferenceAutoscaler {
    // At zero only an activation could wake the workload: one that is always
    // quiet keeps what a minimum of 0 allows testable.
    let quiet = (min == 0).then(|| ActivationSpec {
        query: "vector(0)".into(),
        threshold: None,
        per_replica: None,
        cooldown_seconds: Some(0),
    });
    quick_autoscaler(name, target, min..=max, vec![metric], 8, quiet)
}

fn metric(name: &str, query: Option<&str>, per_replica: f64) -> AutoscalerMetric {
    AutoscalerMetric {
        name: name.into(),
        query: query.map(str::to_owned),
        preset: query.is_none().then_some(MetricPreset::VllmQueueDepth),
        match_labels: if query.is_none() {
            BTreeMap::from([("model".to_owned(), "llm".to_owned())])
        } else {
            BTreeMap::new()
        },
        serving: None,
        target: MetricTargetSpec {
            per_replica: Some(per_replica),
            total: None,
            queue_wait: None,
        },
    }
}

fn exporter_text(queue: u32) -> String {
    format!(
        "vllm:num_requests_waiting{{model=\"llm\"}} {queue}\n\
         garbage_multi{{shard=\"a\"}} 100\n\
         garbage_multi{{shard=\"b\"}} 200\n\
         garbage_nan NaN\n"
    )
}

/// Waits until `app` has `count` pods, all bound.
async fn wait_app_bound(pods: &Api<Pod>, app: &str, count: usize) -> anyhow::Result<()> {
    let selector = PodSelector::labels(&format!("app={app}"));
    wait_selected_bound(pods, &selector, count, Duration::from_secs(60)).await?;
    Ok(())
}

/// Waits until the autoscaler's condition has `status` and `reason`; returns
/// its message.
async fn wait_condition(
    api: &Api<InferenceAutoscaler>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<String> {
    wait_condition_saying(api, name, type_, (status, reason), "").await
}

async fn wait_condition_saying(
    api: &Api<InferenceAutoscaler>,
    name: &str,
    type_: &str,
    status_reason: (&str, &str),
    saying: &str,
) -> anyhow::Result<String> {
    wait_autoscaler_condition(api, name, type_, status_reason, saying, WAIT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scales_on_prometheus_within_gpu_capacity_and_garbage_moves_nothing(
) -> anyhow::Result<()> {
    const TEST: &str =
        "a_deployment_scales_on_prometheus_within_gpu_capacity_and_garbage_moves_nothing";
    let Some(binaries) = Binaries::for_test(TEST) else {
        return Ok(());
    };
    let Some(prometheus_bin) = prometheus_for_test(TEST) else {
        return Ok(());
    };
    let exporter = TestExporter::start(&exporter_text(0)).await?;
    let prometheus = PrometheusServer::start(&prometheus_bin, &[exporter.addr()]).await?;
    // 2 nodes × 2 GPUs: 4 GPUs in all, one of them for the `static` workload.
    let (_plane, client) = autoscaling_cluster(binaries, 2, 2).await?;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["static", "llm"] {
        deployments
            .create(&PostParams::default(), &gpu_deployment(name, 1))
            .await?;
    }
    for app in ["static", "llm"] {
        wait_app_bound(&pods, app, 1).await?;
    }

    let autoscalers: Api<InferenceAutoscaler> = Api::namespaced(client.clone(), "default");
    // Garbage, all aimed at `static`; acted on, each would move its replicas
    // (÷0 → max, min 3 > max 2, a sum of 300 → up, NaN read as 0 → down to 0).
    let garbage = [
        autoscaler("zero-target", "static", 1, 5, metric("queue", None, 0.0)),
        autoscaler("min-above-max", "static", 3, 2, metric("queue", None, 10.0)),
        autoscaler(
            "several-series",
            "static",
            0,
            5,
            metric("multi", Some("garbage_multi"), 10.0),
        ),
        autoscaler(
            "nan",
            "static",
            0,
            5,
            metric("nan", Some("garbage_nan"), 1.0),
        ),
    ];
    for object in
        garbage
            .iter()
            .chain([&autoscaler("llm", "llm", 1, 8, metric("queue", None, 10.0))])
    {
        autoscalers.create(&PostParams::default(), object).await?;
    }

    // Two replicas with leader election: `a` starts first and leads, `b`
    // stands by and takes over when `a` stops (before the scale-down).
    let (stop_a, running_a) = start_autoscaler(&client, &prometheus.url(), "autoscaler-a")?;
    wait::until_some("autoscaler-a to hold the Lease", WAIT, || {
        let client = client.clone();
        async move {
            let holder = lease_holder(&client, "default", LEASE).await?;
            Ok((holder.as_deref() == Some("autoscaler-a")).then_some(()))
        }
    })
    .await?;
    let (stop_b, running_b) = start_autoscaler(&client, &prometheus.url(), "autoscaler-b")?;

    // Bad input: clear conditions, and `static` keeps its one replica.
    let message = wait_condition(
        &autoscalers,
        "zero-target",
        CONDITION_SCALING_ACTIVE,
        "False",
        "InvalidSpec",
    )
    .await?;
    assert!(
        message.contains("spec.metrics[0].target: must be a number above 0"),
        "{message}"
    );
    let message = wait_condition(
        &autoscalers,
        "min-above-max",
        CONDITION_SCALING_ACTIVE,
        "False",
        "InvalidSpec",
    )
    .await?;
    assert!(
        message.contains("spec.minReplicas: must not be above spec.maxReplicas (2), got 3"),
        "{message}"
    );
    let message = wait_condition(
        &autoscalers,
        "several-series",
        CONDITION_SCALING_ACTIVE,
        "False",
        "InvalidMetric",
    )
    .await?;
    assert!(message.contains("returned 2 series"), "{message}");
    let message = wait_condition(
        &autoscalers,
        "nan",
        CONDITION_SCALING_ACTIVE,
        "False",
        "InvalidMetric",
    )
    .await?;
    assert!(message.contains("NaN"), "{message}");

    // Step 1: 20 waiting requests at 10 per replica → 2 replicas.
    exporter.set(&exporter_text(20));
    wait::until_some("llm scaled to 2", WAIT, || {
        let deployments = deployments.clone();
        async move { Ok((scale_replicas(&deployments, "llm").await? == 2).then_some(())) }
    })
    .await?;
    wait_app_bound(&pods, "llm", 2).await?;

    // Step 2: 80 waiting → 8 wanted, but 4 GPUs hold `static` and 2 llm
    // replicas: one GPU is free. Another workload's pod is waiting for a GPU
    // (its scheduler does not run here, so it stays pending): it comes before
    // new replicas, so none is added for that GPU.
    let batch = waiting_gpu_pod("batch");
    pods.create(&PostParams::default(), &batch).await?;
    exporter.set(&exporter_text(80));
    let message = wait_condition_saying(
        &autoscalers,
        "llm",
        CONDITION_CAPACITY_LIMITED,
        ("True", "InsufficientCapacity"),
        "pending pods of other workloads",
    )
    .await?;
    assert!(
        message.starts_with(
            "wanted 8 replicas but the cluster can place only 2: 2 placed now and room for 0 more \
             after 1 pending pods of other workloads that come first; holding at 2"
        ),
        "{message}"
    );
    assert_eq!(scale_replicas(&deployments, "llm").await?, 2);

    // Once that pod is gone, its GPU is for a replica, and the autoscaler says so.
    pods.delete("batch", &DeleteParams::default().grace_period(0))
        .await?;
    let message = wait_condition_saying(
        &autoscalers,
        "llm",
        CONDITION_CAPACITY_LIMITED,
        ("True", "InsufficientCapacity"),
        "can place only 3",
    )
    .await?;
    assert!(
        message.starts_with("wanted 8 replicas but the cluster can place only 3"),
        "{message}"
    );
    assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
    wait_app_bound(&pods, "llm", 3).await?;
    assert_eq!(
        scale_replicas(&deployments, "llm").await?,
        3,
        "never beyond what fits"
    );
    let status = autoscalers.get("llm").await?.status.unwrap_or_default();
    assert_eq!(status.desired_replicas, 8, "the metrics' wish is shown");
    assert_eq!(status.deciding_metric.as_deref(), Some("queue"));
    // No replica was created without a GPU: none of llm's pods is pending.
    let llm_pods = pods.list(&ListParams::default().labels("app=llm")).await?;
    assert_eq!(llm_pods.items.len(), 3, "{:?}", llm_pods.items.len());

    assert_eq!(
        lease_holder(&client, "default", LEASE).await?.as_deref(),
        Some("autoscaler-a"),
        "the standby never took over while the leader ran"
    );

    // The leader stops; the standby takes the Lease and carries on.
    let _ = stop_a.send(());
    running_a.await??;
    wait::until_some("autoscaler-b to take the Lease", WAIT, || {
        let client = client.clone();
        async move {
            let holder = lease_holder(&client, "default", LEASE).await?;
            Ok((holder.as_deref() == Some("autoscaler-b")).then_some(()))
        }
    })
    .await?;

    // Step 3: the burst is over → back to 1, scaled by the new leader.
    exporter.set(&exporter_text(5));
    wait::until_some("llm scaled down to 1", WAIT, || {
        let deployments = deployments.clone();
        async move { Ok((scale_replicas(&deployments, "llm").await? == 1).then_some(())) }
    })
    .await?;
    wait_condition(
        &autoscalers,
        "llm",
        CONDITION_CAPACITY_LIMITED,
        "False",
        "EnoughCapacity",
    )
    .await?;

    // The garbage never moved `static`, and the autoscaler is still running.
    assert_eq!(scale_replicas(&deployments, "static").await?, 1);
    assert!(!running_b.is_finished(), "the autoscaler stopped");
    for name in ["zero-target", "min-above-max", "several-series", "nan"] {
        let status = autoscalers.get(name).await?.status.unwrap_or_default();
        assert_eq!(
            (status.current_replicas, status.desired_replicas),
            (1, 1),
            "{name}: {status:?}"
        );
    }

    // Every change was announced, with its reason (events are written off the
    // control loop, so the last one may land a moment later).
    let events = wait::until_some("three rescale events", WAIT, || {
        let client = client.clone();
        async move {
            let events = events_about(&client, "default", "llm").await?;
            let rescales = events
                .iter()
                .filter(|(r, _)| r == "SuccessfulRescale")
                .count();
            Ok((rescales >= 3).then_some(events))
        }
    })
    .await?;
    let rescales: Vec<&String> = events
        .iter()
        .filter(|(reason, _)| reason == "SuccessfulRescale")
        .map(|(_, note)| note)
        .collect();
    assert!(
        rescales
            .iter()
            .any(|n| n.starts_with("New size: 2; reason: queue=20")),
        "{rescales:?}"
    );
    assert!(
        events
            .iter()
            .any(|(reason, _)| reason == "InsufficientCapacity"),
        "{events:?}"
    );
    let garbage_events = events_about(&client, "default", "nan").await?;
    assert!(
        garbage_events
            .iter()
            .any(|(reason, _)| reason == "InvalidMetric"),
        "{garbage_events:?}"
    );

    let _ = stop_b.send(());
    running_b.await??;
    Ok(())
}
