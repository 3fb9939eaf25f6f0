//! Gangs across a leader change, against a real control plane with KWOK GPU
//! nodes and two scheduler replicas: the leader dies at every point inside a
//! gang bind (after the plan is written, after each Binding), and once without
//! any hook, by SIGKILL while the gang binds. The surviving replica must leave
//! the gang fully bound, no pod bound twice, none lost, no GPU promised twice.
//! And a gang whose plan cannot be finished (a member deleted, or its planned
//! GPUs taken by another scheduler while no replica led) is undone: its bound
//! members are deleted, their ReplicaSet recreates them, and the gang holds
//! nothing until it is placed again whole.
//!
//! What makes it able to fail: between the crash and the takeover, pods of a
//! higher priority arrive that ask for every GPU left free. A new leader that
//! did not first hold the dead leader's plan would give them the GPUs the
//! gang's unbound members were promised, and the gang would stay partly bound.
//!
//! The recovery time (crash to gang fully bound) of each point is printed; it
//! is dominated by the Lease (4 s here). Run it with
//!
//! ```text
//! cargo build -p phalanx-scheduler --bins
//! PHALANX_E2E=1 cargo test -p phalanx-e2e --test gang_failover -- --nocapture
//! ```
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::Api;
use phalanx_api::{
    GpuAssignmentAnnotation, ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME,
    ANNOTATION_GANG_PLAN, ANNOTATION_GPU_ASSIGNMENT, SCHEDULER_NAME,
};
use phalanx_e2e::ledger::BindingLedger;
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::process::is_alive;
use phalanx_e2e::wait::{self, WithLogs};
use phalanx_e2e::{
    assignment_violations, create_gpu_nodes, create_priority_class, gpu_request,
    gpu_worker_container, lease_holder, node_facts, node_of, pod_events, wait_fake_nodes_ready,
    ControlPlane, GpuNodeSpec, LeaderElectionOptions, PhalanxHandle, PhalanxOptions, PodBuilder,
    PodSelector, PreemptionPolicy,
};

const NS: &str = "default";
/// Members per gang, and whole GPUs per member.
const MEMBERS: usize = 4;
const GPUS_PER_MEMBER: u32 = 2;
const NODES: usize = 7;
const GPUS_PER_NODE: u32 = 8;
const LEASE_SECONDS: u32 = 4;
/// Generous: a takeover needs one Lease expiry and a relist.
const DEADLINE: Duration = Duration::from_secs(90);
/// The scheduler's test hook (`scheduler/src/controller/fault_hook.rs`).
const EXIT_HOOK: &str = "PHALANX_FAULT_EXIT_AFTER_GANG_BINDINGS";
const FILLER_CLASS: &str = "filler";

/// What one kill point gave.
struct Round {
    point: String,
    bound_at_kill: usize,
    recovery: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_is_never_left_partly_bound_when_its_leader_dies_mid_bind() -> anyhow::Result<()> {
    let test = "a_gang_is_never_left_partly_bound_when_its_leader_dies_mid_bind";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(
        &client,
        "gpu",
        NODES,
        &GpuNodeSpec::with_gpus(GPUS_PER_NODE, "A100"),
    )
    .await?;
    wait_fake_nodes_ready(&client, NODES, Duration::from_secs(90)).await?;
    create_priority_class(&client, FILLER_CLASS, 1000, PreemptionPolicy::Never).await?;
    let gpus = node_facts(&client).await?.gpus;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let history = BindingLedger::watch(pods.clone());
    let election = LeaderElectionOptions {
        lease_duration_seconds: LEASE_SECONDS,
        ..LeaderElectionOptions::default()
    };
    let plain = PhalanxOptions {
        binary: Some(binary),
        leader_election: Some(election.clone()),
        // One Binding at a time: when the hook fires after the k-th, no
        // other is in flight.
        concurrency: Some(1),
        // A standby need not report ready before it leads.
        ready_path: "/healthz".to_owned(),
        ..PhalanxOptions::default()
    };
    let mut replicas: Vec<PhalanxHandle> = Vec::new();
    let mut rounds = Vec::new();

    for k in 0..=MEMBERS {
        let hooked = PhalanxOptions {
            env: vec![(EXIT_HOOK.to_owned(), k.to_string())],
            ..plain.clone()
        };
        let doomed = lead_with(&mut plane, &mut replicas, &election, &hooked, Some(&plain)).await?;
        let gang = format!("k{k}");
        let members = create_gang(&pods, &gang).await?;
        let exited = wait_exit(&doomed).await.with_logs(&plane)?;
        let bound_at_kill = count_bound(&pods, &members).await?;
        assert_eq!(
            bound_at_kill,
            k,
            "the hook was to stop the leader after {k} Bindings\n{}",
            plane.phalanx_logs()
        );
        assert!(
            std::fs::read_to_string(&doomed.log)
                .unwrap_or_default()
                .contains(&format!("{EXIT_HOOK}: exiting after")),
            "{} did not exit through the hook\n{}",
            doomed.name,
            plane.phalanx_logs()
        );
        let fillers = create_fillers(&pods, &gang, &members).await?;
        let recovery = wait_gang_bound(&plane, &pods, &members, exited).await?;
        check(&plane, &pods, &history, &gpus, &members).await?;
        remove(&pods, &fillers).await?;
        rounds.push(Round {
            point: if k == 0 {
                "after the plan, before any Binding".to_owned()
            } else {
                format!("after Binding {k} of {MEMBERS}")
            },
            bound_at_kill,
            recovery,
        });
    }

    // No hook: SIGKILL from outside as soon as the first member is bound.
    // Slow Bindings (2/s) leave the rest in flight.
    let slow = PhalanxOptions {
        qps: 2,
        burst: 2,
        ..plain.clone()
    };
    let doomed = lead_with(&mut plane, &mut replicas, &election, &slow, Some(&plain)).await?;
    let members = create_gang(&pods, "sigkill").await?;
    let first = poll("the first member bound", || async {
        Ok(count_bound(&pods, &members).await? > 0)
    })
    .await
    .with_logs(&plane)?;
    assert!(plane.kill_component(doomed.pid), "the leader was running");
    let killed = Instant::now();
    let bound_at_kill = count_bound(&pods, &members).await?;
    eprintln!(
        "SIGKILLed {} {:?} after the first Binding was seen",
        doomed.identity,
        killed - first
    );
    let fillers = create_fillers(&pods, "sigkill", &members).await?;
    let recovery = wait_gang_bound(&plane, &pods, &members, killed).await?;
    check(&plane, &pods, &history, &gpus, &members).await?;
    remove(&pods, &fillers).await?;
    rounds.push(Round {
        point: "SIGKILL while binding (no hook)".to_owned(),
        bound_at_kill,
        recovery,
    });

    eprintln!("\nleader killed inside a {MEMBERS}-member gang bind (Lease {LEASE_SECONDS}s):");
    eprintln!(
        "{:<36} {:>14} {:>22}",
        "kill point", "bound at kill", "kill -> gang bound"
    );
    for r in &rounds {
        eprintln!(
            "{:<36} {:>14} {:>20.2}s",
            r.point,
            r.bound_at_kill,
            r.recovery.as_secs_f64()
        );
    }
    Ok(())
}

/// A member deleted while no replica leads makes the dead leader's plan
/// impossible to finish: the new leader deletes the bound members (the
/// ReplicaSet recreates them), clears the plan from the rest, says so in
/// Events, and places the gang again whole. No GPU is held by a partial gang,
/// no pod is seen on two nodes, and the owner brings every replica back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_that_lost_a_member_while_no_leader_was_up_is_undone_and_placed_again_whole(
) -> anyhow::Result<()> {
    const KILL_AFTER: usize = 2;
    let test = "a_gang_that_lost_a_member_while_no_leader_was_up_is_undone_and_placed_again_whole";
    let Some(UndoScenario {
        mut plane,
        client,
        gpus,
        pods,
        history,
        plain,
        mut replicas,
        doomed,
        selector,
    }) = undo_scenario(test, 2, "undo", KILL_AFTER).await?
    else {
        return Ok(());
    };
    let exited = wait_exit(&doomed).await.with_logs(&plane)?;
    let at_kill = selector.list(&pods).await?;
    let (bound, unbound): (Vec<&Pod>, Vec<&Pod>) =
        at_kill.iter().partition(|p| node_of(p).is_some());
    assert_eq!(bound.len(), KILL_AFTER, "bound when the leader died");
    let plan_of = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_GANG_PLAN))
            .map(|v| phalanx_api::GangPlanAnnotation::parse(v).unwrap().plan)
    };
    let dead_plan = plan_of(bound[0]).context("a bound member carries no plan")?;
    let victim = unbound[0].metadata.name.clone().unwrap_or_default();
    pods.delete(
        &victim,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await?;
    let bound_uids: Vec<String> = bound
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    replicas.push(plane.start_phalanx_scheduler(&plain).await?);

    let placed = wait::until(
        "the gang placed again whole, without the undone plan's pods",
        DEADLINE,
        || async {
            let live: Vec<Pod> = selector
                .list(&pods)
                .await?
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            let fresh = live
                .iter()
                .filter(|p| node_of(p).is_some() && plan_of(p) != Some(dead_plan.clone()))
                .count();
            Ok(if live.len() == MEMBERS && fresh == MEMBERS {
                Ok(live)
            } else {
                Err(format!(
                    "{} live, {fresh} bound under a new plan",
                    live.len()
                ))
            })
        },
    )
    .await
    .with_logs(&plane)?;
    let recovery = exited.elapsed();
    let survivor = replicas.last().unwrap();
    let metrics = survivor.metrics().await.map_err(anyhow::Error::msg)?;
    assert!(
        metrics
            .lines()
            .any(|l| l == "phalanx_scheduler_gang_plans_undone_total 1"),
        "the new leader does not count the undone plan:\n{metrics}"
    );
    for pod in &placed {
        assert!(
            !bound_uids.contains(pod.metadata.uid.as_ref().unwrap()),
            "a member bound under the undone plan was kept"
        );
    }
    let all = pods.list(&ListParams::default()).await?.items;
    let problems = assignment_violations(&all, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");
    let twice = history.bound_twice();
    assert!(twice.is_empty(), "bound twice: {twice:?}");
    let events = pod_events(&client, NS).await?;
    let abandoned: Vec<&str> = events
        .iter()
        .filter(|e| e.reason == "GangPlanAbandoned")
        .map(|e| e.note.as_str())
        .collect();
    assert!(
        abandoned
            .iter()
            .any(|n| n.contains(&dead_plan) && n.contains("only 3 still carry it")),
        "no GangPlanAbandoned event names the plan and the lost member: {abandoned:#?}"
    );
    eprintln!(
        "undone and placed again whole {:.2}s after the leader died (member {victim} deleted meanwhile)",
        recovery.as_secs_f64()
    );
    Ok(())
}

/// While no replica leads, another scheduler binds a pod onto GPUs the dead
/// leader's plan promised to an unbound member. The new leader cannot finish
/// the plan, so it undoes it: the gang holds no GPU at all (its bound members
/// are deleted and recreated, and 4 members of 2 GPUs do not fit in the 6
/// left) until the intruder leaves, and then it is placed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_whose_planned_gpus_were_taken_holds_nothing_until_it_fits_whole(
) -> anyhow::Result<()> {
    const KILL_AFTER: usize = 2;
    let test = "a_gang_whose_planned_gpus_were_taken_holds_nothing_until_it_fits_whole";
    let Some(UndoScenario {
        mut plane,
        client,
        gpus,
        pods,
        history,
        plain,
        mut replicas,
        doomed,
        selector,
    }) = undo_scenario(test, 1, "taken", KILL_AFTER).await?
    else {
        return Ok(());
    };
    wait_exit(&doomed).await.with_logs(&plane)?;
    let at_kill = selector.list(&pods).await?;
    let unbound = at_kill
        .iter()
        .find(|p| node_of(p).is_none())
        .context("no unbound member when the leader died")?;
    let plan = unbound
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_GANG_PLAN))
        .map(|v| phalanx_api::GangPlanAnnotation::parse(v).unwrap())
        .context("the unbound member carries no plan")?;

    // Another scheduler takes exactly the GPUs planned for that member.
    let intruder = PodBuilder::new(
        "intruder",
        "other-scheduler",
        gpu_worker_container(GPUS_PER_MEMBER),
    )
    .build();
    pods.create(&PostParams::default(), &intruder).await?;
    let assignment = GpuAssignmentAnnotation {
        node: plan.node.clone(),
        gpus: plan.gpus.clone(),
    };
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some("intruder".to_owned()),
            annotations: Some(
                [(ANNOTATION_GPU_ASSIGNMENT.to_owned(), assignment.to_json())]
                    .into_iter()
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            kind: Some("Node".to_owned()),
            name: Some(plan.node.clone()),
            ..ObjectReference::default()
        },
    };
    let _: serde_json::Value = pods
        .create_subresource("binding", "intruder", &PostParams::default(), &binding)
        .await?;
    replicas.push(plane.start_phalanx_scheduler(&plain).await?);

    let abandoned = wait::until_some("a GangPlanAbandoned event", DEADLINE, || async {
        let events = pod_events(&client, NS).await?;
        Ok(events
            .into_iter()
            .find(|e| e.reason == "GangPlanAbandoned")
            .map(|e| e.note))
    })
    .await
    .with_logs(&plane)?;
    assert!(
        abandoned.contains(&plan.plan) && abandoned.contains("cannot go where it was planned"),
        "{abandoned}"
    );
    // The owner brings the deleted members back; none of the gang is bound.
    wait::until("the gang's replicas back, none bound", DEADLINE, || async {
        let live: Vec<Pod> = selector
            .list(&pods)
            .await?
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let all = selector.list(&pods).await?;
        let bound = all.iter().filter(|p| node_of(p).is_some()).count();
        Ok(if live.len() == MEMBERS && bound == 0 {
            Ok(())
        } else {
            Err(format!("{} live, {bound} bound", live.len()))
        })
    })
    .await
    .with_logs(&plane)?;
    let all = pods.list(&ListParams::default()).await?.items;
    let problems = assignment_violations(&all, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");

    // Room again: the gang is placed whole.
    pods.delete(
        "intruder",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await?;
    let placed = wait::wait_selected_bound(&pods, &selector, MEMBERS, DEADLINE)
        .await
        .with_logs(&plane)?;
    let problems = assignment_violations(&placed, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");
    let twice = history.bound_twice();
    assert!(twice.is_empty(), "bound twice: {twice:?}");
    Ok(())
}

/// A control plane with the Phalanx CRDs, or `None` when the test is skipped.
async fn plane_for(test: &str) -> anyhow::Result<Option<(ControlPlane, PathBuf)>> {
    Ok(plane_with_scheduler(test).await?)
}

/// What the undo tests share: `nodes` GPU nodes, a Deployment `gang` of
/// [`MEMBERS`] gang members, and a leader (no standby yet, so nothing can take
/// over before the test has changed the cluster) that exits through the test
/// hook after its `kill_after`-th gang Binding.
struct UndoScenario {
    plane: ControlPlane,
    client: kube::Client,
    gpus: HashMap<String, u32>,
    pods: Api<Pod>,
    history: BindingLedger,
    /// The options of a replica without the hook, for the next leader.
    plain: PhalanxOptions,
    replicas: Vec<PhalanxHandle>,
    doomed: PhalanxHandle,
    selector: PodSelector,
}

async fn undo_scenario(
    test: &str,
    nodes: usize,
    gang: &str,
    kill_after: usize,
) -> anyhow::Result<Option<UndoScenario>> {
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    create_gpu_nodes(
        &client,
        "gpu",
        nodes,
        &GpuNodeSpec::with_gpus(GPUS_PER_NODE, "A100"),
    )
    .await?;
    wait_fake_nodes_ready(&client, nodes, Duration::from_secs(90)).await?;
    let gpus = node_facts(&client).await?.gpus;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let history = BindingLedger::watch(pods.clone());
    let election = LeaderElectionOptions {
        lease_duration_seconds: LEASE_SECONDS,
        ..LeaderElectionOptions::default()
    };
    let plain = PhalanxOptions {
        binary: Some(binary),
        leader_election: Some(election.clone()),
        concurrency: Some(1),
        ready_path: "/healthz".to_owned(),
        ..PhalanxOptions::default()
    };
    let hooked = PhalanxOptions {
        env: vec![(EXIT_HOOK.to_owned(), kill_after.to_string())],
        ..plain.clone()
    };
    let mut replicas = Vec::new();
    let doomed = lead_with(&mut plane, &mut replicas, &election, &hooked, None).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let template = PodBuilder::template(SCHEDULER_NAME, gpu_worker_container(GPUS_PER_MEMBER))
        .annotation(ANNOTATION_GANG_NAME, gang)
        .annotation(ANNOTATION_GANG_MIN_MEMBER, &MEMBERS.to_string());
    deployments
        .create(
            &PostParams::default(),
            &template.deployment(gang, MEMBERS as i32),
        )
        .await?;
    Ok(Some(UndoScenario {
        plane,
        client,
        gpus,
        pods,
        history,
        plain,
        replicas,
        doomed,
        selector: PodSelector::labels(&format!("app={gang}")),
    }))
}

/// Makes a replica started with `leader` the Lease holder (killing the
/// replicas running so far, as a crash would), then starts a standby with
/// `standby`, if any. Returns the leader.
async fn lead_with(
    plane: &mut ControlPlane,
    replicas: &mut Vec<PhalanxHandle>,
    election: &LeaderElectionOptions,
    leader: &PhalanxOptions,
    standby: Option<&PhalanxOptions>,
) -> anyhow::Result<PhalanxHandle> {
    for old in replicas.drain(..) {
        plane.kill_component(old.pid);
    }
    let new = plane.start_phalanx_scheduler(leader).await?;
    let client = plane.client();
    wait::until(
        &format!("{} holding the Lease", new.identity),
        DEADLINE,
        || async {
            let holder =
                lease_holder(&client, &election.lease_namespace, &election.lease_name).await?;
            Ok(if holder.as_deref() == Some(new.identity.as_str()) {
                Ok(())
            } else {
                Err(format!("held by {holder:?}"))
            })
        },
    )
    .await
    .with_logs(plane)?;
    // Leading and synced: it schedules from here on.
    poll("the new leader ready", || async {
        Ok(new.is_ready().await)
    })
    .await
    .with_logs(plane)?;
    replicas.push(new.clone());
    if let Some(standby) = standby {
        replicas.push(plane.start_phalanx_scheduler(standby).await?);
    }
    Ok(new)
}

/// The gang's members (annotation form), created all at once; their UIDs by
/// name.
async fn create_gang(pods: &Api<Pod>, gang: &str) -> anyhow::Result<HashMap<String, String>> {
    let mut members = HashMap::new();
    for i in 0..MEMBERS {
        let pod = PodBuilder::new(
            &format!("{gang}-{i}"),
            SCHEDULER_NAME,
            gpu_worker_container(GPUS_PER_MEMBER),
        )
        .annotation(ANNOTATION_GANG_NAME, gang)
        .annotation(ANNOTATION_GANG_MIN_MEMBER, &MEMBERS.to_string())
        .build();
        let created = pods.create(&PostParams::default(), &pod).await?;
        members.insert(
            created.metadata.name.unwrap_or_default(),
            created.metadata.uid.unwrap_or_default(),
        );
    }
    Ok(members)
}

/// Higher-priority pods asking for every GPU not held by a bound pod (the
/// gang's unbound members included), created while no replica leads.
async fn create_fillers(
    pods: &Api<Pod>,
    gang: &str,
    members: &HashMap<String, String>,
) -> anyhow::Result<Vec<String>> {
    let all = pods.list(&ListParams::default()).await?;
    let held: u32 = all
        .items
        .iter()
        .filter(|p| node_of(p).is_some())
        .map(|p| gpu_request(p).0)
        .sum();
    let free = (NODES as u32 * GPUS_PER_NODE).saturating_sub(held);
    let unbound = members.len() as u32 - count_bound(pods, members).await? as u32;
    assert!(
        free >= unbound * GPUS_PER_MEMBER,
        "the test's nodes are too few: {free} GPUs free for {unbound} members"
    );
    let creates = (0..free / GPUS_PER_MEMBER).map(|i| {
        let pod = PodBuilder::new(
            &format!("{gang}-filler-{i}"),
            SCHEDULER_NAME,
            gpu_worker_container(GPUS_PER_MEMBER),
        )
        .priority_class(FILLER_CLASS)
        .build();
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .map(|p| p.metadata.name.unwrap_or_default())
        }
    });
    Ok(futures::future::try_join_all(creates).await?)
}

/// How many of the gang's members are bound now.
async fn count_bound(pods: &Api<Pod>, members: &HashMap<String, String>) -> anyhow::Result<usize> {
    let list = pods.list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|p| {
            p.metadata
                .name
                .as_ref()
                .is_some_and(|n| members.contains_key(n))
                && node_of(p).is_some()
        })
        .count())
}

/// Polls `check` every 50 ms until it is true (finer than `wait::until`:
/// the instant is measured); returns when it became true.
async fn poll<F, Fut>(what: &str, mut check: F) -> anyhow::Result<Instant>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await? {
            return Ok(Instant::now());
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the hooked replica has exited; returns when it was seen gone.
async fn wait_exit(replica: &PhalanxHandle) -> anyhow::Result<Instant> {
    poll(
        &format!("{} to exit through the hook", replica.name),
        || async { Ok(!is_alive(replica.pid)) },
    )
    .await
}

/// Waits until every member is bound; returns the time from `since`.
async fn wait_gang_bound(
    plane: &ControlPlane,
    pods: &Api<Pod>,
    members: &HashMap<String, String>,
    since: Instant,
) -> anyhow::Result<Duration> {
    let done = poll("the whole gang bound by the new leader", || async {
        Ok(count_bound(pods, members).await? == members.len())
    })
    .await
    .with_logs(plane)?;
    Ok(done - since)
}

/// The fault suite's invariants after a round: every member is the pod that
/// was created (none lost or replaced) and bound, none was ever seen on two
/// nodes, no GPU is promised twice in the whole namespace, and the plan
/// recorded on each member is where it is bound.
async fn check(
    plane: &ControlPlane,
    pods: &Api<Pod>,
    history: &BindingLedger,
    gpus: &HashMap<String, u32>,
    members: &HashMap<String, String>,
) -> anyhow::Result<()> {
    let all = pods.list(&ListParams::default()).await?.items;
    for (name, uid) in members {
        let pod = all
            .iter()
            .find(|p| p.metadata.name.as_ref() == Some(name))
            .with_context(|| format!("gang member {name} was lost"))?;
        assert_eq!(
            pod.metadata.uid.as_ref(),
            Some(uid),
            "{name} was replaced\n{}",
            plane.phalanx_logs()
        );
        let node = node_of(pod).with_context(|| format!("{name} is not bound"))?;
        let plan = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_GANG_PLAN))
            .with_context(|| format!("{name} carries no gang plan"))?;
        let plan = phalanx_api::GangPlanAnnotation::parse(plan)?;
        assert_eq!(plan.node, node, "{name} is not where its plan put it");
        let seen = history.nodes_of(uid);
        assert!(seen.len() <= 1, "{name} was seen on {seen:?}");
    }
    let twice = history.bound_twice();
    assert!(twice.is_empty(), "bound twice: {twice:?}");
    let problems = assignment_violations(&all, gpus);
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        plane.phalanx_logs()
    );
    // Bindings are refused twice by the API server anyway; the events say
    // whether the scheduler tried: at most one Scheduled per member.
    let events = pod_events(&plane.client(), NS).await?;
    for name in members.keys() {
        let scheduled: i32 = events
            .iter()
            .filter(|e| e.reason == "Scheduled" && &e.pod == name)
            .map(|e| e.count.max(1))
            .sum();
        assert!(scheduled <= 1, "{name} has {scheduled} Scheduled events");
    }
    Ok(())
}

/// Deletes the fillers and waits until they are gone, so the next round
/// starts with their GPUs free.
async fn remove(pods: &Api<Pod>, names: &[String]) -> anyhow::Result<()> {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for name in names {
        let _ = pods.delete(name, &now).await?;
    }
    wait::until("the fillers gone", DEADLINE, || async {
        let left = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|p| p.metadata.name.as_ref().is_some_and(|n| names.contains(n)))
            .count();
        Ok(if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        })
    })
    .await
}
