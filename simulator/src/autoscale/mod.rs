//! `phalanx-sim autoscale`: the Azure LLM conversation trace replayed against
//! inference replicas on a GPU cluster of fixed size, under the Phalanx
//! autoscaler (the production `phalanx_autoscaler::decision` module) and under
//! HPA-like and KEDA-like baselines written from their documented algorithms and
//! defaults.
//!
//! All three read the same Prometheus series (requests in flight, queued or
//! served, over all replicas; scraped every 5 s) with the same target per
//! replica. Phalanx reads the newest sample every 5 s control period; the
//! baselines read `avg_over_time(...[1m])` as a metrics adapter query would.

pub mod cluster;
pub mod hpa;
pub mod loads;
pub mod oracle;
pub mod prometheus;
pub mod report;
pub mod run;
pub mod scaler;
pub mod suite;
pub mod suite_report;
pub mod trace;
pub mod waits;

use std::time::Duration;

use phalanx_autoscaler::decision::{
    objective_defaults, Behavior, InvalidBehavior, QueueObjective, ReplicaShape,
};

use cluster::ServingModel;
use hpa::HpaSpec;
use run::{simulate, RunResult, Scenario};
use scaler::{Autoscaler, HpaScaler, KedaScaler, PhalanxScaler, PhalanxSignal};
use trace::Request;

/// The Azure LLM inference trace 2023, conversation service (see `data/README.md`).
pub const EMBEDDED_TRACE: &str = include_str!("../../data/azure_llm_conv_2023.csv");
/// The name tables use for the embedded trace.
pub const EMBEDDED_TRACE_NAME: &str = "azure_llm_conv_2023.csv (embedded)";

/// How often the Phalanx controller decides.
pub const PHALANX_CONTROL_PERIOD: Duration = Duration::from_secs(5);

/// A replica's KV cache: a 70B-parameter model with grouped-query attention (80
/// layers, 8 KV heads of 128) keeps 320 KiB per token in 16 bits; with 8-bit
/// weights (about 70 GB) two 80 GB GPUs leave about 80 GB for it: 256 Ki tokens.
pub const KV_CACHE_TOKENS: u64 = 262_144;

/// The default experiment: replicas of a model on 2 GPUs each, 8 requests at a time
/// (per replica 16k prompt tokens/s prefill, 240 tokens/s decode), a 60 s cold
/// start, 32 GPUs in all; the objective is waiting under 2 s for a slot.
pub fn default_scenario() -> Scenario {
    Scenario {
        serving: ServingModel {
            slots: 8,
            prefill_tokens_per_second: 16_000.0,
            decode_tokens_per_second: 240.0,
            cold_start_seconds: 60.0,
            kv_cache_tokens: KV_CACHE_TOKENS,
            gpus_per_replica: 2,
            cluster_gpus: 32,
        },
        slo_queue_seconds: 2.0,
        target_in_flight_per_replica: 6.0,
        scrape_interval: Duration::from_secs(5),
        query_window: Duration::from_secs(60),
        drain: Duration::from_secs(600),
        common_reversal_window: Duration::from_secs(300),
        warm_start: false,
        scrape_outages: Vec::new(),
    }
}

/// The Phalanx defaults for this scenario: min 1, max what the cluster holds.
pub fn phalanx_behavior(scenario: &Scenario) -> Behavior {
    let mut behavior = Behavior::with_bounds(1, scenario.serving.replica_capacity().max(1));
    behavior.startup = Duration::from_secs_f64(scenario.serving.cold_start_seconds.max(0.0));
    behavior
}

/// What Phalanx reads in this scenario: the queueing-delay objective of the
/// scenario, with the replica's slots.
pub fn phalanx_signal(scenario: &Scenario) -> PhalanxSignal {
    PhalanxSignal::QueueWait {
        objective: QueueObjective {
            wait_seconds: scenario.slo_queue_seconds,
            attainment: objective_defaults::ATTAINMENT,
        },
        shape: ReplicaShape {
            slots: scenario.serving.slots,
            drain_seconds: objective_defaults::DRAIN_SECONDS,
        },
        slot_time_window: objective_defaults::SLOT_TIME_WINDOW,
    }
}

/// Phalanx, then the HPA-like and the KEDA-like baselines, all bounded by the
/// cluster's capacity.
pub fn autoscalers(scenario: &Scenario) -> Result<Vec<Box<dyn Autoscaler>>, InvalidBehavior> {
    let max = scenario.serving.replica_capacity().max(1);
    let target = scenario.target_in_flight_per_replica;
    Ok(vec![
        Box::new(PhalanxScaler::new(
            phalanx_behavior(scenario),
            PHALANX_CONTROL_PERIOD,
            phalanx_signal(scenario),
        )?),
        Box::new(HpaScaler::new(
            HpaSpec::kubernetes_defaults(1, max, target),
            scenario.query_window,
        )),
        Box::new(KedaScaler::with_defaults(
            max,
            target,
            scenario.query_window,
        )),
    ])
}

/// Every autoscaler on the same requests, in the order of [`autoscalers`].
pub fn compare(
    requests: &[Request],
    scenario: &Scenario,
) -> Result<Vec<RunResult>, InvalidBehavior> {
    Ok(autoscalers(scenario)?
        .iter_mut()
        .map(|a| simulate(requests, scenario, a.as_mut()))
        .collect())
}
