//! The `phalanx-device-plugin` command. Today: `probe`, which prints what a GPU
//! backend sees (inventory, telemetry, events) as JSON. The kubelet plugin server
//! comes with issue 5.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use phalanx_device_plugin::backend::{FakeBackend, GpuBackend, NvmlBackend};

#[derive(Parser, Debug)]
#[command(
    name = "phalanx-device-plugin",
    version,
    about = "Phalanx GPU device plugin"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the GPUs a backend sees, their live state, and events over a short window.
    Probe {
        #[arg(long, value_enum, default_value_t = Backend::Nvml)]
        backend: Backend,
        /// JSON description of the fake node (with `--backend fake`).
        #[arg(long)]
        fake_file: Option<PathBuf>,
        /// Seconds to listen for critical XID events.
        #[arg(long, default_value_t = 2)]
        events_seconds: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Nvml,
    Fake,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Probe {
            backend,
            fake_file,
            events_seconds,
        } => {
            let mut backend: Box<dyn GpuBackend> = match backend {
                Backend::Nvml => Box::new(NvmlBackend::new()?),
                Backend::Fake => {
                    let file = fake_file.context("--backend fake needs --fake-file")?;
                    Box::new(FakeBackend::from_file(&file)?)
                }
            };
            let inventory = backend.inventory()?;
            let telemetry = backend.telemetry()?;
            let events = backend.wait_for_events(Duration::from_secs(events_seconds))?;
            let report = serde_json::json!({
                "backend": backend.name(),
                "inventory": inventory,
                "telemetry": telemetry,
                "events": events,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}
