//! The control loop: one task owns the cluster snapshot, the autoscalers and
//! their deciders, fed by watches; once per control period (while it holds the
//! Lease and its watches have synced) it runs every autoscaler once:
//!
//! 1. check the spec ([`crate::spec::plan`]); an invalid one is reported, not acted on;
//! 2. read the target's `/scale` and count its placed and ready pods;
//! 3. read each metric from Prometheus; garbage (several series, NaN) holds
//!    the replicas and says why;
//! 4. decide ([`crate::decision::ReplicaDecider`]);
//! 5. before a scale-up, place the pod template into the snapshot as many
//!    times as needed and go only as far as it fits;
//! 6. patch `/scale`, record an event, write the status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource, ResourceExt};
use phalanx_api::autoscaler::MetricStatus;
use phalanx_api::{GpuNode, InferenceAutoscaler, InferenceAutoscalerStatus};
use phalanx_engine::{build_policy, PlacementPolicy, PolicyConfig, PolicyName, WorkloadSource};
use phalanx_kube::mirror::ClusterMirror;
use phalanx_runtime::events::{EventRecorder, EventSpec, EventType};
use phalanx_runtime::watch::spawn_watch;
use tokio::sync::{mpsc, watch};

use super::capacity::{
    check_scale_up, pod_from_template, pods_ahead, replica_priority, CapacityCheck,
};
use super::config::AutoscalerConfig;
use super::pending::PendingPods;
use super::prometheus::{MetricRead, MetricsReader, Reading};
use super::status::{condition_events, next_status, ConditionState, Conditions, PeriodReport};
use super::target::{Discovery, PodCounts, ScaleTarget};
use super::telemetry::{AutoscalerMetrics, PeriodResult};
use crate::decision::{Decision, Observation, ReplicaDecider};
use crate::spec::{self, AutoscalerPlan};
use phalanx_runtime::http::Health;
use phalanx_runtime::leader::LeaseFence;

/// The field manager of the status writes.
const FIELD_MANAGER: &str = "phalanx-autoscaler";
/// Telemetry is not used for the capacity check (only allocations), so its
/// age limit only needs to be finite.
const TELEMETRY_MAX_AGE_MS: u64 = 10_000;

/// Everything the loop needs from outside.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct LoopDeps {
    pub client: Client,
    pub config: Arc<AutoscalerConfig>,
    pub metrics: Arc<AutoscalerMetrics>,
    pub health: Arc<Health>,
    pub events: EventRecorder,
    pub reader: MetricsReader,
    pub is_leader: watch::Receiver<bool>,
    /// Closes shortly before this replica's hold on the Lease runs out.
    pub fence: LeaseFence,
}

// Boxed: the channel holds many of these while a period runs.
enum Input {
    Node(Box<Event<Node>>),
    GpuNode(Box<Event<GpuNode>>),
    Pod(Box<Event<Pod>>),
    Autoscaler(Box<Event<InferenceAutoscaler>>),
}

/// `namespace/name`.
type ObjectKey = (String, String);

/// What the loop remembers per autoscaler between periods.
struct Tracked {
    generation: Option<i64>,
    decider: ReplicaDecider,
    last_scale_time: Option<Time>,
}

/// The autoscaler's state.
pub struct AutoscalerLoop {
    deps: LoopDeps,
    mirror: ClusterMirror,
    /// Pods waiting for a node (the mirror keeps only bound ones).
    pending: PendingPods,
    autoscalers: BTreeMap<ObjectKey, InferenceAutoscaler>,
    relisting: Option<HashSet<ObjectKey>>,
    autoscalers_synced: bool,
    tracked: HashMap<String, Tracked>,
    discovery: Discovery,
    policy: Box<dyn PlacementPolicy>,
}

impl std::fmt::Debug for AutoscalerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoscalerLoop")
            .field("autoscalers", &self.autoscalers.len())
            .finish_non_exhaustive()
    }
}

impl AutoscalerLoop {
    pub fn new(deps: LoopDeps) -> Self {
        let policy_name = deps
            .config
            .capacity
            .policy
            .parse()
            .unwrap_or(PolicyName::Phalanx);
        let policy = build_policy(
            policy_name,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        AutoscalerLoop {
            deps,
            mirror: ClusterMirror::new(TELEMETRY_MAX_AGE_MS),
            pending: PendingPods::default(),
            autoscalers: BTreeMap::new(),
            relisting: None,
            autoscalers_synced: false,
            tracked: HashMap::new(),
            discovery: Discovery::default(),
            policy,
        }
    }

    /// Runs until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let (tx, mut rx) = mpsc::channel::<Input>(1024);
        self.spawn_watches(tx).await;
        let mut ticker = tokio::time::interval(self.deps.config.control_period());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut is_leader = self.deps.is_leader.clone();
        let mut leading = *is_leader.borrow();
        // Once the election task is gone its channel stays closed; stop
        // polling it rather than spin on the error.
        let mut election_alive = true;
        self.deps.metrics.set_leader(leading);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                input = rx.recv() => {
                    let Some(input) = input else {
                        tracing::error!("the watches stopped");
                        return;
                    };
                    self.handle_input(input);
                    while let Ok(input) = rx.try_recv() {
                        self.handle_input(input);
                    }
                    self.deps.health.set_synced(self.synced());
                }
                changed = is_leader.changed(), if election_alive => {
                    if changed.is_err() {
                        // The election task ended: we cannot know whether we lead.
                        self.deps.health.set_election_ok(false);
                        election_alive = false;
                        leading = false;
                    } else {
                        leading = *is_leader.borrow_and_update();
                    }
                    tracing::info!(leading, "leadership changed");
                    self.deps.metrics.set_leader(leading);
                }
                _ = ticker.tick() => {
                    self.deps.health.heartbeat();
                    if leading && self.synced() {
                        if self.deps.fence.allows(SystemTime::now()) {
                            self.run_period().await;
                        } else {
                            tracing::warn!("the Lease is about to run out; not scaling this period");
                        }
                    }
                }
            }
        }
    }

    fn synced(&self) -> bool {
        let cluster = !self.deps.config.capacity.enabled || self.mirror.synced();
        cluster && self.autoscalers_synced
    }

    async fn spawn_watches(&mut self, tx: mpsc::Sender<Input>) {
        let client = self.deps.client.clone();
        let autoscalers: Api<InferenceAutoscaler> = match &self.deps.config.namespace {
            Some(namespace) => Api::namespaced(client.clone(), namespace),
            None => Api::all(client.clone()),
        };
        spawn_watch(autoscalers, tx.clone(), |e| Input::Autoscaler(Box::new(e)));
        if !self.deps.config.capacity.enabled {
            return;
        }
        spawn_watch(Api::<Node>::all(client.clone()), tx.clone(), |e| {
            Input::Node(Box::new(e))
        });
        spawn_watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
            Input::Pod(Box::new(e))
        });
        // GpuNodes only where the device plugin's CRD is installed; without
        // it, nodes are placed on their nvidia.com/gpu capacity alone.
        let gpu_nodes: Api<GpuNode> = Api::all(client);
        match gpu_nodes.list(&ListParams::default().limit(1)).await {
            Ok(_) => spawn_watch(gpu_nodes, tx, |e| Input::GpuNode(Box::new(e))),
            Err(error) => {
                tracing::info!(%error, "GpuNodes are not served; placing on node capacity alone");
                let now = wall_clock_ms();
                self.mirror.gpu_node_event(Event::Init, now);
                self.mirror.gpu_node_event(Event::InitDone, now);
            }
        }
    }

    fn handle_input(&mut self, input: Input) {
        let now_ms = wall_clock_ms();
        let change = match input {
            Input::Node(event) => self.mirror.node_event(*event, now_ms),
            Input::GpuNode(event) => self.mirror.gpu_node_event(*event, now_ms),
            Input::Pod(event) => {
                self.pending.event(&event);
                self.mirror.pod_event(&event)
            }
            Input::Autoscaler(event) => {
                self.autoscaler_event(*event);
                return;
            }
        };
        for error in &change.errors {
            tracing::warn!(%error, "cluster state");
        }
    }

    fn autoscaler_event(&mut self, event: Event<InferenceAutoscaler>) {
        match event {
            Event::Init => self.relisting = Some(HashSet::new()),
            Event::InitApply(object) => {
                let key = key_of(&object);
                if let Some(seen) = &mut self.relisting {
                    seen.insert(key.clone());
                }
                self.autoscalers.insert(key, object);
            }
            Event::Apply(object) => {
                self.autoscalers.insert(key_of(&object), object);
            }
            Event::Delete(object) => self.forget(&key_of(&object)),
            Event::InitDone => {
                let seen = self.relisting.take().unwrap_or_default();
                let gone: Vec<ObjectKey> = self
                    .autoscalers
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.forget(&key);
                }
                self.autoscalers_synced = true;
            }
        }
        self.deps.metrics.set_autoscalers(self.autoscalers.len());
    }

    fn forget(&mut self, key: &ObjectKey) {
        if let Some(object) = self.autoscalers.remove(key) {
            if let Some(uid) = object.uid() {
                self.tracked.remove(&uid);
            }
            self.deps.metrics.forget(&key.0, &key.1);
        }
    }

    /// One control period over every autoscaler.
    async fn run_period(&mut self) {
        let keys: Vec<ObjectKey> = self.autoscalers.keys().cloned().collect();
        for key in keys {
            let Some(object) = self.autoscalers.get(&key).cloned() else {
                continue;
            };
            let started = Instant::now();
            let result = self.reconcile(&object).await;
            self.deps.metrics.record_period(result, started.elapsed());
            self.deps.health.heartbeat();
        }
    }

    async fn reconcile(&mut self, object: &InferenceAutoscaler) -> PeriodResult {
        let mut period = Period::new(object);
        let plan = match spec::plan(&object.spec) {
            Ok(plan) => plan,
            Err(problems) => {
                let message = format!(
                    "the spec is invalid, nothing is scaled: {}",
                    spec::describe(&problems)
                );
                // Show the replicas if the target can be read at all.
                if let Ok(target) = self
                    .discovery
                    .target(
                        &self.deps.client,
                        &period.namespace,
                        &object.spec.scale_target_ref,
                    )
                    .await
                {
                    if let Ok(scale) = target.scale().await {
                        period.current = replicas_of(&scale);
                    }
                }
                period.hold("InvalidSpec", message);
                self.finish(object, period).await;
                return PeriodResult::InvalidSpec;
            }
        };
        let tracked = self.tracked_for(object, &plan);
        let Some(tracked) = tracked else {
            period.hold(
                "InvalidSpec",
                "the decision module refused the behaviour".to_owned(),
            );
            self.finish(object, period).await;
            return PeriodResult::InvalidSpec;
        };
        period.last_scale_time = tracked.last_scale_time.clone();

        let target = match self
            .discovery
            .target(
                &self.deps.client,
                &period.namespace,
                &object.spec.scale_target_ref,
            )
            .await
        {
            Ok(target) => target,
            Err(error) => {
                self.discovery.forget(&object.spec.scale_target_ref);
                period.hold("FailedGetScale", error.to_string());
                period.event(EventType::Warning, "FailedGetScale", error.to_string());
                self.finish(object, period).await;
                return PeriodResult::Error;
            }
        };
        let scale = match target.scale().await {
            Ok(scale) => scale,
            Err(error) => {
                period.hold("FailedGetScale", error.to_string());
                period.event(EventType::Warning, "FailedGetScale", error.to_string());
                self.finish(object, period).await;
                return PeriodResult::Error;
            }
        };
        period.current = replicas_of(&scale);
        let reported = scale
            .status
            .as_ref()
            .map_or(0, |s| u32::try_from(s.replicas).unwrap_or(0));
        let pods = match target.pods(&scale).await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::warn!(%error, "counting the target's pods");
                None
            }
        };
        let (placed, ready) = pods
            .as_ref()
            .map_or((reported, reported), |c| (c.placed, c.ready));

        let reads = self.deps.reader.read_all(&plan.metrics).await;
        let now = phalanx_runtime::clock::unix_now();
        period.metrics = metric_statuses(&reads, now, plan.behavior.max_sample_age);
        self.count_readings(&period, &reads, now, &plan);
        let invalid: Vec<String> = reads
            .iter()
            .filter_map(|r| match &r.reading {
                Reading::Invalid(why) => Some(format!("{}: {why}", r.name)),
                _ => None,
            })
            .collect();
        period.stale = stale_problems(&reads, now, plan.behavior.max_sample_age);
        if !invalid.is_empty() {
            return self.hold_on_invalid(object, period, &invalid).await;
        }

        let observation = Observation {
            now,
            current_replicas: period.current,
            ready_replicas: ready.min(period.current),
            metrics: reads
                .iter()
                .zip(&plan.metrics)
                .filter_map(|(read, plan)| read.to_decision(plan))
                .collect(),
        };
        let Some(tracked) = self.tracked.get_mut(&period.uid) else {
            return PeriodResult::Error;
        };
        let decision: Decision = tracked.decider.decide(&observation);
        if !decision.invalid_metrics.is_empty() {
            let problems: Vec<String> = decision
                .invalid_metrics
                .iter()
                .map(|p| format!("{}: {}", p.metric, p.problem))
                .collect();
            return self.hold_on_invalid(object, period, &problems).await;
        }
        for name in &decision.stale_metrics {
            if !period.stale.iter().any(|(metric, _)| metric == name) {
                period
                    .stale
                    .push((name.clone(), "sample too old".to_owned()));
            }
        }
        let wanted = decision.desired_replicas.min(plan.behavior.max_replicas);
        period.desired = Some(decision.desired_replicas);
        period.deciding_metric = decision.deciding_metric.clone();

        let mut scale_to = wanted;
        if wanted > period.current && self.deps.config.capacity.enabled {
            match self
                .capacity(&target, period.current, wanted, placed, pods.as_ref())
                .await
            {
                Ok(Some(check)) => {
                    scale_to = check.allowed;
                    period.capacity = Some(check);
                }
                Ok(None) => {}
                Err(problem) => {
                    scale_to = period.current;
                    period.capacity_problem = Some(problem);
                }
            }
        }

        let all_stale = !plan.metrics.is_empty() && period.stale.len() >= plan.metrics.len();
        period.scaling = if all_stale {
            ConditionState::no(
                "NoFreshMetric",
                format!(
                    "no metric has fresh data; replicas held at {} (never scaled down on missing data)",
                    period.current
                ),
            )
        } else {
            ConditionState::yes(
                "ValidMetricFound",
                format!(
                    "replicas computed from {} metric(s); last decision: {:?}{}",
                    plan.metrics.len(),
                    decision.reason,
                    if decision.panicking {
                        " (panic mode)"
                    } else {
                        ""
                    }
                ),
            )
        };

        if scale_to != period.current {
            match target.set_replicas(scale_to).await {
                Ok(_) => {
                    let from = period.current;
                    let now_time = Time(Timestamp::now());
                    if let Some(tracked) = self.tracked.get_mut(&period.uid) {
                        tracked.decider.record_scale(now, from, scale_to);
                        tracked.last_scale_time = Some(now_time.clone());
                    }
                    period.last_scale_time = Some(now_time);
                    self.deps
                        .metrics
                        .record_scale(&period.namespace, &period.name, from, scale_to);
                    let note = rescale_note(scale_to, &decision, &reads, period.capacity.as_ref());
                    tracing::info!(
                        autoscaler = %format!("{}/{}", period.namespace, period.name),
                        from, to = scale_to, %note, "rescaled"
                    );
                    period.event(EventType::Normal, "SuccessfulRescale", note);
                    period.current = scale_to;
                }
                Err(error) => {
                    period.event(EventType::Warning, "FailedRescale", error.to_string());
                    period.scaling = ConditionState::no(
                        "FailedRescale",
                        format!("the scale to {scale_to} replicas failed: {error}"),
                    );
                    self.finish(object, period).await;
                    return PeriodResult::Error;
                }
            }
        }
        self.finish(object, period).await;
        PeriodResult::Decided
    }

    /// The decider for this object, new when its spec (generation) changed.
    fn tracked_for(
        &mut self,
        object: &InferenceAutoscaler,
        plan: &AutoscalerPlan,
    ) -> Option<&Tracked> {
        let uid = object.uid().unwrap_or_default();
        let generation = object.metadata.generation;
        let fresh = self
            .tracked
            .get(&uid)
            .is_none_or(|t| t.generation != generation);
        if fresh {
            let decider = match ReplicaDecider::new(plan.behavior.clone()) {
                Ok(decider) => decider,
                Err(error) => {
                    tracing::warn!(%error, "behaviour refused by the decision module");
                    return None;
                }
            };
            let last_scale_time = object
                .status
                .as_ref()
                .and_then(|s| s.last_scale_time.clone());
            self.tracked.insert(
                uid.clone(),
                Tracked {
                    generation,
                    decider,
                    last_scale_time,
                },
            );
        }
        self.tracked.get(&uid)
    }

    /// A metric cannot be used (`problems`, one per metric): the replicas stay,
    /// with a Warning event and `ScalingActive=False` that say why.
    async fn hold_on_invalid(
        &mut self,
        object: &InferenceAutoscaler,
        mut period: Period,
        problems: &[String],
    ) -> PeriodResult {
        let message = format!(
            "a metric is not usable, replicas held at {}: {}",
            period.current,
            problems.join("; ")
        );
        period.event(EventType::Warning, "InvalidMetric", message.clone());
        period.hold("InvalidMetric", message);
        self.finish(object, period).await;
        PeriodResult::InvalidMetric
    }

    /// The capacity check; `Ok(None)` when the kind has no pod template.
    async fn capacity(
        &mut self,
        target: &ScaleTarget,
        current: u32,
        wanted: u32,
        placed: u32,
        own_pods: Option<&PodCounts>,
    ) -> Result<Option<CapacityCheck>, String> {
        let template = target.pod_template().await.map_err(|e| e.to_string())?;
        let Some(template) = template else {
            return Ok(None);
        };
        let pod = pod_from_template(&template, &target.namespace, &target.name);
        // Without the target's selector its own pending pods cannot be told
        // from the others; they are counted as its replicas, so nothing goes
        // ahead rather than the same pods twice.
        let ahead = own_pods.map_or_else(Vec::new, |own| {
            pods_ahead(
                self.pending.iter(),
                &own.uids,
                replica_priority(&pod, own.priority),
                self.mirror.state().snapshot().models(),
            )
        });
        let snapshot = self.mirror.state_mut().snapshot_mut();
        check_scale_up(
            snapshot,
            self.policy.as_mut(),
            &pod,
            &ahead,
            current,
            wanted,
            placed,
        )
        .map(Some)
    }

    fn count_readings(
        &self,
        period: &Period,
        reads: &[MetricRead],
        now: Duration,
        plan: &AutoscalerPlan,
    ) {
        let metrics = &self.deps.metrics;
        for read in reads {
            match &read.reading {
                Reading::Value { value, sampled_at } => {
                    metrics.set_metric_value(&period.namespace, &period.name, &read.name, *value);
                    if now.saturating_sub(*sampled_at) > plan.behavior.max_sample_age {
                        metrics.count_stale(&period.namespace, &period.name, &read.name);
                    }
                }
                Reading::Absent | Reading::Unavailable(_) => {
                    metrics.count_stale(&period.namespace, &period.name, &read.name);
                }
                Reading::Invalid(_) => {
                    metrics.count_invalid(&period.namespace, &period.name, &read.name);
                }
            }
        }
    }

    /// Writes the status and the events of a period.
    async fn finish(&mut self, object: &InferenceAutoscaler, period: Period) {
        let capacity_limited = period.capacity_condition();
        let metrics_stale = period.stale_condition();
        let conditions = Conditions {
            scaling_active: period.scaling.clone(),
            capacity_limited,
            metrics_stale,
        };
        let report = PeriodReport {
            generation: object.metadata.generation,
            current_replicas: period.current,
            desired_replicas: period.desired.unwrap_or(period.current),
            deciding_metric: period.deciding_metric.clone(),
            last_scale_time: period.last_scale_time.clone(),
            conditions,
            metrics: period.metrics.clone(),
        };
        let previous = object.status.as_ref();
        let status = next_status(previous, &report, &Time(Timestamp::now()));
        let regarding = reference(object);
        let mut events = condition_events(previous, &report.conditions, &regarding);
        // Period events (rescale, failures) come first: they are what happened.
        let mut all: Vec<EventSpec> = period
            .events
            .into_iter()
            .map(|(type_, reason, note)| EventSpec {
                regarding: regarding.clone(),
                type_,
                reason,
                action: "Autoscaling",
                note,
            })
            .collect();
        // A condition event repeating a period event's reason says nothing new.
        events.retain(|e| !all.iter().any(|p| p.reason == e.reason && p.note == e.note));
        all.extend(events);
        for event in all {
            self.deps.events.record(event);
        }
        self.deps.metrics.set_replicas(
            &period.namespace,
            &period.name,
            status.current_replicas,
            status.desired_replicas,
        );
        self.deps.metrics.set_capacity_limited(
            &period.namespace,
            &period.name,
            report.conditions.capacity_limited.status,
        );
        if previous != Some(&status) {
            match write_status(&self.deps.client, object, &status).await {
                // Keep our copy current so the next period compares against
                // it, even before the watch delivers the write.
                Ok(()) => {
                    if let Some(stored) = self.autoscalers.get_mut(&key_of(object)) {
                        stored.status = Some(status);
                    }
                }
                // Our copy keeps the status that is really stored, so the
                // next period writes again instead of taking it as done.
                Err(error) => {
                    tracing::warn!(%error, autoscaler = %object.name_any(), "writing the status");
                }
            }
        }
    }
}

/// What one period of one autoscaler found.
struct Period {
    uid: String,
    namespace: String,
    name: String,
    current: u32,
    desired: Option<u32>,
    deciding_metric: Option<String>,
    last_scale_time: Option<Time>,
    scaling: ConditionState,
    capacity: Option<CapacityCheck>,
    capacity_problem: Option<String>,
    stale: Vec<(String, String)>,
    metrics: Vec<MetricStatus>,
    events: Vec<(EventType, &'static str, String)>,
}

impl Period {
    fn new(object: &InferenceAutoscaler) -> Self {
        let previous = object.status.as_ref();
        Period {
            uid: object.uid().unwrap_or_default(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
            current: previous.map_or(0, |s| s.current_replicas),
            desired: None,
            deciding_metric: None,
            last_scale_time: None,
            scaling: ConditionState::yes("ValidMetricFound", ""),
            capacity: None,
            capacity_problem: None,
            stale: Vec::new(),
            metrics: previous.map(|s| s.metrics.clone()).unwrap_or_default(),
            events: Vec::new(),
        }
    }

    /// Nothing is scaled this period, for `reason`.
    fn hold(&mut self, reason: &'static str, message: String) {
        self.desired = Some(self.current);
        self.scaling = ConditionState::no(reason, message);
    }

    fn event(&mut self, type_: EventType, reason: &'static str, note: String) {
        self.events.push((type_, reason, note));
    }

    fn capacity_condition(&self) -> ConditionState {
        if let Some(problem) = &self.capacity_problem {
            return ConditionState::yes(
                "CapacityUnknown",
                format!("cannot check where new replicas would go, so none are added: {problem}"),
            );
        }
        match &self.capacity {
            Some(check) if check.limited() => {
                ConditionState::yes("InsufficientCapacity", check.message())
            }
            Some(check) => ConditionState::no(
                "EnoughCapacity",
                format!("all {} wanted replicas can be placed", check.wanted),
            ),
            None => ConditionState::no(
                "EnoughCapacity",
                "no scale-up beyond capacity was asked for",
            ),
        }
    }

    fn stale_condition(&self) -> ConditionState {
        if self.stale.is_empty() {
            ConditionState::no("FreshSamples", "every metric has a fresh sample")
        } else {
            let list: Vec<String> = self
                .stale
                .iter()
                .map(|(metric, why)| format!("{metric}: {why}"))
                .collect();
            ConditionState::yes(
                "StaleSamples",
                format!("never scaled down on these: {}", list.join("; ")),
            )
        }
    }
}

/// Absent, unavailable and too-old readings, by metric.
fn stale_problems(reads: &[MetricRead], now: Duration, max_age: Duration) -> Vec<(String, String)> {
    reads
        .iter()
        .filter_map(|read| {
            let why = match &read.reading {
                Reading::Absent => "no series (absent, not zero)".to_owned(),
                Reading::Unavailable(why) => format!("Prometheus unavailable: {why}"),
                Reading::Value { sampled_at, .. } => {
                    let age = now.saturating_sub(*sampled_at);
                    if age <= max_age {
                        return None;
                    }
                    format!(
                        "sample is {}s old (max {}s)",
                        age.as_secs(),
                        max_age.as_secs()
                    )
                }
                Reading::Invalid(_) => return None,
            };
            Some((read.name.clone(), why))
        })
        .collect()
}

fn metric_statuses(reads: &[MetricRead], now: Duration, max_age: Duration) -> Vec<MetricStatus> {
    let stale = stale_problems(reads, now, max_age);
    reads
        .iter()
        .map(|read| {
            let (value, sampled_at) = match &read.reading {
                Reading::Value { value, sampled_at } => (Some(*value), Some(*sampled_at)),
                _ => (None, None),
            };
            let problem = match &read.reading {
                Reading::Value { .. } => stale
                    .iter()
                    .find(|(name, _)| *name == read.name)
                    .map(|(_, why)| why.clone()),
                other => other.problem(),
            };
            MetricStatus {
                name: read.name.clone(),
                query: Some(read.query.clone()),
                value,
                sampled_at: sampled_at.and_then(time_of),
                problem,
            }
        })
        .collect()
}

/// "New size: 4; reason: queue=37 (ScaleUp)", with the capacity cap if any.
fn rescale_note(
    to: u32,
    decision: &Decision,
    reads: &[MetricRead],
    capacity: Option<&CapacityCheck>,
) -> String {
    let value = decision.deciding_metric.as_ref().and_then(|name| {
        reads
            .iter()
            .find(|r| &r.name == name)
            .and_then(|r| match r.reading {
                Reading::Value { value, .. } => Some(format!("{name}={value}")),
                _ => None,
            })
    });
    let mut note = format!(
        "New size: {to}; reason: {}{:?}",
        value.map(|v| format!("{v} ")).unwrap_or_default(),
        decision.reason
    );
    if decision.panicking {
        note.push_str(" in panic mode");
    }
    if let Some(check) = capacity.filter(|c| c.limited()) {
        note.push_str(&format!("; capped by capacity: {}", check.message()));
    }
    note
}

fn replicas_of(scale: &k8s_openapi::api::autoscaling::v1::Scale) -> u32 {
    scale
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(0, |r| u32::try_from(r).unwrap_or(0))
}

fn key_of(object: &InferenceAutoscaler) -> ObjectKey {
    (object.namespace().unwrap_or_default(), object.name_any())
}

fn reference(object: &InferenceAutoscaler) -> ObjectReference {
    ObjectReference {
        api_version: Some(InferenceAutoscaler::api_version(&()).into_owned()),
        kind: Some(InferenceAutoscaler::kind(&()).into_owned()),
        namespace: object.namespace(),
        name: Some(object.name_any()),
        uid: object.uid(),
        ..ObjectReference::default()
    }
}

/// Server-side apply of the status subresource: fields this manager set
/// before and leaves out now are removed.
async fn write_status(
    client: &Client,
    object: &InferenceAutoscaler,
    status: &InferenceAutoscalerStatus,
) -> Result<(), kube::Error> {
    let api: Api<InferenceAutoscaler> =
        Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": InferenceAutoscaler::api_version(&()),
        "kind": InferenceAutoscaler::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

fn wall_clock_ms() -> u64 {
    u64::try_from(phalanx_runtime::clock::unix_now().as_millis()).unwrap_or(u64::MAX)
}

fn time_of(unix: Duration) -> Option<Time> {
    let nanos = i128::try_from(unix.as_nanos()).ok()?;
    Timestamp::from_nanosecond(nanos).ok().map(Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(name: &str, reading: Reading) -> MetricRead {
        MetricRead {
            name: name.into(),
            query: format!("sum({name})"),
            reading,
        }
    }

    #[test]
    fn stale_means_absent_unavailable_or_old_never_invalid() {
        let now = Duration::from_secs(1000);
        let max = Duration::from_secs(60);
        let reads = [
            read(
                "fresh",
                Reading::Value {
                    value: 1.0,
                    sampled_at: Duration::from_secs(990),
                },
            ),
            read(
                "old",
                Reading::Value {
                    value: 1.0,
                    sampled_at: Duration::from_secs(900),
                },
            ),
            read("gone", Reading::Absent),
            read("down", Reading::Unavailable("connection refused".into())),
            read("nan", Reading::Invalid("NaN".into())),
        ];
        let stale = stale_problems(&reads, now, max);
        let names: Vec<&str> = stale.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["old", "gone", "down"]);
        assert_eq!(stale[0].1, "sample is 100s old (max 60s)");
        let statuses = metric_statuses(&reads, now, max);
        assert_eq!(statuses[0].problem, None);
        assert_eq!(statuses[0].value, Some(1.0));
        assert_eq!(
            statuses[1].problem.as_deref(),
            Some("sample is 100s old (max 60s)")
        );
        assert_eq!(statuses[2].value, None, "absent is no value, not zero");
        assert_eq!(statuses[4].problem.as_deref(), Some("NaN"));
        assert_eq!(
            statuses[0].sampled_at,
            Some(Time(Timestamp::from_second(990).expect("time")))
        );
    }
}
