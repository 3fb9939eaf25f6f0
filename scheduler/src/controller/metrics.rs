//! The scheduler's Prometheus metrics.
//!
//! One [`SchedulerMetrics`] per process, shared as `Arc<SchedulerMetrics>`:
//! every metric is atomic inside, so tasks update it through `&self` without a
//! lock of ours. Names follow Prometheus conventions (prefix
//! `phalanx_scheduler_`, the unit in the name, `_total` on counters) and mirror
//! kube-scheduler's where one exists, so existing dashboards translate.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::controller::gangs::sources::ActiveSources;
use crate::controller::wait_reasons::{PendingCounts, WaitReason};
use phalanx_engine::{GaugeGroup, GpuTally, TelemetryRejection};
use phalanx_kube::mirror::MirrorChange;
use phalanx_runtime::metrics::MetricsText;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

/// The outcome of one scheduling attempt (kube-scheduler's `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    /// Placed on a node and handed to the binder.
    Scheduled,
    /// No node fits now; the pod waits for a cluster change or its backoff.
    Unschedulable,
    /// Something other than the pod's demands failed (a bug, an API error).
    Error,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

/// Why a Binding (or the assignment annotation before it) was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingErrorReason {
    /// 409: the pod was bound or changed meanwhile.
    Conflict,
    /// 404: the pod or node is gone.
    NotFound,
    /// Not sent: this replica's Lease was about to expire (see `LeaseFence`).
    Fenced,
    /// Not sent: the node was deleted after the pod was placed on it.
    NodeGone,
    Other,
}

impl BindingErrorReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingErrorReason::Conflict => "conflict",
            BindingErrorReason::NotFound => "not_found",
            BindingErrorReason::Fenced => "fenced",
            BindingErrorReason::NodeGone => "node_gone",
            BindingErrorReason::Other => "other",
        }
    }
}

/// The extender verb a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtenderVerb {
    Filter,
    Prioritize,
    Bind,
}

impl ExtenderVerb {
    pub const ALL: [ExtenderVerb; 3] = [
        ExtenderVerb::Filter,
        ExtenderVerb::Prioritize,
        ExtenderVerb::Bind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExtenderVerb::Filter => "filter",
            ExtenderVerb::Prioritize => "prioritize",
            ExtenderVerb::Bind => "bind",
        }
    }
}

/// Why the extender refused a request (any verb: the body; `/bind`: the pod
/// or the node it names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtenderRefusal {
    /// The body is larger than `extender.maxRequestBytes` (HTTP 413).
    TooLarge,
    /// The body is not the verb's JSON (HTTP 400).
    Malformed,
    /// No pod of that namespace and name exists.
    PodNotFound,
    /// The pod of that name has another UID (it was replaced).
    UidMismatch,
    /// The pod already has a node.
    AlreadyBound,
    /// The pod's `spec.schedulerName` is not a profile this extender serves.
    OtherScheduler,
    /// The pod requests neither `nvidia.com/gpu` nor `phalanx.dev/gpu-milli`.
    NoManagedResource,
    /// The pod belongs to a gang, which only the full scheduler places.
    Gang,
    /// The watches have not listed the cluster yet.
    NotSynced,
    /// The pod's requests cannot be read.
    InvalidPod,
    /// The engine does not accept the pod on the node named.
    NodeRefused,
}

impl ExtenderRefusal {
    pub const ALL: [ExtenderRefusal; 11] = [
        ExtenderRefusal::TooLarge,
        ExtenderRefusal::Malformed,
        ExtenderRefusal::PodNotFound,
        ExtenderRefusal::UidMismatch,
        ExtenderRefusal::AlreadyBound,
        ExtenderRefusal::OtherScheduler,
        ExtenderRefusal::NoManagedResource,
        ExtenderRefusal::Gang,
        ExtenderRefusal::NotSynced,
        ExtenderRefusal::InvalidPod,
        ExtenderRefusal::NodeRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExtenderRefusal::TooLarge => "too_large",
            ExtenderRefusal::Malformed => "malformed",
            ExtenderRefusal::PodNotFound => "pod_not_found",
            ExtenderRefusal::UidMismatch => "uid_mismatch",
            ExtenderRefusal::AlreadyBound => "already_bound",
            ExtenderRefusal::OtherScheduler => "other_scheduler",
            ExtenderRefusal::NoManagedResource => "no_managed_resource",
            ExtenderRefusal::Gang => "gang",
            ExtenderRefusal::NotSynced => "not_synced",
            ExtenderRefusal::InvalidPod => "invalid_pod",
            ExtenderRefusal::NodeRefused => "node_refused",
        }
    }

    /// Whether a request of `verb` can be refused for this reason: every verb
    /// for its body, only `/bind` for the pod and node.
    pub fn applies_to(self, verb: ExtenderVerb) -> bool {
        matches!(self, ExtenderRefusal::TooLarge | ExtenderRefusal::Malformed)
            || verb == ExtenderVerb::Bind
    }
}

/// The queue a pending pod is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Queue {
    Active,
    Backoff,
    Unschedulable,
}

impl Queue {
    fn as_str(self) -> &'static str {
        match self {
            Queue::Active => "active",
            Queue::Backoff => "backoff",
            Queue::Unschedulable => "unschedulable",
        }
    }
}

/// Label values are the enums' `as_str` names, the snake_case that Prometheus
/// label values conventionally use (the derive would write `NotFound`).
macro_rules! label_value_by_name {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
/// Which field of a GpuNode status sample was implausible (the engine's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TelemetryReason(TelemetryRejection);

impl TelemetryReason {
    fn as_str(self) -> &'static str {
        self.0.reason()
    }
}

/// What a `cluster_gpus` series counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum GpuState {
    Capacity,
    Allocated,
    Idle,
    Fragmented,
}

impl GpuState {
    fn as_str(self) -> &'static str {
        match self {
            GpuState::Capacity => "capacity",
            GpuState::Allocated => "allocated",
            GpuState::Idle => "idle",
            GpuState::Fragmented => "fragmented",
        }
    }
}

label_value_by_name!(
    GpuState,
    WaitReason,
    AttemptResult,
    BindingErrorReason,
    Queue,
    TelemetryReason,
    ExtenderVerb,
    ExtenderRefusal
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RefusalLabel {
    verb: ExtenderVerb,
    reason: ExtenderRefusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TelemetryReasonLabel {
    reason: TelemetryReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: AttemptResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabel {
    queue: Queue,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WaitReasonLabel {
    reason: WaitReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GpuGroupLabel {
    model: String,
    pool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct GpuStateLabel {
    model: String,
    pool: String,
    state: GpuState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: BindingErrorReason,
}

/// Why a victim was evicted (the engine's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct VictimReason(phalanx_engine::preemption::EvictionReason);

impl VictimReason {
    fn as_str(self) -> &'static str {
        match self.0 {
            phalanx_engine::preemption::EvictionReason::Preemption => "preemption",
            phalanx_engine::preemption::EvictionReason::Reclaim => "reclaim",
        }
    }
}

label_value_by_name!(VictimReason);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VictimLabel {
    reason: VictimReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// A gauge of a count of things (never negative).
type CountGauge = Gauge<u64, AtomicU64>;

/// A gauge of a quantity with fractions (GPUs, seconds).
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the scheduler exports, and the registry that encodes them.
#[derive(Debug)]
pub struct SchedulerMetrics {
    registry: Registry,
    schedule_attempts: Family<ResultLabel, Counter>,
    e2e_scheduling: Histogram,
    pending_pods: Family<QueueLabel, CountGauge>,
    pending_pods_by_reason: Family<WaitReasonLabel, CountGauge>,
    pending_gangs: Family<WaitReasonLabel, CountGauge>,
    oldest_pending: FloatGauge,
    cluster_gpus: Family<GpuStateLabel, FloatGauge>,
    shared_gpus: Family<GpuGroupLabel, CountGauge>,
    gang_wait: Histogram,
    gang_timeouts: Counter,
    gang_plans_finished: Counter,
    gang_plans_undone: Counter,
    stale_telemetry_gpus: CountGauge,
    stale_telemetry_samples_ignored: Counter,
    telemetry_rejected: Family<TelemetryReasonLabel, Counter>,
    binding: Histogram,
    binding_errors: Family<ReasonLabel, Counter>,
    leader: CountGauge,
    cache_nodes: CountGauge,
    extender_requests_refused: Family<RefusalLabel, Counter>,
    gang_source_active: Family<SourceLabel, CountGauge>,
    preemption_victims: Family<VictimLabel, Counter>,
    preemption_attempts: Counter,
    eviction_errors: Counter,
    victim_selection: Histogram,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SchedulerMetrics {
    /// Counts the telemetry samples a GpuNode status brought that were ignored
    /// (stale or implausible), and logs a node once when its samples start
    /// being implausible. The scheduler and the extender both fold GpuNodes
    /// into a mirror, and both report what it ignored here.
    pub fn count_telemetry(&self, change: &MirrorChange) {
        self.stale_samples_ignored(change.telemetry.stale_samples);
        for rejected in &change.telemetry.rejected {
            self.telemetry_rejected(rejected.reason);
        }
        for rejected in &change.newly_rejecting {
            tracing::warn!(
                node = %rejected.node,
                gpu = rejected.gpu_index,
                field = rejected.reason.field(),
                "ignoring GpuNode telemetry: {}; the GPU falls back to allocation accounting \
                 (logged once until the node's samples are plausible again)",
                rejected.reason,
            );
        }
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("phalanx_scheduler");

        let schedule_attempts = Family::<ResultLabel, Counter>::default();
        registry.register(
            "schedule_attempts",
            "Scheduling attempts by result (scheduled, unschedulable, error)",
            schedule_attempts.clone(),
        );
        // Label values known up front are created now so that every series
        // exists from the first scrape: rate() over a series that appears
        // mid-window misses its first increments.
        for result in [
            AttemptResult::Scheduled,
            AttemptResult::Unschedulable,
            AttemptResult::Error,
        ] {
            let _ = schedule_attempts.get_or_create(&ResultLabel { result });
        }

        // 1 ms doubling to ~65 s: from an idle cluster's immediate placement to
        // a pod that waited a minute for capacity.
        let e2e_scheduling = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register_with_unit(
            "e2e_scheduling_duration",
            "Time from a pod first being seen pending to its Binding being written",
            Unit::Seconds,
            e2e_scheduling.clone(),
        );

        let pending_pods = Family::<QueueLabel, CountGauge>::default();
        registry.register(
            "pending_pods",
            "Pods waiting to be scheduled, by queue (active, backoff, unschedulable)",
            pending_pods.clone(),
        );
        for queue in [Queue::Active, Queue::Backoff, Queue::Unschedulable] {
            let _ = pending_pods.get_or_create(&QueueLabel { queue });
        }
        // A family of its own, not more series of pending_pods: two label sets
        // in one family would make every sum over it count each pod twice.
        let pending_pods_by_reason = Family::<WaitReasonLabel, CountGauge>::default();
        registry.register(
            "pending_pods_by_reason",
            "Pods waiting to be scheduled, by why they wait (insufficient_gpu, constraint, \
             quota, gated, gang, other)",
            pending_pods_by_reason.clone(),
        );
        let pending_gangs = Family::<WaitReasonLabel, CountGauge>::default();
        registry.register(
            "pending_gangs",
            "Gangs with members waiting to be scheduled, by reason (as pending_pods)",
            pending_gangs.clone(),
        );
        for reason in WaitReason::ALL {
            let _ = pending_pods_by_reason.get_or_create(&WaitReasonLabel { reason });
            let _ = pending_gangs.get_or_create(&WaitReasonLabel { reason });
        }
        let oldest_pending = FloatGauge::default();
        registry.register_with_unit(
            "oldest_pending",
            "Age of the oldest pod waiting to be scheduled (0 when none), as the leader sees it",
            Unit::Seconds,
            oldest_pending.clone(),
        );
        let cluster_gpus = Family::<GpuStateLabel, FloatGauge>::default();
        registry.register(
            "cluster_gpus",
            "GPUs by model, node pool and state: capacity (healthy GPUs), allocated, idle \
             (capacity - allocated) and fragmented (the part of idle the typical pods cannot \
             use, FGD's measure as phalanx-sim reports it); set by the leader",
            cluster_gpus.clone(),
        );
        let shared_gpus = Family::<GpuGroupLabel, CountGauge>::default();
        registry.register(
            "shared_gpus",
            "Healthy GPUs holding at least one share (a fraction of one GPU), by model and \
             node pool; set by the leader",
            shared_gpus.clone(),
        );

        // 100 ms doubling to ~14 min: beyond the default 10 min gang timeout.
        let gang_wait = Histogram::new(exponential_buckets(0.1, 2.0, 14));
        registry.register_with_unit(
            "gang_wait_duration",
            "Time from a gang's first member being seen to the whole gang being bound",
            Unit::Seconds,
            gang_wait.clone(),
        );

        let gang_timeouts = Counter::default();
        registry.register(
            "gang_timeouts",
            "Gangs that did not get all their members placed within their timeout",
            gang_timeouts.clone(),
        );

        let gang_plans_finished = Counter::default();
        registry.register(
            "gang_plans_finished",
            "Gang plans an earlier leader left partly bound that this leader bound to the end",
            gang_plans_finished.clone(),
        );
        let gang_plans_undone = Counter::default();
        registry.register(
            "gang_plans_undone",
            "Gang plans an earlier leader left partly bound that could not be finished: \
             bound members deleted for their owners to recreate, plans cleared",
            gang_plans_undone.clone(),
        );

        let stale_telemetry_gpus = CountGauge::default();
        registry.register(
            "stale_telemetry_gpus",
            "GPUs whose latest telemetry sample is older than telemetry.maxAgeSeconds",
            stale_telemetry_gpus.clone(),
        );

        let stale_telemetry_samples_ignored = Counter::default();
        registry.register(
            "stale_telemetry_samples_ignored",
            "Telemetry samples ignored because they were older than telemetry.maxAgeSeconds",
            stale_telemetry_samples_ignored.clone(),
        );

        let telemetry_rejected = Family::<TelemetryReasonLabel, Counter>::default();
        registry.register(
            "telemetry_rejected",
            "Telemetry samples ignored as implausible, by reason (memory_used beyond the \
             GPU's memory, utilization over 100 %, observed_in_future beyond the clock skew)",
            telemetry_rejected.clone(),
        );
        for reason in [
            TelemetryRejection::MemoryUsed,
            TelemetryRejection::Utilization,
            TelemetryRejection::ObservedInFuture,
        ] {
            let _ = telemetry_rejected.get_or_create(&TelemetryReasonLabel {
                reason: TelemetryReason(reason),
            });
        }

        // 1 ms doubling to ~8 s: one API round trip, or a few under throttling.
        let binding = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "binding_duration",
            "Time to write one pod's GPU assignment and Binding",
            Unit::Seconds,
            binding.clone(),
        );

        let binding_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "binding_errors",
            "Bindings that failed or were not sent, by reason (conflict, not_found, fenced, node_gone, other)",
            binding_errors.clone(),
        );
        for reason in [
            BindingErrorReason::Conflict,
            BindingErrorReason::NotFound,
            BindingErrorReason::Fenced,
            BindingErrorReason::NodeGone,
            BindingErrorReason::Other,
        ] {
            let _ = binding_errors.get_or_create(&ReasonLabel { reason });
        }

        let leader = CountGauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and schedules, else 0",
            leader.clone(),
        );

        let cache_nodes = CountGauge::default();
        registry.register(
            "cache_nodes",
            "Nodes in the scheduler's cluster snapshot",
            cache_nodes.clone(),
        );

        let gang_source_active = Family::<SourceLabel, CountGauge>::default();
        registry.register(
            "gang_source_active",
            "1 for each gang source the scheduler reads (its object kind is served, or it needs \
             none: annotation), 0 for a known source the server does not serve",
            gang_source_active.clone(),
        );
        // The annotation form needs no object: active from the start.
        gang_source_active
            .get_or_create(&SourceLabel {
                source: "annotation".to_owned(),
            })
            .set(1);

        let extender_requests_refused = Family::<RefusalLabel, Counter>::default();
        registry.register(
            "extender_requests_refused",
            "Extender requests refused, by verb and reason (too_large: the body is above \
             extender.maxRequestBytes; malformed; for bind, why the pod or node was refused)",
            extender_requests_refused.clone(),
        );
        for verb in ExtenderVerb::ALL {
            for reason in ExtenderRefusal::ALL {
                if reason.applies_to(verb) {
                    let _ = extender_requests_refused.get_or_create(&RefusalLabel { verb, reason });
                }
            }
        }

        let preemption_victims = Family::<VictimLabel, Counter>::default();
        registry.register(
            "preemption_victims",
            "Pods chosen for eviction, by reason (preemption inside a queue, reclaim across queues)",
            preemption_victims.clone(),
        );
        for reason in [
            phalanx_engine::preemption::EvictionReason::Preemption,
            phalanx_engine::preemption::EvictionReason::Reclaim,
        ] {
            let _ = preemption_victims.get_or_create(&VictimLabel {
                reason: VictimReason(reason),
            });
        }
        let preemption_attempts = Counter::default();
        registry.register(
            "preemption_attempts",
            "Preemptions planned (victims chosen and evictions started) for a pod or gang",
            preemption_attempts.clone(),
        );
        let eviction_errors = Counter::default();
        registry.register(
            "eviction_errors",
            "Evictions the API server refused or that failed (a PodDisruptionBudget that changed \
             meanwhile, an API error)",
            eviction_errors.clone(),
        );
        // 100 µs doubling to ~6.5 s.
        let victim_selection = Histogram::new(exponential_buckets(0.0001, 2.0, 17));
        registry.register_with_unit(
            "victim_selection_duration",
            "Time to choose the victims for one pod or gang (found or not)",
            Unit::Seconds,
            victim_selection.clone(),
        );

        Self {
            preemption_victims,
            preemption_attempts,
            eviction_errors,
            victim_selection,
            registry,
            schedule_attempts,
            e2e_scheduling,
            pending_pods,
            pending_pods_by_reason,
            pending_gangs,
            oldest_pending,
            cluster_gpus,
            shared_gpus,
            gang_wait,
            gang_timeouts,
            gang_plans_finished,
            gang_plans_undone,
            stale_telemetry_gpus,
            stale_telemetry_samples_ignored,
            telemetry_rejected,
            binding,
            binding_errors,
            leader,
            cache_nodes,
            extender_requests_refused,
            gang_source_active,
        }
    }

    /// Counts one extender request refused.
    pub fn extender_request_refused(&self, verb: ExtenderVerb, reason: ExtenderRefusal) {
        self.extender_requests_refused
            .get_or_create(&RefusalLabel { verb, reason })
            .inc();
    }

    pub fn record_attempt(&self, result: AttemptResult) {
        self.schedule_attempts
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Pod first seen pending -> Binding written.
    pub fn observe_e2e(&self, latency: Duration) {
        self.e2e_scheduling.observe(latency.as_secs_f64());
    }

    /// The queue lengths now (a snapshot, not increments).
    pub fn set_pending(&self, active: u64, backoff: u64, unschedulable: u64) {
        for (queue, count) in [
            (Queue::Active, active),
            (Queue::Backoff, backoff),
            (Queue::Unschedulable, unschedulable),
        ] {
            self.pending_pods
                .get_or_create(&QueueLabel { queue })
                .set(count);
        }
    }

    /// Pending pods and gangs by reason and the oldest pending age, now.
    pub fn set_pending_reasons(&self, counts: &PendingCounts) {
        for reason in WaitReason::ALL {
            self.pending_pods_by_reason
                .get_or_create(&WaitReasonLabel { reason })
                .set(counts.pods(reason));
            self.pending_gangs
                .get_or_create(&WaitReasonLabel { reason })
                .set(counts.gangs(reason));
        }
        self.oldest_pending.set(counts.oldest.as_secs_f64());
    }

    /// The cluster's GPUs by model and pool, now. Every group ever seen is
    /// passed (an emptied one at zero), so no series keeps a stale value.
    pub fn set_cluster_gpus(&self, groups: &[(GaugeGroup, GpuTally)]) {
        for (group, tally) in groups {
            for (state, gpus) in [
                (GpuState::Capacity, tally.capacity_gpus()),
                (GpuState::Allocated, tally.allocated_gpus()),
                (GpuState::Idle, tally.idle_gpus()),
                (GpuState::Fragmented, tally.fragmented_gpus()),
            ] {
                self.cluster_gpus
                    .get_or_create(&GpuStateLabel {
                        model: group.model.clone(),
                        pool: group.pool.clone(),
                        state,
                    })
                    .set(gpus);
            }
            self.shared_gpus
                .get_or_create(&GpuGroupLabel {
                    model: group.model.clone(),
                    pool: group.pool.clone(),
                })
                .set(tally.shared_gpus);
        }
    }

    /// First member seen -> whole gang bound.
    pub fn observe_gang_wait(&self, wait: Duration) {
        self.gang_wait.observe(wait.as_secs_f64());
    }

    /// A plan of an earlier term was finished (`true`) or undone (`false`).
    pub fn gang_plan_recovered(&self, finished: bool) {
        if finished {
            self.gang_plans_finished.inc();
        } else {
            self.gang_plans_undone.inc();
        }
    }

    pub fn gang_timed_out(&self) {
        self.gang_timeouts.inc();
    }

    /// GPUs whose telemetry is stale now.
    pub fn set_stale_gpus(&self, gpus: u64) {
        self.stale_telemetry_gpus.set(gpus);
    }

    /// Adds `samples` to the count of stale samples ignored.
    pub fn stale_samples_ignored(&self, samples: u64) {
        self.stale_telemetry_samples_ignored.inc_by(samples);
    }

    /// Counts one implausible telemetry sample, ignored.
    pub fn telemetry_rejected(&self, reason: TelemetryRejection) {
        self.telemetry_rejected
            .get_or_create(&TelemetryReasonLabel {
                reason: TelemetryReason(reason),
            })
            .inc();
    }

    pub fn observe_binding(&self, latency: Duration) {
        self.binding.observe(latency.as_secs_f64());
    }

    pub fn binding_error(&self, reason: BindingErrorReason) {
        self.binding_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(u64::from(leading));
    }

    /// Sets `gang_source_active` for every source in `sources`, and for the
    /// annotation form (always active).
    pub fn set_gang_sources(&self, sources: &ActiveSources) {
        let set = |source: &str, active: bool| {
            self.gang_source_active
                .get_or_create(&SourceLabel {
                    source: source.to_owned(),
                })
                .set(u64::from(active));
        };
        set("annotation", true);
        for (source, active) in sources.iter() {
            set(source.name, active);
        }
    }

    pub fn observe_victim_selection(&self, took: Duration) {
        self.victim_selection.observe(took.as_secs_f64());
    }

    /// A preemption was planned with these victims.
    pub fn preempted(&self, victims: &[phalanx_engine::preemption::Victim]) {
        self.preemption_attempts.inc();
        for victim in victims {
            self.preemption_victims
                .get_or_create(&VictimLabel {
                    reason: VictimReason(victim.reason),
                })
                .inc();
        }
    }

    pub fn eviction_failed(&self) {
        self.eviction_errors.inc();
    }

    pub fn set_nodes(&self, nodes: u64) {
        self.cache_nodes.set(nodes);
    }

    /// Everything in the OpenMetrics text format (ending in `# EOF`).
    pub fn encode(&self) -> String {
        phalanx_runtime::metrics::encode(&self.registry)
    }
}

impl MetricsText for SchedulerMetrics {
    fn encode(&self) -> String {
        SchedulerMetrics::encode(self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The value of the sample line that starts with `series ` (name and labels).
    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[track_caller]
    fn assert_sample(text: &str, series: &str, value: &str) {
        assert_eq!(
            sample(text, series).as_deref(),
            Some(value),
            "{series} in:\n{text}"
        );
    }

    #[test]
    fn fresh_metrics_export_every_series_at_zero() {
        let text = SchedulerMetrics::new().encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        for result in ["scheduled", "unschedulable", "error"] {
            assert_sample(
                &text,
                &format!("phalanx_scheduler_schedule_attempts_total{{result=\"{result}\"}}"),
                "0",
            );
        }
        for queue in ["active", "backoff", "unschedulable"] {
            assert_sample(
                &text,
                &format!("phalanx_scheduler_pending_pods{{queue=\"{queue}\"}}"),
                "0",
            );
        }
        for reason in ["conflict", "not_found", "other"] {
            assert_sample(
                &text,
                &format!("phalanx_scheduler_binding_errors_total{{reason=\"{reason}\"}}"),
                "0",
            );
        }
        assert_sample(&text, "phalanx_scheduler_leader", "0");
        assert_sample(
            &text,
            "phalanx_scheduler_e2e_scheduling_duration_seconds_count",
            "0",
        );
        let refused = "phalanx_scheduler_extender_requests_refused_total";
        for verb in ["filter", "prioritize", "bind"] {
            assert_sample(
                &text,
                &format!("{refused}{{verb=\"{verb}\",reason=\"too_large\"}}"),
                "0",
            );
        }
        assert_sample(
            &text,
            &format!("{refused}{{verb=\"bind\",reason=\"other_scheduler\"}}"),
            "0",
        );
        assert_eq!(
            sample(
                &text,
                &format!("{refused}{{verb=\"filter\",reason=\"other_scheduler\"}}")
            ),
            None,
            "only bind refuses pods"
        );
    }

    #[test]
    fn extender_refusals_count_by_verb_and_reason() {
        let metrics = SchedulerMetrics::new();
        metrics.extender_request_refused(ExtenderVerb::Filter, ExtenderRefusal::TooLarge);
        metrics.extender_request_refused(ExtenderVerb::Filter, ExtenderRefusal::TooLarge);
        metrics.extender_request_refused(ExtenderVerb::Bind, ExtenderRefusal::UidMismatch);
        let text = metrics.encode();
        let refused = "phalanx_scheduler_extender_requests_refused_total";
        assert_sample(
            &text,
            &format!("{refused}{{verb=\"filter\",reason=\"too_large\"}}"),
            "2",
        );
        assert_sample(
            &text,
            &format!("{refused}{{verb=\"prioritize\",reason=\"too_large\"}}"),
            "0",
        );
        assert_sample(
            &text,
            &format!("{refused}{{verb=\"bind\",reason=\"uid_mismatch\"}}"),
            "1",
        );
        assert!(text
            .lines()
            .any(|l| l == "# TYPE phalanx_scheduler_extender_requests_refused counter"));
    }

    #[test]
    fn metadata_names_types_and_units() {
        let text = SchedulerMetrics::new().encode();
        for line in [
            "# TYPE phalanx_scheduler_schedule_attempts counter",
            "# TYPE phalanx_scheduler_e2e_scheduling_duration_seconds histogram",
            "# UNIT phalanx_scheduler_e2e_scheduling_duration_seconds seconds",
            "# TYPE phalanx_scheduler_pending_pods gauge",
            "# TYPE phalanx_scheduler_gang_wait_duration_seconds histogram",
            "# TYPE phalanx_scheduler_gang_timeouts counter",
            "# TYPE phalanx_scheduler_gang_plans_finished counter",
            "# TYPE phalanx_scheduler_gang_plans_undone counter",
            "# TYPE phalanx_scheduler_stale_telemetry_gpus gauge",
            "# TYPE phalanx_scheduler_stale_telemetry_samples_ignored counter",
            "# TYPE phalanx_scheduler_telemetry_rejected counter",
            "# TYPE phalanx_scheduler_binding_duration_seconds histogram",
            "# TYPE phalanx_scheduler_binding_errors counter",
            "# TYPE phalanx_scheduler_leader gauge",
            "# TYPE phalanx_scheduler_cache_nodes gauge",
            "# TYPE phalanx_scheduler_gang_source_active gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn gang_sources_are_one_or_zero_each() {
        use crate::controller::gangs::sources::{
            active_sources, GANG_OBJECT_SOURCES, UPSTREAM_POD_GROUP,
        };
        use crate::controller::served_apis::ServedApis;
        let metrics = SchedulerMetrics::new();
        let served = ServedApis::from_kinds([UPSTREAM_POD_GROUP.kind]);
        metrics.set_gang_sources(&active_sources(&served, GANG_OBJECT_SOURCES));
        let text = metrics.encode();
        let sample = |source: &str, value: &str| {
            format!("phalanx_scheduler_gang_source_active{{source=\"{source}\"}} {value}")
        };
        for (source, value) in [
            ("annotation", "1"),
            ("podgroup", "1"),
            ("scheduler-plugins-podgroup", "0"),
            ("workload", "0"),
            ("compositepodgroup", "0"),
        ] {
            let line = sample(source, value);
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn updates_show_in_the_encoding() {
        let metrics = SchedulerMetrics::new();
        metrics.record_attempt(AttemptResult::Scheduled);
        metrics.record_attempt(AttemptResult::Scheduled);
        metrics.record_attempt(AttemptResult::Unschedulable);
        metrics.observe_e2e(Duration::from_millis(3));
        metrics.observe_e2e(Duration::from_secs(120));
        metrics.set_pending(4, 2, 7);
        metrics.observe_gang_wait(Duration::from_secs(5));
        metrics.gang_timed_out();
        metrics.gang_plan_recovered(true);
        metrics.gang_plan_recovered(false);
        metrics.gang_plan_recovered(false);
        metrics.set_stale_gpus(3);
        metrics.stale_samples_ignored(5);
        metrics.stale_samples_ignored(2);
        metrics.telemetry_rejected(TelemetryRejection::ObservedInFuture);
        metrics.telemetry_rejected(TelemetryRejection::ObservedInFuture);
        metrics.telemetry_rejected(TelemetryRejection::Utilization);
        metrics.observe_binding(Duration::from_millis(20));
        metrics.binding_error(BindingErrorReason::Conflict);
        metrics.binding_error(BindingErrorReason::NotFound);
        metrics.binding_error(BindingErrorReason::NotFound);
        metrics.set_leader(true);
        metrics.set_nodes(1000);
        let text = metrics.encode();

        let attempts = "phalanx_scheduler_schedule_attempts_total";
        assert_sample(&text, &format!("{attempts}{{result=\"scheduled\"}}"), "2");
        assert_sample(
            &text,
            &format!("{attempts}{{result=\"unschedulable\"}}"),
            "1",
        );
        assert_sample(&text, &format!("{attempts}{{result=\"error\"}}"), "0");

        let e2e = "phalanx_scheduler_e2e_scheduling_duration_seconds";
        assert_sample(&text, &format!("{e2e}_count"), "2");
        assert_sample(&text, &format!("{e2e}_sum"), "120.003");
        assert_sample(&text, &format!("{e2e}_bucket{{le=\"0.004\"}}"), "1");
        assert_sample(&text, &format!("{e2e}_bucket{{le=\"65.536\"}}"), "1");
        assert_sample(&text, &format!("{e2e}_bucket{{le=\"+Inf\"}}"), "2");

        assert_sample(
            &text,
            "phalanx_scheduler_pending_pods{queue=\"active\"}",
            "4",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_pending_pods{queue=\"backoff\"}",
            "2",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_pending_pods{queue=\"unschedulable\"}",
            "7",
        );

        assert_sample(
            &text,
            "phalanx_scheduler_gang_wait_duration_seconds_count",
            "1",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_gang_wait_duration_seconds_sum",
            "5.0",
        );
        assert_sample(&text, "phalanx_scheduler_gang_timeouts_total", "1");
        assert_sample(&text, "phalanx_scheduler_gang_plans_finished_total", "1");
        assert_sample(&text, "phalanx_scheduler_gang_plans_undone_total", "2");

        assert_sample(&text, "phalanx_scheduler_stale_telemetry_gpus", "3");
        assert_sample(
            &text,
            "phalanx_scheduler_stale_telemetry_samples_ignored_total",
            "7",
        );
        let rejected = "phalanx_scheduler_telemetry_rejected_total";
        assert_sample(
            &text,
            &format!("{rejected}{{reason=\"observed_in_future\"}}"),
            "2",
        );
        assert_sample(&text, &format!("{rejected}{{reason=\"utilization\"}}"), "1");
        assert_sample(&text, &format!("{rejected}{{reason=\"memory_used\"}}"), "0");

        assert_sample(
            &text,
            "phalanx_scheduler_binding_duration_seconds_count",
            "1",
        );
        let errors = "phalanx_scheduler_binding_errors_total";
        assert_sample(&text, &format!("{errors}{{reason=\"conflict\"}}"), "1");
        assert_sample(&text, &format!("{errors}{{reason=\"not_found\"}}"), "2");
        assert_sample(&text, &format!("{errors}{{reason=\"other\"}}"), "0");

        assert_sample(&text, "phalanx_scheduler_leader", "1");
        assert_sample(&text, "phalanx_scheduler_cache_nodes", "1000");

        metrics.set_leader(false);
        metrics.set_pending(0, 0, 0);
        let text = metrics.encode();
        assert_sample(&text, "phalanx_scheduler_leader", "0");
        assert_sample(
            &text,
            "phalanx_scheduler_pending_pods{queue=\"active\"}",
            "0",
        );
    }

    #[test]
    fn shared_updates_from_many_threads_all_count() {
        let metrics = Arc::new(SchedulerMetrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        metrics.record_attempt(AttemptResult::Error);
                        metrics.observe_binding(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread panicked");
        }
        let text = metrics.encode();
        assert_sample(
            &text,
            "phalanx_scheduler_schedule_attempts_total{result=\"error\"}",
            "4000",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_binding_duration_seconds_count",
            "4000",
        );
    }

    #[test]
    fn preemption_counts_victims_by_reason_and_times_their_choice() {
        use phalanx_engine::preemption::{EvictionReason, Victim};
        let metrics = SchedulerMetrics::new();
        metrics.preempted(&[
            Victim {
                pod: 0,
                reason: EvictionReason::Preemption,
            },
            Victim {
                pod: 1,
                reason: EvictionReason::Reclaim,
            },
            Victim {
                pod: 2,
                reason: EvictionReason::Reclaim,
            },
        ]);
        metrics.observe_victim_selection(Duration::from_millis(250));
        metrics.eviction_failed();
        let text = metrics.encode();
        assert_sample(&text, "phalanx_scheduler_preemption_attempts_total", "1");
        assert_sample(
            &text,
            "phalanx_scheduler_preemption_victims_total{reason=\"reclaim\"}",
            "2",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_preemption_victims_total{reason=\"preemption\"}",
            "1",
        );
        assert_sample(&text, "phalanx_scheduler_eviction_errors_total", "1");
        assert_sample(
            &text,
            "phalanx_scheduler_victim_selection_duration_seconds_sum",
            "0.25",
        );
        assert_sample(
            &text,
            "phalanx_scheduler_victim_selection_duration_seconds_count",
            "1",
        );
    }

    mod cluster_gauges {
        use std::time::Instant;

        use phalanx_engine::{
            ClusterGauges, ClusterSnapshot, GpuAssignment, GpuDemand, GpuSpec, ModelConstraint,
            NodeId, NodeSpec, Placement, PodDemand, PodShape, TypicalPod,
        };

        use super::*;
        use crate::controller::wait_reasons::{WaitingGang, WaitingPod};

        fn node(name: &str, gpus: usize, model: &str, pool: Option<&str>) -> NodeSpec {
            NodeSpec {
                name: name.into(),
                cpu_milli: 64_000,
                memory_mib: 1 << 20,
                max_pods: 100,
                gpu_model: Some(model.into()),
                gpus: vec![GpuSpec::default(); gpus],
                labels: pool
                    .map(|p| [("phalanx.dev/pool".to_owned(), p.to_owned())].into())
                    .unwrap_or_default(),
                ..NodeSpec::default()
            }
        }

        fn share(milli: u32) -> (PodDemand, Placement) {
            let pod = PodDemand::new(
                "p",
                1000,
                1024,
                GpuDemand::Share { milli },
                ModelConstraint::Any,
            )
            .unwrap();
            let placement = Placement {
                node: NodeId(0),
                gpus: GpuAssignment::from_indices([0], milli),
            };
            (pod, placement)
        }

        fn typical_halves() -> Vec<TypicalPod> {
            vec![TypicalPod {
                shape: PodShape {
                    cpu_milli: 1000,
                    gpu: GpuDemand::Share { milli: 500 },
                    models: ModelConstraint::Any,
                },
                weight: 1.0,
            }]
        }

        fn gpus(text: &str, model: &str, pool: &str, state: &str) -> Option<String> {
            sample(
                text,
                &format!(
                    "phalanx_scheduler_cluster_gpus{{model=\"{model}\",pool=\"{pool}\",state=\"{state}\"}}"
                ),
            )
        }

        #[test]
        fn gpus_by_model_pool_and_state_follow_a_placement_and_its_release() {
            let mut cluster = ClusterSnapshot::new();
            cluster
                .add_node(node("a", 2, "A100", Some("train")))
                .unwrap();
            cluster.add_node(node("b", 4, "H100", None)).unwrap();
            let mut gauges = ClusterGauges::with_typical("phalanx.dev/pool", typical_halves());
            let metrics = SchedulerMetrics::new();
            let (pod, placement) = share(900);

            cluster.place(&pod, &placement).unwrap();
            metrics.set_cluster_gpus(&gauges.tally(&cluster));
            let text = metrics.encode();
            assert_eq!(
                gpus(&text, "A100", "train", "capacity").as_deref(),
                Some("2.0")
            );
            assert_eq!(
                gpus(&text, "A100", "train", "allocated").as_deref(),
                Some("0.9")
            );
            assert_eq!(gpus(&text, "A100", "train", "idle").as_deref(), Some("1.1"));
            assert_eq!(
                gpus(&text, "A100", "train", "fragmented").as_deref(),
                Some("0.1")
            );
            assert_eq!(gpus(&text, "H100", "", "idle").as_deref(), Some("4.0"));
            assert_sample(
                &text,
                "phalanx_scheduler_shared_gpus{model=\"A100\",pool=\"train\"}",
                "1",
            );

            cluster.release(&pod, &placement).unwrap();
            metrics.set_cluster_gpus(&gauges.tally(&cluster));
            let text = metrics.encode();
            assert_eq!(
                gpus(&text, "A100", "train", "allocated").as_deref(),
                Some("0.0")
            );
            assert_eq!(
                gpus(&text, "A100", "train", "fragmented").as_deref(),
                Some("0.0")
            );
            assert_sample(
                &text,
                "phalanx_scheduler_shared_gpus{model=\"A100\",pool=\"train\"}",
                "0",
            );
        }

        #[test]
        fn pending_by_reason_sits_beside_pending_by_queue() {
            let metrics = SchedulerMetrics::new();
            let text = metrics.encode();
            for reason in WaitReason::ALL {
                let reason = reason.as_str();
                assert_sample(
                    &text,
                    &format!("phalanx_scheduler_pending_pods_by_reason{{reason=\"{reason}\"}}"),
                    "0",
                );
                assert_sample(
                    &text,
                    &format!("phalanx_scheduler_pending_gangs{{reason=\"{reason}\"}}"),
                    "0",
                );
            }
            assert_sample(&text, "phalanx_scheduler_oldest_pending_seconds", "0.0");

            let now = Instant::now();
            let pods = [
                WaitingPod {
                    first_seen: now - Duration::from_secs(90),
                    gated: true,
                    last: None,
                },
                WaitingPod {
                    first_seen: now - Duration::from_secs(3),
                    gated: false,
                    last: Some(WaitReason::InsufficientGpu),
                },
            ];
            let gangs = [WaitingGang {
                gated: false,
                last: Some(WaitReason::Gang),
            }];
            metrics.set_pending(1, 0, 1);
            metrics.set_pending_reasons(&PendingCounts::count(pods, gangs, now));
            let text = metrics.encode();

            assert_sample(
                &text,
                "phalanx_scheduler_pending_pods_by_reason{reason=\"gated\"}",
                "1",
            );
            assert_sample(
                &text,
                "phalanx_scheduler_pending_pods_by_reason{reason=\"insufficient_gpu\"}",
                "1",
            );
            assert_sample(
                &text,
                "phalanx_scheduler_pending_pods{queue=\"active\"}",
                "1",
            );
            assert_sample(
                &text,
                "phalanx_scheduler_pending_gangs{reason=\"gang\"}",
                "1",
            );
            assert_sample(&text, "phalanx_scheduler_oldest_pending_seconds", "90.0");
        }
    }
}
