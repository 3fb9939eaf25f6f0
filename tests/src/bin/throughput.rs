//! Scheduling throughput benchmark on a real control plane with KWOK nodes.
//!
//! Creates N fake GPU nodes and M pods asking for one whole GPU each, and
//! measures, from the first pod created to the last binding seen on a watch,
//! how fast the chosen scheduler binds them; then the GPUs left fragmented and
//! the apiserver's request rate over the same window.
//!
//! `--scheduler both --nodes 1000,5000` runs kube-scheduler and Phalanx at each
//! node count, each on a fresh control plane with the same nodes and pods, and
//! prints one table. `--gang 1000` then also creates a PodGroup of minMember
//! 1000 and its 1000 pods and reports the time from the last member's creation
//! to the first and the last member seen bound (Phalanx only: kube-scheduler
//! without the coscheduling plugin has no gangs).
//!
//! Phalanx runs from `target/release/phalanx-scheduler` (`cargo build --release
//! -p phalanx-scheduler`, or `$PHALANX_SCHEDULER_BIN`).
//!
//! ```text
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler kube-scheduler --nodes 1000 --pods 5000 --json out.json
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler both --nodes 1000,5000 --pods 5000 --gang 1000 --json out.json
//! ```

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use phalanx_api::{PodGroup, PodGroupSpec, LABEL_POD_GROUP, RESOURCE_WHOLE_GPU, SCHEDULER_NAME};
use phalanx_e2e::{
    create_gpu_nodes, gpu_worker_container, install_phalanx_crds, locate_phalanx_scheduler,
    wait_fake_nodes_ready, Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions, PodBuilder,
    SchedulerOptions,
};

/// Label on the benchmark's throughput pods.
const POD_LABEL: &str = "phalanx.dev/e2e-bench";
/// Label on the gang measurement's pods.
const GANG_LABEL: &str = "phalanx.dev/e2e-bench-gang";
/// Name of the gang measurement's PodGroup.
const GANG_NAME: &str = "bench-gang";
/// Pod creations in flight at once.
const CREATE_CONCURRENCY: usize = 64;
const NAMESPACE: &str = "default";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Choice {
    /// Upstream kube-scheduler, profile `default-scheduler`.
    KubeScheduler,
    /// Phalanx's scheduler (`phalanx-scheduler run`).
    Phalanx,
    /// Both, one after the other, on fresh control planes.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduler {
    KubeScheduler,
    Phalanx,
}

impl Scheduler {
    fn label(self) -> &'static str {
        match self {
            Self::KubeScheduler => "kube-scheduler",
            Self::Phalanx => "phalanx",
        }
    }

    /// The schedulerName the pods carry, so that exactly one scheduler takes them.
    fn pod_scheduler_name(self) -> &'static str {
        match self {
            Self::KubeScheduler => "default-scheduler",
            Self::Phalanx => SCHEDULER_NAME,
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Pods bound per second on a KWOK cluster of fake GPU nodes")]
struct Args {
    #[arg(long, value_enum)]
    scheduler: Choice,
    /// Fake GPU nodes to create; a comma-separated list runs once per count.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    nodes: Vec<usize>,
    /// Pods to create, each requesting one whole GPU.
    #[arg(long, default_value_t = 5000)]
    pods: usize,
    /// Whole GPUs per node.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: u32,
    /// Scheduler client QPS (kube-scheduler's default is 50); Phalanx's
    /// `binding.qps` gets the same.
    #[arg(long, default_value_t = 5000)]
    qps: u32,
    /// Scheduler client burst (kube-scheduler's default is 100).
    #[arg(long, default_value_t = 10000)]
    burst: u32,
    /// Give up waiting for bindings after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Write the results here as JSON (an array, one object per run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Create every pod before the scheduler starts and time only the binding, so
    /// that the apiserver's pod-creation rate does not cap the figure.
    #[arg(long)]
    precreate: bool,
    /// After the throughput pods, create a PodGroup of this many one-GPU
    /// members and time its binding (Phalanx only).
    #[arg(long)]
    gang: Option<usize>,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    scheduler: &'static str,
    /// "streamed" (pods created while the scheduler runs) or "precreated".
    mode: &'static str,
    nodes: usize,
    pods: usize,
    pods_bound: usize,
    /// From the first pod created (or the scheduler ready, when precreated)
    /// to the last binding seen.
    seconds: f64,
    pods_per_second: f64,
    /// Free whole GPUs on nodes that have some but not all GPUs in use.
    fragmented_gpus: u64,
    /// apiserver requests per second (all clients) over the measured window.
    api_qps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    gang: Option<GangReport>,
    /// Why the run failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, serde::Serialize)]
struct GangReport {
    members: usize,
    members_bound: usize,
    /// Seconds from the last member's creation to the first member seen bound
    /// (negative would mean a member bound before the gang was complete).
    first_bound_seconds: Option<f64>,
    /// Seconds from the last member's creation to the last member seen bound.
    last_bound_seconds: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let schedulers = match args.scheduler {
        Choice::KubeScheduler => vec![Scheduler::KubeScheduler],
        Choice::Phalanx => vec![Scheduler::Phalanx],
        Choice::Both => vec![Scheduler::KubeScheduler, Scheduler::Phalanx],
    };
    // Fail before any control plane starts when a binary is missing.
    let binaries = Binaries::locate()?;
    let phalanx = if schedulers.contains(&Scheduler::Phalanx) {
        let path = locate_phalanx_scheduler()?;
        eprintln!("phalanx-scheduler: {}", path.display());
        Some(path)
    } else {
        None
    };

    let mut reports = Vec::new();
    for &nodes in &args.nodes {
        for &scheduler in &schedulers {
            eprintln!("=== {} on {nodes} nodes ===", scheduler.label());
            let report = match run_once(&args, &binaries, phalanx.as_ref(), scheduler, nodes).await
            {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("ERROR: {} on {nodes} nodes: {e:#}", scheduler.label());
                    failed_report(&args, scheduler, nodes, format!("{e:#}"))
                }
            };
            print_summary(&report);
            reports.push(report);
        }
    }

    print_table(&reports);
    let json = serde_json::to_string_pretty(&reports)?;
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if reports.iter().any(|r| r.error.is_some()) {
        bail!("some runs failed");
    }
    Ok(())
}

fn mode(args: &Args) -> &'static str {
    if args.precreate {
        "precreated"
    } else {
        "streamed"
    }
}

fn failed_report(args: &Args, scheduler: Scheduler, nodes: usize, error: String) -> Report {
    Report {
        scheduler: scheduler.label(),
        mode: mode(args),
        nodes,
        pods: args.pods,
        pods_bound: 0,
        seconds: 0.0,
        pods_per_second: 0.0,
        fragmented_gpus: 0,
        api_qps: 0.0,
        gang: None,
        error: Some(error),
    }
}

/// One measurement on a fresh control plane.
async fn run_once(
    args: &Args,
    binaries: &Binaries,
    phalanx: Option<&PathBuf>,
    scheduler: Scheduler,
    node_count: usize,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut plane = ControlPlane::start(binaries.clone()).await?;
    eprintln!("control plane up in {:.1?}", started.elapsed());
    let client = plane.client();
    if scheduler == Scheduler::Phalanx {
        install_phalanx_crds(&client).await?;
    }

    let spec = GpuNodeSpec {
        gpus: args.gpus_per_node,
        ..GpuNodeSpec::default()
    };
    let t = Instant::now();
    create_gpu_nodes(&client, "gpu", node_count, &spec).await?;
    let ready_timeout = Duration::from_secs(120 + u64::try_from(node_count / 20)?);
    wait_fake_nodes_ready(&client, node_count, ready_timeout).await?;
    eprintln!("{node_count} fake GPU nodes Ready in {:.1?}", t.elapsed());

    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let scheduler_name = scheduler.pod_scheduler_name();
    if args.precreate {
        let t = Instant::now();
        create_pods(&pods, args.pods, scheduler_name, POD_LABEL, None).await?;
        eprintln!(
            "{} pods created in {:.1?} before the scheduler starts",
            args.pods,
            t.elapsed()
        );
    }

    match scheduler {
        Scheduler::KubeScheduler => {
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
        }
        Scheduler::Phalanx => {
            let options = PhalanxOptions {
                qps: args.qps,
                burst: args.burst,
                leader_election: None,
                binary: phalanx.cloned(),
                timeout: Duration::from_secs(120 + u64::try_from(node_count / 50)?),
                ..PhalanxOptions::default()
            };
            plane.start_phalanx_scheduler(&options).await?;
            println!(
                "phalanx-scheduler started with binding.qps={} burst={}, leader election off",
                options.qps, options.burst
            );
        }
    }

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_bindings(pods.clone(), POD_LABEL, args.pods, bound_tx));

    let requests_before = apiserver_requests(&client).await?;
    let window_start = Instant::now();
    if !args.precreate {
        create_pods(&pods, args.pods, scheduler_name, POD_LABEL, None).await?;
        eprintln!(
            "{} pods created in {:.1?}",
            args.pods,
            window_start.elapsed()
        );
    }

    let timeout = Duration::from_secs(args.timeout_secs);
    let (pods_bound, last_bound) = if args.pods == 0 {
        watch.abort();
        (0, window_start)
    } else {
        match tokio::time::timeout(timeout, bound_rx).await {
            Ok(Ok(result)) => (result.bound, result.last.unwrap_or(window_start)),
            Ok(Err(_)) => bail!("the pod watch ended unexpectedly: {:?}", watch.await),
            Err(_) => {
                watch.abort();
                eprintln!("WARNING: not every pod was bound within {timeout:?}");
                if scheduler == Scheduler::Phalanx {
                    eprintln!("{}", plane.phalanx_logs());
                }
                let bound = count_bound(&pods, POD_LABEL).await?;
                (bound, Instant::now())
            }
        }
    };
    let window = last_bound.duration_since(window_start);
    let requests_after = apiserver_requests(&client).await?;
    let measured = window_start.elapsed();
    let fragmented = fragmented_gpus(&client, &pods).await?;

    let gang = match (args.gang, scheduler) {
        (Some(members), Scheduler::Phalanx) => {
            let capacity = node_count * args.gpus_per_node as usize;
            if capacity < pods_bound + members {
                eprintln!(
                    "WARNING: {members} gang members need {members} GPUs; only {} are free",
                    capacity.saturating_sub(pods_bound)
                );
            }
            let report = measure_gang(&client, &pods, members, timeout).await?;
            if report.members_bound < members {
                eprintln!("{}", plane.phalanx_logs());
            }
            Some(report)
        }
        (Some(_), Scheduler::KubeScheduler) => {
            eprintln!("--gang: skipped for kube-scheduler (no coscheduling plugin)");
            None
        }
        (None, _) => None,
    };

    let report = Report {
        scheduler: scheduler.label(),
        mode: mode(args),
        nodes: node_count,
        pods: args.pods,
        pods_bound,
        seconds: window.as_secs_f64(),
        pods_per_second: rate(pods_bound as f64, window),
        fragmented_gpus: fragmented,
        api_qps: rate(requests_after - requests_before, measured),
        gang,
        error: None,
    };
    drop(plane);
    Ok(report)
}

/// Creates a PodGroup of `members` and its one-GPU members, and times the
/// binding from the last member's creation.
async fn measure_gang(
    client: &kube::Client,
    pods: &Api<Pod>,
    members: usize,
    timeout: Duration,
) -> anyhow::Result<GangReport> {
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), NAMESPACE);
    let group = PodGroup {
        metadata: ObjectMeta {
            name: Some(GANG_NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        spec: PodGroupSpec {
            min_member: i32::try_from(members)?,
            ..PodGroupSpec::default()
        },
        status: None,
    };
    groups.create(&PostParams::default(), &group).await?;
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_bindings(pods.clone(), GANG_LABEL, members, bound_tx));
    create_pods(pods, members, SCHEDULER_NAME, GANG_LABEL, Some(GANG_NAME)).await?;
    let created = Instant::now();
    eprintln!("{members} gang members created");
    let signed = |at: Instant| {
        if at >= created {
            at.duration_since(created).as_secs_f64()
        } else {
            -created.duration_since(at).as_secs_f64()
        }
    };
    match tokio::time::timeout(timeout, bound_rx).await {
        Ok(Ok(result)) => Ok(GangReport {
            members,
            members_bound: result.bound,
            first_bound_seconds: result.first.map(signed),
            last_bound_seconds: result.last.map(signed),
        }),
        Ok(Err(_)) => bail!("the gang watch ended unexpectedly: {:?}", watch.await),
        Err(_) => {
            watch.abort();
            eprintln!("WARNING: the gang was not bound within {timeout:?}");
            Ok(GangReport {
                members,
                members_bound: count_bound(pods, GANG_LABEL).await?,
                first_bound_seconds: None,
                last_bound_seconds: None,
            })
        }
    }
}

fn print_summary(report: &Report) {
    if let Some(error) = &report.error {
        println!(
            "{} on {} nodes FAILED: {error}",
            report.scheduler, report.nodes
        );
        return;
    }
    println!(
        "{} bound {}/{} pods on {} nodes in {:.2}s: {:.1} pods/s; {} GPUs fragmented \
         (free GPUs on nodes with some but not all GPUs in use); apiserver {:.0} requests/s (all clients)",
        report.scheduler,
        report.pods_bound,
        report.pods,
        report.nodes,
        report.seconds,
        report.pods_per_second,
        report.fragmented_gpus,
        report.api_qps
    );
    if let Some(gang) = &report.gang {
        println!(
            "gang of {}: {} bound; first member bound {} and last {} after the last member was created",
            gang.members,
            gang.members_bound,
            seconds(gang.first_bound_seconds),
            seconds(gang.last_bound_seconds)
        );
    }
}

fn seconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}s"))
}

fn print_table(reports: &[Report]) {
    println!();
    println!(
        "{:<15} {:>6} {:>10} {:>6} {:>9} {:>10} {:>8} {:>10} {:>10}",
        "scheduler",
        "nodes",
        "mode",
        "pods",
        "pods/s",
        "fragmented",
        "API QPS",
        "gang first",
        "gang last"
    );
    for r in reports {
        if let Some(error) = &r.error {
            let first_line = error.lines().next().unwrap_or_default();
            println!("{:<15} {:>6} FAILED: {first_line}", r.scheduler, r.nodes);
            continue;
        }
        let (first, last) = r.gang.as_ref().map_or_else(
            || ("-".to_owned(), "-".to_owned()),
            |g| {
                (
                    seconds(g.first_bound_seconds),
                    seconds(g.last_bound_seconds),
                )
            },
        );
        println!(
            "{:<15} {:>6} {:>10} {:>6} {:>9.1} {:>10} {:>8.0} {:>10} {:>10}",
            r.scheduler,
            r.nodes,
            r.mode,
            r.pods_bound,
            r.pods_per_second,
            r.fragmented_gpus,
            r.api_qps,
            first,
            last
        );
    }
    println!();
}

/// Creates `count` pods labelled `label`, `CREATE_CONCURRENCY` requests in
/// flight; members of `group` when given.
async fn create_pods(
    pods: &Api<Pod>,
    count: usize,
    scheduler_name: &str,
    label: &str,
    group: Option<&str>,
) -> anyhow::Result<()> {
    let prefix = if group.is_some() { "gang" } else { "bench" };
    futures::stream::iter((0..count).map(|i| {
        let pods = pods.clone();
        let pod = gpu_pod(&format!("{prefix}-{i}"), scheduler_name, label, group);
        async move { pods.create(&PostParams::default(), &pod).await.map(|_| ()) }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await
    .context("creating pods")?;
    Ok(())
}

fn gpu_pod(name: &str, scheduler_name: &str, label: &str, group: Option<&str>) -> Pod {
    let pod = PodBuilder::new(name, scheduler_name, gpu_worker_container(1)).label(label, "true");
    match group {
        Some(group) => pod.label(LABEL_POD_GROUP, group),
        None => pod,
    }
    .build()
}

/// What a binding watch saw.
#[derive(Debug)]
struct Bindings {
    bound: usize,
    /// When the first pod was seen with a node.
    first: Option<Instant>,
    /// When the `expected`-th pod was seen with a node.
    last: Option<Instant>,
}

/// Follows the pods labelled `label` and reports, once `expected` have a
/// node, how many are bound and when the first and last bindings were seen.
async fn watch_bindings(
    pods: Api<Pod>,
    label: &'static str,
    expected: usize,
    done: tokio::sync::oneshot::Sender<Bindings>,
) -> anyhow::Result<()> {
    let config = watcher::Config::default().labels(&format!("{label}=true"));
    let mut stream = watcher(pods, config).applied_objects().boxed();
    let mut bound = HashSet::new();
    let mut first = None;
    while let Some(pod) = stream.try_next().await? {
        let has_node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some();
        if let (true, Some(name)) = (has_node, pod.metadata.name) {
            if bound.insert(name) {
                let now = Instant::now();
                first.get_or_insert(now);
                if bound.len() == expected {
                    let _ = done.send(Bindings {
                        bound: bound.len(),
                        first,
                        last: Some(now),
                    });
                    return Ok(());
                }
            }
        }
    }
    bail!("watch stream ended")
}

async fn count_bound(pods: &Api<Pod>, label: &str) -> anyhow::Result<usize> {
    let list = pods
        .list(&ListParams::default().labels(&format!("{label}=true")))
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
