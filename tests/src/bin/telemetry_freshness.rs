//! Telemetry freshness on a real control plane: how old the GPU state is that
//! the scheduler reads from a `GpuNode`, and how long a change on a GPU takes
//! to reach it.
//!
//! Runs the device plugin as it runs on a node (fake backend, the daemon's
//! default 1 s samples, 4 s heartbeat and 2 writes/s) for one KWOK GPU node,
//! changes one fake GPU's memory use every `--change-every` seconds, and
//! follows the node's `GpuNode` through a watch, as the scheduler does. It
//! reports, over `--seconds`:
//!
//! - **staleness**: every 100 ms, `now - status.observedAt` of the newest
//!   `GpuNode` the watch delivered (what the scheduler would judge against its
//!   10 s limit at that instant);
//! - **change latency**: from a memory change on the GPU to the first watched
//!   `GpuNode` that shows it.
//!
//! `observedAt` is a MicroTime, so the ages are exact to the millisecond.
//!
//! ```text
//! cargo run --release -p phalanx-e2e --bin telemetry_freshness -- --seconds 120
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use phalanx_api::GpuNode;
use phalanx_device_plugin::backend::{FakeBackend, FakeNode};
use phalanx_device_plugin::daemon::DaemonConfig;
use phalanx_e2e::device_plugin::{start_device_plugin, DevicePluginOptions};
use phalanx_e2e::{
    create_gpu_nodes, install_phalanx_crds, wait_fake_nodes_ready, Binaries, ControlPlane,
    GpuNodeSpec,
};

const MEMORY_MIB: u64 = 81_559;

#[derive(Debug, Parser)]
#[command(about = "How fresh the GpuNode telemetry the scheduler reads is")]
struct Args {
    /// How long to measure.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Seconds between memory changes on the GPU (not a multiple of the
    /// heartbeat, so changes land at every phase of it).
    #[arg(long, default_value_t = 7.3)]
    change_every: f64,
    /// Also write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binaries =
        Binaries::locate().context("control-plane binaries (tests/control-plane/ensure.sh)")?;
    let plane = ControlPlane::start(binaries).await?;
    let client = plane.client();
    install_phalanx_crds(&client).await?;
    let node = create_gpu_nodes(&client, "fresh", 1, &GpuNodeSpec::default())
        .await?
        .remove(0);
    wait_fake_nodes_ready(&client, 1, Duration::from_secs(60)).await?;

    // The daemon's own defaults, not the faster ones the tests use.
    let defaults = DaemonConfig::for_node(&node);
    let fake = FakeBackend::new(FakeNode::uniform(2, "NVIDIA H100 80GB HBM3", MEMORY_MIB));
    let uuid = "GPU-fake-0000";
    let plugin = start_device_plugin(
        &client,
        &node,
        fake.clone(),
        &DevicePluginOptions {
            sample_interval: defaults.sample_interval,
            heartbeat: defaults.heartbeat,
            with_fake_kubelet: false,
        },
    )
    .await?;

    let api: Api<GpuNode> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut updates = watcher(api, config).applied_objects().boxed();
    let mut staleness: Vec<f64> = Vec::new();
    let mut latencies: Vec<f64> = Vec::new();
    // The newest observedAt the watch delivered (Unix seconds), and the
    // seconds between successive ones.
    let mut intervals: Vec<f64> = Vec::new();
    let mut last_observed: Option<f64> = None;
    // (the memory value set, when) of the change not yet seen.
    let mut pending: Option<(u64, Instant)> = None;
    let mut changes = 0u32;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut change = tokio::time::interval(Duration::from_secs_f64(args.change_every.max(0.5)));
    change.tick().await;
    let end = tokio::time::sleep(Duration::from_secs(args.seconds));
    tokio::pin!(end);
    eprintln!(
        "measuring for {} s: samples every {:?}, heartbeat {:?}, a memory change every {} s",
        args.seconds, defaults.sample_interval, defaults.heartbeat, args.change_every
    );
    loop {
        tokio::select! {
            () = &mut end => break,
            update = updates.next() => {
                let gpu_node = update.context("the GpuNode watch ended")??;
                let shown = gpu_node
                    .status
                    .as_ref()
                    .and_then(|s| s.gpus.iter().find(|g| g.uuid == uuid))
                    .map(|g| g.memory_used_mib);
                let observed = gpu_node
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_at.as_ref())
                    .map(|t| t.0.as_millisecond() as f64 / 1000.0);
                if let Some(observed) = observed {
                    if let Some(last) = last_observed.filter(|last| observed > *last) {
                        intervals.push(observed - last);
                    }
                    last_observed = Some(observed);
                }
                if let Some((value, at)) = pending {
                    if shown == Some(value) {
                        latencies.push(at.elapsed().as_secs_f64());
                        pending = None;
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(observed) = last_observed {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
                    staleness.push((now - observed).max(0.0));
                }
            }
            _ = change.tick() => {
                changes += 1;
                // 10 000 MiB apart: far above the 1 % that counts as a change.
                let value = 10_000 * u64::from(1 + changes % 4);
                fake.set_memory_used(uuid, value)?;
                pending = Some((value, Instant::now()));
            }
        }
    }
    plugin.stop().await?;

    let staleness = Summary::of(&mut staleness);
    let latency = Summary::of(&mut latencies);
    let interval = Summary::of(&mut intervals);
    println!(
        "GpuNode telemetry freshness over {} s (device plugin defaults)",
        args.seconds
    );
    println!("                        n      p50      p99      max");
    println!("staleness (s)     {staleness}");
    println!("change latency (s){latency}");
    println!("between writes (s){interval}");
    println!(
        "target: fresh within 5 s at p99 -> {}",
        if staleness.p99 <= 5.0 {
            "met"
        } else {
            "MISSED"
        }
    );
    if let Some(path) = args.json {
        let json = serde_json::json!({
            "seconds": args.seconds,
            "sample_interval_seconds": defaults.sample_interval.as_secs_f64(),
            "heartbeat_seconds": defaults.heartbeat.as_secs_f64(),
            "staleness_seconds": staleness.to_json(),
            "change_latency_seconds": latency.to_json(),
            "seconds_between_writes": interval.to_json(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

/// Order statistics of one series.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Summary {
    fn of(values: &mut [f64]) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at =
            |q: f64| values[((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1];
        Self {
            n: values.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: values[values.len() - 1],
        }
    }

    fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "n": self.n, "p50": self.p50, "p99": self.p99, "max": self.max })
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>6} {:>8.2} {:>8.2} {:>8.2}",
            self.n, self.p50, self.p99, self.max
        )
    }
}
