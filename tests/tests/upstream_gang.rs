//! Kubernetes' own gangs (`scheduling.k8s.io/v1beta1` PodGroup, pods joining
//! through `spec.schedulingGroup`) scheduled by Phalanx on a 1.37 control
//! plane that serves them, with KWOK GPU nodes:
//!
//! - a gang that fits binds whole and its PodGroup gets
//!   `PodGroupInitiallyScheduled=True`; one that cannot fit binds nothing and
//!   gets `PodGroupInitiallyScheduled=False` with reason `Unschedulable`; a pod
//!   naming a PodGroup that does not exist waits with an event naming it;
//! - two gangs that cannot both fit never deadlock: each binds whole or holds
//!   nothing, and at least one binds;
//! - a gang with a required topology key lands in one domain, and one that
//!   fits only across domains binds nothing;
//! - on a control plane without the upstream gang API, a plain pod and an
//!   annotation-form gang still schedule and the gauge says the upstream
//!   source is inactive.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: …`, and with `PHALANX_E2E=1` it fails instead.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::{ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, SCHEDULER_NAME};
use phalanx_e2e::phalanx::{plane_with_scheduler, plane_with_scheduler_and, quick_retry};
use phalanx_e2e::wait::{self, wait_pod_event, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_worker_container, node_facts, node_of, pods_named,
    upstream_pod_group, wait_fake_nodes_ready, ControlPlane, ControlPlaneOptions, GpuNodeSpec,
    PhalanxHandle, PhalanxOptions, PodBuilder,
};

const NS: &str = "default";
const RACK: &str = "example.com/rack";
const CONDITION: &str = "PodGroupInitiallyScheduled";
const SCHEDULED: (&str, &str) = ("True", "Scheduled");
const UNSCHEDULABLE: (&str, &str) = ("False", "Unschedulable");

/// `count` members of the upstream PodGroup `group`, named `{group}-{i}`, of
/// `gpus` GPUs each.
fn members(group: &str, count: usize, gpus: u32) -> Vec<Pod> {
    (0..count)
        .map(|i| {
            PodBuilder::new(
                &format!("{group}-{i}"),
                SCHEDULER_NAME,
                gpu_worker_container(gpus),
            )
            .scheduling_group(group)
            .build()
        })
        .collect()
}

/// `count` nodes of 8 GPUs named `{prefix}-{i}`, with `labels`.
async fn gpu_nodes(
    client: &kube::Client,
    prefix: &str,
    count: usize,
    labels: &[(&str, &str)],
) -> anyhow::Result<()> {
    let spec = labels.iter().fold(
        GpuNodeSpec {
            gpus: 8,
            model: "H100".to_owned(),
            ..GpuNodeSpec::default()
        },
        |spec, (key, value)| spec.label(key, value),
    );
    create_gpu_nodes(client, prefix, count, &spec).await?;
    Ok(())
}

/// Starts Phalanx's scheduler; unschedulable gangs are looked at again every
/// second, so competing gangs get many chances to take each other's GPUs.
async fn start_scheduler(
    plane: &mut ControlPlane,
    binary: std::path::PathBuf,
) -> anyhow::Result<PhalanxHandle> {
    let handle = plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            extra: quick_retry(),
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(handle)
}

/// The control plane with Phalanx running on two 8-GPU nodes per
/// `(prefix, labels)` group, and the pod and PodGroup APIs of [`NS`];
/// `None` when the test is skipped.
async fn gang_cluster(
    test: &str,
    node_groups: &[(&str, &[(&str, &str)])],
) -> anyhow::Result<Option<(ControlPlane, Api<Pod>, Api<UpstreamPodGroup>)>> {
    let Some((mut plane, binary)) = plane_with_scheduler(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    for (prefix, labels) in node_groups {
        gpu_nodes(&client, prefix, 2, labels).await?;
    }
    wait_fake_nodes_ready(&client, 2 * node_groups.len(), Duration::from_secs(60)).await?;
    start_scheduler(&mut plane, binary).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let groups: Api<UpstreamPodGroup> = Api::namespaced(client, NS);
    Ok(Some((plane, pods, groups)))
}

/// The PodGroup's `PodGroupInitiallyScheduled` condition.
async fn condition(
    groups: &Api<UpstreamPodGroup>,
    name: &str,
) -> anyhow::Result<Option<Condition>> {
    let group = groups.get(name).await?;
    Ok(group
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == CONDITION))
}

/// Waits until the condition has `status` and `reason` and its message
/// contains `containing`; returns it.
async fn wait_condition(
    plane: &ControlPlane,
    groups: &Api<UpstreamPodGroup>,
    name: &str,
    (status, reason): (&str, &str),
    containing: &str,
) -> anyhow::Result<Condition> {
    wait::until_some(
        &format!("PodGroup {name} {CONDITION}={status} ({reason}) saying {containing:?}"),
        Duration::from_secs(60),
        || async {
            Ok(condition(groups, name).await?.filter(|c| {
                c.status == status && c.reason == reason && c.message.contains(containing)
            }))
        },
    )
    .await
    .with_logs(plane)
}

/// How many of `names` are bound.
async fn bound(pods: &Api<Pod>, names: &[String]) -> anyhow::Result<usize> {
    Ok(pods_named(pods, names)
        .await?
        .iter()
        .filter(|p| node_of(p).is_some())
        .count())
}

/// Waits up to a minute until every pod of `names` is bound.
async fn wait_all_bound(what: &str, pods: &Api<Pod>, names: &[String]) -> anyhow::Result<()> {
    wait::until(what, Duration::from_secs(60), || async {
        let n = bound(pods, names).await?;
        Ok(if n == names.len() {
            Ok(())
        } else {
            Err(format!("{n} bound"))
        })
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_gangs_bind_whole_or_not_at_all_and_say_so() -> anyhow::Result<()> {
    let test = "upstream_gangs_bind_whole_or_not_at_all_and_say_so";
    let Some((plane, pods, groups)) = gang_cluster(test, &[("h100", &[])]).await? else {
        return Ok(());
    };
    let client = plane.client();

    // Fits: three members of four GPUs.
    groups
        .create(
            &PostParams::default(),
            &upstream_pod_group(NS, "fits", 3, None),
        )
        .await?;
    let fits = create_pods(&pods, members("fits", 3, 4)).await?;
    // Cannot fit: three whole 8-GPU nodes wanted, two exist (one half taken).
    groups
        .create(
            &PostParams::default(),
            &upstream_pod_group(NS, "huge", 3, None),
        )
        .await?;
    let huge = create_pods(&pods, members("huge", 3, 8)).await?;
    // Names a PodGroup nobody created.
    let orphan = create_pods(&pods, members("nowhere", 1, 1)).await?;

    wait_all_bound("all members of fits bound", &pods, &fits)
        .await
        .with_logs(&plane)?;
    let scheduled = wait_condition(&plane, &groups, "fits", SCHEDULED, "").await?;
    assert!(
        scheduled.last_transition_time.0.as_second() > 0,
        "{scheduled:?}"
    );

    // The message says why, as the members' events do.
    wait_condition(
        &plane,
        &groups,
        "huge",
        UNSCHEDULABLE,
        "required members fit",
    )
    .await?;
    assert_eq!(bound(&pods, &huge).await?, 0, "a partial gang was bound");

    wait_pod_event(
        &client,
        NS,
        &orphan[0],
        "FailedScheduling",
        "scheduling.k8s.io PodGroup default/nowhere not found",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    assert_eq!(bound(&pods, &orphan).await?, 0);

    // Still nothing of huge after more attempts, and fits stays True.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bound(&pods, &huge).await?, 0, "a partial gang was bound");
    let still = condition(&groups, "fits").await?;
    assert_eq!(still.map(|c| c.status).as_deref(), Some("True"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_upstream_gangs_never_deadlock() -> anyhow::Result<()> {
    let test = "competing_upstream_gangs_never_deadlock";
    let Some((plane, pods, groups)) = gang_cluster(test, &[("h100", &[])]).await? else {
        return Ok(());
    };

    // 16 GPUs; each gang wants 12. Members arrive interleaved, so a scheduler
    // placing pods one by one would give each gang some and neither all.
    for name in ["left", "right"] {
        groups
            .create(
                &PostParams::default(),
                &upstream_pod_group(NS, name, 3, None),
            )
            .await?;
    }
    let left = members("left", 3, 4);
    let right = members("right", 3, 4);
    let interleaved: Vec<Pod> = left
        .into_iter()
        .zip(right)
        .flat_map(|(l, r)| [l, r])
        .collect();
    let names = create_pods(&pods, interleaved).await?;
    let (left, right): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| n.starts_with("left"));

    let winner = wait::until_some("one gang bound whole", Duration::from_secs(60), || async {
        for (name, group) in [("left", &left), ("right", &right)] {
            if bound(&pods, group).await? == group.len() {
                return Ok(Some(name));
            }
        }
        Ok(None)
    })
    .await
    .with_logs(&plane)?;
    // Over several retries the other gang holds nothing.
    for _ in 0..12 {
        for (name, group) in [("left", &left), ("right", &right)] {
            let n = bound(&pods, group).await?;
            assert!(
                n == 0 || n == group.len(),
                "gang {name} holds {n} of {} members\n{}",
                group.len(),
                plane.phalanx_logs()
            );
            if name != winner {
                assert_eq!(n, 0, "both gangs bound: more GPUs than exist?");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let loser = if winner == "left" { "right" } else { "left" };
    wait_condition(&plane, &groups, winner, SCHEDULED, "").await?;
    wait_condition(
        &plane,
        &groups,
        loser,
        UNSCHEDULABLE,
        "required members fit",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_topology_key_keeps_the_gang_in_one_domain() -> anyhow::Result<()> {
    let test = "a_required_topology_key_keeps_the_gang_in_one_domain";
    // Two racks of two 8-GPU nodes.
    let racks: [(&str, &[(&str, &str)]); 2] =
        [("rack-a", &[(RACK, "a")]), ("rack-b", &[(RACK, "b")])];
    let Some((plane, pods, groups)) = gang_cluster(test, &racks).await? else {
        return Ok(());
    };
    let client = plane.client();

    // Three whole nodes fit the cluster but no rack: must bind nothing.
    groups
        .create(
            &PostParams::default(),
            &upstream_pod_group(NS, "wide", 3, Some(RACK)),
        )
        .await?;
    let wide = create_pods(&pods, members("wide", 3, 8)).await?;
    wait_condition(&plane, &groups, "wide", UNSCHEDULABLE, RACK).await?;
    assert_eq!(bound(&pods, &wide).await?, 0, "spanned racks");

    // Four members of four GPUs: one rack holds them.
    groups
        .create(
            &PostParams::default(),
            &upstream_pod_group(NS, "narrow", 4, Some(RACK)),
        )
        .await?;
    let narrow = create_pods(&pods, members("narrow", 4, 4)).await?;
    wait_all_bound("narrow bound", &pods, &narrow)
        .await
        .with_logs(&plane)?;
    let facts = node_facts(&client).await?;
    let racks: BTreeSet<String> = pods_named(&pods, &narrow)
        .await?
        .iter()
        .filter_map(node_of)
        .filter_map(|node| facts.label(node, RACK).map(str::to_owned))
        .collect();
    assert_eq!(racks.len(), 1, "narrow spans racks {racks:?}");
    wait_condition(&plane, &groups, "narrow", SCHEDULED, "").await?;
    assert_eq!(bound(&pods, &wide).await?, 0, "spanned racks");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_upstream_gang_api_other_pods_schedule_and_the_gauge_says_so(
) -> anyhow::Result<()> {
    let test = "without_the_upstream_gang_api_other_pods_schedule_and_the_gauge_says_so";
    let options = ControlPlaneOptions {
        upstream_gangs: false,
        ..ControlPlaneOptions::default()
    };
    let Some((mut plane, binary)) = plane_with_scheduler_and(test, options).await? else {
        return Ok(());
    };
    let client = plane.client();
    gpu_nodes(&client, "h100", 1, &[]).await?;
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;
    let scheduler = start_scheduler(&mut plane, binary).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    let plain = PodBuilder::new("plain", SCHEDULER_NAME, gpu_worker_container(1)).build();
    let gang: Vec<Pod> = (0..2)
        .map(|i| {
            PodBuilder::new(
                &format!("team-{i}"),
                SCHEDULER_NAME,
                gpu_worker_container(2),
            )
            .annotation(ANNOTATION_GANG_NAME, "team")
            .annotation(ANNOTATION_GANG_MIN_MEMBER, "2")
            .build()
        })
        .collect();
    let mut names = create_pods(&pods, vec![plain]).await?;
    names.extend(create_pods(&pods, gang).await?);
    wait_all_bound("the plain pod and the gang bound", &pods, &names)
        .await
        .with_logs(&plane)?;

    let metrics = scheduler.metrics().await.map_err(anyhow::Error::msg)?;
    for line in [
        "phalanx_scheduler_gang_source_active{source=\"podgroup\"} 0",
        "phalanx_scheduler_gang_source_active{source=\"compositepodgroup\"} 0",
        "phalanx_scheduler_gang_source_active{source=\"annotation\"} 1",
        // install_phalanx_crds installs the scheduler-plugins PodGroup CRD.
        "phalanx_scheduler_gang_source_active{source=\"scheduler-plugins-podgroup\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    Ok(())
}
