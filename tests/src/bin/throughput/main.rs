//! Scheduling throughput benchmark on a real control plane with KWOK nodes.
//!
//! Creates N fake GPU nodes and M pods asking for one whole GPU each, and
//! measures, from the first pod created to the last binding seen on a watch,
//! how fast the chosen scheduler binds them; then checks the placements, the
//! GPUs left fragmented and the apiserver's request rate over the same window.
//!
//! `--workload` picks the pods' shape ([`workload`]): `plain-gpu` (the
//! default: no inter-pod rule), or one of kube-scheduler's scheduler_perf
//! shapes for the inter-pod plugins (`anti-affinity`, `preferred-affinity`,
//! `zone-spread`), each with its upstream counts of pods already running
//! ("init" pods, bound by the benchmark before the scheduler starts, not
//! timed) and measured pods; `all` runs the four. After each run the
//! placements are checked ([`check`]): a broken rule is a violation, whichever
//! scheduler made it.
//!
//! `--scheduler both --nodes 1000,5000` runs kube-scheduler and Phalanx at each
//! node count and workload, back to back, each on a fresh control plane with
//! the same nodes and pods, prints one table with Phalanx's speed-up over
//! kube-scheduler, and the same as JSON. `--gang 1000` then also creates a
//! PodGroup of minMember 1000 and its 1000 pods and reports the time from the
//! last member's creation to the first and the last member seen bound (Phalanx
//! only: kube-scheduler without the coscheduling plugin has no gangs).
//! `--gang-form` picks the gang's form: `podgroup` (scheduler-plugins, the
//! default), `upstream` (a `scheduling.k8s.io/v1beta1` PodGroup of minCount
//! 1000, members joining by `spec.schedulingGroup`), or `podgroup,upstream`
//! for one after the other in the same run.
//!
//! `--gang-form preempting` makes the gang's members outrank every other pod
//! (a PriorityClass): on a full cluster it must preempt, and the report adds
//! the scheduler's victim-selection time and the pods it evicted. `--queues`
//! runs Phalanx with `queues.enabled` (every pod in the default queue).
//!
//! Phalanx runs from `target/release/phalanx-scheduler` (`cargo build --release
//! -p phalanx-scheduler`, or `$PHALANX_SCHEDULER_BIN`).
//!
//! ```text
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler kube-scheduler --nodes 1000 --pods 5000 --json out.json
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler both --nodes 1000,5000 --pods 5000 --gang 1000 --json out.json
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler phalanx --nodes 5000 --pods 5000 --gang 1000 --gang-form podgroup,upstream
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler both --nodes 5000 --workload all --precreate --json out.json
//! cargo run --release -p phalanx-e2e --bin throughput -- --scheduler phalanx --nodes 5000 --pods 5000 --gpus-per-node 1 --gang 64 --gang-form preempting --queues --grace-seconds 0
//! ```

mod check;
mod report;
mod workload;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use phalanx_api::{PodGroup, PodGroupSpec, ANNOTATION_GANG_PLAN, LABEL_POD_GROUP, SCHEDULER_NAME};
use phalanx_e2e::nodes::LABEL_ZONE;
use phalanx_e2e::phalanx::ensure_namespace;
use phalanx_e2e::priority::{create_priority_class, PreemptionPolicy};
use phalanx_e2e::{
    create_gpu_nodes, gpu_worker_container, install_phalanx_crds, locate_phalanx_scheduler,
    upstream_pod_group, wait_fake_nodes_ready, Binaries, ControlPlane, GpuNodeSpec, PhalanxOptions,
    PodBuilder, SchedulerOptions,
};

use check::{BoundPod, NodeInfo};
use report::{print_summary, print_table, set_speedups, GangReport, Report};
use workload::{Workload, WorkloadChoice, INIT_NAMESPACE, MEASURED_NAMESPACE};

/// Label on the benchmark's measured pods.
const POD_LABEL: &str = "phalanx.dev/e2e-bench";
/// Label on the init pods, which are not watched for bindings.
const INIT_LABEL: &str = "phalanx.dev/e2e-bench-init";
/// The form a measured gang is declared in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GangForm {
    /// A scheduler-plugins PodGroup, members labelled `scheduling.x-k8s.io/pod-group`.
    Podgroup,
    /// A `scheduling.k8s.io/v1beta1` PodGroup, members naming it in
    /// `spec.schedulingGroup`.
    Upstream,
    /// A scheduler-plugins PodGroup whose members have a PriorityClass above
    /// every other pod's: on a full cluster it must preempt to be placed.
    Preempting,
}

impl GangForm {
    fn name(self) -> &'static str {
        match self {
            Self::Podgroup => "podgroup",
            Self::Upstream => "upstream",
            Self::Preempting => "preempting",
        }
    }

    /// Label on this gang's pods (each form its own, so that both can run
    /// in one measurement).
    fn label(self) -> &'static str {
        match self {
            Self::Podgroup => "phalanx.dev/e2e-bench-gang",
            Self::Upstream => "phalanx.dev/e2e-bench-upstream-gang",
            Self::Preempting => "phalanx.dev/e2e-bench-preempting-gang",
        }
    }

    /// Name of the gang's PodGroup.
    fn group(self) -> &'static str {
        match self {
            Self::Podgroup => "bench-gang",
            Self::Upstream => "bench-upstream-gang",
            Self::Preempting => "bench-preempting-gang",
        }
    }
}
/// The PriorityClass of the `preempting` gang's members.
const PREEMPTING_CLASS: &str = "bench-preempting";
/// Pod creations in flight at once.
const CREATE_CONCURRENCY: usize = 64;

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
    /// Pods' shape; a comma-separated list runs each (both schedulers back to
    /// back per workload).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "plain-gpu")]
    workload: Vec<WorkloadChoice>,
    /// Measured pods to create, each requesting one whole GPU [default: the
    /// workload's upstream count: 5000, 2000 for anti-affinity].
    #[arg(long)]
    pods: Option<usize>,
    /// Pods bound before the scheduler starts [default: the workload's upstream
    /// count: 0 for plain-gpu, 1000 for anti-affinity, else 5000].
    #[arg(long)]
    init_pods: Option<usize>,
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
    /// After the measured pods, create a PodGroup of this many one-GPU
    /// members and time its binding (Phalanx only).
    #[arg(long)]
    gang: Option<usize>,
    /// The gang's form; `podgroup,upstream` measures one of each, one after
    /// the other.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "podgroup")]
    gang_form: Vec<GangForm>,
    /// Run Phalanx with `queues.enabled` (every pod in the default queue), to
    /// measure what fair turns and limit checks cost.
    #[arg(long)]
    queues: bool,
    /// `terminationGracePeriodSeconds` of the measured pods: a preempting
    /// gang waits for its victims to stop, which KWOK, like kubelet, lets
    /// take up to the grace period [default: the API's 30 s].
    #[arg(long)]
    grace_seconds: Option<i64>,
}

/// What one run measures.
#[derive(Debug, Clone, Copy)]
struct Run {
    scheduler: Scheduler,
    workload: Workload,
    nodes: usize,
    init_pods: usize,
    pods: usize,
}

impl Args {
    fn run(&self, scheduler: Scheduler, workload: Workload, nodes: usize) -> Run {
        Run {
            scheduler,
            workload,
            nodes,
            init_pods: self
                .init_pods
                .unwrap_or_else(|| workload.default_init_pods()),
            pods: self
                .pods
                .unwrap_or_else(|| workload.default_measured_pods()),
        }
    }

    fn mode(&self) -> &'static str {
        if self.precreate {
            "precreated"
        } else {
            "streamed"
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let schedulers = match args.scheduler {
        Choice::KubeScheduler => vec![Scheduler::KubeScheduler],
        Choice::Phalanx => vec![Scheduler::Phalanx],
        Choice::Both => vec![Scheduler::KubeScheduler, Scheduler::Phalanx],
    };
    let workloads = Workload::expand(&args.workload);
    // Fail before any control plane starts on counts that cannot fit or a
    // missing binary.
    for &nodes in &args.nodes {
        for &workload in &workloads {
            let run = args.run(Scheduler::Phalanx, workload, nodes);
            workload.check_fits(nodes, args.gpus_per_node, run.init_pods, run.pods)?;
        }
    }
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
        for &workload in &workloads {
            for &scheduler in &schedulers {
                let run = args.run(scheduler, workload, nodes);
                let name = format!("{} {} on {nodes} nodes", workload.name(), scheduler.label());
                eprintln!("=== {name} ===");
                let report = match run_once(&args, &binaries, phalanx.as_ref(), run).await {
                    Ok(report) => report,
                    Err(e) => {
                        eprintln!("ERROR: {name}: {e:#}");
                        failed_report(&args, run, format!("{e:#}"))
                    }
                };
                print_summary(&report);
                reports.push(report);
            }
        }
    }

    set_speedups(&mut reports);
    print_table(&reports);
    let json = serde_json::to_string_pretty(&reports)?;
    println!("{json}");
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if reports.iter().any(|r| r.error.is_some()) {
        bail!("some runs failed");
    }
    if reports.iter().any(|r| r.violations > 0) {
        bail!("some runs broke a placement rule (see `violations`)");
    }
    Ok(())
}

fn failed_report(args: &Args, run: Run, error: String) -> Report {
    Report {
        workload: run.workload.name(),
        scheduler: run.scheduler.label(),
        mode: args.mode(),
        nodes: run.nodes,
        init_pods: run.init_pods,
        pods: run.pods,
        pods_bound: 0,
        seconds: 0.0,
        pods_per_second: 0.0,
        speedup_vs_kube_scheduler: None,
        fragmented_gpus: 0,
        violations: 0,
        check: String::new(),
        api_qps: 0.0,
        gangs: Vec::new(),
        error: Some(error),
    }
}

/// One measurement on a fresh control plane.
async fn run_once(
    args: &Args,
    binaries: &Binaries,
    phalanx: Option<&PathBuf>,
    run: Run,
) -> anyhow::Result<Report> {
    let Run {
        scheduler,
        workload,
        nodes: node_count,
        init_pods,
        pods: pod_count,
    } = run;
    let started = Instant::now();
    let mut plane = ControlPlane::start(binaries.clone()).await?;
    eprintln!("control plane up in {:.1?}", started.elapsed());
    let client = plane.client();
    if scheduler == Scheduler::Phalanx {
        install_phalanx_crds(&client).await?;
    }

    let t = Instant::now();
    let node_names = create_nodes(&client, workload, node_count, args.gpus_per_node).await?;
    let ready_timeout = Duration::from_secs(120 + u64::try_from(node_count / 20)?);
    wait_fake_nodes_ready(&client, node_count, ready_timeout).await?;
    eprintln!("{node_count} fake GPU nodes Ready in {:.1?}", t.elapsed());

    let scheduler_name = scheduler.pod_scheduler_name();
    let mut phalanx_handle = None;
    if init_pods > 0 {
        let t = Instant::now();
        create_init_pods(
            &client,
            run,
            scheduler_name,
            &node_names,
            args.gpus_per_node,
        )
        .await?;
        eprintln!(
            "{init_pods} init pods created on their nodes and running in {:.1?}",
            t.elapsed()
        );
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), MEASURED_NAMESPACE);
    if args.precreate {
        let t = Instant::now();
        create_measured(
            &pods,
            workload,
            pod_count,
            scheduler_name,
            args.grace_seconds,
        )
        .await?;
        eprintln!(
            "{pod_count} pods created in {:.1?} before the scheduler starts",
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
                extra: serde_json::json!({ "queues": { "enabled": args.queues } }),
                ..PhalanxOptions::default()
            };
            phalanx_handle = Some(plane.start_phalanx_scheduler(&options).await?);
            println!(
                "phalanx-scheduler started with binding.qps={} burst={}, leader election off, \
                 queues {}",
                options.qps,
                options.burst,
                if args.queues { "on" } else { "off" }
            );
        }
    }

    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_bindings(pods.clone(), POD_LABEL, pod_count, bound_tx));

    let requests_before = apiserver_requests(&client).await?;
    let window_start = Instant::now();
    if !args.precreate {
        create_measured(
            &pods,
            workload,
            pod_count,
            scheduler_name,
            args.grace_seconds,
        )
        .await?;
        eprintln!("{pod_count} pods created in {:.1?}", window_start.elapsed());
    }

    let timeout = Duration::from_secs(args.timeout_secs);
    let (pods_bound, last_bound) = if pod_count == 0 {
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
    let verdict = check_placements(&client, workload).await?;

    let mut gangs = Vec::new();
    match (args.gang, scheduler) {
        (Some(members), Scheduler::Phalanx) => {
            let capacity = node_count * args.gpus_per_node as usize;
            let in_use = init_pods + pods_bound;
            let wanted = members * args.gang_form.len();
            if capacity < in_use + wanted {
                eprintln!(
                    "WARNING: {wanted} gang members need {wanted} GPUs; only {} are free",
                    capacity.saturating_sub(in_use)
                );
            }
            for &form in &args.gang_form {
                let mut report = measure_gang(&client, &pods, form, members, timeout).await?;
                if form == GangForm::Preempting {
                    if let Some(handle) = &phalanx_handle {
                        match handle.metrics().await {
                            Ok(text) => report.set_preemption(&text),
                            Err(error) => eprintln!("WARNING: scheduler metrics: {error}"),
                        }
                    }
                }
                if report.members_bound < members {
                    eprintln!("{}", plane.phalanx_logs());
                }
                gangs.push(report);
            }
        }
        (Some(_), Scheduler::KubeScheduler) => {
            eprintln!("--gang: skipped for kube-scheduler (no coscheduling plugin)");
        }
        (None, _) => {}
    }

    let mut report = Report {
        workload: workload.name(),
        scheduler: scheduler.label(),
        mode: args.mode(),
        nodes: node_count,
        init_pods,
        pods: pod_count,
        pods_bound,
        seconds: window.as_secs_f64(),
        pods_per_second: rate(pods_bound as f64, window),
        speedup_vs_kube_scheduler: None,
        fragmented_gpus: 0,
        violations: 0,
        check: String::new(),
        api_qps: rate(requests_after - requests_before, measured),
        gangs,
        error: None,
    };
    report.set_verdict(verdict);
    drop(plane);
    Ok(report)
}

/// Creates the fake nodes and returns their names, node `i` in zone
/// `i % zones` when the workload spreads over zones.
async fn create_nodes(
    client: &kube::Client,
    workload: Workload,
    count: usize,
    gpus_per_node: u32,
) -> anyhow::Result<Vec<String>> {
    let spec = GpuNodeSpec {
        gpus: gpus_per_node,
        ..GpuNodeSpec::default()
    };
    let zones = workload.zones();
    if zones == 0 {
        return Ok(create_gpu_nodes(client, "gpu", count, &spec).await?);
    }
    let mut per_zone = Vec::new();
    for zone in 0..zones {
        let in_zone = count / zones + usize::from(zone < count % zones);
        let name = format!("zone-{zone}");
        let spec = spec.clone().label(LABEL_ZONE, &name);
        per_zone.push(create_gpu_nodes(client, &format!("gpu-{name}"), in_zone, &spec).await?);
    }
    // Interleaved, so that node i is in zone i % zones.
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        names.push(per_zone[i % zones][i / zones].clone());
    }
    Ok(names)
}

/// Creates the init pods bound to their nodes (no scheduler involved) in
/// [`INIT_NAMESPACE`], and waits until KWOK reports them running, so that
/// their status updates do not load the apiserver during the measurement.
async fn create_init_pods(
    client: &kube::Client,
    run: Run,
    scheduler_name: &str,
    nodes: &[String],
    gpus_per_node: u32,
) -> anyhow::Result<()> {
    ensure_namespace(client, INIT_NAMESPACE).await?;
    wait_default_service_account(client, INIT_NAMESPACE).await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), INIT_NAMESPACE);
    let pods = (0..run.init_pods).map(|i| {
        let node = &nodes[run.workload.init_node(i, gpus_per_node)];
        run.workload
            .init_pod(&format!("init-{i}"), scheduler_name, INIT_LABEL, node)
    });
    create_all(&api, pods).await?;
    let params = ListParams::default().labels(&format!("{INIT_LABEL}=true"));
    let timeout = Duration::from_secs(120 + u64::try_from(run.init_pods / 50)?);
    let deadline = Instant::now() + timeout;
    loop {
        let running = api
            .list(&params)
            .await?
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running >= run.init_pods {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!(
                "WARNING: only {running} of {} init pods running after {timeout:?}; measuring anyway",
                run.init_pods
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The ServiceAccount admission refuses pods in a namespace until
/// kube-controller-manager has created its `default` ServiceAccount.
async fn wait_default_service_account(
    client: &kube::Client,
    namespace: &str,
) -> anyhow::Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while accounts.get_opt("default").await?.is_none() {
        if Instant::now() >= deadline {
            bail!("no ServiceAccount {namespace}/default after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Lists every pod and node and checks the placements against the workload.
async fn check_placements(
    client: &kube::Client,
    workload: Workload,
) -> anyhow::Result<check::Verdict> {
    let pods: Api<Pod> = Api::all(client.clone());
    let bound: Vec<BoundPod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(BoundPod::of)
        .collect();
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes: HashMap<String, NodeInfo> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(NodeInfo::of)
        .collect();
    Ok(check::check(workload, &bound, &nodes))
}

/// Creates a PodGroup (of `form`) of `members` and its one-GPU members, and
/// times the binding from the last member's creation.
async fn measure_gang(
    client: &kube::Client,
    pods: &Api<Pod>,
    form: GangForm,
    members: usize,
    timeout: Duration,
) -> anyhow::Result<GangReport> {
    let min = i32::try_from(members)?;
    if form == GangForm::Preempting {
        create_priority_class(
            client,
            PREEMPTING_CLASS,
            1_000_000,
            PreemptionPolicy::PreemptLowerPriority,
        )
        .await?;
    }
    match form {
        GangForm::Podgroup | GangForm::Preempting => {
            let groups: Api<PodGroup> = Api::namespaced(client.clone(), MEASURED_NAMESPACE);
            let group = PodGroup {
                metadata: ObjectMeta {
                    name: Some(form.group().to_owned()),
                    namespace: Some(MEASURED_NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: PodGroupSpec {
                    min_member: min,
                    ..PodGroupSpec::default()
                },
                status: None,
            };
            groups.create(&PostParams::default(), &group).await?;
        }
        GangForm::Upstream => {
            let groups: Api<UpstreamPodGroup> = Api::namespaced(client.clone(), MEASURED_NAMESPACE);
            let group = upstream_pod_group(MEASURED_NAMESPACE, form.group(), min, None);
            groups
                .create(&PostParams::default(), &group)
                .await
                .context("creating the scheduling.k8s.io/v1beta1 PodGroup (is it served?)")?;
        }
    }
    let label = form.label();
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_bindings(pods.clone(), label, members, bound_tx));
    create_all(
        pods,
        (0..members).map(|i| gang_member(&format!("gang-{}-{i}", form.name()), form)),
    )
    .await?;
    let created = Instant::now();
    eprintln!("{members} gang members ({}) created", form.name());
    let signed = |at: Instant| {
        if at >= created {
            at.duration_since(created).as_secs_f64()
        } else {
            -created.duration_since(at).as_secs_f64()
        }
    };
    match tokio::time::timeout(timeout, bound_rx).await {
        Ok(Ok(result)) => Ok(GangReport {
            form: form.name(),
            members,
            members_bound: result.bound,
            planned_seconds: result.planned.map(signed),
            first_bound_seconds: result.first.map(signed),
            last_bound_seconds: result.last.map(signed),
            ..GangReport::default()
        }),
        Ok(Err(_)) => bail!("the gang watch ended unexpectedly: {:?}", watch.await),
        Err(_) => {
            watch.abort();
            eprintln!("WARNING: the gang was not bound within {timeout:?}");
            Ok(GangReport {
                form: form.name(),
                members,
                members_bound: count_bound(pods, label).await?,
                ..GangReport::default()
            })
        }
    }
}

/// Creates `pods`, `CREATE_CONCURRENCY` requests in flight.
async fn create_all(api: &Api<Pod>, pods: impl Iterator<Item = Pod>) -> anyhow::Result<()> {
    futures::stream::iter(pods.map(|pod| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &pod).await.map(|_| ()) }
    }))
    .buffer_unordered(CREATE_CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await
    .context("creating pods")?;
    Ok(())
}

/// Creates the `count` measured pods of `workload`.
async fn create_measured(
    api: &Api<Pod>,
    workload: Workload,
    count: usize,
    scheduler_name: &str,
    grace_seconds: Option<i64>,
) -> anyhow::Result<()> {
    let pods = (0..count).map(|i| {
        let mut pod = workload.measured_pod(&format!("bench-{i}"), scheduler_name, POD_LABEL);
        if let (Some(grace), Some(spec)) = (grace_seconds, pod.spec.as_mut()) {
            spec.termination_grace_period_seconds = Some(grace);
        }
        pod
    });
    create_all(api, pods).await
}

fn gang_member(name: &str, form: GangForm) -> Pod {
    let pod =
        PodBuilder::new(name, SCHEDULER_NAME, gpu_worker_container(1)).label(form.label(), "true");
    match form {
        GangForm::Podgroup => pod.label(LABEL_POD_GROUP, form.group()),
        GangForm::Upstream => pod.scheduling_group(form.group()),
        GangForm::Preempting => pod
            .label(LABEL_POD_GROUP, form.group())
            .priority_class(PREEMPTING_CLASS),
    }
    .build()
}

/// What a binding watch saw.
#[derive(Debug)]
struct Bindings {
    bound: usize,
    /// When the first pod was seen carrying a gang plan (Phalanx writes the
    /// plan on every member once the gang is placed, before any Binding).
    planned: Option<Instant>,
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
    let mut planned = None;
    while let Some(pod) = stream.try_next().await? {
        if pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_GANG_PLAN))
        {
            planned.get_or_insert_with(Instant::now);
        }
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
                        planned,
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
