//! `phalanx-autoscaler`: scales inference workloads on Prometheus metrics,
//! never beyond what the cluster can place.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kube::{Client, CustomResourceExt};
use phalanx_api::InferenceAutoscaler;
use phalanx_autoscaler::controller::config::{AutoscalerConfig, ConfigFile};
use phalanx_runtime::{logging::init_logging, shutdown::shutdown_signal};

#[derive(Debug, Parser)]
#[command(name = "phalanx-autoscaler", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the autoscaler.
    Run {
        /// YAML config file; without one, every setting takes its default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and print it with defaults filled in.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the InferenceAutoscaler CustomResourceDefinition.
    Crd,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run { config } => {
            let config = match config {
                Some(path) => AutoscalerConfig::load(&path)?,
                None => AutoscalerConfig::default(),
            };
            init_logging(&config.logging);
            let client = Client::try_default()
                .await
                .context("no Kubernetes client configuration (in-cluster or KUBECONFIG)")?;
            phalanx_autoscaler::controller::run(config, client, shutdown_signal()).await?;
            tracing::info!("shut down");
            Ok(())
        }
        Command::CheckConfig { config } => {
            let loaded = AutoscalerConfig::load(&config)?;
            println!("{}: valid\n{loaded:#?}", config.display());
            Ok(())
        }
        Command::Crd => {
            print!("{}", serde_yaml_ng::to_string(&InferenceAutoscaler::crd())?);
            Ok(())
        }
    }
}
