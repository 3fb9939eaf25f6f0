//! `phalanx-scheduler`: the scheduler pods select with `schedulerName: phalanx`,
//! or (with `extender`) the same engine behind kube-scheduler's HTTP extender API.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kube::{Client, CustomResourceExt};
use phalanx_api::{GpuNode, PodGroup};
use phalanx_runtime::events::EventRecorder;
use phalanx_runtime::http::{self, Health};
use phalanx_runtime::leader;
use phalanx_runtime::{logging::init_logging, shutdown::shutdown_signal};
use phalanx_scheduler::controller::binder::Binder;
use phalanx_scheduler::controller::config::{ConfigFile, SchedulerConfig};
use phalanx_scheduler::controller::metrics::SchedulerMetrics;
use phalanx_scheduler::controller::scheduler_loop::{LoopDeps, SchedulerLoop};

#[derive(Debug, Parser)]
#[command(name = "phalanx-scheduler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Schedule pods that name this scheduler (the default mode).
    Run {
        /// YAML config file; without one, every setting takes its default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve filter, prioritize and bind as a kube-scheduler HTTP extender.
    Extender {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print it with defaults filled in.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the CustomResourceDefinitions Phalanx reads (GpuNode; PodGroup for
    /// clusters without scheduler-plugins).
    Crds {
        #[arg(long)]
        with_pod_group: bool,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<SchedulerConfig> {
    Ok(match path {
        Some(path) => SchedulerConfig::load(path)?,
        None => SchedulerConfig::default(),
    })
}

async fn run(config: SchedulerConfig) -> Result<()> {
    let config = Arc::new(config);
    let client = Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(SchedulerMetrics::new());
    // A loop silent for this long is stuck; the kubelet restarts the pod.
    let health = Arc::new(Health::new(std::time::Duration::from_secs(30)));
    let router = http::router(health.clone(), metrics.clone());
    let security = http::ServerSecurity::from_config(&config.http, &client)?;
    http::spawn_serve_secured(
        config.http.bind_address,
        router,
        security,
        shutdown_signal(),
    );
    let identity = config.leader_election.resolved_identity();
    let leadership = leader::join(client.clone(), &config.leader_election, &identity)
        .await
        .context("joining leader election")?;
    let events = EventRecorder::spawn(client.clone(), config.scheduler_name.clone(), identity);
    let binder = Binder::new(
        client.clone(),
        NonZeroU32::new(config.binding.qps).unwrap_or(NonZeroU32::MIN),
        NonZeroU32::new(config.binding.burst).unwrap_or(NonZeroU32::MIN),
        config.binding.annotation_write,
    );
    tracing::info!(scheduler = %config.scheduler_name, policy = %config.policy, "starting");
    let deps = LoopDeps {
        client,
        config,
        metrics,
        health,
        events,
        binder,
        is_leader: leadership.is_leader,
        fence: leadership.fence,
    };
    SchedulerLoop::new(deps).run(shutdown_signal()).await?;
    tracing::info!("shut down");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            let config = load_config(config.as_ref())?;
            init_logging(&config.logging);
            run(config).await
        }
        Command::Extender { config } => {
            let config = load_config(config.as_ref())?;
            init_logging(&config.logging);
            let client = Client::try_default()
                .await
                .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
            tracing::info!(policy = %config.policy, "starting in extender mode");
            phalanx_scheduler::extender::serve(Arc::new(config), client, shutdown_signal()).await?;
            tracing::info!("shut down");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let loaded = SchedulerConfig::load(&config)?;
            println!("{}: valid\n{loaded:#?}", config.display());
            Ok(())
        }
        Command::Crds { with_pod_group } => {
            print!("{}", serde_yaml_ng::to_string(&GpuNode::crd())?);
            if with_pod_group {
                println!("---");
                print!("{}", serde_yaml_ng::to_string(&PodGroup::crd())?);
            }
            Ok(())
        }
    }
}
