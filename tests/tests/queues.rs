//! Teams sharing a cluster, against a real control plane with KWOK GPU nodes
//! and Phalanx's scheduler: preemption by priority (a PodDisruptionBudget and
//! `preemptionPolicy: Never` honoured), two queues where one borrows idle GPUs
//! and the other takes its guarantee back, a gang reclaimed whole, a pod over
//! its queue's limit waiting with an event that says so, and Queues that
//! cannot be used reported in their status while their pods wait.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: …`, and with `PHALANX_E2E=1` it fails instead.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::{Queue, LABEL_POD_GROUP, LABEL_QUEUE, SCHEDULER_NAME};
use phalanx_e2e::phalanx::{plane_with_scheduler, quick_retry};
use phalanx_e2e::priority::{create_priority_class, PreemptionPolicy};
use phalanx_e2e::wait::{self, wait_bound, wait_pod_event, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_worker_container, node_of, pod_group, pods_named,
    wait_fake_nodes_ready, ControlPlane, GpuNodeSpec, PhalanxOptions, PodBuilder,
};
use serde_json::json;

const NS: &str = "default";

async fn start(
    test: &str,
    nodes: usize,
    gpus: u32,
    queues: bool,
) -> anyhow::Result<Option<ControlPlane>> {
    let Some((mut plane, binary)) = plane_with_scheduler(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    create_gpu_nodes(&client, "gpu", nodes, &GpuNodeSpec::with_gpus(gpus, "H100")).await?;
    wait_fake_nodes_ready(&client, nodes, Duration::from_secs(60)).await?;
    let mut extra = quick_retry();
    extra["queues"] = json!({ "enabled": queues });
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            extra,
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(Some(plane))
}

fn pod(name: &str, gpus: u32) -> PodBuilder {
    PodBuilder::new(name, SCHEDULER_NAME, gpu_worker_container(gpus)).termination_grace_seconds(0)
}

/// Live (not terminating) pods among `names`.
async fn alive(pods: &Api<Pod>, names: &[String]) -> anyhow::Result<Vec<Pod>> {
    Ok(pods_named(pods, names)
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

/// Waits until exactly one of `names` is bound; returns the one waiting.
async fn one_bound_one_waiting(pods: &Api<Pod>, names: &[String]) -> anyhow::Result<String> {
    wait::until(
        &format!("one of {names:?} bound"),
        Duration::from_secs(60),
        || async {
            let seen = pods_named(pods, names).await?;
            let bound = seen.iter().filter(|p| node_of(p).is_some()).count();
            Ok(match bound {
                1 => Ok(seen
                    .iter()
                    .find(|p| node_of(p).is_none())
                    .and_then(|p| p.metadata.name.clone())
                    .unwrap_or_default()),
                n => Err(format!("{n} bound")),
            })
        },
    )
    .await
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_priority_pod_preempts_around_a_budget_and_never_is_honoured() -> anyhow::Result<()>
{
    let test = "a_higher_priority_pod_preempts_around_a_budget_and_never_is_honoured";
    let Some(plane) = start(test, 1, 2, false).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_priority_class(&client, "low", 100, PreemptionPolicy::PreemptLowerPriority).await?;
    create_priority_class(
        &client,
        "high",
        1000,
        PreemptionPolicy::PreemptLowerPriority,
    )
    .await?;
    create_priority_class(&client, "high-never", 1000, PreemptionPolicy::Never).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    // Two low pods fill the node; a budget protects the first.
    let guarded = pod("guarded", 1)
        .priority_class("low")
        .label("app", "guarded")
        .build();
    let plain = pod("plain", 1).priority_class("low").build();
    let low = create_pods(&pods, vec![guarded, plain]).await?;
    wait_bound(&pods, &low, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let budget: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "guarded", "namespace": NS},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
    }))?;
    Api::<PodDisruptionBudget>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &budget)
        .await?;

    // A high pod that may not preempt waits and says why.
    create_pods(
        &pods,
        vec![pod("never", 1).priority_class("high-never").build()],
    )
    .await?;
    wait_pod_event(
        &client,
        NS,
        "never",
        "FailedScheduling",
        "preemptionPolicy is Never",
        Duration::from_secs(60),
    )
    .await
    .with_logs(&plane)?;
    pods.delete("never", &Default::default()).await?;

    // A high pod that may preempt takes the unguarded pod's GPU.
    let started = Instant::now();
    create_pods(&pods, vec![pod("urgent", 1).priority_class("high").build()]).await?;
    wait_bound(&pods, &["urgent".to_owned()], Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    println!("preempt and bind one pod: {:.2?}", started.elapsed());
    wait_pod_event(
        &client,
        NS,
        "plain",
        "Preempted",
        "default/urgent",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    let left = alive(&pods, &low).await?;
    let left: Vec<&str> = left
        .iter()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    assert_eq!(left, vec!["guarded"], "the budget's pod stays");
    Ok(())
}

fn queue(name: &str, guaranteed_gpus: u32, limit_gpus: Option<u32>) -> anyhow::Result<Queue> {
    let mut resource =
        json!({"resource": "nvidia.com/gpu", "guaranteed": guaranteed_gpus.to_string()});
    if let Some(limit) = limit_gpus {
        resource["limit"] = json!(limit.to_string());
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "phalanx.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {"resources": [resource]},
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_gets_its_guarantee_back_and_a_gang_is_reclaimed_whole() -> anyhow::Result<()> {
    let test = "a_queue_gets_its_guarantee_back_and_a_gang_is_reclaimed_whole";
    let Some(plane) = start(test, 2, 2, true).await? else {
        return Ok(());
    };
    let client = plane.client();
    let queues: Api<Queue> = Api::all(client.clone());
    for name in ["team-a", "team-b"] {
        queues
            .create(&PostParams::default(), &queue(name, 2, None)?)
            .await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let groups: Api<phalanx_api::PodGroup> = Api::namespaced(client.clone(), NS);
    // team-b borrows: two gangs of two one-GPU members fill all four GPUs.
    let mut borrowed = Vec::new();
    for gang in ["b1", "b2"] {
        groups
            .create(&PostParams::default(), &pod_group(NS, gang, 2))
            .await?;
        let members = (0..2)
            .map(|i| {
                pod(&format!("{gang}-{i}"), 1)
                    .label(LABEL_QUEUE, "team-b")
                    .label(LABEL_POD_GROUP, gang)
                    .build()
            })
            .collect();
        borrowed.extend(create_pods(&pods, members).await?);
    }
    wait_bound(&pods, &borrowed, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    // team-a asks for its guarantee and gets it back.
    let started = Instant::now();
    let wanted = names("a", 2);
    let asks = wanted
        .iter()
        .map(|n| pod(n, 1).label(LABEL_QUEUE, "team-a").build())
        .collect();
    create_pods(&pods, asks).await?;
    wait_bound(&pods, &wanted, Duration::from_secs(90))
        .await
        .with_logs(&plane)?;
    println!(
        "team-a's guarantee back (2 GPUs reclaimed): {:.2?}",
        started.elapsed()
    );
    // Exactly one gang went, whole; the other stays whole.
    let left = alive(&pods, &borrowed).await?;
    let mut gangs: Vec<String> = left
        .iter()
        .filter_map(|p| p.metadata.labels.as_ref()?.get(LABEL_POD_GROUP).cloned())
        .collect();
    gangs.sort();
    assert!(
        gangs == vec!["b1", "b1"] || gangs == vec!["b2", "b2"],
        "one gang reclaimed whole, the other left whole: {gangs:?}"
    );
    let victim = if gangs[0] == "b1" { "b2-0" } else { "b1-0" };
    wait_pod_event(
        &client,
        NS,
        victim,
        "Preempted",
        "for queue team-a",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    // The queue's status shows its usage and share.
    let status = wait::until(
        "Queue team-a status shows 2 GPUs used",
        Duration::from_secs(30),
        || async {
            let q = queues.get("team-a").await?;
            let gpu = q.status.and_then(|s| s.gpu);
            Ok(match gpu {
                Some(g) if g.used == "2" => Ok(g),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await
    .with_logs(&plane)?;
    assert_eq!(status.guaranteed, "2");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_limit_a_pod_waits_and_unusable_queues_say_why() -> anyhow::Result<()> {
    let test = "over_its_limit_a_pod_waits_and_unusable_queues_say_why";
    let Some(plane) = start(test, 1, 4, true).await? else {
        return Ok(());
    };
    let client = plane.client();
    let queues: Api<Queue> = Api::all(client.clone());
    queues
        .create(&PostParams::default(), &queue("capped", 0, Some(1))?)
        .await?;
    // A limit on one GPU model only: checked once the node (and so the
    // model) is chosen.
    let by_model: Queue = serde_json::from_value(json!({
        "apiVersion": "phalanx.dev/v1alpha1", "kind": "Queue",
        "metadata": {"name": "h100-capped"},
        "spec": {"resources": [{"resource": "nvidia.com/gpu", "model": "H100", "limit": "1"}]},
    }))?;
    queues.create(&PostParams::default(), &by_model).await?;
    // Limit below guarantee, a parent cycle, an unknown resource name.
    queues
        .create(&PostParams::default(), &queue("inverted", 2, Some(1))?)
        .await?;
    for (name, parent) in [("loop-a", "loop-b"), ("loop-b", "loop-a")] {
        let q: Queue = serde_json::from_value(json!({
            "apiVersion": "phalanx.dev/v1alpha1", "kind": "Queue",
            "metadata": {"name": name}, "spec": {"parent": parent},
        }))?;
        queues.create(&PostParams::default(), &q).await?;
    }
    let typo: Queue = serde_json::from_value(json!({
        "apiVersion": "phalanx.dev/v1alpha1", "kind": "Queue",
        "metadata": {"name": "typo"},
        "spec": {"resources": [{"resource": "nvidia.com/gpus", "guaranteed": "1"}]},
    }))?;
    queues.create(&PostParams::default(), &typo).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let capped = names("capped", 2);
    create_pods(
        &pods,
        capped
            .iter()
            .map(|n| pod(n, 1).label(LABEL_QUEUE, "capped").build())
            .collect(),
    )
    .await?;
    let model_capped = names("h100", 2);
    create_pods(
        &pods,
        model_capped
            .iter()
            .map(|n| pod(n, 1).label(LABEL_QUEUE, "h100-capped").build())
            .collect(),
    )
    .await?;
    let mut refused = Vec::new();
    for name in ["inverted", "loop-a", "typo"] {
        let pod_name = format!("in-{name}");
        create_pods(
            &pods,
            vec![pod(&pod_name, 1).label(LABEL_QUEUE, name).build()],
        )
        .await?;
        refused.push((pod_name, name));
    }
    // One capped pod runs, the other waits naming the limit; likewise under
    // the per-model limit.
    let over = one_bound_one_waiting(&pods, &capped)
        .await
        .with_logs(&plane)?;
    let over_model = one_bound_one_waiting(&pods, &model_capped)
        .await
        .with_logs(&plane)?;
    wait_pod_event(
        &client,
        NS,
        &over_model,
        "FailedScheduling",
        "gpu:H100, over its limit 1000",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    wait_pod_event(
        &client,
        NS,
        &over,
        "FailedScheduling",
        "over its limit 1000",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    // Pods of unusable queues wait, told why; the Queues say why too.
    for (pod_name, queue_name) in &refused {
        wait_pod_event(
            &client,
            NS,
            pod_name,
            "FailedScheduling",
            &format!("queue {queue_name} cannot be used"),
            Duration::from_secs(30),
        )
        .await
        .with_logs(&plane)?;
    }
    for (queue_name, says) in [
        ("inverted", "below its guarantee"),
        ("loop-a", "cycle"),
        ("typo", "unknown resource"),
    ] {
        wait::until(
            &format!("Queue {queue_name} Valid=False saying {says:?}"),
            Duration::from_secs(30),
            || async {
                let q = queues.get(queue_name).await?;
                let condition = q
                    .status
                    .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Valid"));
                Ok(match condition {
                    Some(c) if c.status == "False" && c.message.contains(says) => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            },
        )
        .await
        .with_logs(&plane)?;
    }
    let still: Vec<String> = refused.iter().map(|(p, _)| p.clone()).collect();
    assert!(
        pods_named(&pods, &still)
            .await?
            .iter()
            .all(|p| node_of(p).is_none()),
        "nothing is scheduled against an unusable queue"
    );
    Ok(())
}
