//! The fault suite: what production does to a scheduler, on a real control
//! plane with KWOK GPU nodes. Each test injects one fault while Phalanx is
//! scheduling and then asserts the same rules: no pod lost, none bound twice,
//! no GPU promised twice, and recovery within a generous deadline; the
//! recovery time it measured is printed (`recovery: ...`) for the record.
//!
//! * the API server stopped for 30 s and started again;
//! * a watch expired by etcd compaction (410 Gone) and the relist that follows,
//!   with pods deleted and created while the scheduler could not see them;
//! * a node deleted while pods are assumed on it (bindings rate-limited, so
//!   some are still queued when the node goes).
//!
//! The leader killed in the middle of a gang bind is `tests/gang_failover.rs`;
//! the device plugin cut off from the API server is `tests/device_plugin.rs`.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use phalanx_api::SCHEDULER_NAME;
use phalanx_e2e::ledger::{invariant_violations, BindingLedger};
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::process::is_alive;
use phalanx_e2e::wait::{self, wait_bound, wait_selected_bound, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_worker_container, lease_holder, node_of,
    wait_fake_nodes_ready, ControlPlane, GpuNodeSpec, LeaderElectionOptions, PhalanxHandle,
    PhalanxOptions, PodBuilder, PodSelector,
};

const NS: &str = "default";
/// How long the API server stays down in the outage test (the 30 s).
const OUTAGE: Duration = Duration::from_secs(30);
/// Deadline for the apiserver to come back (it rebuilds its watch caches).
const APISERVER_START: Duration = Duration::from_secs(90);
/// Generous deadline for scheduling to recover; the measured time is printed.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(120);

/// A control plane with the Phalanx CRDs, or `None` when the test is skipped.
async fn plane_for(test: &str) -> anyhow::Result<Option<(ControlPlane, PathBuf)>> {
    Ok(plane_with_scheduler(test).await?)
}

fn one_gpu_pods(prefix: &str, range: std::ops::Range<usize>) -> (Vec<String>, Vec<Pod>) {
    range
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let pod = PodBuilder::new(&name, SCHEDULER_NAME, gpu_worker_container(1)).build();
            (name, pod)
        })
        .unzip()
}

/// One replica with leader election on, as the chart runs it: an outage long
/// enough to lose the Lease must make it step down and take over again.
async fn start_scheduler(
    plane: &mut ControlPlane,
    binary: PathBuf,
    election: &LeaderElectionOptions,
    extra: serde_json::Value,
) -> anyhow::Result<PhalanxHandle> {
    Ok(plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            leader_election: Some(election.clone()),
            extra,
            ..PhalanxOptions::default()
        })
        .await?)
}

/// Fails with every broken rule among the live pods and the ledger.
async fn assert_no_damage(
    plane: &ControlPlane,
    pods: &Api<Pod>,
    ledger: BindingLedger,
) -> anyhow::Result<()> {
    let live = pods.list(&Default::default()).await?.items;
    let mut problems = invariant_violations(&plane.client(), &live).await?;
    let records = ledger.finish(Duration::from_secs(2)).await;
    problems.extend(
        records
            .values()
            .filter(|r| r.nodes.len() > 1)
            .map(|r| format!("{} was bound to {:?}", r.name, r.nodes)),
    );
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        plane.phalanx_logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_stopped_for_30_seconds_loses_nothing() -> anyhow::Result<()> {
    let test = "the_api_server_stopped_for_30_seconds_loses_nothing";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "gpu", 4, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    wait_fake_nodes_ready(&client, 4, Duration::from_secs(60)).await?;
    let election = LeaderElectionOptions {
        lease_duration_seconds: 10,
        ..LeaderElectionOptions::default()
    };
    let scheduler = start_scheduler(&mut plane, binary, &election, serde_json::Value::Null).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ledger = BindingLedger::watch(pods.clone());

    let (before, batch) = one_gpu_pods("before", 0..8);
    create_pods(&pods, batch).await?;
    wait_bound(&pods, &before, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    plane.stop_apiserver()?;
    eprintln!("apiserver stopped for {OUTAGE:?}");
    tokio::time::sleep(OUTAGE).await;
    assert!(
        is_alive(scheduler.pid),
        "the scheduler exited while the API server was down\n{}",
        plane.phalanx_logs()
    );
    let restart = Instant::now();
    plane.restart_apiserver(APISERVER_START).await?;
    let apiserver_back = restart.elapsed();

    // Pods created the moment the API server is back: their binding time is
    // the scheduler's recovery (watches re-established, Lease retaken).
    let back = Instant::now();
    let (after, batch) = one_gpu_pods("after", 0..8);
    create_pods(&pods, batch).await?;
    wait_bound(&pods, &after, RECOVERY_DEADLINE)
        .await
        .with_logs(&plane)?;
    let recovery = back.elapsed();
    eprintln!(
        "recovery: apiserver ready {:.1}s after restart; 8 new pods bound {:.1}s after that",
        apiserver_back.as_secs_f64(),
        recovery.as_secs_f64()
    );

    let holder = lease_holder(&client, &election.lease_namespace, &election.lease_name).await?;
    assert_eq!(
        holder.as_deref(),
        Some(scheduler.identity.as_str()),
        "the only replica leads again"
    );
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    wait_bound(&pods, &all, Duration::from_secs(10)).await?;
    assert_no_damage(&plane, &pods, ledger).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_expired_by_compaction_relists_and_sees_what_it_missed() -> anyhow::Result<()> {
    let test = "a_watch_expired_by_compaction_relists_and_sees_what_it_missed";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    // 8 GPUs in all: the second batch fits only in the GPUs of pods deleted
    // while the scheduler could not see it, so it binds only if the relist
    // dropped them.
    create_gpu_nodes(&client, "gpu", 2, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    wait_fake_nodes_ready(&client, 2, Duration::from_secs(60)).await?;
    let second = plane.start_second_apiserver(APISERVER_START).await?;
    let election = LeaderElectionOptions::default();
    let scheduler = start_scheduler(&mut plane, binary, &election, serde_json::Value::Null).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ledger = BindingLedger::watch(Api::namespaced(second.clone(), NS));

    let (first, batch) = one_gpu_pods("first", 0..8);
    create_pods(&pods, batch).await?;
    wait_bound(&pods, &first, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    // The scheduler's API server goes away; the cluster changes through the
    // other one; etcd forgets the history the scheduler's watches stand on.
    plane.stop_apiserver()?;
    let via_second: Api<Pod> = Api::namespaced(second.clone(), NS);
    for name in &first[..4] {
        via_second
            .delete(name, &DeleteParams::default().grace_period(0))
            .await?;
    }
    let (missed, batch) = one_gpu_pods("missed", 0..4);
    create_pods(&via_second, batch).await?;
    let revision = plane.compact_etcd().await?;
    eprintln!(
        "deleted 4 pods and created 4 behind the scheduler's back; etcd compacted at {revision}"
    );

    let restart = Instant::now();
    plane.restart_apiserver(APISERVER_START).await?;
    let back = Instant::now();
    wait_bound(&pods, &missed, RECOVERY_DEADLINE)
        .await
        .with_logs(&plane)?;
    eprintln!(
        "recovery: apiserver ready {:.1}s after restart; the 4 missed pods bound {:.1}s after that",
        (back - restart).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    // The watch could not resume where it was: it was told so and relisted.
    let log = std::fs::read_to_string(&scheduler.log)?;
    assert!(
        log.contains("410") || log.contains("too old resource version"),
        "no watch of the scheduler was expired (410 Gone); the test did not inject its fault\n{}",
        plane.phalanx_logs()
    );
    plane.stop_second_apiserver()?;

    let expected: Vec<String> = first[4..].iter().chain(&missed).cloned().collect();
    wait_bound(&pods, &expected, Duration::from_secs(10)).await?;
    assert_no_damage(&plane, &pods, ledger).await
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_under_assumed_pods_loses_no_pod() -> anyhow::Result<()> {
    const REPLICAS: i32 = 8;
    let test = "a_node_deleted_under_assumed_pods_loses_no_pod";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    let doomed = create_gpu_nodes(&client, "doomed", 1, &GpuNodeSpec::with_gpus(8, "A100"))
        .await?
        .remove(0);
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;
    // Two bindings a second: most of the Deployment's pods are still assumed
    // (placed, their Binding queued) when the node goes.
    let slow_binding = serde_json::json!({ "binding": { "qps": 2, "burst": 2 } });
    start_scheduler(
        &mut plane,
        binary,
        &LeaderElectionOptions::default(),
        slow_binding,
    )
    .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ledger = BindingLedger::watch(pods.clone());

    let deployment = PodBuilder::template(SCHEDULER_NAME, gpu_worker_container(1))
        .deployment("trainer", REPLICAS);
    Api::<Deployment>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &deployment)
        .await?;
    let selector = PodSelector::labels("app=trainer");
    // The node goes once the first pod is bound and the rest are queued.
    wait::until("a first trainer bound", Duration::from_secs(60), || async {
        let pods = selector.list(&pods).await?;
        Ok(if pods.iter().any(|p| node_of(p).is_some()) {
            Ok(())
        } else {
            Err(format!("{} trainers, none bound", pods.len()))
        })
    })
    .await
    .with_logs(&plane)?;
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.delete(&doomed, &DeleteParams::default()).await?;
    let deleted = Instant::now();
    let bound_before = ledger.records().len();
    create_gpu_nodes(&client, "spare", 2, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    eprintln!("deleted {doomed} with {bound_before} of {REPLICAS} pods bound; added 2 spare nodes");

    // Pods bound to the deleted node are garbage-collected by the controller
    // manager and replaced by the ReplicaSet; the others must never be bound
    // to it and land on the spare nodes.
    let bound = wait::until(
        "every trainer bound to a node that exists",
        RECOVERY_DEADLINE,
        || async {
            let live = selector.list(&pods).await?;
            let live: Vec<Pod> = live
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let on_doomed = live
                .iter()
                .filter(|p| node_of(p) == Some(doomed.as_str()))
                .count();
            let unbound = live.iter().filter(|p| node_of(p).is_none()).count();
            Ok(
                if live.len() == REPLICAS as usize && on_doomed == 0 && unbound == 0 {
                    Ok(live)
                } else {
                    Err(format!(
                        "{} trainers: {on_doomed} on {doomed}, {unbound} unbound",
                        live.len()
                    ))
                },
            )
        },
    )
    .await
    .with_logs(&plane)?;
    eprintln!(
        "recovery: all {REPLICAS} trainers on existing nodes {:.1}s after the node was deleted",
        deleted.elapsed().as_secs_f64()
    );
    assert_eq!(bound.len(), REPLICAS as usize);
    // The pods still assumed when the node went are rebound at once; those
    // already bound to it wait for the pod GC's quarantine and their ReplicaSet.
    let mut to_spare: Vec<Duration> = ledger
        .records()
        .values()
        .filter(|r| r.nodes.iter().all(|n| n.starts_with("spare-")))
        .filter_map(|r| r.first_bound.map(|t| t.saturating_duration_since(deleted)))
        .collect();
    to_spare.sort();
    let assumed = REPLICAS as usize - bound_before;
    if let Some(rebound) = to_spare.get(assumed.saturating_sub(1)) {
        eprintln!(
            "recovery: the {assumed} pods assumed on {doomed} were bound to spare nodes {:.1}s after its deletion",
            rebound.as_secs_f64()
        );
    }

    // A Binding already on the wire when the deletion arrived may still land
    // (the API server does not check that the node exists); any pod bound to
    // the node well after the scheduler saw the deletion is a bug.
    let late = ledger.bound_to_since(&doomed, deleted + Duration::from_secs(2));
    assert!(
        late.is_empty(),
        "bound to the deleted node {doomed} after its deletion: {late:?}\n{}",
        plane.phalanx_logs()
    );
    wait_selected_bound(&pods, &selector, REPLICAS as usize, Duration::from_secs(10)).await?;
    assert_no_damage(&plane, &pods, ledger).await
}
