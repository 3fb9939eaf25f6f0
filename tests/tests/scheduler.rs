//! Phalanx's scheduler against a real control plane with KWOK GPU nodes:
//! GPU placement and accounting, gangs (all or nothing), pods as controllers
//! make them (generated names, a PriorityClass, zone and rack labels),
//! leader election under a crash, scheduling gates, and the `PodScheduled`
//! condition node autoscalers read.
//!
//! Needs the control-plane binaries (tests/control-plane/ensure.sh) and
//! `cargo build -p phalanx-scheduler`; without them each test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{ListParams, PostParams};

use kube::Api;
use phalanx_api::{
    PodGroup, ANNOTATION_GANG_MIN_MEMBER, ANNOTATION_GANG_NAME, ANNOTATION_GPU_MODELS,
    LABEL_GPU_MODEL, LABEL_POD_GROUP, SCHEDULER_NAME,
};
use phalanx_e2e::ledger::BindingLedger;
use phalanx_e2e::nodes::LABEL_ZONE;
use phalanx_e2e::phalanx::plane_with_scheduler;
use phalanx_e2e::wait::{
    self, pod_scheduled, stays_pending, wait_bound, wait_pod_bound, wait_pod_event,
    wait_selected_bound, WithLogs,
};
use phalanx_e2e::{
    assignment_of, assignment_violations, create_gpu_nodes, create_pods, create_priority_class,
    gpu_share_container, gpu_worker_container, lease_holder, node_facts, node_of, pod_events,
    pod_for, pod_group, pods_named, wait_fake_nodes_ready, ControlPlane, GpuNodeSpec,
    LeaderElectionOptions, PhalanxOptions, PodBuilder, PodSelector, PreemptionPolicy,
};

const NS: &str = "default";

/// A control plane with the Phalanx CRDs, or `None` when the test is skipped.
async fn plane_for(test: &str) -> anyhow::Result<Option<(ControlPlane, PathBuf)>> {
    Ok(plane_with_scheduler(test).await?)
}

/// A pod for Phalanx's scheduler.
fn phalanx_pod(name: &str, container: Container) -> PodBuilder {
    PodBuilder::new(name, SCHEDULER_NAME, container)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_pods_land_on_free_gpus_of_the_right_model() -> anyhow::Result<()> {
    let test = "gpu_pods_land_on_free_gpus_of_the_right_model";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "a100", 2, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    create_gpu_nodes(&client, "h100", 2, &GpuNodeSpec::with_gpus(4, "H100")).await?;
    wait_fake_nodes_ready(&client, 4, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Pods that name another scheduler: nobody here schedules them, and
    // Phalanx must leave them alone.
    let foreign = create_pods(
        &pods,
        vec![
            pod_for(
                "default-sched",
                "default-scheduler",
                gpu_worker_container(1),
            ),
            pod_for("other-sched", "someone-else", gpu_share_container(500)),
        ],
    )
    .await?;

    // Restricted pods first, so that unrestricted ones cannot take the
    // capacity they need (any placement of these fits).
    let mut expected_model: HashMap<String, &str> = HashMap::new();
    let mut restricted = Vec::new();
    for i in 0..2 {
        let name = format!("ann-h100-{i}");
        expected_model.insert(name.clone(), "H100");
        restricted.push(
            phalanx_pod(&name, gpu_worker_container(1))
                .annotation(ANNOTATION_GPU_MODELS, "H100")
                .build(),
        );
        let name = format!("sel-a100-{i}");
        expected_model.insert(name.clone(), "A100");
        restricted.push(
            phalanx_pod(&name, gpu_worker_container(2))
                .node_selector(LABEL_GPU_MODEL, "A100")
                .build(),
        );
    }
    for i in 0..3 {
        let name = format!("aff-h100-{i}");
        expected_model.insert(name.clone(), "H100");
        restricted.push(
            phalanx_pod(&name, gpu_share_container(500))
                .required_node_label_in(LABEL_GPU_MODEL, &["H100"])
                .build(),
        );
    }
    let mut names = create_pods(&pods, restricted).await?;
    wait_bound(&pods, &names, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    let mut unrestricted = vec![
        phalanx_pod("ann-any-0", gpu_worker_container(1))
            .annotation(ANNOTATION_GPU_MODELS, "H100|A100")
            .build(),
        phalanx_pod("whole-0", gpu_worker_container(1)).build(),
        phalanx_pod("whole-1", gpu_worker_container(1)).build(),
    ];
    for i in 0..4 {
        unrestricted.push(phalanx_pod(&format!("share-{i}"), gpu_share_container(300)).build());
    }
    names.extend(create_pods(&pods, unrestricted).await?);
    // No node has this model: it must stay Pending with a reason.
    let impossible = create_pods(
        &pods,
        vec![phalanx_pod("ann-v100", gpu_worker_container(1))
            .annotation(ANNOTATION_GPU_MODELS, "V100")
            .build()],
    )
    .await?;

    let bound = wait_bound(&pods, &names, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let facts = node_facts(&client).await?;
    let problems = assignment_violations(&bound, &facts.gpus);
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        plane.phalanx_logs()
    );
    for pod in &bound {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let node = node_of(pod).unwrap_or_default();
        if let Some(model) = expected_model.get(name) {
            assert_eq!(
                facts.model(node),
                Some(*model),
                "{name} asks for {model} but is on {node}"
            );
        }
    }

    // Every binding is announced, by Phalanx.
    let events = wait::until("Scheduled events", Duration::from_secs(30), || async {
        let events = pod_events(&client, NS).await?;
        let announced: HashSet<&str> = events
            .iter()
            .filter(|e| e.reason == "Scheduled")
            .map(|e| e.pod.as_str())
            .collect();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !announced.contains(n.as_str()))
            .collect();
        Ok(if missing.is_empty() {
            Ok(events)
        } else {
            Err(format!("no Scheduled event for {missing:?}"))
        })
    })
    .await
    .with_logs(&plane)?;
    for event in events.iter().filter(|e| e.reason == "Scheduled") {
        let pod = bound
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(event.pod.as_str()))
            .with_context(|| format!("Scheduled event for an unknown pod: {event:?}"))?;
        let node = node_of(pod).unwrap_or_default();
        assert!(
            event.note.contains(node),
            "event {event:?} does not name the node {node}"
        );
        assert!(event.reporting_controller.contains("phalanx"), "{event:?}");
    }

    let failure = wait_pod_event(
        &client,
        NS,
        &impossible[0],
        "FailedScheduling",
        "",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    assert!(
        failure.note.contains("0/4 nodes are available"),
        "{failure:?}"
    );

    // By now Phalanx has had many seconds: pods of other schedulers and the
    // impossible pod are untouched.
    for pod in pods_named(&pods, &[foreign.clone(), impossible.clone()].concat()).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        assert!(node_of(&pod).is_none(), "{name} was bound");
        assert!(assignment_of(&pod).is_none(), "{name} was annotated");
    }
    let events = pod_events(&client, NS).await?;
    let about_foreign: Vec<_> = events.iter().filter(|e| foreign.contains(&e.pod)).collect();
    assert!(
        about_foreign.is_empty(),
        "events about pods of other schedulers: {about_foreign:?}"
    );
    Ok(())
}

fn count_bound(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| node_of(p).is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_bind_all_or_nothing() -> anyhow::Result<()> {
    let test = "gangs_bind_all_or_nothing";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "a100", 4, &GpuNodeSpec::with_gpus(8, "A100")).await?;
    let h100 = create_gpu_nodes(&client, "h100", 4, &GpuNodeSpec::with_gpus(8, "H100")).await?;
    create_gpu_nodes(&client, "l4", 2, &GpuNodeSpec::with_gpus(4, "L4")).await?;
    wait_fake_nodes_ready(&client, 10, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NS);
    let gpus = node_facts(&client).await?.gpus;

    // A PodGroup of 32 one-GPU pods on 4 nodes of 8: nothing binds while a
    // member is missing, then all 32 do.
    groups
        .create(&PostParams::default(), &pod_group(NS, "big", 32))
        .await?;
    let big: Vec<Pod> = (0..32)
        .map(|i| {
            phalanx_pod(&format!("big-{i}"), gpu_worker_container(1))
                .node_selector(LABEL_GPU_MODEL, "A100")
                .label(LABEL_POD_GROUP, "big")
                .build()
        })
        .collect();
    let mut big_names = create_pods(&pods, big[..31].to_vec()).await?;
    stays_pending(
        &pods,
        &PodSelector::names(&big_names),
        Duration::from_secs(5),
    )
    .await
    .context("gang members bound before all 32 existed")
    .with_logs(&plane)?;
    big_names.extend(create_pods(&pods, big[31..].to_vec()).await?);
    let bound = wait_bound(&pods, &big_names, Duration::from_secs(90))
        .await
        .with_logs(&plane)?;
    let problems = assignment_violations(&bound, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");

    // A gang that cannot fit: 8 members of 8 GPUs on 4 H100 nodes, one of
    // them already holding a pod. It must hold nothing.
    let blocker = create_pods(
        &pods,
        vec![phalanx_pod("blocker", gpu_worker_container(1))
            .node_selector(LABEL_GPU_MODEL, "H100")
            .build()],
    )
    .await?;
    let blocker_pod = wait_pod_bound(&pods, &blocker[0], Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let blocker_node = node_of(&blocker_pod).unwrap_or_default().to_owned();
    groups
        .create(&PostParams::default(), &pod_group(NS, "huge", 8))
        .await?;
    let huge: Vec<Pod> = (0..8)
        .map(|i| {
            phalanx_pod(&format!("huge-{i}"), gpu_worker_container(8))
                .node_selector(LABEL_GPU_MODEL, "H100")
                .label(LABEL_POD_GROUP, "huge")
                .build()
        })
        .collect();
    let huge_names = create_pods(&pods, huge).await?;
    // While members are still being created the gang waits for the rest;
    // once all exist, every member must be told that the gang does not fit.
    let failures = wait::until(
        "a FailedScheduling event saying why huge does not fit, for every member",
        Duration::from_secs(60),
        || async {
            let events = pod_events(&client, NS).await?;
            let mut notes: HashMap<String, Vec<String>> = HashMap::new();
            for e in events {
                if e.reason == "FailedScheduling" && huge_names.contains(&e.pod) {
                    notes.entry(e.pod).or_default().push(e.note);
                }
            }
            let explained: HashMap<String, String> = notes
                .iter()
                .filter_map(|(pod, notes)| {
                    let note = notes.iter().find(|n| n.contains("fit"))?;
                    Some((pod.clone(), note.clone()))
                })
                .collect();
            Ok(if explained.len() == huge_names.len() {
                Ok(explained)
            } else {
                Err(format!(
                    "only {} members have one; FailedScheduling notes: {notes:?}",
                    explained.len()
                ))
            })
        },
    )
    .await
    .with_logs(&plane)?;
    for (pod, note) in &failures {
        assert!(
            note.contains("gang") && note.contains("huge"),
            "{pod}: the event does not explain the gang: {note}"
        );
    }
    let members = pods_named(&pods, &huge_names).await?;
    assert_eq!(
        count_bound(&members),
        0,
        "members of an unfittable gang bound"
    );
    assert!(
        members.iter().all(|p| assignment_of(p).is_none()),
        "members of an unfittable gang annotated"
    );
    let blocker_now = pods_named(&pods, &blocker).await?;
    assert_eq!(node_of(&blocker_now[0]), Some(blocker_node.as_str()));
    // The waiting gang holds nothing: the three free H100 nodes take three
    // whole-node pods at once.
    let fillers: Vec<Pod> = (0..3)
        .map(|i| {
            phalanx_pod(&format!("filler-{i}"), gpu_worker_container(8))
                .node_selector(LABEL_GPU_MODEL, "H100")
                .build()
        })
        .collect();
    let filler_names = create_pods(&pods, fillers).await?;
    let filled = wait_bound(&pods, &filler_names, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    for pod in &filled {
        let node = node_of(pod).unwrap_or_default();
        assert!(
            h100.iter().any(|n| n == node) && node != blocker_node,
            "{:?} on {node}",
            pod.metadata.name
        );
    }
    let members = pods_named(&pods, &huge_names).await?;
    assert_eq!(
        count_bound(&members),
        0,
        "members of an unfittable gang bound"
    );

    // The annotation form: 4 members of 2 GPUs on two 4-GPU L4 nodes.
    let ann: Vec<Pod> = (0..4)
        .map(|i| {
            phalanx_pod(&format!("ann-gang-{i}"), gpu_worker_container(2))
                .node_selector(LABEL_GPU_MODEL, "L4")
                .annotation(ANNOTATION_GANG_NAME, "ann-gang")
                .annotation(ANNOTATION_GANG_MIN_MEMBER, "4")
                .build()
        })
        .collect();
    let mut ann_names = create_pods(&pods, ann[..3].to_vec()).await?;
    stays_pending(
        &pods,
        &PodSelector::names(&ann_names),
        Duration::from_secs(3),
    )
    .await
    .context("annotation-gang members bound before all 4 existed")
    .with_logs(&plane)?;
    ann_names.extend(create_pods(&pods, ann[3..].to_vec()).await?);
    wait_bound(&pods, &ann_names, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    let all = pods.list(&ListParams::default()).await?.items;
    let problems = assignment_violations(&all, &gpus);
    assert!(problems.is_empty(), "{problems:#?}");
    Ok(())
}

/// A rack label of the kind operators put on nodes.
const LABEL_RACK: &str = "topology.example.com/rack";

/// What Deployments and operators create, on nodes labelled as real clusters
/// label them: pods named by the API server (`generateName`) with a
/// PriorityClass, placed by zone and rack labels, found again by name prefix
/// and by label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_pods_with_a_priority_class_follow_zone_and_rack_labels() -> anyhow::Result<()> {
    let test = "generated_pods_with_a_priority_class_follow_zone_and_rack_labels";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    for (zone, rack) in [
        ("zone-a", "r1"),
        ("zone-a", "r2"),
        ("zone-b", "r3"),
        ("zone-b", "r4"),
    ] {
        let spec = GpuNodeSpec::with_gpus(2, "H100")
            .label(LABEL_ZONE, zone)
            .label(LABEL_RACK, rack);
        create_gpu_nodes(&client, &format!("{zone}-{rack}"), 1, &spec).await?;
    }
    wait_fake_nodes_ready(&client, 4, Duration::from_secs(60)).await?;
    let class =
        create_priority_class(&client, "training-high", 100_000, PreemptionPolicy::Never).await?;
    assert_eq!(class.preemption_policy.as_deref(), Some("Never"));
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let trainer = || {
        PodBuilder::generated("trainer-", SCHEDULER_NAME, gpu_worker_container(1))
            .label("app", "trainer")
            .node_selector(LABEL_ZONE, "zone-b")
            .priority_class("training-high")
    };

    // Four trainers fill zone-b's two nodes of two GPUs.
    let names = create_pods(&pods, (0..4).map(|_| trainer().build()).collect()).await?;
    let distinct: HashSet<&String> = names.iter().collect();
    assert!(
        distinct.len() == 4 && names.iter().all(|n| n.len() > "trainer-".len()),
        "the API server names each pod: {names:?}"
    );
    let trainers = wait_selected_bound(
        &pods,
        &PodSelector::name_prefix("trainer-"),
        4,
        Duration::from_secs(60),
    )
    .await
    .with_logs(&plane)?;
    let facts = node_facts(&client).await?;
    for pod in &trainers {
        let node = node_of(pod).unwrap_or_default();
        assert_eq!(facts.label(node, LABEL_ZONE), Some("zone-b"), "{node}");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.priority, Some(100_000), "admission resolved the class");
    }
    let by_label = PodSelector::labels("app=trainer").list(&pods).await?;
    assert_eq!(by_label.len(), 4);

    // Required node affinity on the rack label: a share lands on rack r1.
    let pinned = create_pods(
        &pods,
        vec![
            PodBuilder::generated("pinned-", SCHEDULER_NAME, gpu_share_container(500))
                .required_node_label_in(LABEL_RACK, &["r1"])
                .build(),
        ],
    )
    .await?;
    let pinned = wait_pod_bound(&pods, &pinned[0], Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let node = node_of(&pinned).unwrap_or_default();
    assert_eq!(facts.label(node, LABEL_RACK), Some("r1"), "{node}");

    // A fifth trainer finds zone-b full: it waits, and is told why.
    let late = create_pods(
        &pods,
        vec![
            PodBuilder::generated("late-", SCHEDULER_NAME, gpu_worker_container(1))
                .node_selector(LABEL_ZONE, "zone-b")
                .priority_class("training-high")
                .build(),
        ],
    )
    .await?;
    stays_pending(
        &pods,
        &PodSelector::name_prefix("late-"),
        Duration::from_secs(3),
    )
    .await
    .with_logs(&plane)?;
    let event = wait_pod_event(
        &client,
        NS,
        &late[0],
        "FailedScheduling",
        "nodes are available",
        Duration::from_secs(30),
    )
    .await
    .with_logs(&plane)?;
    assert!(
        event.note.starts_with("0/4 nodes are available"),
        "{event:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_no_pod_is_bound_twice_or_lost() -> anyhow::Result<()> {
    const PODS: usize = 200;
    const KILL_AFTER: usize = 80;
    let test = "a_killed_leader_is_replaced_and_no_pod_is_bound_twice_or_lost";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "gpu", 30, &GpuNodeSpec::with_gpus(8, "A100")).await?;
    wait_fake_nodes_ready(&client, 30, Duration::from_secs(90)).await?;
    let election = LeaderElectionOptions {
        lease_duration_seconds: 4,
        ..LeaderElectionOptions::default()
    };
    let options = PhalanxOptions {
        binary: Some(binary),
        leader_election: Some(election.clone()),
        ..PhalanxOptions::default()
    };
    let first = plane.start_phalanx_scheduler(&options).await?;
    // A standby need not report ready before it leads.
    let second = plane
        .start_phalanx_scheduler(&PhalanxOptions {
            ready_path: "/healthz".to_owned(),
            ..options.clone()
        })
        .await?;
    let replicas = [first, second];
    let leader_identity = wait::until_some("a Lease holder", Duration::from_secs(30), || async {
        Ok(lease_holder(&client, &election.lease_namespace, &election.lease_name).await?)
    })
    .await
    .with_logs(&plane)?;
    let leader = replicas
        .iter()
        .find(|r| r.identity == leader_identity)
        .with_context(|| format!("the Lease names {leader_identity}, not a replica"))?
        .clone();
    let survivor = replicas
        .iter()
        .find(|r| r.identity != leader_identity)
        .unwrap()
        .clone();

    // Record every nodeName each pod is ever seen with.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let ledger = BindingLedger::watch(pods.clone());

    let names: Vec<String> = (0..PODS).map(|i| format!("ha-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        if i == KILL_AFTER {
            assert!(plane.kill_component(leader.pid), "the leader was running");
            eprintln!(
                "killed leader {} (pid {}) after {i} pods",
                leader.identity, leader.pid
            );
        }
        pods.create(
            &PostParams::default(),
            &phalanx_pod(name, gpu_worker_container(1)).build(),
        )
        .await?;
        // Spread creation over several seconds so the crash is mid-stream.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let bound = wait_bound(&pods, &names, Duration::from_secs(120))
        .await
        .with_logs(&plane)?;
    let holder = lease_holder(&client, &election.lease_namespace, &election.lease_name).await?;
    assert_eq!(holder.as_deref(), Some(survivor.identity.as_str()));
    assert!(survivor.is_ready().await, "the new leader is not ready");

    let gpus = node_facts(&client).await?.gpus;
    let problems = assignment_violations(&bound, &gpus);
    assert!(
        problems.is_empty(),
        "{problems:#?}\n{}",
        plane.phalanx_logs()
    );

    // Let late events and watch updates arrive.
    let seen = ledger.finish(Duration::from_secs(3)).await;
    for pod in &bound {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let node = node_of(pod).unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let nodes = seen.get(&uid).map(|r| r.nodes.clone()).unwrap_or_default();
        assert!(
            nodes.len() <= 1 && nodes.iter().all(|n| n == node),
            "{name} was seen on {nodes:?}, now on {node}"
        );
    }
    let events = pod_events(&client, NS).await?;
    let mut scheduled: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in events.iter().filter(|e| e.reason == "Scheduled") {
        // A repeated event is one object with a count: count it as often.
        for _ in 0..event.count.max(1) {
            scheduled
                .entry(event.pod.as_str())
                .or_default()
                .push(event.note.as_str());
        }
    }
    for pod in &bound {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let node = node_of(pod).unwrap_or_default();
        let notes = scheduled.get(name).cloned().unwrap_or_default();
        assert!(
            notes.len() <= 1 && notes.iter().all(|n| n.contains(node)),
            "{name} (on {node}) has Scheduled events {notes:?}"
        );
    }
    Ok(())
}

/// [`wait::wait_not_scheduled`] in this file's namespace.
async fn wait_not_scheduled(
    client: &kube::Client,
    pods: &Api<Pod>,
    name: &str,
    reason: &str,
) -> anyhow::Result<String> {
    wait::wait_not_scheduled(client, pods, NS, name, reason).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_and_unschedulable_pods_say_so_in_their_pod_scheduled_condition() -> anyhow::Result<()>
{
    let test = "gated_and_unschedulable_pods_say_so_in_their_pod_scheduled_condition";
    let Some((mut plane, binary)) = plane_for(test).await? else {
        return Ok(());
    };
    let client = plane.client();
    create_gpu_nodes(&client, "a100", 2, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    wait_fake_nodes_ready(&client, 2, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(binary),
            ..PhalanxOptions::default()
        })
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // A gated pod (as Kueue holds one) waits, marked SchedulingGated (by the
    // API server at creation; scheduler/tests/mock_loop.rs shows Phalanx's own
    // write), with no FailedScheduling events, although it fits.
    let mut gated = phalanx_pod("gated", gpu_worker_container(1)).build();
    if let Some(spec) = gated.spec.as_mut() {
        spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: "example.com/hold".to_owned(),
        }]);
    }
    create_pods(&pods, vec![gated]).await?;
    let message = wait_not_scheduled(&client, &pods, "gated", "SchedulingGated")
        .await
        .with_logs(&plane)?;
    assert_eq!(
        message,
        "Scheduling is blocked due to non-empty scheduling gates"
    );
    // A control that fits like it is bound meanwhile, so the scheduler has
    // had its chance at the gated pod too.
    let control = create_pods(
        &pods,
        vec![phalanx_pod("control", gpu_worker_container(1)).build()],
    )
    .await?;
    wait_pod_bound(&pods, &control[0], Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    assert_eq!(
        node_of(&pods.get("gated").await?),
        None,
        "a gated pod was bound"
    );
    let about_gated: Vec<_> = pod_events(&client, NS)
        .await?
        .into_iter()
        .filter(|e| e.pod == "gated")
        .collect();
    assert_eq!(about_gated, vec![], "events about a gated pod");
    // Its last gate removed, it is bound, and the Binding set PodScheduled=True.
    pods.patch(
        "gated",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"schedulingGates": null}})),
    )
    .await?;
    let bound = wait_pod_bound(&pods, "gated", Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let (status, _, _) = pod_scheduled(&bound).unwrap_or_default();
    assert_eq!(status, "True", "{:?}", pod_scheduled(&bound));

    // More GPUs than any node has: Unschedulable, with the event's message.
    create_pods(
        &pods,
        vec![phalanx_pod("too-big", gpu_worker_container(16)).build()],
    )
    .await?;
    let message = wait_not_scheduled(&client, &pods, "too-big", "Unschedulable")
        .await
        .with_logs(&plane)?;
    assert!(
        message.starts_with("0/2 nodes are available: "),
        "{message}"
    );

    // A gated member holds its gang back: neither member is bound while it
    // is gated (a pod created after them is), both are once it is ungated.
    let mut held = Vec::new();
    for i in 0..2 {
        let mut member = phalanx_pod(&format!("held-{i}"), gpu_worker_container(1))
            .annotation(ANNOTATION_GANG_NAME, "held")
            .annotation(ANNOTATION_GANG_MIN_MEMBER, "2")
            .build();
        if let (0, Some(spec)) = (i, member.spec.as_mut()) {
            spec.scheduling_gates = Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "example.com/hold".to_owned(),
            }]);
        }
        held.push(member);
    }
    let held = create_pods(&pods, held).await?;
    wait_not_scheduled(&client, &pods, &held[0], "SchedulingGated")
        .await
        .with_logs(&plane)?;
    let control = create_pods(
        &pods,
        vec![phalanx_pod("control-2", gpu_worker_container(1)).build()],
    )
    .await?;
    wait_pod_bound(&pods, &control[0], Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    for name in &held {
        assert_eq!(
            node_of(&pods.get(name).await?),
            None,
            "{name} bound while gated"
        );
    }
    pods.patch(
        &held[0],
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"schedulingGates": null}})),
    )
    .await?;
    wait_bound(&pods, &held, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;

    // A gang that cannot fit (3 members of 4 GPUs where 3 are free): every
    // member is marked.
    let members: Vec<Pod> = (0..3)
        .map(|i| {
            phalanx_pod(&format!("gang-{i}"), gpu_worker_container(4))
                .annotation(ANNOTATION_GANG_NAME, "wide")
                .annotation(ANNOTATION_GANG_MIN_MEMBER, "3")
                .build()
        })
        .collect();
    let names = create_pods(&pods, members).await?;
    for name in &names {
        wait_not_scheduled(&client, &pods, name, "Unschedulable")
            .await
            .with_logs(&plane)?;
        assert_eq!(node_of(&pods.get(name).await?), None, "{name} bound");
    }
    Ok(())
}
