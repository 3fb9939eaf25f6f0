//! The `phalanx-sim` command line.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use phalanx_engine::{BatchOrder, ClusterSnapshot, PolicyName};
use phalanx_sim::autoscale::trace::DEFAULT_MAX_TRACE_HOURS;
use phalanx_sim::day::workload::DEFAULT_DAY_LOAD;
use phalanx_sim::day::DayPolicyName;
use phalanx_sim::openb::arrivals::seed_arrivals;
use phalanx_sim::openb::bound::{seed_bounds, AllocationBound};
use phalanx_sim::openb::gang_sweep::{
    gang_table, run_gang_sweep, summarise_gangs, GangSweepConfig,
};
use phalanx_sim::openb::gangs::{with_racks, GangPlacement};
use phalanx_sim::openb::idle::IdleBreakdown;
use phalanx_sim::openb::run::{Batching, PreparedTrace, WorkloadMode};
use phalanx_sim::openb::share_floor::{run_share_gap, seed_share_floors};
use phalanx_sim::openb::sweep::{run_sweep, summarise, SweepConfig};
use phalanx_sim::paper::PaperResults;
use phalanx_sim::trace::{build_cluster, read_nodes, read_pods, unknown_models, CsvSource};
use phalanx_sim::{report, EMBEDDED_NODES, EMBEDDED_PODS};

#[derive(Parser, Debug)]
#[command(
    name = "phalanx-sim",
    version,
    about = "Replay traces through the Phalanx placement engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The FGD paper's openb experiment: policies compared on GPU allocation.
    Openb(OpenbArgs),
    /// The Azure LLM trace against inference replicas: Phalanx vs HPA vs KEDA.
    Autoscale(AutoscaleArgs),
    /// A cluster day: the openb pods in time, four teams' queues, policies compared
    /// on allocation, waits, share deviation, preemptions and large-gang waits.
    Day(DayArgs),
}

#[derive(clap::Args, Debug)]
struct DayArgs {
    /// Node list CSV (default: the embedded openb cluster, 1213 nodes, 6212 GPUs).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Pod list CSV with creation_time, deletion_time (and scheduled_time, qos)
    /// columns (default: the embedded openb default trace).
    #[arg(long)]
    pods: Option<PathBuf>,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "fifo,priority,kueue,kueue-borrow,phalanx"
    )]
    policies: Vec<DayPolicyName>,
    /// Copies of the trace in the day (1: the trace alone; a fraction adds a
    /// seeded subset); copies arrive near their pod's time.
    #[arg(long, default_value_t = DEFAULT_DAY_LOAD, allow_negative_numbers = true)]
    load: f64,
    /// The trace's arrivals are mapped onto this many hours (run times are not scaled).
    #[arg(long, default_value_t = 24.0, allow_negative_numbers = true)]
    hours: f64,
    /// Seeds the draw of pods into the four queues.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Large gangs injected evenly over the arrival window.
    #[arg(long, default_value_t = 8)]
    large_gangs: usize,
    /// Members per large gang (all or nothing).
    #[arg(long, default_value_t = 16)]
    gang_members: usize,
    /// Whole GPUs per large-gang member.
    #[arg(long, default_value_t = 8)]
    member_gpus: u32,
    /// Seconds each large gang runs once placed.
    #[arg(long, default_value_t = 4 * 3600)]
    gang_run_s: u64,
    /// Write the results (with curves) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write day-allocation.svg and day-share-deviation.svg into this directory.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct AutoscaleArgs {
    /// Trace: Azure CSV `TIMESTAMP,ContextTokens,GeneratedTokens` or Mooncake JSON
    /// lines `{"timestamp": ms, "input_length": n, "output_length": n}`, told apart
    /// by content (default: the embedded Azure LLM conversation trace, 19,366
    /// requests over one hour). With --suite: a load added to the suite (repeatable).
    #[arg(long)]
    trace: Vec<PathBuf>,
    /// Run the load suite (the Azure and Mooncake traces, five generated loads and
    /// every --trace) and print one table with Phalanx's verdict per load.
    #[arg(long)]
    suite: bool,
    /// With --suite: seeds the generated loads.
    #[arg(long, default_value_t = 42, requires = "suite")]
    seed: u64,
    /// With --suite: write one SVG per load (replicas, demand, queue wait) here.
    #[arg(long, requires = "suite")]
    plot: Option<PathBuf>,
    /// Write the summary (and details) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw load and replicas over time as SVG (not with --suite: see --plot).
    #[arg(long, conflicts_with = "suite")]
    svg: Option<PathBuf>,
    /// A request meets the objective when it waits less than this many seconds.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    slo_seconds: f64,
    /// GPUs in the cluster (2 per replica).
    #[arg(long, default_value_t = 32)]
    gpus: u32,
    /// Seconds from scale-up to a replica serving.
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    cold_start: f64,
    /// Start every autoscaler with the replicas the load's first 5 minutes need
    /// at 6 in flight per replica, as a service that has been running would
    /// (default: each at its own minimum, 1, or 0 for KEDA).
    #[arg(long)]
    warm_start: bool,
    /// Refuse a trace whose rows span more than this many hours (the replay runs in
    /// simulated time, so a stray far-future timestamp would otherwise run for hours).
    #[arg(long, default_value_t = DEFAULT_MAX_TRACE_HOURS, allow_negative_numbers = true)]
    max_trace_hours: f64,
}

#[derive(clap::Args, Debug)]
struct OpenbArgs {
    /// Node list CSV (default: the embedded openb cluster, 1213 nodes, 6212 GPUs).
    #[arg(long)]
    nodes: Option<PathBuf>,
    /// Pod list CSV(s), comma-separated or repeated (default: the embedded openb default trace).
    #[arg(long, value_delimiter = ',')]
    pods: Vec<PathBuf>,
    /// Policies to compare, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "random,dotprod,clustering,packing,bestfit,fgd,phalanx"
    )]
    policies: Vec<String>,
    /// Seeds: a list and/or ranges, e.g. `42-51` or `1,5,9-12`.
    #[arg(long, default_value = "42-51")]
    seeds: String,
    /// Inflate the workload to this multiple of cluster GPU capacity.
    #[arg(long, default_value_t = 1.3, allow_negative_numbers = true)]
    tune: f64,
    /// Where FGD and phalanx learn the pod-shape distribution from.
    #[arg(long, value_enum, default_value_t = WorkloadMode::Trace)]
    workload: WorkloadMode,
    /// Write the full results (summary and per-run curves) as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw allocation against arrived workload as SVG.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also print, per trace, an upper bound on the GPU allocation any
    /// placement could reach at 100 % arrived (a linear relaxation over node
    /// types and pod shapes, for the same seeded arrivals).
    #[arg(long, conflicts_with = "gangs")]
    bound: bool,
    /// Arrivals wait in windows of this many consecutive pods, placed together
    /// in `--batch-order` before the next window arrives (1: the paper's one
    /// pod at a time). Reported separately from the paper's methodology.
    #[arg(
        long,
        default_value_t = 1,
        conflicts_with = "gangs",
        allow_negative_numbers = true
    )]
    batch: usize,
    /// With --batch: the order a window's pods are tried in.
    #[arg(long, default_value = "largest-first", value_parser = parse_batch_order)]
    batch_order: BatchOrder,
    /// Group pods of 2+ GPUs into gangs of 2–8 (seeded) on nodes in synthetic
    /// racks, and compare how a gang's rack is chosen: anywhere (no topology),
    /// emptiest rack first, tightest-fitting rack first.
    #[arg(long)]
    gangs: bool,
    /// With --gangs: consecutive nodes of the node list per synthetic rack.
    #[arg(long, default_value_t = 16, requires = "gangs")]
    rack_nodes: usize,
}

fn parse_batch_order(name: &str) -> Result<BatchOrder, String> {
    BatchOrder::ALL
        .into_iter()
        .find(|order| order.as_str() == name)
        .ok_or_else(|| {
            let valid: Vec<&str> = BatchOrder::ALL.iter().map(|o| o.as_str()).collect();
            format!("{name:?} is not a batch order; valid: {}", valid.join(", "))
        })
}

fn parse_seeds(spec: &str) -> Result<Vec<u64>> {
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds: {s:?} is not a seed number"))
        };
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse(lo)?, parse(hi)?);
                if lo > hi || hi - lo > 10_000 {
                    bail!("--seeds: range {part:?} must be ascending and at most 10000 long");
                }
                seeds.extend(lo..=hi);
            }
            None => seeds.push(parse(part)?),
        }
    }
    if seeds.is_empty() {
        bail!("--seeds: no seeds given");
    }
    Ok(seeds)
}

fn openb(args: OpenbArgs) -> Result<()> {
    if !(args.tune.is_finite() && args.tune > 0.0 && args.tune <= 100.0) {
        bail!(
            "--tune must be a positive number (the paper uses 1.3), got {}",
            args.tune
        );
    }
    let policies = args
        .policies
        .iter()
        .map(|p| p.parse::<PolicyName>())
        .collect::<Result<Vec<_>, _>>()
        .context("--policies")?;
    let seeds = parse_seeds(&args.seeds)?;
    if let Some(jobs) = args.jobs {
        rayon::ThreadPoolBuilder::new()
            .num_threads(jobs.max(1))
            .build_global()?;
    }

    let node_src = match &args.nodes {
        Some(path) => CsvSource::read(path)?,
        None => CsvSource::embedded("openb_node_list_gpu_node.csv (embedded)", EMBEDDED_NODES),
    };
    let mut nodes = read_nodes(&node_src)?;
    if args.gangs {
        if args.json.is_some() || args.svg.is_some() {
            bail!("--json and --svg are not written for --gangs runs");
        }
        if args.rack_nodes == 0 {
            bail!("--rack-nodes must be at least 1");
        }
        nodes = with_racks(&nodes, args.rack_nodes);
    }
    let cluster = build_cluster(&nodes)?;
    let pod_sources = if args.pods.is_empty() {
        vec![CsvSource::embedded("openb_pod_list_default", EMBEDDED_PODS)]
    } else {
        args.pods
            .iter()
            .map(|p| CsvSource::read(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut traces = Vec::new();
    for src in &pod_sources {
        let pods = read_pods(src)?;
        for unknown in unknown_models(&pods, &cluster) {
            eprintln!(
                "warning: {}: {} pod(s) ask for GPU model {:?}, which no node of {} has \
                 (first: {}); they can use only the other models they name, if any",
                src.name, unknown.pods, unknown.model, node_src.name, unknown.first_pod
            );
        }
        traces.push(PreparedTrace::new(
            src.workload_name(),
            src.name.clone(),
            pods,
            &cluster,
        ));
    }

    let gpus = cluster.gpu_milli_capacity() / 1000;
    println!(
        "openb: {} nodes, {gpus} GPUs ({}); {} trace(s); tune {}; {} seed(s); workload model: {:?}",
        cluster.len(),
        node_src.name,
        traces.len(),
        args.tune,
        seeds.len(),
        args.workload
    );
    if args.gangs {
        return openb_gangs(&cluster, &traces, policies, seeds, &args);
    }
    if args.batch == 0 {
        bail!("--batch must be at least 1 (1 places one pod at a time)");
    }
    let batching = Batching {
        window: args.batch,
        order: args.batch_order,
    };
    let config = SweepConfig {
        policies,
        seeds,
        tune: args.tune,
        workload: args.workload,
        batching,
        progress: !args.quiet,
    };
    let started = std::time::Instant::now();
    let runs = run_sweep(&cluster, &traces, &config)?;
    let rows = summarise(&runs, &PaperResults::embedded());
    println!("\nunallocated GPU % at 100 % arrived (lower is better); paper = FGD ATC'23 authors' 10-seed mean");
    if batching.window > 1 {
        println!(
            "batch methodology: windows of {} arrivals placed together, {} (the paper's figures are one pod at a time)",
            batching.window,
            batching.order.as_str()
        );
    }
    println!("vs fgd: paired by seed against fgd on the same arrivals; * = lower by more than two standard errors\n");
    print!("{}", report::table(&rows));
    println!(
        "\n{} runs in {:.1} s wall",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    // Per trace, the bound every 5 % of arrived workload for the SVG (mean over
    // seeds), or at 100 % alone for the table.
    let mut bound_curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    if args.bound {
        println!("\nupper bound on GPU allocation at 100 % arrived (any placement; LP relaxation over node types and pod shapes)\n");
        let percents: Vec<f64> = if args.svg.is_some() {
            (5..=130).step_by(5).map(f64::from).collect()
        } else {
            vec![100.0]
        };
        let full = percents.iter().position(|p| *p == 100.0).unwrap_or(0);
        for trace in &traces {
            let started = std::time::Instant::now();
            // Each seed's arrivals, drawn once for the bound and the share floor.
            let arrivals = seed_arrivals(&trace.pods, &cluster, &config.seeds, args.tune);
            let per_percent = seed_bounds(&nodes, &cluster, trace, &arrivals, &percents)?;
            let mean_of = |bounds: &[AllocationBound]| {
                bounds.iter().map(|b| b.allocated_percent).sum::<f64>() / bounds.len().max(1) as f64
            };
            bound_curves.push((
                trace.workload.clone(),
                percents
                    .iter()
                    .zip(&per_percent)
                    .map(|(p, bounds)| (*p, mean_of(bounds)))
                    .collect(),
            ));
            let bounds = &per_percent[full];
            let alloc: Vec<f64> = bounds.iter().map(|b| b.allocated_percent).collect();
            let mean = mean_of(bounds);
            let (lo, hi) = alloc
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| {
                    (lo.min(*a), hi.max(*a))
                });
            println!(
                "{:<28} unallocated >= {:.2} % (allocated <= {:.2} %; seeds {:.2}–{:.2} %; {} shapes on {} node types; {:.1} s)",
                trace.workload,
                100.0 - mean,
                mean,
                lo,
                hi,
                bounds.first().map_or(0, |b| b.shapes),
                bounds.first().map_or(0, |b| b.node_types),
                started.elapsed().as_secs_f64(),
            );
            let floors = seed_share_floors(&cluster, trace, &arrivals)?;
            let floor_values: Vec<f64> = floors
                .iter()
                .filter_map(|f| f.unallocated_percent())
                .collect();
            let share_gpus =
                floors.iter().map(|f| f.gpus as f64).sum::<f64>() / floors.len().max(1) as f64;
            if floor_values.len() == floors.len() {
                println!(
                    "  placing every arrived share: unallocated >= {:.2} % (the shares need {share_gpus:.0} GPUs at least)",
                    floor_values.iter().sum::<f64>() / floor_values.len().max(1) as f64,
                );
            } else {
                println!(
                    "  placing every arrived share: impossible on {} of {} seeds (the shares need {share_gpus:.0} GPUs at least)",
                    floors.len() - floor_values.len(),
                    floors.len()
                );
            }
            for policy in &config.policies {
                let group: Vec<_> = runs
                    .iter()
                    .filter(|r| r.workload == trace.workload && r.policy == *policy)
                    .collect();
                let idle: Vec<IdleBreakdown> = group.iter().map(|r| r.idle_at_full).collect();
                let b = IdleBreakdown::mean(&idle);
                let mut share_excess = 0.0;
                for run in &group {
                    share_excess += run_share_gap(&run.shares_at_full)?
                        .excess_percent(cluster.gpu_milli_capacity());
                }
                println!(
                    "  {:<26} {:>5.2} % unallocated = slivers {:.2} + other partial-GPU gaps {:.2} \
                     + whole GPUs stranded without CPU {:.2} + whole GPUs free {:.2}; {:.2} above the bound; \
                     its shares take {:.2} % more GPUs than their best packing",
                    policy.to_string(),
                    b.total(),
                    b.slivers,
                    b.partial_gaps,
                    b.stranded_whole,
                    b.free_whole,
                    b.total() - (100.0 - mean),
                    share_excess / group.len().max(1) as f64,
                );
            }
        }
    }

    if let Some(path) = &args.json {
        let text = report::json(&rows, &runs, args.tune, &node_src.name, args.workload)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        report::svg(path, &runs, &bound_curves)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The openb experiment with gangs on racked nodes (`--gangs`).
fn openb_gangs(
    cluster: &ClusterSnapshot,
    traces: &[PreparedTrace],
    policies: Vec<PolicyName>,
    seeds: Vec<u64>,
    args: &OpenbArgs,
) -> Result<()> {
    let config = GangSweepConfig {
        policies,
        placements: GangPlacement::ALL.to_vec(),
        seeds,
        tune: args.tune,
        workload: args.workload,
        progress: !args.quiet,
    };
    let started = std::time::Instant::now();
    let runs = run_gang_sweep(cluster, traces, &config)?;
    println!(
        "\ngangs: pods of 2+ GPUs in gangs of 2–8, racks of {} nodes; unallocated GPU % at \
         100 % and 130 % arrived, failed pods, placed/arrived gangs, racks under a placed \
         gang and gangs of 2+ members in one rack (means over seeds)\n",
        args.rack_nodes
    );
    print!("{}", gang_table(&summarise_gangs(&runs)));
    println!(
        "\n{} runs in {:.1} s wall",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn autoscale(args: AutoscaleArgs) -> Result<()> {
    use phalanx_sim::autoscale::{self, report as autoscale_report, trace::read_trace};

    if !(args.slo_seconds.is_finite() && args.slo_seconds > 0.0) {
        bail!(
            "--slo-seconds must be a positive number of seconds, got {}",
            args.slo_seconds
        );
    }
    if !(args.cold_start.is_finite() && (0.0..=3600.0).contains(&args.cold_start)) {
        bail!(
            "--cold-start must be between 0 and 3600 seconds, got {}",
            args.cold_start
        );
    }
    if !(args.max_trace_hours.is_finite() && args.max_trace_hours > 0.0) {
        bail!(
            "--max-trace-hours must be a positive number of hours, got {}",
            args.max_trace_hours
        );
    }
    let mut scenario = autoscale::default_scenario();
    if args.gpus < scenario.serving.gpus_per_replica {
        bail!(
            "--gpus {} cannot hold one replica of {} GPUs",
            args.gpus,
            scenario.serving.gpus_per_replica
        );
    }
    scenario.serving.cluster_gpus = args.gpus;
    scenario.serving.cold_start_seconds = args.cold_start;
    scenario.slo_queue_seconds = args.slo_seconds;
    scenario.warm_start = args.warm_start;

    if args.suite {
        return autoscale_suite(&args, &scenario);
    }
    let source = match &args.trace[..] {
        [] => CsvSource::embedded(autoscale::EMBEDDED_TRACE_NAME, autoscale::EMBEDDED_TRACE),
        [path] => CsvSource::read(path)?,
        _ => bail!("--trace may be given once without --suite (which runs every one)"),
    };
    let requests = read_trace(&source, args.max_trace_hours * 3600.0)?;
    println!(
        "autoscale: {} ({} requests over {:.0} s); {}",
        source.name,
        requests.len(),
        requests.last().map_or(0.0, |r| r.arrival),
        scenario.describe(),
    );
    let results = autoscale::compare(&requests, &scenario)?;
    println!();
    print!(
        "{}",
        autoscale_report::table(&results, autoscale::PHALANX_CONTROL_PERIOD.as_secs_f64())
    );
    if let Some(path) = &args.json {
        let text = autoscale_report::json(&results, &scenario, &source.name, requests.len())?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        let load = autoscale_report::load_in_replicas(&requests, &scenario);
        let title = format!("{}: load and replicas over time", source.workload_name());
        autoscale_report::svg(path, &results, &load, &title)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// `autoscale --suite`: every load through every autoscaler, one table.
fn autoscale_suite(
    args: &AutoscaleArgs,
    scenario: &phalanx_sim::autoscale::run::Scenario,
) -> Result<()> {
    use phalanx_sim::autoscale::{self, suite, suite_report};

    let started = std::time::Instant::now();
    let traces = args
        .trace
        .iter()
        .map(|p| CsvSource::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let loads = suite::build_loads(args.seed, &traces, args.max_trace_hours * 3600.0, scenario)?;
    let period = autoscale::PHALANX_CONTROL_PERIOD.as_secs_f64();
    println!(
        "autoscale suite: {} loads, seed {}; {}; phalanx decides every {period} s\n",
        loads.len(),
        args.seed,
        scenario.describe(),
    );
    print!("{}", suite_report::loads_table(&loads, scenario));
    let outcomes = suite::run(loads, scenario, period)?;
    println!();
    print!("{}", suite_report::table(&outcomes, period));
    println!("\n{:.1} s wall", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let text = suite_report::json(&outcomes, scenario, args.seed, period)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        let paths = suite_report::svgs(dir, &outcomes, scenario)
            .map_err(|e| anyhow::anyhow!("drawing into {}: {e}", dir.display()))?;
        for path in paths {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn day(args: DayArgs) -> Result<()> {
    use phalanx_sim::day::report as day_report;
    use phalanx_sim::day::{run_day, workload::build_workload, DayConfig};

    let node_src = match &args.nodes {
        Some(path) => CsvSource::read(path)?,
        None => CsvSource::embedded("openb_node_list_gpu_node.csv (embedded)", EMBEDDED_NODES),
    };
    let pod_src = match &args.pods {
        Some(path) => CsvSource::read(path)?,
        None => CsvSource::embedded("openb_pod_list_default.csv (embedded)", EMBEDDED_PODS),
    };
    let cluster = build_cluster(&read_nodes(&node_src)?)?;
    let pods = read_pods(&pod_src)?;
    for unknown in unknown_models(&pods, &cluster) {
        eprintln!(
            "warning: {}: {} pod(s) ask for GPU model {:?}, which no node of {} has \
             (first: {}); they can use only the other models they name, if any",
            pod_src.name, unknown.pods, unknown.model, node_src.name, unknown.first_pod
        );
    }
    let config = DayConfig {
        load: args.load,
        hours: args.hours,
        seed: args.seed,
        large_gangs: args.large_gangs,
        gang_members: args.gang_members,
        member_gpus: args.member_gpus,
        gang_run_s: args.gang_run_s,
    };
    let workload = build_workload(&pods, &cluster, &config, &pod_src.name)?;
    println!(
        "day: {} nodes, {} GPUs ({}); {} pods ({}) x load = {} jobs with {} large gang(s) of \
         {} x {} GPUs; load {} (arrivals over {}); seed {}",
        cluster.len(),
        cluster.gpu_milli_capacity() / 1000,
        node_src.name,
        pods.len(),
        pod_src.name,
        workload.jobs.len(),
        config.large_gangs,
        config.gang_members,
        config.member_gpus,
        config.load,
        day_report::duration(workload.window_s),
        config.seed,
    );
    for q in &workload.queues {
        println!(
            "  queue {}: guaranteed {:.1} GPUs, limit {}, over-quota weight {}",
            q.name,
            q.guaranteed_milli as f64 / 1000.0,
            q.limit_milli.map_or_else(
                || "none".into(),
                |l| format!("{:.1} GPUs", l as f64 / 1000.0)
            ),
            q.over_quota_weight
        );
    }
    let mut results = Vec::new();
    for name in &args.policies {
        let mut policy = name.build(&workload)?;
        let (result, _) = run_day(&workload, &cluster, policy.as_mut())?;
        results.push(result);
    }
    println!(
        "\nalloc% = GPU allocated, time-averaged over the arrival window; p50/p99 = wait from \
         arrival to placement; dev% = below deserved share, summed over queues (per queue \
         below), time-averaged; below-g = longest stretch a queue with demand stayed below its \
         guarantee; preempt = pods evicted; GPU-h = GPU-hours they lost; gang-max = longest \
         large-gang wait; unplcd = jobs never placed; s = wall seconds\n"
    );
    print!("{}", day_report::table(&results));
    if let Some(path) = &args.json {
        let text = day_report::json(
            &results,
            &workload.queues,
            &config,
            workload.capacity_milli,
            &pod_src.name,
            &node_src.name,
        )?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot {
        let paths = day_report::svg(dir, &results)
            .map_err(|e| anyhow::anyhow!("drawing into {}: {e}", dir.display()))?;
        for path in paths {
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Openb(args) => openb(args),
        Command::Autoscale(args) => autoscale(args),
        Command::Day(args) => day(args),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_seeds;

    #[test]
    fn seeds_accept_lists_and_ranges() {
        assert_eq!(parse_seeds("42-44,7").unwrap(), vec![42, 43, 44, 7]);
        assert!(parse_seeds("x").is_err());
        assert!(parse_seeds("5-1").is_err());
        assert!(parse_seeds("").is_err());
    }
}
