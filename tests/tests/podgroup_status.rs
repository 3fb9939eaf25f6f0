//! A scheduler-plugins PodGroup whose gang times out is `Failed`, and stays so,
//! against a real control plane with KWOK GPU nodes and Phalanx's scheduler
//! (a short gang timeout in its config).
//!
//! Two gangs cannot be placed: one whose members never all arrive, one whose
//! members do not fit the cluster. Each PodGroup must reach `Failed` (Phalanx
//! reports a gang past its timeout so; see `podgroup_phase`), then keep exactly
//! that status, unwritten, while the scheduler keeps retrying the gang, and its
//! members stay unbound. Before the status had one ordered writer, the attempt
//! that found the timeout wrote `Failed` and `Pending` (or `Scheduling`) from
//! two concurrent patches, so the PodGroup usually ended up not `Failed`. A
//! gang that fits is the control: its PodGroup is written `Scheduled`.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them the test prints
//! `skipped: …`, and with `PHALANX_E2E=1` it fails instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::{PodGroup, PodGroupStatus, LABEL_POD_GROUP, SCHEDULER_NAME};
use phalanx_e2e::phalanx::quick_retry;
use phalanx_e2e::wait::{self, WithLogs};
use phalanx_e2e::{
    assignment_of, create_gpu_nodes, create_pods, gpu_worker_container, install_phalanx_crds,
    node_of, phalanx_scheduler_for_test, pod_events, pod_group, pods_named, wait_fake_nodes_ready,
    Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions, PodBuilder,
};

const NS: &str = "default";
/// `gangs.defaultTimeoutSeconds` for the scheduler (no PodGroup sets its own).
const GANG_TIMEOUT_SECONDS: u32 = 3;
/// How long a `Failed` PodGroup is watched for any change.
const STEADY_FOR: Duration = Duration::from_secs(8);

/// `count` members of PodGroup `group`, named `{group}-{i}`, of `gpus` GPUs each.
fn members(group: &str, count: usize, gpus: u32) -> Vec<Pod> {
    (0..count)
        .map(|i| {
            PodBuilder::new(
                &format!("{group}-{i}"),
                SCHEDULER_NAME,
                gpu_worker_container(gpus),
            )
            .label(LABEL_POD_GROUP, group)
            .build()
        })
        .collect()
}

/// The PodGroup's status and resourceVersion.
async fn observe(
    groups: &Api<PodGroup>,
    name: &str,
) -> anyhow::Result<(Option<PodGroupStatus>, Option<String>)> {
    let group = groups.get(name).await?;
    Ok((group.status, group.metadata.resource_version))
}

fn phase(status: Option<&PodGroupStatus>) -> Option<&str> {
    status.and_then(|s| s.phase.as_deref())
}

/// Members of `names` that are bound or carry a GPU assignment.
async fn touched(pods: &Api<Pod>, names: &[String]) -> anyhow::Result<Vec<String>> {
    Ok(pods_named(pods, names)
        .await?
        .iter()
        .filter(|p| node_of(p).is_some() || assignment_of(p).is_some())
        .filter_map(|p| p.metadata.name.clone())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_pod_group_is_failed_and_stays_failed() -> anyhow::Result<()> {
    let test = "a_timed_out_pod_group_is_failed_and_stays_failed";
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(binary) = phalanx_scheduler_for_test(test) else {
        return Ok(());
    };
    let mut plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let spec = GpuNodeSpec {
        gpus: 8,
        model: "H100".to_owned(),
        ..GpuNodeSpec::default()
    };
    create_gpu_nodes(&client, "h100", 2, &spec).await?;
    wait_fake_nodes_ready(&client, 2, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            gang_timeout_seconds: Some(GANG_TIMEOUT_SECONDS),
            // An unschedulable gang is looked at again every second, so the
            // scheduler keeps deciding about the timed-out gangs while the
            // test watches their status.
            extra: quick_retry(),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NS);

    // The control: two one-GPU members, placed at once.
    groups
        .create(&PostParams::default(), &pod_group(NS, "fits", 2))
        .await?;
    let fits = create_pods(&pods, members("fits", 2, 1)).await?;
    // Members that never all arrive: two of four.
    groups
        .create(&PostParams::default(), &pod_group(NS, "short", 4))
        .await?;
    let short = create_pods(&pods, members("short", 2, 1)).await?;
    // Members that do not fit: three whole 8-GPU nodes wanted, two exist.
    groups
        .create(&PostParams::default(), &pod_group(NS, "huge", 3))
        .await?;
    let huge = create_pods(&pods, members("huge", 3, 8)).await?;

    let placed = wait::until(
        "PodGroup fits Scheduled with both members bound",
        Duration::from_secs(60),
        || async {
            let (status, _) = observe(&groups, "fits").await?;
            let bound = pods_named(&pods, &fits)
                .await?
                .iter()
                .filter(|p| node_of(p).is_some())
                .count();
            Ok(match phase(status.as_ref()) {
                Some("Scheduled" | "Running") if bound == fits.len() => Ok(status),
                _ => Err(format!("status {status:?}, {bound} bound")),
            })
        },
    )
    .await
    .with_logs(&plane)?;
    let placed = placed.context("the control's PodGroup has no status")?;
    assert_eq!(placed.scheduled, 2, "{placed:?}");
    assert!(placed.schedule_start_time.is_some(), "{placed:?}");

    let timeout = Duration::from_secs(u64::from(GANG_TIMEOUT_SECONDS));
    let mut failed = BTreeMap::new();
    for (name, names) in [("short", &short), ("huge", &huge)] {
        let seen = wait::until(
            &format!("PodGroup {name} Failed"),
            timeout + Duration::from_secs(60),
            || async {
                let (status, version) = observe(&groups, name).await?;
                Ok(match phase(status.as_ref()) {
                    Some("Failed") => Ok((status, version)),
                    _ => Err(format!("status {status:?}")),
                })
            },
        )
        .await
        .with_logs(&plane)?;
        let status = seen.0.as_ref().context("Failed without a status")?;
        assert_eq!(status.scheduled, 0, "{name}: {status:?}");
        assert!(status.schedule_start_time.is_some(), "{name}: {status:?}");
        let untouched = touched(&pods, names).await?;
        assert!(
            untouched.is_empty(),
            "{name}: members bound or annotated: {untouched:?}"
        );
        failed.insert(name, seen);
    }

    // Every waiting member was told why.
    let events = pod_events(&client, NS).await?;
    for member in short.iter().chain(&huge) {
        assert!(
            events.iter().any(|e| &e.pod == member
                && e.reason == "FailedScheduling"
                && e.note.contains("timed out")),
            "{member}: no FailedScheduling event saying the gang timed out"
        );
    }

    // The scheduler keeps retrying both gangs: their PodGroups must not change
    // at all (no stale Pending or Scheduling lands after Failed, and nothing is
    // rewritten), and their members stay unbound.
    let steady_until = Instant::now() + STEADY_FOR;
    let mut polls = 0;
    while Instant::now() < steady_until {
        for (name, names) in [("short", &short), ("huge", &huge)] {
            let now = observe(&groups, name).await?;
            assert_eq!(
                &now,
                &failed[name],
                "PodGroup {name} changed after Failed (status, resourceVersion) after {polls} polls\n{}",
                plane.phalanx_logs()
            );
            let bound = touched(&pods, names).await?;
            assert!(bound.is_empty(), "{name}: members bound: {bound:?}");
        }
        polls += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(polls >= 10, "only {polls} polls in {STEADY_FOR:?}");
    Ok(())
}
