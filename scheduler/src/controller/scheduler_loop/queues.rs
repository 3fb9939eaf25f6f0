//! Teams' queues in the loop (`queues.enabled`): which queue each pod is in,
//! the ledger of what every queue holds and waits for, whose turn it is, and
//! the `Queue` objects' status.
//!
//! The ledger is rebuilt from the snapshot's placed pods every housekeeping
//! tick and whenever a `Queue` changes, and kept current in between by adding
//! each placement as it is made: a limit is checked against usage that
//! includes the pods placed a moment ago, and a pod that left is forgotten
//! within a second (the error is conservative: until then its queue looks
//! fuller than it is).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::Event;
use kube::{Api, ResourceExt};
use phalanx_api::{
    gpus_from_milli, Queue, QueueGpuStatus, QueuePending, QueueResourceStatus, QueueStatus,
};
use phalanx_engine::queues::{
    sum_amounts, QueueId, QueueLedger, QueueResource, QueueSpec, QueueTree, ResourceAmounts,
    TurnKey,
};
use phalanx_engine::{ClusterSnapshot, PodDemand};
use phalanx_kube::mirror::MirrorChange;
use phalanx_kube::translate::{gang_queue, queue_name_of, queue_spec, QueueAssignment};
use serde_json::json;

use super::SchedulerLoop;
use crate::controller::queue::Tenant;

/// How often the Queue objects' status is written (when it changed).
const STATUS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Everything the loop knows about queues.
#[derive(Debug, Default)]
pub(super) struct QueueBook {
    objects: BTreeMap<String, Queue>,
    /// Why each queue that cannot be used cannot (its own spec or its place
    /// in the hierarchy).
    invalid: BTreeMap<String, String>,
    ledger: Option<QueueLedger>,
    /// Stable tenant numbers for queue names (from 1; 0 is "no queues").
    tenants: HashMap<String, Tenant>,
    names: Vec<String>,
    /// What each pending pod asks for, in which queue, and its gang (if any).
    pending: HashMap<String, PendingDemand>,
    /// The status last written per queue.
    written: BTreeMap<String, QueueStatus>,
    last_status: Option<std::time::Instant>,
}

impl QueueBook {
    /// The tenant number of a queue name (interned once).
    pub fn tenant(&mut self, name: &str) -> Tenant {
        if let Some(t) = self.tenants.get(name) {
            return *t;
        }
        self.names.push(name.to_owned());
        let tenant = self.names.len() as Tenant;
        self.tenants.insert(name.to_owned(), tenant);
        tenant
    }

    pub fn name(&self, tenant: Tenant) -> Option<&str> {
        let index = usize::try_from(tenant).ok()?.checked_sub(1)?;
        self.names.get(index).map(String::as_str)
    }

    pub fn ledger(&self) -> Option<&QueueLedger> {
        self.ledger.as_ref()
    }

    /// The queue of a tenant in the current ledger, if it is usable.
    pub fn id(&self, tenant: Tenant) -> Option<QueueId> {
        let name = self.name(tenant)?;
        self.ledger.as_ref()?.tree().id(name)
    }

    /// Whose turn: the hierarchical distance below fair share; a queue that
    /// cannot be used goes last (its pods only collect their refusal).
    pub fn rank(&self, tenant: Tenant) -> TurnKey {
        match (self.id(tenant), &self.ledger) {
            (Some(id), Some(ledger)) => ledger.turn_key(id),
            _ => TurnKey(vec![f64::INFINITY]),
        }
    }

    /// Whether a pod of `tenant` asking `amounts` may be placed now: its
    /// queue exists, is valid, and neither it nor a parent would pass a limit.
    /// The refusal is the FailedScheduling message.
    pub fn admit(&self, tenant: Tenant, amounts: &ResourceAmounts) -> Result<QueueId, String> {
        let name = self.name(tenant).unwrap_or_default();
        if let Some(why) = self.invalid.get(name) {
            return Err(format!("queue {name} cannot be used: {why}"));
        }
        let (Some(id), Some(ledger)) = (self.id(tenant), &self.ledger) else {
            return Err(format!(
                "queue {name} does not exist; create a Queue named {name} or label the pod \
                 (or its namespace) with another phalanx.dev/queue"
            ));
        };
        ledger
            .check_limit(id, amounts)
            .map(|()| id)
            .map_err(|over| format!("{over}; the pod waits until its queue has room"))
    }

    /// A placement was made for a pod of `tenant`.
    pub fn placed(&mut self, tenant: Tenant, amounts: &ResourceAmounts) {
        if let (Some(id), Some(ledger)) = (self.id(tenant), self.ledger.as_mut()) {
            ledger.add_usage(id, amounts);
        }
    }

    pub fn set_pending(
        &mut self,
        uid: &str,
        tenant: Tenant,
        amounts: ResourceAmounts,
        gang: Option<String>,
    ) {
        self.pending.insert(
            uid.to_owned(),
            PendingDemand {
                tenant,
                amounts,
                gang,
            },
        );
    }

    pub fn forget_pending(&mut self, uid: &str) {
        self.pending.remove(uid);
    }

    /// Rebuilds the tree from the `Queue` objects (an implicit default queue
    /// with no terms of its own when none is named `default_queue`), and the
    /// ledger from the placed pods and the pending ones.
    pub fn rebuild(&mut self, default_queue: &str, snapshot: &ClusterSnapshot, placed: Placed<'_>) {
        self.invalid.clear();
        let mut specs = Vec::new();
        for (name, object) in &self.objects {
            match queue_spec(object) {
                Ok(spec) => specs.push(spec),
                Err(error) => {
                    self.invalid.insert(name.clone(), error.to_string());
                }
            }
        }
        if !self.objects.contains_key(default_queue) {
            specs.push(QueueSpec {
                name: default_queue.to_owned(),
                parent: None,
                quotas: BTreeMap::new(),
            });
        }
        // A queue whose spec is invalid is left out; so are its children,
        // whose parent is then unknown (build_valid says so per queue).
        let (tree, errors) = QueueTree::build_valid(specs);
        for error in errors {
            self.invalid
                .entry(error.queue().to_owned())
                .or_insert_with(|| error.to_string());
        }
        let mut ledger = QueueLedger::new(tree);
        for (queue, amounts) in placed {
            if let Some(id) = ledger.tree().id(&queue) {
                ledger.add_usage(id, &amounts);
            }
        }
        for pending in self.pending.values() {
            let id = self.name(pending.tenant).and_then(|n| ledger.tree().id(n));
            if let Some(id) = id {
                ledger.add_pending(id, &pending.amounts);
            }
        }
        ledger.refresh_fair_shares(QueueLedger::capacity_of(snapshot));
        self.ledger = Some(ledger);
    }

    fn apply_event(&mut self, event: Event<Queue>) {
        match event {
            Event::Init => self.objects.clear(),
            Event::InitApply(q) | Event::Apply(q) => {
                self.objects.insert(q.name_any(), q);
            }
            Event::Delete(q) => {
                self.objects.remove(&q.name_any());
                self.written.remove(&q.name_any());
            }
            Event::InitDone => {}
        }
    }

    /// The status each `Queue` object should show now.
    fn statuses(&self) -> BTreeMap<String, QueueStatus> {
        let mut pending: HashMap<&str, (u32, BTreeSet<&str>)> = HashMap::new();
        for demand in self.pending.values() {
            if let Some(name) = self.name(demand.tenant) {
                let (pods, gangs) = pending.entry(name).or_default();
                *pods += 1;
                gangs.extend(demand.gang.as_deref());
            }
        }
        self.objects
            .iter()
            .map(|(name, object)| {
                let mut status = QueueStatus {
                    observed_generation: object.metadata.generation,
                    pending: pending
                        .get(name.as_str())
                        .map(|(pods, gangs)| QueuePending {
                            pods: *pods,
                            gangs: u32::try_from(gangs.len()).unwrap_or(u32::MAX),
                        })
                        .unwrap_or_default(),
                    ..QueueStatus::default()
                };
                let valid = match self.invalid.get(name) {
                    Some(why) => ("False", "Invalid", why.clone()),
                    None => ("True", "Valid", "the queue is in use".to_owned()),
                };
                status.conditions = vec![Condition {
                    type_: phalanx_api::CONDITION_QUEUE_VALID.to_owned(),
                    status: valid.0.to_owned(),
                    reason: valid.1.to_owned(),
                    message: valid.2,
                    observed_generation: object.metadata.generation,
                    last_transition_time: previous_transition(object, valid.0),
                }];
                if let (Some(ledger), None) = (&self.ledger, self.invalid.get(name)) {
                    if let Some(id) = ledger.tree().id(name) {
                        fill_figures(&mut status, ledger, id);
                    }
                }
                (name.clone(), status)
            })
            .collect()
    }
}

/// A pending pod as its queue counts it.
#[derive(Debug, Clone)]
pub(super) struct PendingDemand {
    tenant: Tenant,
    amounts: ResourceAmounts,
    /// `namespace/name` of its gang.
    gang: Option<String>,
}

/// Placed pods as (queue name, amounts).
pub(super) type Placed<'a> = Box<dyn Iterator<Item = (String, ResourceAmounts)> + 'a>;

/// The condition's transition time: kept while its status does not change.
fn previous_transition(object: &Queue, status: &str) -> Time {
    object
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == phalanx_api::CONDITION_QUEUE_VALID && c.status == status)
        })
        .map_or_else(
            || Time(Timestamp::now()),
            |c| c.last_transition_time.clone(),
        )
}

/// Usage, guarantee, fair share and limit per resource the queue names or
/// uses, and the GPU columns.
fn fill_figures(status: &mut QueueStatus, ledger: &QueueLedger, id: QueueId) {
    let spec = ledger.tree().spec(id);
    let used = ledger.usage(id);
    let fair = ledger.fair_share(id);
    let mut resources: Vec<&QueueResource> = spec.quotas.keys().chain(used.keys()).collect();
    resources.sort();
    resources.dedup();
    for resource in resources {
        let quota = ledger.tree().quota(id, resource);
        let amount = |map: &ResourceAmounts| map.get(resource).copied().unwrap_or(0);
        let (name, model) = match resource {
            QueueResource::CpuMilli => ("cpu", None),
            QueueResource::MemoryMib => ("memory", None),
            QueueResource::GpuMilli => ("nvidia.com/gpu", None),
            QueueResource::ModelGpuMilli(model) => ("nvidia.com/gpu", Some(model.clone())),
        };
        let quantity = |value: u64| Quantity(format_amount(resource, value));
        status.resources.push(QueueResourceStatus {
            resource: name.to_owned(),
            model,
            used: quantity(amount(used)),
            guaranteed: quantity(quota.guaranteed),
            fair_share: quantity(amount(fair)),
            limit: quota.limit.map(quantity),
        });
    }
    let gpu = QueueResource::GpuMilli;
    let quota = ledger.tree().quota(id, &gpu);
    status.gpu = Some(QueueGpuStatus {
        used: gpus_from_milli(used.get(&gpu).copied().unwrap_or(0)),
        guaranteed: gpus_from_milli(quota.guaranteed),
        fair_share: gpus_from_milli(fair.get(&gpu).copied().unwrap_or(0)),
        limit: quota.limit.map(gpus_from_milli),
    });
}

/// An amount as a Kubernetes quantity in the resource's unit.
fn format_amount(resource: &QueueResource, value: u64) -> String {
    match resource {
        QueueResource::CpuMilli => format!("{value}m"),
        QueueResource::MemoryMib => format!("{value}Mi"),
        QueueResource::GpuMilli | QueueResource::ModelGpuMilli(_) => gpus_from_milli(value),
    }
}

impl SchedulerLoop {
    pub(super) fn queues_enabled(&self) -> bool {
        self.deps.config.queues.enabled
    }

    pub(super) fn handle_queue_event(&mut self, event: Event<Queue>) -> MirrorChange {
        self.queues.apply_event(event);
        self.rebuild_queues();
        // New terms may let waiting pods in.
        MirrorChange {
            cluster_changed: true,
            ..MirrorChange::default()
        }
    }

    /// A pod's queue: its label, its namespace's, or the default.
    pub(super) fn queue_assignment(&self, pod: &Pod) -> QueueAssignment {
        let namespace = pod.namespace().unwrap_or_default();
        queue_name_of(
            Some(pod.labels()),
            self.mirror
                .state()
                .snapshot()
                .labels_of_namespace(&namespace),
            &self.deps.config.queues.default_queue,
        )
    }

    /// The tenant a pending pod is queued under, and its demand noted for
    /// its queue's pending figures (0 when queues are off).
    pub(super) fn note_pending_queue(
        &mut self,
        uid: &str,
        pod: &Pod,
        gang: Option<&crate::controller::gangs::GangKey>,
    ) -> Tenant {
        if !self.queues_enabled() {
            return 0;
        }
        let tenant = self.tenant_of(pod);
        let amounts =
            phalanx_kube::translate::pod_demand(pod, self.mirror.state().snapshot().models())
                .map(|d| QueueLedger::pod_amounts(&d, None))
                .unwrap_or_default();
        let gang = gang.map(|key| format!("{}/{}", key.namespace, key.name));
        self.queues.set_pending(uid, tenant, amounts, gang);
        tenant
    }

    /// The tenant number of a pod's queue (0 when queues are off).
    pub(super) fn tenant_of(&mut self, pod: &Pod) -> Tenant {
        if !self.queues_enabled() {
            return 0;
        }
        let assignment = self.queue_assignment(pod);
        self.queues.tenant(&assignment.queue)
    }

    /// The queue of a running pod, from the namespace and labels its demand
    /// carries (for reclaim).
    pub(super) fn queue_of_running(&self, demand: &PodDemand) -> Option<QueueId> {
        if !self.queues_enabled() {
            return None;
        }
        let spec = demand.inter_pod.as_ref()?;
        let assignment = queue_name_of(
            Some(spec.labels()),
            self.mirror
                .state()
                .snapshot()
                .labels_of_namespace(spec.namespace()),
            &self.deps.config.queues.default_queue,
        );
        self.queues.ledger()?.tree().id(&assignment.queue)
    }

    /// Whether a gang may be placed now: its members are all in one queue, and
    /// that queue may take what they ask for together. The refusal is the
    /// members' FailedScheduling message.
    pub(super) fn admit_gang(
        &self,
        name: &str,
        tenant: Tenant,
        members: &[std::sync::Arc<Pod>],
        demands: &[PodDemand],
    ) -> Result<(), String> {
        let assignments: Vec<QueueAssignment> =
            members.iter().map(|p| self.queue_assignment(p)).collect();
        gang_queue(name, &assignments).map_err(|conflict| conflict.to_string())?;
        let total = sum_amounts(
            &demands
                .iter()
                .map(|d| QueueLedger::pod_amounts(d, None))
                .collect::<Vec<_>>(),
        );
        self.queues.admit(tenant, &total).map(|_| ())
    }

    /// Whether a gang's planned placements keep its queue within every
    /// limit, per-model ones included (the models are known once placed).
    pub(super) fn admit_placed_gang(
        &self,
        tenant: Tenant,
        demands: &[PodDemand],
        placements: &[(usize, phalanx_engine::Placement)],
    ) -> Result<(), String> {
        let snapshot = self.mirror.state().snapshot();
        let placed: Vec<ResourceAmounts> = placements
            .iter()
            .map(|(index, p)| QueueLedger::placed_amounts(snapshot, &demands[*index], p.node))
            .collect();
        self.queues.admit(tenant, &sum_amounts(&placed)).map(|_| ())
    }

    /// Rebuilds the queue ledger from the placed pods (housekeeping and
    /// Queue changes).
    pub(super) fn rebuild_queues(&mut self) {
        if !self.queues_enabled() {
            return;
        }
        let default_queue = self.deps.config.queues.default_queue.clone();
        let snapshot = self.mirror.state().snapshot();
        let placed: Vec<(String, ResourceAmounts)> = self
            .mirror
            .state()
            .placed_pods()
            .filter_map(|(_, demand, placement)| {
                let spec = demand.inter_pod.as_ref()?;
                let queue = queue_name_of(
                    Some(spec.labels()),
                    snapshot.labels_of_namespace(spec.namespace()),
                    &default_queue,
                )
                .queue;
                Some((
                    queue,
                    QueueLedger::placed_amounts(snapshot, demand, placement.node),
                ))
            })
            .collect();
        self.queues
            .rebuild(&default_queue, snapshot, Box::new(placed.into_iter()));
    }

    /// Writes each Queue's status when it changed, at most every few seconds,
    /// while leading.
    pub(super) fn write_queue_status(&mut self) {
        if !self.queues_enabled() || !self.leading {
            return;
        }
        if self
            .queues
            .last_status
            .is_some_and(|t| t.elapsed() < STATUS_INTERVAL)
        {
            return;
        }
        self.queues.last_status = Some(std::time::Instant::now());
        for (name, status) in self.queues.statuses() {
            if self.queues.written.get(&name) == Some(&status) {
                continue;
            }
            self.queues.written.insert(name.clone(), status.clone());
            let api: Api<Queue> = Api::all(self.deps.client.clone());
            let fence = self.deps.fence.clone();
            tokio::spawn(async move {
                if !fence.allows(std::time::SystemTime::now()) {
                    return;
                }
                let patch = json!({ "status": status });
                if let Err(error) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::warn!(%error, queue = %name, "writing Queue status failed");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use phalanx_engine::{GpuSpec, NodeSpec};

    use super::*;

    fn queue(value: serde_json::Value) -> Queue {
        serde_json::from_value(value).unwrap_or_else(|e| panic!("test queue: {e}"))
    }

    fn gpus(milli: u64) -> ResourceAmounts {
        ResourceAmounts::from([(QueueResource::GpuMilli, milli)])
    }

    /// A book with queues `team` (guaranteed 2 GPUs, limit 3) and `broken`
    /// (limit below guarantee), over a cluster of one 4-GPU node where `team`
    /// runs one GPU and waits for a gang of two.
    fn book() -> QueueBook {
        let mut book = QueueBook::default();
        for q in [
            json!({"metadata": {"name": "team"}, "spec": {"resources": [
                {"resource": "nvidia.com/gpu", "guaranteed": "2", "limit": "3"}]}}),
            json!({"metadata": {"name": "broken"}, "spec": {"resources": [
                {"resource": "nvidia.com/gpu", "guaranteed": "2", "limit": "1"}]}}),
        ] {
            book.apply_event(Event::Apply(queue(q)));
        }
        let team = book.tenant("team");
        book.set_pending("p1", team, gpus(1000), Some("ml/g".into()));
        book.set_pending("p2", team, gpus(1000), Some("ml/g".into()));
        let mut snapshot = ClusterSnapshot::new();
        snapshot
            .add_node(NodeSpec {
                name: "n".into(),
                cpu_milli: 8000,
                memory_mib: 8000,
                max_pods: 10,
                gpu_model: Some("H100".into()),
                gpus: vec![GpuSpec::default(); 4],
                ..NodeSpec::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let placed = vec![("team".to_owned(), gpus(1000))];
        book.rebuild("default", &snapshot, Box::new(placed.into_iter()));
        book
    }

    #[test]
    fn admission_names_the_limit_the_missing_queue_and_the_invalid_one() {
        let mut book = book();
        let team = book.tenant("team");
        assert!(book.admit(team, &gpus(2000)).is_ok());
        let over = book.admit(team, &gpus(3000)).unwrap_err();
        assert!(over.contains("over its limit 3000"), "{over}");
        let broken = book.tenant("broken");
        let refusal = book.admit(broken, &gpus(1000)).unwrap_err();
        assert!(
            refusal.starts_with("queue broken cannot be used:") && refusal.contains("below"),
            "{refusal}"
        );
        let nowhere = book.tenant("nowhere");
        let refusal = book.admit(nowhere, &gpus(1000)).unwrap_err();
        assert!(
            refusal.contains("queue nowhere does not exist"),
            "{refusal}"
        );
        // The implicit default queue exists without an object.
        let default = book.tenant("default");
        assert!(book.admit(default, &gpus(1000)).is_ok());
    }

    #[test]
    fn status_shows_usage_share_pending_and_validity() {
        let book = book();
        let statuses = book.statuses();
        let team = &statuses["team"];
        let gpu = team.gpu.as_ref().unwrap_or_else(|| panic!("{team:?}"));
        assert_eq!(
            (
                gpu.used.as_str(),
                gpu.guaranteed.as_str(),
                gpu.limit.as_deref()
            ),
            ("1", "2", Some("3"))
        );
        assert_eq!(
            gpu.fair_share, "3",
            "its demand (1 used + 2 waiting), within its limit"
        );
        assert_eq!((team.pending.pods, team.pending.gangs), (2, 1));
        assert_eq!(team.conditions[0].status, "True");
        let broken = &statuses["broken"];
        assert_eq!(broken.conditions[0].status, "False");
        assert!(broken.gpu.is_none(), "no figures for a queue not in use");
    }

    #[test]
    fn a_queue_further_below_its_share_ranks_first_and_an_unknown_one_last() {
        let mut book = book();
        let (team, default, nowhere) = (
            book.tenant("team"),
            book.tenant("default"),
            book.tenant("nowhere"),
        );
        // `default` uses nothing: its turn comes before `team`'s.
        assert!(book.rank(default) < book.rank(team));
        assert!(book.rank(team) < book.rank(nowhere));
    }
}
