//! Scheduling throughput benchmark on a real control plane with KWOK nodes.
//!
//! Creates N fake GPU nodes and M pods asking for one whole GPU each, and
//! measures, from the first pod created to the last binding seen on a watch,
//! how fast the chosen scheduler binds them; then the GPUs left fragmented and
//! the apiserver's request rate over the same window.
//!
//! `cargo run --release -p phalanx-e2e --bin throughput -- --scheduler kube-scheduler --nodes 1000 --pods 5000 --json out.json`

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use phalanx_api::{RESOURCE_WHOLE_GPU, SCHEDULER_NAME};
use phalanx_e2e::{
    create_gpu_nodes, gpu_worker_container, wait_fake_nodes_ready, Binaries, ControlPlane,
    GpuNodeSpec, SchedulerOptions,
};

/// Label on the benchmark's pods.
const POD_LABEL: &str = "phalanx.dev/e2e-bench";
/// Pod creations in flight at once.
const CREATE_CONCURRENCY: usize = 64;
const NAMESPACE: &str = "default";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scheduler {
    /// Upstream kube-scheduler, profile `default-scheduler`.
    KubeScheduler,
    /// Phalanx's scheduler (issue 4).
    Phalanx,
}

#[derive(Debug, Parser)]
#[command(about = "Pods bound per second on a KWOK cluster of fake GPU nodes")]
struct Args {
    #[arg(long, value_enum)]
    scheduler: Scheduler,
    /// Fake GPU nodes to create.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods to create, each requesting one whole GPU.
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Whole GPUs per node.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: u32,
    /// Scheduler client QPS (kube-scheduler's default is 50).
    #[arg(long, default_value_t = 5000)]
    qps: u32,
    /// Scheduler client burst (kube-scheduler's default is 100).
    #[arg(long, default_value_t = 10000)]
    burst: u32,
    /// Give up waiting for bindings after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Write the result here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Create every pod before the scheduler starts and time only the binding, so
    /// that the apiserver's pod-creation rate does not cap the figure.
    #[arg(long)]
    precreate: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    scheduler: &'static str,
    /// "streamed" (pods created while the scheduler runs) or "precreated".
    mode: &'static str,
    nodes: usize,
    pods: usize,
    pods_bound: usize,
    pods_per_second: f64,
    /// Free whole GPUs on nodes that have some but not all GPUs in use.
    fragmented_gpus: u64,
    /// apiserver requests per second (all clients) over the measured window.
    api_qps: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if matches!(args.scheduler, Scheduler::Phalanx) {
        bail!("phalanx-scheduler binary not built yet (issue 4)");
    }
    // The schedulerName the pods carry, so that exactly one scheduler takes them.
    let scheduler_name = match args.scheduler {
        Scheduler::KubeScheduler => "default-scheduler",
        Scheduler::Phalanx => SCHEDULER_NAME,
    };
    let binaries = Binaries::locate()?;

    let started = Instant::now();
    let mut plane = ControlPlane::start(binaries).await?;
    eprintln!("control plane up in {:.1?}", started.elapsed());
    let client = plane.client();

    let spec = GpuNodeSpec {
        gpus: args.gpus_per_node,
        ..GpuNodeSpec::default()
    };
    let t = Instant::now();
    create_gpu_nodes(&client, "gpu", args.nodes, &spec).await?;
    let ready_timeout = Duration::from_secs(120 + u64::try_from(args.nodes / 20)?);
    wait_fake_nodes_ready(&client, args.nodes, ready_timeout).await?;
    eprintln!("{} fake GPU nodes Ready in {:.1?}", args.nodes, t.elapsed());

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    if args.precreate {
        let t = Instant::now();
        create_pods(&pods, args.pods, scheduler_name).await?;
        eprintln!(
            "{} pods created in {:.1?} before the scheduler starts",
            args.pods,
            t.elapsed()
        );
    }

    let options = SchedulerOptions {
        qps: args.qps,
        burst: args.burst,
        ..SchedulerOptions::default()
    };
    plane.start_kube_scheduler(&options).await?;
    println!(
        "kube-scheduler started with clientConnection.qps={} burst={} (raised from its defaults 50/100 so that its API client is not the bottleneck)",
        options.qps, options.burst
    );

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_bindings(pods.clone(), args.pods, bound_tx));

    let requests_before = apiserver_requests(&client).await?;
    let window_start = Instant::now();
    if !args.precreate {
        create_pods(&pods, args.pods, scheduler_name).await?;
        eprintln!(
            "{} pods created in {:.1?}",
            args.pods,
            window_start.elapsed()
        );
    }

    let timeout = Duration::from_secs(args.timeout_secs);
    let (pods_bound, last_bound) = match tokio::time::timeout(timeout, bound_rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => bail!("the pod watch ended unexpectedly: {:?}", watch.await),
        Err(_) => {
            watch.abort();
            eprintln!("WARNING: not every pod was bound within {timeout:?}");
            let bound = count_bound(&pods).await?;
            (bound, Instant::now())
        }
    };
    let window = last_bound.duration_since(window_start);
    let requests_after = apiserver_requests(&client).await?;
    let measured = window_start.elapsed();

    let report = Report {
        scheduler: match args.scheduler {
            Scheduler::KubeScheduler => "kube-scheduler",
            Scheduler::Phalanx => "phalanx",
        },
        mode: if args.precreate {
            "precreated"
        } else {
            "streamed"
        },
        nodes: args.nodes,
        pods: args.pods,
        pods_bound,
        pods_per_second: rate(pods_bound as f64, window),
        fragmented_gpus: fragmented_gpus(&client, &pods).await?,
        api_qps: rate(requests_after - requests_before, measured),
    };
    println!(
        "{} bound {}/{} pods on {} nodes in {:.2}s: {:.1} pods/s; {} GPUs fragmented \
         (free GPUs on nodes with some but not all GPUs in use); apiserver {:.0} requests/s (all clients)",
        report.scheduler,
        report.pods_bound,
        report.pods,
        report.nodes,
        window.as_secs_f64(),
        report.pods_per_second,
        report.fragmented_gpus,
        report.api_qps
    );
    let json = serde_json::to_string_pretty(&report)?;
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    drop(plane);
    Ok(())
}

/// Creates the benchmark's pods, `CREATE_CONCURRENCY` requests in flight.
async fn create_pods(pods: &Api<Pod>, count: usize, scheduler_name: &str) -> anyhow::Result<()> {
    futures::stream::iter((0..count).map(|i| {
        let pods = pods.clone();
        let pod = gpu_pod(&format!("bench-{i}"), scheduler_name);
        async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await
    .context("creating pods")?;
    Ok(())
}

fn gpu_pod(name: &str, scheduler_name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(POD_LABEL.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            scheduler_name: Some(scheduler_name.to_owned()),
            containers: vec![gpu_worker_container(1)],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Follows the benchmark's pods and reports, once `expected` have a node,
/// how many are bound and when the last binding was seen.
async fn watch_bindings(
    pods: Api<Pod>,
    expected: usize,
    done: tokio::sync::oneshot::Sender<(usize, Instant)>,
) -> anyhow::Result<()> {
    let config = watcher::Config::default().labels(&format!("{POD_LABEL}=true"));
    let mut stream = watcher(pods, config).applied_objects().boxed();
    let mut bound = HashSet::new();
    while let Some(pod) = stream.try_next().await? {
        let has_node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        if let (true, Some(name)) = (has_node, pod.metadata.name) {
            if bound.insert(name) && bound.len() == expected {
                let _ = done.send((bound.len(), Instant::now()));
                return Ok(());
            }
        }
    }
    bail!("watch stream ended")
}

async fn count_bound(pods: &Api<Pod>) -> anyhow::Result<usize> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{POD_LABEL}=true")))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count())
}

/// Free GPUs on nodes that are partially used: GPUs a later multi-GPU pod
/// could not get together on one node, the waste a bin-packing scheduler avoids.
async fn fragmented_gpus(client: &kube::Client, pods: &Api<Pod>) -> anyhow::Result<u64> {
    let mut used: HashMap<String, u64> = HashMap::new();
    for pod in pods.list(&ListParams::default()).await?.items {
        let Some(spec) = pod.spec else { continue };
        let Some(node) = spec.node_name else { continue };
        let gpus: u64 = spec
            .containers
            .iter()
            .filter_map(|c| {
                c.resources
                    .as_ref()?
                    .requests
                    .as_ref()?
                    .get(RESOURCE_WHOLE_GPU)
            })
            .filter_map(|q| q.0.parse::<u64>().ok())
            .sum();
        *used.entry(node).or_default() += gpus;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let mut fragmented = 0;
    for node in nodes.list(&ListParams::default()).await?.items {
        let capacity = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get(RESOURCE_WHOLE_GPU))
            .and_then(|q| q.0.parse::<u64>().ok())
            .unwrap_or(0);
        let in_use = node
            .metadata
            .name
            .as_ref()
            .and_then(|n| used.get(n))
            .copied()
            .unwrap_or(0);
        if in_use > 0 && in_use < capacity {
            fragmented += capacity - in_use;
        }
    }
    Ok(fragmented)
}

/// Sum of `apiserver_request_total` over all label sets, from /metrics.
async fn apiserver_requests(client: &kube::Client) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

fn rate(count: f64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs > 0.0 {
        count / secs
    } else {
        0.0
    }
}
