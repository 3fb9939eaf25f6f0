//! `kubectl phalanx`: why a pod waits, what each GPU holds, would a pod fit if …
//!
//! Installed as `kubectl-phalanx` on PATH, kubectl runs it for
//! `kubectl phalanx …`. It reads the cluster with the current kubeconfig
//! context and never writes.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use phalanx_api::SCHEDULER_NAME;
use phalanx_engine::PolicyName;
use phalanx_kubectl::{cluster, gpus, sim, why};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "kubectl-phalanx",
    bin_name = "kubectl phalanx",
    about = "Ask Phalanx why a pod waits, what each GPU holds, and whether a pod would fit if ...",
    version
)]
struct Cli {
    /// Namespace of the pod (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// The schedulerName Phalanx runs as.
    #[arg(long, global = true, default_value = SCHEDULER_NAME)]
    scheduler_name: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Why the pod waits: the last decision, per-reason node counts, the
    /// nearest node and what it lacks, its gang and its queue position.
    Why {
        /// The pod's name.
        pod: String,
    },
    /// Every GPU: model, allocation and holders, health, telemetry age.
    Gpus {
        /// Only this node's GPUs.
        node: Option<String>,
    },
    /// Would the pod fit if ...: the engine on a changed copy of the cluster.
    Sim {
        /// The pod's name.
        pod: String,
        /// ... it asked for this many whole GPUs (0: none).
        #[arg(long)]
        gpus: Option<u32>,
        /// ... it asked for a share of one GPU of this many milli.
        #[arg(long)]
        gpu_milli: Option<u32>,
        /// ... its containers requested this much CPU in all (e.g. 4, 500m).
        #[arg(long)]
        cpu: Option<String>,
        /// ... its containers requested this much memory in all (e.g. 16Gi).
        #[arg(long)]
        memory: Option<String>,
        /// ... this pod were gone (NAME in the pod's namespace, or NAMESPACE/NAME).
        #[arg(long, value_name = "POD")]
        evict: Vec<String>,
        /// ... this node were gone.
        #[arg(long, value_name = "NODE")]
        without: Vec<String>,
        /// ... an empty node like this one were added.
        #[arg(long, value_name = "NODE")]
        add_node_like: Vec<String>,
        /// The placement policy to try it with.
        #[arg(long, default_value = "phalanx")]
        policy: PolicyName,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            // The context and the deepest cause; the layers between repeat
            // them (kube's errors print their sources themselves).
            eprintln!("error: {error}");
            let root = error.root_cause().to_string();
            if root != error.to_string() {
                eprintln!("caused by: {root}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<String> {
    let client = Client::try_default()
        .await
        .context("no cluster to talk to (is KUBECONFIG or a kubeconfig context set?)")?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    match cli.command {
        Command::Why { pod } => {
            let pod = cluster::pod(&client, &namespace, &pod).await?;
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let events = cluster::scheduling_events(&client, &namespace, &uid).await?;
            let report = why::why(&pod, &events, &cli.scheduler_name)?;
            output(cli.output, &report, why::render)
        }
        Command::Gpus { node } => {
            let nodes: Vec<Node> = cluster::all(&client).await?;
            if let Some(wanted) = &node {
                if !nodes
                    .iter()
                    .any(|n| n.metadata.name.as_ref() == Some(wanted))
                {
                    anyhow::bail!("node {wanted} not found");
                }
            }
            let gpu_nodes = cluster::all(&client).await?;
            let pods = cluster::all(&client).await?;
            let report =
                gpus::gpu_report(&nodes, &gpu_nodes, &pods, Timestamp::now(), node.as_deref());
            output(cli.output, &report, gpus::render)
        }
        Command::Sim {
            pod,
            gpus,
            gpu_milli,
            cpu,
            memory,
            evict,
            without,
            add_node_like,
            policy,
        } => {
            let pod = cluster::pod(&client, &namespace, &pod).await?;
            let objects = cluster::cluster_objects(&client).await?;
            let what_if = sim::WhatIf {
                gpus,
                gpu_milli,
                cpu,
                memory,
                evict: evict
                    .into_iter()
                    .map(|p| {
                        if p.contains('/') {
                            p
                        } else {
                            format!("{namespace}/{p}")
                        }
                    })
                    .collect(),
                without,
                add_like: add_node_like,
            };
            let now_ms = Timestamp::now().as_millisecond().max(0) as u64;
            let report = sim::simulate(&objects, &pod, &what_if, policy, now_ms)?;
            output(cli.output, &report, sim::render)
        }
    }
}

fn output<T: Serialize + ?Sized>(
    format: Output,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> Result<String> {
    Ok(match format {
        Output::Table => table(value),
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
    })
}
