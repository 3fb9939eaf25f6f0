//! The scheduler proper: one task owns the snapshot and the queue, fed by the
//! watches and by the outcomes of the bindings it started.
//!
//! Each turn it folds in whatever the watches delivered, then (if it holds the
//! Lease and the caches have synced) takes work from the queue for a few
//! milliseconds: a pod, or a whole gang. A decision is assumed in the snapshot at
//! once and bound in the background, so the next decision already sees it; a
//! failed binding is released and retried with backoff.
//!
//! This file holds the loop and the single-pod path; a gang's path (collecting
//! its members, placing them together, writing its plan before binding,
//! timeouts, PodGroup status) is in `scheduler_loop/gang_scheduling.rs`, and
//! finishing or undoing the gang plans a previous leader left behind in
//! `scheduler_loop/gang_recovery.rs`, and the watches of the workloads that
//! gangs are found from for pods that declare none in
//! `scheduler_loop/owner_watch.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1alpha3::CompositePodGroup;
use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, ListParams};
use kube::runtime::watcher::Event;

use kube::{Api, Client, ResourceExt};
use phalanx_api::{GpuNode, PodGroup, Queue};
use thiserror::Error;
use tokio::sync::{mpsc, watch, Semaphore};

use super::binder::{BindError, Binder, PodRef};
use super::config::SchedulerConfig;
use super::fault_hook::GangBindFault;
use super::gangs::{self, GangKey, GangMembership, GangTracker, OwnerKind, PlanBook};
use super::metrics::{AttemptResult, SchedulerMetrics};
use super::node_presence::NodePresence;
use super::pod_scheduled::{self, NotScheduled, PodConditionInbox, PodConditionWriter};
use super::podgroup_status_writer::{
    PodGroupStatusInbox, PodGroupStatusWriter, UpstreamConditionInbox, UpstreamConditionWriter,
};
use super::queue::{BackoffPolicy, SchedulingQueue};
use super::scheduling_events;
use super::volume_binder::VolumeBinder;
use super::wait_reasons::{PendingCounts, WaitReason, WaitingGang, WaitingPod};
use phalanx_api::{GangProgress, GpuAssignmentAnnotation};
use phalanx_engine::queues::QueueLedger;
use phalanx_engine::{
    build_policy, schedule_one, unschedulable_message, ClusterGauges, CycleOutcome, CycleScratch,
    GpuDemand, Placement, PlacementPolicy, PodDemand, PolicyConfig, VolumeBinding, WorkloadSource,
};
use phalanx_kube::mirror::{pod_uid, ClusterMirror, MirrorChange};
use phalanx_kube::translate::{self, DefaultSpread};
use phalanx_runtime::events::{self, EventRecorder};
use phalanx_runtime::http::Health;
use phalanx_runtime::leader::LeaseFence;
use phalanx_runtime::watch::spawn_watch;

mod decision;
mod gang_objects;
mod gang_recovery;
mod gang_scheduling;
mod gang_source_watch;
mod owner_watch;
mod preempt;
mod queues;
use gang_objects::ObjectsByKey;
use gang_scheduling::GangEntry;
use gang_source_watch::GangSourceWatch;
use owner_watch::{OwnerGang, OwnerGangs};
use preempt::{PreemptionBook, Wanting};
use queues::QueueBook;

/// How long one turn may spend scheduling before it looks at the watches again.
const SCHEDULING_SLICE: Duration = Duration::from_millis(20);
/// The least time between two FailedScheduling events for the same pod.
const FAILED_EVENT_INTERVAL: Duration = Duration::from_secs(10);
/// How often telemetry ages are checked and gauges refreshed.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// What the queue holds: a single pod (by UID) or a gang.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkKey {
    Pod(String),
    Gang(GangKey),
}

/// Why the scheduler stopped.
#[derive(Debug, Error)]
pub enum LoopError {
    #[error("lost the leader Lease; stopping so that two replicas never bind at once")]
    LostLease,
    #[error("the watches stopped")]
    WatchesEnded,
    #[error("listing pods to rebuild the snapshot after election failed: {0}")]
    Relist(#[source] kube::Error),
}

/// Everything the loop needs from outside.
#[allow(missing_debug_implementations)] // kube::Client has no Debug
pub struct LoopDeps {
    pub client: Client,
    pub config: Arc<SchedulerConfig>,
    pub metrics: Arc<SchedulerMetrics>,
    pub health: Arc<Health>,
    pub events: EventRecorder,
    pub binder: Binder,
    pub is_leader: watch::Receiver<bool>,
    /// Closes shortly before this replica's Lease runs out; no Binding is sent
    /// while it is closed.
    pub fence: LeaseFence,
}

/// A pod waiting for this scheduler.
#[derive(Debug)]
struct PendingPod {
    pod: Arc<Pod>,
    first_seen: Instant,
    gang: Option<GangMembership>,
    /// A binding is in flight; it is not queued meanwhile.
    binding: bool,
    /// The last FailedScheduling message, when it was sent and the gang's
    /// progress it reported: a new message (or a gang that gained or placed a
    /// member) goes out at once, a repeat at most once per interval.
    last_failed_event: Option<(Instant, String, Option<GangProgress>)>,
    /// Has `spec.schedulingGates`: not attempted (nor its gang) until the
    /// watch shows the last gate removed.
    gated: bool,
    /// The PodScheduled condition last handed to the writer, and for which
    /// resourceVersion of the pod: not handed over again until the pod changes.
    condition_sent: Option<(String, NotScheduled)>,
    /// Why its last attempt failed (`pending_pods_by_reason{reason}`); `None` before one.
    wait: Option<WaitReason>,
    /// Its demand was counted into the gauges' workload (once per pod).
    observed: bool,
}

// Boxed: the channel holds thousands of these during a burst.
enum Input {
    Node(Box<Event<Node>>),
    GpuNode(Box<Event<GpuNode>>),
    Pod(Box<Event<Pod>>),
    PodGroup(Box<Event<PodGroup>>),
    UpstreamPodGroup(Box<Event<UpstreamPodGroup>>),
    CompositePodGroup(Box<Event<CompositePodGroup>>),
    Namespace(Box<Event<Namespace>>),
    Claim(Box<Event<PersistentVolumeClaim>>),
    Volume(Box<Event<PersistentVolume>>),
    StorageClass(Box<Event<StorageClass>>),
    CsiNode(Box<Event<CSINode>>),
    /// Disruption budgets, for preemption.
    Pdb(Box<Event<PodDisruptionBudget>>),
    /// Teams' queues (`queues.enabled`).
    Queue(Box<Event<Queue>>),
    /// Owners that gangs are found from (`owner_watch.rs`).
    Job(Box<Event<Job>>),
    Owner(OwnerKind, Box<Event<DynamicObject>>),
    /// An owner kind is watched from now on (`true`), or no longer served.
    OwnerKindWatched(OwnerKind, bool),
}

/// One Binding to send, prepared on the loop (which has the snapshot).
struct BindRequest {
    uid: String,
    pod: PodRef,
    node: String,
    annotation: Option<GpuAssignmentAnnotation>,
    /// Claims to pre-bind (and wait for) before the Binding.
    volumes: Vec<VolumeBinding>,
}

/// What a binding task needs, cloned off the loop.
#[derive(Clone)]
struct BindWorker {
    binder: Binder,
    slots: Arc<Semaphore>,
    tx: mpsc::Sender<BindOutcome>,
    fence: LeaseFence,
    /// The nodes that exist, checked right before writing.
    nodes: NodePresence,
    fault: GangBindFault,
    volumes: VolumeBinder,
}

impl BindWorker {
    /// Sends one Binding (unless the fence is closed) and reports the outcome
    /// to the loop. `in_gang`: a member of a gang whose plan was written.
    async fn bind(&self, request: BindRequest, in_gang: bool) {
        let _slot = self.slots.acquire().await;
        let started = Instant::now();
        self.binder.ready().await;
        // Checked after the waits for a slot and the rate limiter: the Lease
        // may have run out meanwhile, or the node been deleted (the API
        // server would bind to a node that no longer exists).
        let result = if !self.fence.allows(SystemTime::now()) {
            Err(BindError::Fenced {
                pod: request.pod.to_string(),
            })
        } else if !self.nodes.contains(&request.node) {
            Err(BindError::NodeGone {
                pod: request.pod.to_string(),
                node: request.node.clone(),
            })
        } else {
            match self.bind_volumes(&request).await {
                Err(error) => Err(error),
                // Waiting for volumes may take long: look at the Lease again.
                Ok(()) if !self.fence.allows(SystemTime::now()) => Err(BindError::Fenced {
                    pod: request.pod.to_string(),
                }),
                Ok(()) => {
                    self.binder
                        .bind_now(&request.pod, &request.node, request.annotation.as_ref())
                        .await
                }
            }
        };
        if in_gang && result.is_ok() {
            // While holding the slot: with one slot, no other Binding is sent
            // before the hook has decided.
            self.fault.member_bound(&request.pod.to_string());
        }
        self.report(request, started, result).await;
    }

    /// kube-scheduler's VolumeBinding PreBind, for pods with unbound
    /// WaitForFirstConsumer claims (nothing to do for the others).
    async fn bind_volumes(&self, request: &BindRequest) -> Result<(), BindError> {
        if request.volumes.is_empty() {
            return Ok(());
        }
        self.volumes
            .bind(&request.volumes)
            .await
            .map_err(|error| BindError::Volumes {
                pod: request.pod.to_string(),
                why: error.to_string(),
            })
    }

    async fn report(&self, request: BindRequest, started: Instant, result: Result<(), BindError>) {
        let _ = self
            .tx
            .send(BindOutcome {
                uid: request.uid,
                pod: request.pod,
                node: request.node,
                started,
                result,
            })
            .await;
    }
}

struct BindOutcome {
    uid: String,
    pod: PodRef,
    node: String,
    started: Instant,
    result: Result<(), BindError>,
}

/// The scheduler's state.
pub struct SchedulerLoop {
    deps: LoopDeps,
    mirror: ClusterMirror,
    queue: SchedulingQueue<WorkKey>,
    pending: HashMap<String, PendingPod>,
    gangs: HashMap<GangKey, GangEntry>,
    /// Which gang each known member belongs to, so that a deletion touches one
    /// gang instead of scanning them all.
    gang_of_member: HashMap<String, GangKey>,
    /// scheduler-plugins PodGroups.
    pod_groups: ObjectsByKey<PodGroup>,
    /// `scheduling.k8s.io/v1beta1` PodGroups.
    upstream_pod_groups: ObjectsByKey<UpstreamPodGroup>,
    /// `scheduling.k8s.io/v1alpha3` CompositePodGroups.
    composite_pod_groups: ObjectsByKey<CompositePodGroup>,
    tracker: GangTracker,
    /// The one writer of PodGroup status, and its inbox until `run` starts
    /// the writer task.
    status_writer: PodGroupStatusWriter,
    status_inbox: Option<PodGroupStatusInbox>,
    /// The one writer of Kubernetes PodGroups' `PodGroupInitiallyScheduled`.
    upstream_condition_writer: UpstreamConditionWriter,
    upstream_condition_inbox: Option<UpstreamConditionInbox>,
    /// The one writer of pods' PodScheduled condition, and its inbox until
    /// `run` starts the writer task.
    condition_writer: PodConditionWriter,
    condition_inbox: Option<PodConditionInbox>,
    policy: Box<dyn PlacementPolicy>,
    /// Spread constraints for pods that set none (`topologySpread` config).
    default_spread: DefaultSpread,
    scratch: CycleScratch,
    bind_slots: Arc<Semaphore>,
    bind_tx: mpsc::Sender<BindOutcome>,
    bind_rx: mpsc::Receiver<BindOutcome>,
    /// The nodes that exist, for binding tasks to check right before writing.
    nodes: NodePresence,
    relisted_pods: Option<HashSet<String>>,
    /// Every gang plan the watch shows on a pod.
    plans: PlanBook,
    /// Plans of earlier terms this leader has finished or undone.
    settled_plans: HashSet<String>,
    /// Bound members of undone gangs being deleted: their gangs are not placed
    /// again until these are gone, or the new placement would count them.
    undoing: HashSet<String>,
    /// `<identity>@<unix ms>` of the current leadership term: the prefix of the
    /// plans this leader writes.
    term: String,
    plan_seq: u64,
    fault: GangBindFault,
    leading: bool,
    last_housekeeping: Instant,
    /// Gangs found from the pods' owners (`owner_watch.rs`).
    owner_gangs: OwnerGangs,
    /// Possible victims, disruption budgets and nodes held for preemptors
    /// (`preempt.rs`).
    preemption: PreemptionBook,
    /// Queues, their ledger and status (`queues.rs`).
    queues: QueueBook,
    /// The live GPU gauges, cached per node between housekeeping ticks.
    gauges: ClusterGauges,
}

impl std::fmt::Debug for SchedulerLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerLoop")
            .field("pending", &self.pending.len())
            .field("leading", &self.leading)
            .finish()
    }
}

impl SchedulerLoop {
    pub fn new(deps: LoopDeps) -> Self {
        let config = deps.config.clone();
        let policy = build_policy(
            config.policy,
            &PolicyConfig {
                seed: 0,
                workload: WorkloadSource::Online,
            },
        );
        let (bind_tx, bind_rx) = mpsc::channel(4096);
        let (status_writer, status_inbox) = PodGroupStatusWriter::channel();
        let (condition_writer, condition_inbox) = PodConditionWriter::channel();
        let (upstream_condition_writer, upstream_condition_inbox) =
            UpstreamConditionWriter::channel();
        let mut mirror =
            ClusterMirror::new(config.telemetry_max_age().as_millis() as u64).watching_namespaces();
        // This scheduler binds volumes itself (unlike the extender, where
        // kube-scheduler does): hold pods to their claims.
        mirror.track_volumes();
        SchedulerLoop {
            mirror,
            queue: SchedulingQueue::new(BackoffPolicy {
                initial: config.backoff.initial(),
                max: config.backoff.max(),
                max_unschedulable: config.backoff.max_unschedulable(),
            }),
            pending: HashMap::new(),
            gangs: HashMap::new(),
            gang_of_member: HashMap::new(),
            pod_groups: ObjectsByKey::default(),
            upstream_pod_groups: ObjectsByKey::default(),
            composite_pod_groups: ObjectsByKey::default(),
            tracker: GangTracker::new(),
            status_writer,
            status_inbox: Some(status_inbox),
            upstream_condition_writer,
            upstream_condition_inbox: Some(upstream_condition_inbox),
            condition_writer,
            condition_inbox: Some(condition_inbox),
            policy,
            default_spread: config.topology_spread.defaults(),
            scratch: CycleScratch::default(),
            bind_slots: Arc::new(Semaphore::new(config.binding.concurrency)),
            bind_tx,
            nodes: NodePresence::default(),
            bind_rx,
            relisted_pods: None,
            plans: PlanBook::default(),
            settled_plans: HashSet::new(),
            undoing: HashSet::new(),
            term: String::new(),
            plan_seq: 0,
            fault: GangBindFault::from_env(),
            leading: false,
            last_housekeeping: Instant::now(),
            owner_gangs: OwnerGangs::default(),
            preemption: PreemptionBook::default(),
            queues: QueueBook::default(),
            gauges: ClusterGauges::online(config.metrics.pool_label.clone()),
            deps,
        }
    }

    /// Runs until `shutdown` resolves (Ok) or leadership is lost (Err).
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), LoopError> {
        if let Some(inbox) = self.status_inbox.take() {
            let (client, fence) = (self.deps.client.clone(), self.deps.fence.clone());
            tokio::spawn(inbox.write_to_api(client, fence));
        }
        if let Some(inbox) = self.condition_inbox.take() {
            let (client, fence) = (self.deps.client.clone(), self.deps.fence.clone());
            tokio::spawn(inbox.write_to_api(client, fence));
        }
        if let Some(inbox) = self.upstream_condition_inbox.take() {
            let (client, fence) = (self.deps.client.clone(), self.deps.fence.clone());
            tokio::spawn(inbox.write_to_api(client, fence));
        }
        let (input_tx, mut inputs) = mpsc::channel(16_384);
        self.spawn_owner_watches(input_tx.clone()).await;
        // Before the pod watch: the owner kinds found served reach the loop
        // ahead of the first pod, so no pod is decided as if its owner's kind
        // were not watched.
        self.spawn_gang_source_watch(input_tx.clone()).await;
        self.spawn_watches(input_tx).await;
        let mut is_leader = self.deps.is_leader.clone();
        // Without election the channel starts (and stays) true: no change to wait for.
        let leading_now = *is_leader.borrow_and_update();
        self.leadership_changed(leading_now).await?;
        tokio::pin!(shutdown);
        loop {
            let wake = self.next_wakeup();
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                changed = is_leader.changed() => {
                    let now_leader = changed.is_ok() && *is_leader.borrow();
                    self.leadership_changed(now_leader).await?;
                }
                input = inputs.recv() => {
                    let Some(input) = input else { return Err(LoopError::WatchesEnded) };
                    self.handle_input(input);
                    // Fold in the backlog before deciding anything.
                    for _ in 0..4096 {
                        match inputs.try_recv() {
                            Ok(input) => self.handle_input(input),
                            Err(_) => break,
                        }
                    }
                }
                Some(outcome) = self.bind_rx.recv() => {
                    self.handle_bound(outcome);
                    while let Ok(outcome) = self.bind_rx.try_recv() {
                        self.handle_bound(outcome);
                    }
                }
                () = tokio::time::sleep_until(wake.into()) => {}
            }
            self.housekeeping();
            if self.leading && self.mirror.synced() {
                self.schedule_slice();
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        if self.leading && self.mirror.synced() && self.queue.lengths().active > 0 {
            return now;
        }
        let tick = self.last_housekeeping + HOUSEKEEPING_INTERVAL;
        self.queue
            .next_wakeup()
            .map_or(tick, |t| t.min(tick))
            .max(now)
    }

    async fn leadership_changed(&mut self, now_leader: bool) -> Result<(), LoopError> {
        self.deps.metrics.set_leader(now_leader);
        match (self.leading, now_leader) {
            (false, true) => {
                tracing::info!("became leader; rebuilding the snapshot from a fresh list");
                self.term = format!(
                    "{}@{}",
                    self.deps.config.leader_election.resolved_identity(),
                    phalanx_runtime::clock::unix_millis()
                );
                self.rebuild_from_list().await?;
                self.leading = true;
                // Gated pods seen before this replica led have not been marked.
                let gated: Vec<Arc<Pod>> = self
                    .pending
                    .values()
                    .filter(|p| p.gated)
                    .map(|p| p.pod.clone())
                    .collect();
                for pod in gated {
                    self.set_not_scheduled(&pod, NotScheduled::gated());
                }
                Ok(())
            }
            (true, false) => Err(LoopError::LostLease),
            _ => Ok(()),
        }
    }

    /// A new leader lists pods once (a consistent read) so that the last bindings
    /// of the previous leader are accounted even if its watch has not caught up.
    async fn rebuild_from_list(&mut self) -> Result<(), LoopError> {
        let api: Api<Pod> = Api::all(self.deps.client.clone());
        let pods = api
            .list(&ListParams::default())
            .await
            .map_err(LoopError::Relist)?;
        for pod in pods {
            self.handle_pod_event(Event::Apply(pod));
        }
        Ok(())
    }

    async fn spawn_watches(&self, tx: mpsc::Sender<Input>) {
        let client = self.deps.client.clone();
        spawn_watch(Api::<Node>::all(client.clone()), tx.clone(), |e| {
            Input::Node(Box::new(e))
        });
        spawn_watch(Api::<GpuNode>::all(client.clone()), tx.clone(), |e| {
            Input::GpuNode(Box::new(e))
        });
        spawn_watch(Api::<Pod>::all(client.clone()), tx.clone(), |e| {
            Input::Pod(Box::new(e))
        });
        // Their labels, for pod affinity terms' namespaceSelector.
        spawn_watch(Api::<Namespace>::all(client.clone()), tx.clone(), |e| {
            Input::Namespace(Box::new(e))
        });
        spawn_watch(Api::all(client.clone()), tx.clone(), |e| {
            Input::Claim(Box::new(e))
        });
        spawn_watch(Api::all(client.clone()), tx.clone(), |e| {
            Input::Volume(Box::new(e))
        });
        spawn_watch(Api::all(client.clone()), tx.clone(), |e| {
            Input::StorageClass(Box::new(e))
        });
        spawn_watch(Api::all(client.clone()), tx.clone(), |e| {
            Input::CsiNode(Box::new(e))
        });
        if self.deps.config.preemption.enabled {
            spawn_watch(Api::all(client.clone()), tx.clone(), |e| {
                Input::Pdb(Box::new(e))
            });
        }
        if self.queues_enabled() {
            spawn_watch(Api::<Queue>::all(client.clone()), tx.clone(), |e| {
                Input::Queue(Box::new(e))
            });
        }
    }

    /// Gang objects and owner kinds only where served, asked again at an
    /// interval (`gang_source_watch.rs`).
    async fn spawn_gang_source_watch(&self, tx: mpsc::Sender<Input>) {
        let find_owners = self.deps.config.gangs.auto_group;
        let (sources, ok) = GangSourceWatch::start(
            self.deps.client.clone(),
            tx,
            self.deps.metrics.clone(),
            find_owners,
        )
        .await;
        let interval = self.deps.config.gangs.discovery_interval();
        tokio::spawn(sources.keep_asking(interval, ok));
    }

    fn handle_input(&mut self, input: Input) {
        let now_ms = phalanx_runtime::clock::unix_millis();
        let change = match input {
            Input::Node(event) => {
                self.nodes.observe(&event);
                self.mirror.node_event(*event, now_ms)
            }
            Input::GpuNode(event) => self.mirror.gpu_node_event(*event, now_ms),
            Input::Pod(event) => self.handle_pod_event(*event),
            Input::PodGroup(event) => self.handle_pod_group_event(*event),
            Input::UpstreamPodGroup(event) => self.handle_upstream_pod_group_event(*event),
            Input::CompositePodGroup(event) => self.handle_composite_event(*event),
            Input::Namespace(event) => self.mirror.namespace_event(&event),
            Input::Claim(event) => self.mirror.claim_event(&event),
            Input::Volume(event) => self.mirror.volume_event(&event),
            Input::StorageClass(event) => self.mirror.storage_class_event(&event),
            Input::CsiNode(event) => self.mirror.csi_node_event(&event),
            Input::Pdb(event) => self.handle_pdb_event(*event),
            Input::Queue(event) => self.handle_queue_event(*event),
            Input::Job(event) => self.handle_job_event(*event),
            Input::Owner(kind, event) => self.handle_owner_event(kind, *event),
            Input::OwnerKindWatched(kind, watched) => self.owner_kind_watched(kind, watched),
        };
        for error in &change.errors {
            tracing::warn!(%error, "cluster state");
        }
        self.deps.metrics.count_telemetry(&change);
        if change.cluster_changed {
            self.queue.cluster_changed(Instant::now());
        }
    }

    fn handle_pod_event(&mut self, event: Event<Pod>) -> MirrorChange {
        let change = self.mirror.pod_event(&event);
        self.observe_plans(&event);
        match event {
            Event::Init => self.relisted_pods = Some(HashSet::new()),
            Event::InitApply(pod) => {
                if let Some(seen) = self.relisted_pods.as_mut() {
                    seen.insert(pod_uid(&pod));
                }
                self.track(pod);
            }
            Event::Apply(pod) => self.track(pod),
            Event::Delete(pod) => self.untrack(&pod_uid(&pod)),
            Event::InitDone => {
                if let Some(seen) = self.relisted_pods.take() {
                    let gone: Vec<String> = self
                        .pending
                        .keys()
                        .map(String::as_str)
                        .chain(self.plans.uids())
                        .filter(|uid| !seen.contains(*uid))
                        .map(str::to_owned)
                        .collect();
                    for uid in gone {
                        self.untrack(&uid);
                    }
                }
            }
        }
        change
    }

    /// Starts or stops tracking a pod as pending for this scheduler, and keeps
    /// gang membership (bound members count towards minMember).
    fn track(&mut self, pod: Pod) {
        let uid = pod_uid(&pod);
        self.note_running(&pod);
        let for_us = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref())
            == Some(self.deps.config.scheduler_name.as_str());
        let gang = if for_us && !phalanx_kube::mirror::is_finished(&pod) {
            match gangs::gang_of(&pod) {
                // Declares none: its owner may make it a gang member.
                Ok(None) => match self.owner_gang(&pod) {
                    OwnerGang::Decided(gang) => gang,
                    OwnerGang::Hold => return,
                },
                Ok(gang) => gang,
                Err(error) => {
                    // A malformed gang annotation: say so and schedule nothing for it.
                    if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_none()
                    {
                        self.fail_event(&pod, error.to_string(), true);
                    }
                    self.stop_pending(&uid);
                    return;
                }
            }
        } else {
            None
        };
        self.set_gang_membership(&uid, gang.as_ref().map(|m| &m.key));
        self.set_member_running(&uid, is_running(&pod));
        if gang.is_some()
            && pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some()
        {
            self.gang_member_bound_now(&uid);
        }
        if !translate::is_ours(&pod, &self.deps.config.scheduler_name) {
            // Bound (by us or anyone), finished or being deleted.
            self.stop_pending(&uid);
            return;
        }
        let now = Instant::now();
        let priority = self.queue_priority(&pod, gang.as_ref());
        let is_new = !self.pending.contains_key(&uid);
        let entry = self
            .pending
            .entry(uid.clone())
            .or_insert_with(|| PendingPod {
                pod: Arc::new(pod.clone()),
                first_seen: now,
                gang: None,
                binding: false,
                last_failed_event: None,
                gated: false,
                condition_sent: None,
                wait: None,
                observed: false,
            });
        let gated = translate::is_scheduling_gated(&pod);
        entry.pod = Arc::new(pod);
        entry.gang = gang.clone();
        entry.gated = gated;
        let first_seen = entry.first_seen;
        if entry.binding {
            return;
        }
        if gated {
            // Not queued: nothing to attempt until the watch shows the last
            // gate gone (gates can only be removed, never added back). A gang
            // stays queued; `schedule_gang` holds it while any member is gated.
            if gang.is_none() {
                self.queue.remove(&WorkKey::Pod(uid));
            }
            if self.leading {
                let pod = entry.pod.clone();
                self.set_not_scheduled(&pod, NotScheduled::gated());
            }
            return;
        }
        let pod = entry.pod.clone();
        let tenant = self.note_pending_queue(&uid, &pod, gang.as_ref().map(|m| &m.key));
        match gang {
            Some(membership) => {
                let gang = self.gangs.entry(membership.key.clone()).or_default();
                let gang_seen = *gang.first_seen.get_or_insert(first_seen);
                let key = WorkKey::Gang(membership.key);
                if is_new {
                    // A new member may complete the gang: look again now.
                    self.queue.remove(&key);
                }
                self.queue.add_in(key, tenant, priority, gang_seen, now);
            }
            None => self
                .queue
                .add_in(WorkKey::Pod(uid), tenant, priority, first_seen, now),
        }
    }

    /// The pod is no longer waiting for us (bound, finished, or not ours).
    fn stop_pending(&mut self, uid: &str) {
        self.queues.forget_pending(uid);
        if let Some(p) = self.pending.remove(uid) {
            if p.gang.is_none() {
                self.queue.remove(&WorkKey::Pod(uid.to_owned()));
            }
        }
    }

    /// The pod is gone.
    fn untrack(&mut self, uid: &str) {
        self.stop_pending(uid);
        self.forget_running(uid);
        self.release_hold(&WorkKey::Pod(uid.to_owned()));
        self.plans.forget(uid);
        self.undoing.remove(uid);
        self.set_gang_membership(uid, None);
        self.forget_owner_gang(uid);
        self.mirror.state_mut().forget_assumed(uid);
    }

    fn housekeeping(&mut self) {
        self.deps.health.heartbeat();
        self.deps.health.set_synced(self.mirror.synced());
        let now = Instant::now();
        if now.duration_since(self.last_housekeeping) < HOUSEKEEPING_INTERVAL {
            return;
        }
        self.last_housekeeping = now;
        self.expire_owner_waits();
        self.expire_holds();
        self.rebuild_queues();
        self.write_queue_status();
        let stale = self
            .mirror
            .expire_telemetry(phalanx_runtime::clock::unix_millis());
        self.deps.metrics.set_stale_gpus(stale as u64);
        let lengths = self.queue.lengths();
        self.deps.metrics.set_pending(
            lengths.active as u64,
            lengths.backoff as u64,
            lengths.unschedulable as u64,
        );
        self.deps
            .metrics
            .set_nodes(self.mirror.state().node_count() as u64);
        if self.leading && self.mirror.synced() {
            self.export_cluster_gauges(now);
        }
    }

    /// The live GPU gauges and pending pods and gangs by reason. Only the
    /// leader sets them: a follower's snapshot places nothing and its queue
    /// is not the one that waits, so it exports no GPU series and zeros.
    fn export_cluster_gauges(&mut self, now: Instant) {
        let groups = self.gauges.tally(self.mirror.state().snapshot());
        self.deps.metrics.set_cluster_gpus(&groups);
        let pods = self
            .pending
            .values()
            .filter(|p| !p.binding)
            .map(|p| WaitingPod {
                first_seen: p.first_seen,
                gated: p.gated,
                last: p.wait,
            });
        let gangs = self.gangs.values().filter_map(|gang| {
            if gang.alone {
                return None;
            }
            let waiting = gang
                .members
                .iter()
                .filter_map(|uid| self.pending.get(uid))
                .filter(|p| !p.binding);
            let mut any = false;
            let mut gated = false;
            for member in waiting {
                any = true;
                gated |= member.gated;
            }
            any.then_some(WaitingGang {
                gated,
                last: gang.wait,
            })
        });
        let counts = PendingCounts::count(pods, gangs, now);
        self.deps.metrics.set_pending_reasons(&counts);
    }

    /// Counts a pod's demand into the workload, at its first attempt: every
    /// pod that arrives, placed or not, as the simulator learns it. The
    /// placement policy learns its typical pods from it (until issue 20 it
    /// never did here, so `phalanx` and `fgd` placed first-fit by node rank in
    /// the scheduler, unlike the extender and the simulator), and the gauges
    /// measure fragmentation against the same workload.
    fn observe_arrival(&mut self, uid: &str, demand: &PodDemand) {
        if let Some(p) = self.pending.get_mut(uid) {
            if !p.observed {
                p.observed = true;
                self.policy.observe_arrival(demand);
                self.gauges.observe(demand);
            }
        }
    }

    /// Records why a pending pod's attempt failed.
    fn set_wait(&mut self, uid: &str, reason: WaitReason) {
        if let Some(p) = self.pending.get_mut(uid) {
            p.wait = Some(reason);
        }
    }

    fn schedule_slice(&mut self) {
        if !self.deps.fence.allows(SystemTime::now()) {
            // Our Lease is about to run out (or is someone else's) although the
            // elector has not said so yet: place nothing until it is renewed.
            return;
        }
        // Plans a previous leader left half done come first, so that nothing
        // else takes their GPUs.
        self.recover_gang_plans();
        let start = Instant::now();
        while start.elapsed() < SCHEDULING_SLICE {
            let now = Instant::now();
            // Without queues every key is tenant 0: no turn key to build per pop.
            let next = if self.queues_enabled() {
                let queues = &self.queues;
                self.queue.pop_fair(now, |t| queues.rank(t))
            } else {
                self.queue.pop(now)
            };
            let Some(key) = next else {
                break;
            };
            match key {
                WorkKey::Pod(uid) => self.schedule_pod(uid),
                WorkKey::Gang(gang) => self.schedule_gang(gang),
            }
        }
    }

    fn schedule_pod(&mut self, uid: String) {
        let key = WorkKey::Pod(uid.clone());
        match self.place_alone(&uid) {
            AloneOutcome::Placed | AloneOutcome::Gone => self.queue.done(&key),
            AloneOutcome::Unschedulable => self.queue.unschedulable(key, Instant::now()),
            AloneOutcome::Error => self.queue.retry_after_error(key, Instant::now()),
        }
    }

    /// One attempt at one pod: placed, assumed and handed to a binding task,
    /// or a FailedScheduling event. The caller keeps the queue.
    fn place_alone(&mut self, uid: &str) -> AloneOutcome {
        let Some(pending) = self.pending.get(uid) else {
            return AloneOutcome::Gone;
        };
        let pod = pending.pod.clone();
        let snapshot = self.mirror.state().snapshot();
        let key = WorkKey::Pod(uid.to_owned());
        let mut demand = match self.default_spread.pod_demand(&pod, snapshot) {
            Ok(demand) => demand,
            Err(error) => {
                self.deps.metrics.record_attempt(AttemptResult::Error);
                self.set_wait(uid, WaitReason::Other);
                self.fail_event(&pod, error.to_string(), false);
                return AloneOutcome::Unschedulable;
            }
        };
        self.observe_arrival(uid, &demand);
        demand.reservation = self.hold_token(&key);
        let tenant = self.queue.tenant_of(&key).unwrap_or(0);
        let queue = if self.queues_enabled() {
            match self
                .queues
                .admit(tenant, &QueueLedger::pod_amounts(&demand, None))
            {
                Ok(queue) => Some(queue),
                Err(refusal) => {
                    self.deps
                        .metrics
                        .record_attempt(AttemptResult::Unschedulable);
                    self.set_wait(uid, WaitReason::Quota);
                    self.fail_event(&pod, refusal, false);
                    return AloneOutcome::Unschedulable;
                }
            }
        } else {
            None
        };
        let outcome = schedule_one(
            self.mirror.state().snapshot(),
            self.policy.as_mut(),
            &demand,
            &mut self.scratch,
        );
        match outcome {
            CycleOutcome::Placed(placement) => {
                if queue.is_some() {
                    // The node's GPU model is known now: a per-model limit
                    // is checked here (refused, not silently passed).
                    let snapshot = self.mirror.state().snapshot();
                    let amounts = QueueLedger::placed_amounts(snapshot, &demand, placement.node);
                    if let Err(refusal) = self.queues.admit(tenant, &amounts) {
                        self.deps
                            .metrics
                            .record_attempt(AttemptResult::Unschedulable);
                        self.set_wait(uid, WaitReason::Quota);
                        self.fail_event(&pod, refusal, false);
                        return AloneOutcome::Unschedulable;
                    }
                }
                if let Err(error) = self
                    .mirror
                    .state_mut()
                    .assume(uid, demand.clone(), placement)
                {
                    tracing::error!(%error, pod = %demand.name, "engine refused its own placement");
                    self.deps.metrics.record_attempt(AttemptResult::Error);
                    return AloneOutcome::Error;
                }
                if queue.is_some() {
                    let snapshot = self.mirror.state().snapshot();
                    let amounts = QueueLedger::placed_amounts(snapshot, &demand, placement.node);
                    self.queues.placed(tenant, &amounts);
                }
                self.start_bind(uid, &demand, placement);
                self.release_hold(&key);
                AloneOutcome::Placed
            }
            CycleOutcome::Unschedulable { nodes, reasons } => {
                self.deps
                    .metrics
                    .record_attempt(AttemptResult::Unschedulable);
                let refusal = self.mirror.state().snapshot().volume_refusal(&demand);
                self.set_wait(
                    uid,
                    WaitReason::of_unfit(nodes, &reasons, refusal.is_some()),
                );
                let message = match refusal {
                    // Pod-level, as kube-scheduler words a PreFilter refusal.
                    Some(refusal) if nodes > 0 => {
                        format!("0/{nodes} nodes are available: {refusal}.")
                    }
                    _ if nodes == 0 => "no nodes available to schedule pods".to_owned(),
                    _ => unschedulable_message(nodes, &reasons),
                };
                let priority = demand.priority;
                let preempted = self.try_preempt(Wanting {
                    key: &key,
                    pods: std::slice::from_ref(&pod),
                    demands: std::slice::from_ref(&demand),
                    min_member: 1,
                    topology: &[],
                    priority,
                    group_policy: None,
                    tenant: queue.map(|_| tenant),
                });
                let message = match preempted {
                    Some(preemption) => format!("{message} {preemption}."),
                    None => message,
                };
                self.fail_event(&pod, message, false);
                AloneOutcome::Unschedulable
            }
        }
    }

    /// A pod's place in the queue: its own priority, or for a member of a
    /// Kubernetes PodGroup that sets `spec.priority`, the group's.
    fn queue_priority(&self, pod: &Pod, gang: Option<&GangMembership>) -> i32 {
        let own = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        gang.filter(|m| m.source == gangs::GangSource::Upstream)
            .and_then(|m| self.upstream_pod_groups.get(&m.key))
            .and_then(|pg| pg.spec.priority)
            .unwrap_or(own)
    }

    /// Records FailedScheduling for a pod, at most once per interval unless
    /// forced, and sets its PodScheduled condition to the same message (only
    /// written when it changes).
    fn fail_event(&mut self, pod: &Pod, message: String, force: bool) {
        self.fail_event_as(pod, NotScheduled::unschedulable(message), force);
    }

    /// [`Self::fail_event`] with the condition's reason chosen by the caller;
    /// the event's message is the condition's.
    fn fail_event_as(&mut self, pod: &Pod, condition: NotScheduled, force: bool) {
        let gang = self.gang_progress(&pod_uid(pod));
        self.fail_event_with_progress(pod, condition, force, gang);
    }

    /// [`Self::fail_event_as`] with the pod's [`Self::gang_progress`] given:
    /// a caller failing every waiting member of one gang counts its members
    /// once, not once per member.
    fn fail_event_with_progress(
        &mut self,
        pod: &Pod,
        condition: NotScheduled,
        force: bool,
        gang: Option<GangProgress>,
    ) {
        let message = condition.message.clone();
        self.set_not_scheduled(pod, condition);
        let uid = pod_uid(pod);
        let now = Instant::now();
        // The gang's progress is not in the message ("fewer than its
        // minMember pods exist" reads the same with one member or two), yet
        // `kubectl phalanx why` reports it from the event.
        if let Some(p) = self.pending.get_mut(&uid) {
            let repeat = p
                .last_failed_event
                .as_ref()
                .is_some_and(|(t, last, progress)| {
                    *last == message
                        && *progress == gang
                        && now.duration_since(*t) < FAILED_EVENT_INTERVAL
                });
            if repeat && !force {
                return;
            }
            p.last_failed_event = Some((now, message.clone(), gang.clone()));
        }
        let reference =
            events::pod_reference(&pod.namespace().unwrap_or_default(), &pod.name_any(), &uid);
        let decision = self.scheduling_decision(pod, gang);
        self.deps
            .events
            .record(scheduling_events::failed_scheduling(
                reference,
                message,
                decision::decision_annotations(&decision),
            ));
    }

    /// Hands `PodScheduled=False` to the writer, unless the pod (as the watch
    /// last showed it) already says so or this version of it was already given
    /// the same condition.
    fn set_not_scheduled(&mut self, pod: &Pod, wanted: NotScheduled) {
        let version = pod.metadata.resource_version.clone().unwrap_or_default();
        let uid = pod_uid(pod);
        if let Some(p) = self.pending.get(&uid) {
            if p.condition_sent.as_ref() == Some(&(version.clone(), wanted.clone())) {
                return;
            }
        }
        let Some(patch) = pod_scheduled::condition_patch(pod, &wanted, Timestamp::now()) else {
            return;
        };
        if !self
            .condition_writer
            .send(pod.namespace().unwrap_or_default(), pod.name_any(), patch)
        {
            tracing::warn!(pod = %pod.name_any(), "PodScheduled writer backlog full; dropped");
            return;
        }
        if let Some(p) = self.pending.get_mut(&uid) {
            p.condition_sent = Some((version, wanted));
        }
    }

    fn start_bind(&mut self, uid: &str, demand: &PodDemand, placement: Placement) {
        let Some(request) = self.bind_request(uid, demand, placement) else {
            return;
        };
        let worker = self.bind_worker();
        tokio::spawn(async move { worker.bind(request, false).await });
    }

    /// The Binding for a pod just placed, marking it in flight (`None`: the
    /// pod is no longer pending).
    fn bind_request(
        &mut self,
        uid: &str,
        demand: &PodDemand,
        placement: Placement,
    ) -> Option<BindRequest> {
        let pending = self.pending.get_mut(uid)?;
        pending.binding = true;
        let pod = PodRef {
            namespace: pending.pod.namespace().unwrap_or_default(),
            name: pending.pod.name_any(),
            uid: uid.to_owned(),
        };
        let node_state = self.mirror.state().snapshot().node(placement.node);
        let node = node_state.name.clone();
        let annotation = (demand.gpu != GpuDemand::None)
            .then(|| translate::assignment_annotation(&node, &placement, node_state));
        let volumes = self
            .mirror
            .state()
            .snapshot()
            .volume_bindings(demand)
            .to_vec();
        Some(BindRequest {
            uid: uid.to_owned(),
            pod,
            node,
            annotation,
            volumes,
        })
    }

    fn bind_worker(&self) -> BindWorker {
        BindWorker {
            binder: self.deps.binder.clone(),
            slots: self.bind_slots.clone(),
            tx: self.bind_tx.clone(),
            fence: self.deps.fence.clone(),
            nodes: self.nodes.clone(),
            fault: self.fault.clone(),
            volumes: VolumeBinder::new(
                self.deps.client.clone(),
                self.deps.config.binding.volume_timeout(),
            ),
        }
    }

    fn handle_bound(&mut self, outcome: BindOutcome) {
        let metrics = &self.deps.metrics;
        metrics.observe_binding(outcome.started.elapsed());
        let reference =
            events::pod_reference(&outcome.pod.namespace, &outcome.pod.name, &outcome.uid);
        match outcome.result {
            Ok(()) => {
                metrics.record_attempt(AttemptResult::Scheduled);
                self.deps
                    .events
                    .record(scheduling_events::scheduled(reference, &outcome.node));
                if let Some(p) = self.pending.get(&outcome.uid) {
                    metrics.observe_e2e(p.first_seen.elapsed());
                }
                self.gang_member_bound_now(&outcome.uid);
                // It stays a gang member (held, counting towards minMember); the
                // watch confirms the binding in the snapshot.
                self.stop_pending(&outcome.uid);
            }
            Err(error) => {
                metrics.binding_error(error.reason());
                metrics.record_attempt(AttemptResult::Error);
                self.mirror.state_mut().forget_assumed(&outcome.uid);
                tracing::warn!(%error, "binding failed");
                match error {
                    BindError::Gone { .. } => self.untrack(&outcome.uid),
                    BindError::Conflict { .. }
                    | BindError::Api { .. }
                    | BindError::Fenced { .. }
                    | BindError::NodeGone { .. }
                    | BindError::GangPlanNotWritten { .. }
                    | BindError::Volumes { .. } => {
                        let Some(p) = self.pending.get_mut(&outcome.uid) else {
                            return;
                        };
                        p.binding = false;
                        let mut first_seen = p.first_seen;
                        let key = match &p.gang {
                            Some(m) => {
                                if let Some(seen) =
                                    self.gangs.get(&m.key).and_then(|g| g.first_seen)
                                {
                                    first_seen = seen;
                                }
                                WorkKey::Gang(m.key.clone())
                            }
                            None => WorkKey::Pod(outcome.uid.clone()),
                        };
                        let pod = p.pod.clone();
                        let gang = p.gang.clone();
                        let priority = self.queue_priority(&pod, gang.as_ref());
                        let tenant = self.tenant_of(&pod);
                        // Refusals the user must act on (RBAC, admission) become
                        // FailedScheduling events, for a Binding or a gang plan.
                        if matches!(
                            error,
                            BindError::Api { .. }
                                | BindError::GangPlanNotWritten { .. }
                                | BindError::Volumes { .. }
                        ) {
                            let message = format!("Binding rejected: {error}");
                            self.fail_event_as(&pod, NotScheduled::scheduler_error(message), true);
                        }
                        // The key left the queue when the pod was placed: put it
                        // back, behind a backoff.
                        self.queue
                            .retry_later(key, tenant, priority, first_seen, Instant::now());
                    }
                }
            }
        }
    }
}

/// What one attempt at a single pod ended in.
enum AloneOutcome {
    Placed,
    /// No longer pending.
    Gone,
    Unschedulable,
    Error,
}

/// Bound and in phase Running.
fn is_running(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_some()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}
