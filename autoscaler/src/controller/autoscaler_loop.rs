//! The control loop: one task owns the cluster snapshot, the autoscalers and
//! their deciders, fed by watches; once per control period (while it holds the
//! Lease and its watches have synced) it runs every autoscaler once, in three
//! steps:
//!
//! 1. gather (I/O): check the spec ([`crate::spec::plan`]), read the target's
//!    `/scale` and count its placed and ready pods, read each metric from
//!    Prometheus;
//! 2. decide (pure, [`super::period`]): hold on an invalid spec, an unreadable
//!    target or garbage (several series, NaN) and say why; otherwise the
//!    decider's replicas ([`crate::decision::ReplicaDecider`]). A scale-up
//!    first asks how far the cluster can take it: only then is the pod
//!    template read and placed into the snapshot as many times as needed, and
//!    the plan goes only as far as it fits;
//! 3. apply (I/O): patch `/scale`, record the events, write the status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource, ResourceExt};
use phalanx_api::{GpuNode, InferenceAutoscaler, InferenceAutoscalerStatus};
use phalanx_engine::{build_policy, PlacementPolicy, PolicyConfig, PolicyName, WorkloadSource};
use phalanx_kube::mirror::ClusterMirror;
use phalanx_runtime::events::EventRecorder;
use phalanx_runtime::http::Health;
use phalanx_runtime::leader::LeaseFence;
use phalanx_runtime::watch::spawn_watch;
use tokio::sync::{mpsc, watch};

use super::capacity::{
    check_scale_up, pod_from_template, pods_ahead, replica_priority, CapacityCheck,
};
use super::config::AutoscalerConfig;
use super::namespace_label::NamespaceBoundary;
use super::pending::PendingPods;
use super::period::{self, CapacityQuestion, Decided, Observed, Plan, Spec, TargetState, Tracked};
use super::prometheus::MetricsReader;
use super::target::{Discovery, PodCounts, ScaleTarget, TargetError};
use super::telemetry::{AutoscalerMetrics, PeriodResult};
use crate::decision::{ActivationGate, ReplicaDecider};
use crate::spec::{self, AutoscalerPlan};

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
    Namespace(Box<Event<Namespace>>),
    Autoscaler(Box<Event<InferenceAutoscaler>>),
}

/// `namespace/name`.
type ObjectKey = (String, String);

/// What [`AutoscalerLoop::gather`] found: the observations, and what later
/// I/O of the period acts through.
struct Gathered {
    observed: Observed,
    reach: Option<Reach>,
}

impl Gathered {
    /// Nothing read: the decision module refused the behaviour.
    fn nothing() -> Self {
        Gathered {
            observed: Observed {
                target: None,
                reads: Vec::new(),
                activation: None,
                now: phalanx_runtime::clock::unix_now(),
            },
            reach: None,
        }
    }
}

/// A target that could be read: scaled through it, and its pods for the
/// capacity check.
struct Reach {
    target: ScaleTarget,
    pods: Option<PodCounts>,
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
            mirror: ClusterMirror::new(TELEMETRY_MAX_AGE_MS).watching_namespaces(),
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
        // Their labels, for pod affinity terms' namespaceSelector: replicas
        // are placed as the scheduler would place them.
        spawn_watch(Api::<Namespace>::all(client.clone()), tx.clone(), |e| {
            Input::Namespace(Box::new(e))
        });
        // GpuNodes only where the device plugin's CRD is installed; without
        // it, nodes are placed on their nvidia.com/gpu capacity alone.
        let gpu_nodes: Api<GpuNode> = Api::all(client);
        match gpu_nodes.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                spawn_watch(gpu_nodes, tx, |e| Input::GpuNode(Box::new(e)));
            }
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
            Input::Namespace(event) => self.mirror.namespace_event(&event),
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

    /// One period of one autoscaler: gather what its decision needs (I/O),
    /// decide (pure, [`period::decide`]), apply the plan (I/O). A scale-up
    /// checks capacity in between, so the pod template is read only then.
    async fn reconcile(&mut self, object: &InferenceAutoscaler) -> PeriodResult {
        let checked = spec::plan(&object.spec).and_then(|plan| {
            match &self.deps.config.prometheus.enforce_namespace_label {
                Some(label) => NamespaceBoundary {
                    label,
                    namespace: object.metadata.namespace.as_deref().unwrap_or_default(),
                }
                .enforce(plan),
                None => Ok(plan),
            }
        });
        let acting = match &checked {
            Ok(spec) => self.track(object, spec),
            Err(_) => false,
        };
        let gathered = match &checked {
            Ok(spec) if acting => self.gather(object, Some(spec)).await,
            Ok(_) => Gathered::nothing(),
            Err(_) => self.gather(object, None).await,
        };
        let uid = object.uid().unwrap_or_default();
        let spec = match (&checked, self.tracked.get_mut(&uid)) {
            (Err(problems), _) => Spec::Invalid(problems),
            (Ok(spec), Some(tracked)) if acting => Spec::Valid { spec, tracked },
            (Ok(_), _) => Spec::Refused,
        };
        let decided = period::decide(
            spec,
            object.status.as_ref(),
            &gathered.observed,
            self.deps.config.capacity.enabled,
        );
        let plan = match decided {
            Decided::Plan(plan) => plan,
            Decided::NeedsCapacity(question) => {
                let found = self.capacity(gathered.reach.as_ref(), &question).await;
                question.answer(found)
            }
        };
        self.apply(object, gathered.reach.as_ref(), plan).await
    }

    /// Reads what a period's decision needs: the target's `/scale` and, with
    /// `spec` (a spec that is acted on), its pods and then every metric and
    /// the activation query.
    async fn gather(
        &mut self,
        object: &InferenceAutoscaler,
        spec: Option<&AutoscalerPlan>,
    ) -> Gathered {
        let (target, reach) = match self.read_target(object, spec.is_some()).await {
            Ok((state, reach)) => (Ok(state), Some(reach)),
            Err(error) => (Err(error.to_string()), None),
        };
        let (reads, activation) = match (spec, &reach, &target) {
            (Some(spec), Some(_), Ok(state)) => {
                let ready = state.ready.min(state.replicas);
                let reads = self.deps.reader.read_all(&spec.metrics, ready).await;
                let activation = match &spec.activation {
                    Some(activation) => Some(
                        self.deps
                            .reader
                            .read_source(period::ACTIVATION, &activation.source, ready)
                            .await,
                    ),
                    None => None,
                };
                (reads, activation)
            }
            _ => (Vec::new(), None),
        };
        Gathered {
            observed: Observed {
                target: Some(target),
                reads,
                activation,
                now: phalanx_runtime::clock::unix_now(),
            },
            reach,
        }
    }

    /// The target's replicas and, with `count_pods`, its pods on nodes.
    async fn read_target(
        &mut self,
        object: &InferenceAutoscaler,
        count_pods: bool,
    ) -> Result<(TargetState, Reach), TargetError> {
        let namespace = object.namespace().unwrap_or_default();
        let target_ref = &object.spec.scale_target_ref;
        let target = match self
            .discovery
            .target(&self.deps.client, &namespace, target_ref)
            .await
        {
            Ok(target) => target,
            Err(error) => {
                self.discovery.forget(target_ref);
                return Err(error);
            }
        };
        let scale = target.scale().await?;
        let reported = scale
            .status
            .as_ref()
            .map_or(0, |s| u32::try_from(s.replicas).unwrap_or(0));
        let pods = if count_pods {
            match target.pods(&scale).await {
                Ok(counts) => counts,
                Err(error) => {
                    tracing::warn!(%error, "counting the target's pods");
                    None
                }
            }
        } else {
            None
        };
        let (placed, ready) = pods
            .as_ref()
            .map_or((reported, reported), |c| (c.placed, c.ready));
        let state = TargetState {
            replicas: replicas_of(&scale),
            placed,
            ready,
        };
        Ok((state, Reach { target, pods }))
    }

    /// Patches `/scale` if the plan says so, then records the events, updates
    /// the autoscaler's own metrics and writes the status.
    async fn apply(
        &mut self,
        object: &InferenceAutoscaler,
        reach: Option<&Reach>,
        mut plan: Plan,
    ) -> PeriodResult {
        let (namespace, name) = key_of(object);
        let metrics = self.deps.metrics.clone();
        for tally in plan.tallies() {
            if let Some(value) = tally.value {
                metrics.set_metric_value(&namespace, &name, &tally.metric, value);
            }
            if tally.stale {
                metrics.count_stale(&namespace, &name, &tally.metric);
            }
            if tally.invalid {
                metrics.count_invalid(&namespace, &name, &tally.metric);
            }
        }
        self.rescale(object, reach, &mut plan).await;
        let settled = plan.settle(object, &Time(Timestamp::now()));
        for event in settled.events {
            self.deps.events.record(event);
        }
        metrics.set_replicas(
            &namespace,
            &name,
            settled.status.current_replicas,
            settled.status.desired_replicas,
        );
        metrics.set_capacity_limited(&namespace, &name, settled.capacity_limited);
        if settled.changed {
            match write_status(&self.deps.client, object, &settled.status).await {
                // Keep our copy current so the next period compares against
                // it, even before the watch delivers the write.
                Ok(()) => {
                    if let Some(stored) = self.autoscalers.get_mut(&key_of(object)) {
                        stored.status = Some(settled.status);
                    }
                }
                // Our copy keeps the status that is really stored, so the
                // next period writes again instead of taking it as done.
                Err(error) => {
                    tracing::warn!(%error, autoscaler = %object.name_any(), "writing the status");
                }
            }
        }
        settled.result
    }

    /// Patches `/scale` when the plan changes the replicas, and tells the
    /// plan (and the decider) how it went.
    async fn rescale(
        &mut self,
        object: &InferenceAutoscaler,
        reach: Option<&Reach>,
        plan: &mut Plan,
    ) {
        let Some(rescale) = plan.rescale().cloned() else {
            return;
        };
        let patched = match reach {
            Some(reach) => reach
                .target
                .set_replicas(rescale.to)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Err("the target was not read".to_owned()),
        };
        match patched {
            Ok(()) => {
                let uid = object.uid().unwrap_or_default();
                plan.rescaled(&Time(Timestamp::now()), self.tracked.get_mut(&uid));
                let (namespace, name) = key_of(object);
                self.deps
                    .metrics
                    .record_scale(&namespace, &name, rescale.from, rescale.to);
                tracing::info!(
                    autoscaler = %format!("{namespace}/{name}"),
                    from = rescale.from, to = rescale.to, note = %rescale.note, "rescaled"
                );
            }
            Err(error) => plan.rescale_failed(&error),
        }
    }

    /// Keeps a decider for this object, new when its spec (generation)
    /// changed; false when the decision module refuses the behaviour.
    fn track(&mut self, object: &InferenceAutoscaler, spec: &AutoscalerPlan) -> bool {
        let uid = object.uid().unwrap_or_default();
        let generation = object.metadata.generation;
        let fresh = self
            .tracked
            .get(&uid)
            .is_none_or(|t| t.generation != generation);
        if fresh {
            let decider = match ReplicaDecider::new(spec.behavior.clone()) {
                Ok(decider) => decider,
                Err(error) => {
                    tracing::warn!(%error, "behaviour refused by the decision module");
                    return false;
                }
            };
            let activation = match spec
                .activation
                .as_ref()
                .map(|a| ActivationGate::new(a.activation))
                .transpose()
            {
                Ok(activation) => activation,
                Err(error) => {
                    tracing::warn!(%error, "activation refused by the decision module");
                    return false;
                }
            };
            let last_scale_time = object
                .status
                .as_ref()
                .and_then(|s| s.last_scale_time.clone());
            self.tracked.insert(
                uid,
                Tracked {
                    generation,
                    decider,
                    activation,
                    last_scale_time,
                },
            );
        }
        true
    }

    /// The capacity check; `Ok(None)` when the kind has no pod template.
    async fn capacity(
        &mut self,
        reach: Option<&Reach>,
        question: &CapacityQuestion,
    ) -> Result<Option<CapacityCheck>, String> {
        let Some(Reach { target, pods }) = reach else {
            return Err("the target was not read".to_owned());
        };
        let own_pods = pods.as_ref();
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
            question.current,
            question.wanted,
            question.placed,
        )
        .map(Some)
    }
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
