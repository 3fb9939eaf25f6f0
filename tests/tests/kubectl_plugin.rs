//! `kubectl-phalanx` against a real control plane and a running scheduler:
//! `why` explains a pod blocked by GPUs, one blocked by a constraint and a
//! member of an incomplete gang from what the scheduler published; `gpus`
//! lists the holders; `sim` answers "would it fit if"; a missing pod and a
//! pod of another scheduler get a one-line error.
//!
//! Needs the control-plane binaries, `cargo build -p phalanx-scheduler` and
//! `cargo build --bin kubectl-phalanx`; without them the test prints
//! `skipped: <test>: <why>`, and with `PHALANX_E2E=1` it fails instead.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::Api;
use phalanx_api::{
    PodGroup, Queue, ANNOTATION_GPU_MODELS, LABEL_POD_GROUP, LABEL_QUEUE, SCHEDULER_NAME,
};
use phalanx_e2e::helm::workspace_binary_for_test;
use phalanx_e2e::phalanx::{plane_with_scheduler, quick_retry};
use phalanx_e2e::pods::pod_group;
use phalanx_e2e::wait::{self, wait_bound, WithLogs};
use phalanx_e2e::{
    create_gpu_nodes, create_pods, gpu_worker_container, wait_fake_nodes_ready, ControlPlane,
    GpuNodeSpec, PhalanxOptions, PodBuilder,
};
use serde_json::Value;

const NS: &str = "default";

/// What one run of the plugin printed and how it exited.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn plugin(binary: &Path, kubeconfig: &Path, args: &[&str]) -> Run {
    let mut command = std::process::Command::new(binary);
    command.args(args).env("KUBECONFIG", kubeconfig);
    // Off the runtime's workers: the scheduler's probes share them.
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A control plane with `nodes` KWOK nodes of four A100s and the scheduler
/// running with `extra` config; `None` when the test is skipped.
async fn start(
    test: &str,
    nodes: usize,
    extra: serde_json::Value,
) -> anyhow::Result<Option<ControlPlane>> {
    let Some((mut plane, scheduler)) = plane_with_scheduler(test).await? else {
        return Ok(None);
    };
    let client = plane.client();
    create_gpu_nodes(&client, "gpu", nodes, &GpuNodeSpec::with_gpus(4, "A100")).await?;
    wait_fake_nodes_ready(&client, nodes, Duration::from_secs(60)).await?;
    plane
        .start_phalanx_scheduler(&PhalanxOptions {
            binary: Some(scheduler),
            extra,
            ..PhalanxOptions::default()
        })
        .await?;
    Ok(Some(plane))
}

/// `why POD -o json` once its decision says it waits for `reason`.
async fn decision_for(binary: &Path, kubeconfig: &Path, pod: &str, reason: &str) -> Value {
    wait::until(
        &format!("kubectl phalanx why {pod} to say it waits for {reason}"),
        Duration::from_secs(60),
        || async {
            let run = plugin(binary, kubeconfig, &["why", pod, "-n", NS, "-o", "json"]).await;
            if !run.ok {
                return Ok(Err(format!("exit failure: {}", run.stderr)));
            }
            let report: Value = serde_json::from_str(&run.stdout)?;
            Ok(
                if report["decision"]["waitReason"].as_str() == Some(reason) {
                    Ok(report)
                } else {
                    Err(run.stdout)
                },
            )
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_phalanx_explains_waits_lists_gpus_and_answers_what_ifs() -> anyhow::Result<()> {
    let test = "kubectl_phalanx_explains_waits_lists_gpus_and_answers_what_ifs";
    let Some(binary) = workspace_binary_for_test(test, "kubectl-phalanx", "PHALANX_KUBECTL_BIN")
    else {
        return Ok(());
    };
    let Some(plane) = start(test, 2, quick_retry()).await? else {
        return Ok(());
    };
    let client = plane.client();
    let kubeconfig: PathBuf = plane.kubeconfig().to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);

    // Three GPUs of one node taken.
    let names = create_pods(
        &pods,
        vec![PodBuilder::new("holder", SCHEDULER_NAME, gpu_worker_container(3)).build()],
    )
    .await?;
    let bound = wait_bound(&pods, &names, Duration::from_secs(60))
        .await
        .with_logs(&plane)?;
    let holder_node = bound[0].spec.as_ref().unwrap().node_name.clone().unwrap();

    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NS);
    groups
        .create(&PostParams::default(), &pod_group(NS, "train", 3))
        .await?;
    create_pods(
        &pods,
        vec![
            // Blocked by GPUs: no node has four free whole GPUs beside the holder's.
            PodBuilder::new("wants-four", SCHEDULER_NAME, gpu_worker_container(4))
                .node_selector("kubernetes.io/hostname", &holder_node)
                .build(),
            // Blocked by a constraint: no node has this model.
            PodBuilder::new("wants-v100", SCHEDULER_NAME, gpu_worker_container(1))
                .annotation(ANNOTATION_GPU_MODELS, "V100")
                .build(),
            // An incomplete gang: two of the three members it needs.
            PodBuilder::new("train-0", SCHEDULER_NAME, gpu_worker_container(1))
                .label(LABEL_POD_GROUP, "train")
                .build(),
            PodBuilder::new("train-1", SCHEDULER_NAME, gpu_worker_container(1))
                .label(LABEL_POD_GROUP, "train")
                .build(),
            // Not for Phalanx.
            PodBuilder::new("elsewhere", "default-scheduler", gpu_worker_container(1)).build(),
        ],
    )
    .await?;

    // why: blocked by GPUs.
    let gpus_short = decision_for(&binary, &kubeconfig, "wants-four", "insufficient_gpu").await;
    let decision = &gpus_short["decision"];
    assert_eq!(decision["nodes"], 2, "{gpus_short}");
    assert_eq!(decision["feasibleNodes"], 0, "{gpus_short}");
    assert_eq!(
        decision["nearest"]["name"],
        holder_node.as_str(),
        "{gpus_short}"
    );
    assert_eq!(
        decision["nearest"]["lacks"][0], "3 more whole GPU(s): 1 free, 4 requested",
        "{gpus_short}"
    );
    assert!(
        gpus_short["message"]
            .as_str()
            .unwrap()
            .starts_with("0/2 nodes are available:"),
        "{gpus_short}"
    );
    let table = plugin(&binary, &kubeconfig, &["why", "wants-four", "-n", NS]).await;
    assert!(table.ok, "{}", table.stderr);
    for wanted in [
        "Waits:    for GPUs",
        "Insufficient nvidia.com/gpu",
        &format!("Nearest node: {holder_node}, which lacks:"),
    ] {
        assert!(
            table.stdout.contains(wanted),
            "{wanted:?} not in\n{}",
            table.stdout
        );
    }

    // why: blocked by a constraint.
    let model = decision_for(&binary, &kubeconfig, "wants-v100", "constraint").await;
    assert_eq!(
        model["decision"]["reasons"]["node(s) didn't have the requested GPU model"], 2,
        "{model}"
    );
    assert_eq!(
        model["decision"]["nearest"]["lacks"][0], "a GPU model the pod accepts: it has A100",
        "{model}"
    );

    // why: a member of an incomplete gang.
    let member = decision_for(&binary, &kubeconfig, "train-0", "gang").await;
    let gang = &member["decision"]["gang"];
    assert_eq!(gang["name"], "default/train", "{member}");
    assert_eq!(gang["members"], 2, "{member}");
    assert_eq!(gang["placed"], 0, "{member}");
    assert_eq!(gang["minMember"], 3, "{member}");
    let table = plugin(&binary, &kubeconfig, &["why", "train-1", "-n", NS]).await;
    assert!(
        table
            .stdout
            .contains("Gang:     default/train: waits for members: 2 of the 3 it needs exist"),
        "{}",
        table.stdout
    );

    // why: a bound pod says where.
    let placed = plugin(&binary, &kubeconfig, &["why", "holder", "-n", NS]).await;
    assert!(
        placed
            .stdout
            .contains(&format!("bound to node {holder_node}")),
        "{}",
        placed.stdout
    );

    // gpus: the holder's three GPUs, as table and JSON.
    let rows = plugin(&binary, &kubeconfig, &["gpus", "-o", "json"]).await;
    assert!(rows.ok, "{}", rows.stderr);
    let report: Value = serde_json::from_str(&rows.stdout)?;
    let rows = report["gpus"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "two nodes of four GPUs");
    let held: Vec<&Value> = rows
        .iter()
        .filter(|r| r["holders"][0]["pod"] == "default/holder")
        .collect();
    assert_eq!(held.len(), 3);
    assert!(held.iter().all(|r| r["node"] == holder_node.as_str()));
    let table = plugin(&binary, &kubeconfig, &["gpus", &holder_node]).await;
    assert!(
        table.stdout.contains("default/holder(1000m)"),
        "{}",
        table.stdout
    );
    assert_eq!(table.stdout.lines().count(), 5, "a header and four GPUs");

    // sim: as it is, no; with one GPU, or without the holder, yes.
    let asis = plugin(&binary, &kubeconfig, &["sim", "wants-four", "-n", NS]).await;
    assert!(
        asis.stdout.contains("Fits:   no"),
        "{}{}",
        asis.stdout,
        asis.stderr
    );
    for what_if in [&["--gpus", "1"][..], &["--evict", "holder"][..]] {
        let mut args = vec!["sim", "wants-four", "-n", NS, "-o", "json"];
        args.extend_from_slice(what_if);
        let run = plugin(&binary, &kubeconfig, &args).await;
        assert!(run.ok, "{what_if:?}: {}", run.stderr);
        let report: Value = serde_json::from_str(&run.stdout)?;
        assert_eq!(report["fits"], true, "{what_if:?}: {report}");
        assert_eq!(report["node"], holder_node.as_str(), "{report}");
    }
    let bad = plugin(
        &binary,
        &kubeconfig,
        &["sim", "wants-four", "-n", NS, "--evict", "nobody"],
    )
    .await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("--evict default/nobody: no such pod"),
        "{}",
        bad.stderr
    );

    // Bad input: a clear line on stderr, a failing exit, nothing on stdout.
    let missing = plugin(&binary, &kubeconfig, &["why", "no-such-pod", "-n", NS]).await;
    assert!(!missing.ok);
    assert!(missing.stdout.is_empty());
    assert_eq!(
        missing.stderr.trim(),
        "error: pod default/no-such-pod not found"
    );
    let foreign = plugin(&binary, &kubeconfig, &["why", "elsewhere", "-n", NS]).await;
    assert!(!foreign.ok);
    assert!(
        foreign
            .stderr
            .starts_with("error: pod default/elsewhere is not a Phalanx pod"),
        "{}",
        foreign.stderr
    );
    Ok(())
}

/// With queues on, a pod its queue's limit holds back says so, and where it
/// stands in its queue: of two waiting behind a one-GPU limit, one has the
/// other ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_phalanx_why_gives_the_queue_position_of_a_pod_over_its_limit() -> anyhow::Result<()>
{
    let test = "kubectl_phalanx_why_gives_the_queue_position_of_a_pod_over_its_limit";
    let Some(binary) = workspace_binary_for_test(test, "kubectl-phalanx", "PHALANX_KUBECTL_BIN")
    else {
        return Ok(());
    };
    let mut extra = quick_retry();
    extra["queues"] = serde_json::json!({"enabled": true});
    let Some(plane) = start(test, 1, extra).await? else {
        return Ok(());
    };
    let client = plane.client();
    let kubeconfig: PathBuf = plane.kubeconfig().to_owned();
    let queues: Api<Queue> = Api::all(client.clone());
    let capped: Queue = serde_json::from_value(serde_json::json!({
        "apiVersion": "phalanx.dev/v1alpha1", "kind": "Queue",
        "metadata": {"name": "capped"},
        "spec": {"resources": [{"resource": "nvidia.com/gpu", "limit": "1"}]},
    }))?;
    queues.create(&PostParams::default(), &capped).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let names: Vec<String> = (0..3).map(|i| format!("capped-{i}")).collect();
    create_pods(
        &pods,
        names
            .iter()
            .map(|n| {
                PodBuilder::new(n, SCHEDULER_NAME, gpu_worker_container(1))
                    .label(LABEL_QUEUE, "capped")
                    .build()
            })
            .collect(),
    )
    .await?;
    let mut waiting = Vec::new();
    let mut bound = 0;
    for name in &names {
        let pod = wait::until(
            &format!("{name} bound or waiting on its quota"),
            Duration::from_secs(60),
            || async {
                let run =
                    plugin(&binary, &kubeconfig, &["why", name, "-n", NS, "-o", "json"]).await;
                let report: Value = serde_json::from_str(&run.stdout)
                    .map_err(|e| anyhow::anyhow!("{e}: {}{}", run.stdout, run.stderr))?;
                Ok(
                    if report["state"] == "bound" || report["decision"]["waitReason"] == "quota" {
                        Ok(report)
                    } else {
                        Err(run.stdout)
                    },
                )
            },
        )
        .await
        .with_logs(&plane)?;
        if pod["state"] == "bound" {
            bound += 1;
        } else {
            waiting.push(pod);
        }
    }
    assert_eq!(bound, 1, "the limit lets one GPU through: {waiting:?}");
    let mut ahead: Vec<u64> = waiting
        .iter()
        .map(|w| {
            assert_eq!(w["decision"]["queue"]["name"], "capped", "{w}");
            assert!(
                w["message"].as_str().unwrap().contains("over its limit"),
                "{w}"
            );
            w["decision"]["queue"]["ahead"].as_u64().unwrap()
        })
        .collect();
    ahead.sort_unstable();
    assert_eq!(ahead, [0, 1], "{waiting:?}");
    let table = plugin(
        &binary,
        &kubeconfig,
        &[
            "why",
            waiting[0]["pod"]
                .as_str()
                .unwrap()
                .trim_start_matches("default/"),
            "-n",
            NS,
        ],
    )
    .await;
    assert!(
        table.stdout.contains("Waits:    for its queue's quota"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("Queue:    capped: "),
        "{}",
        table.stdout
    );
    Ok(())
}
