//! The replay: the cluster as it stands, every job's phase, and the events
//! (arrivals from the workload, departures of what runs) in time order.
//!
//! At each instant where something happens, departures are applied first
//! (their room is free at once), then arrivals, then the policy's
//! [`DayPolicy::schedule`] places what it chooses. Every placement is the
//! engine's: `schedule_one` for a pod, `place_gang` (all members or none) for
//! a gang, with the phalanx placement policy, committed to the snapshot; a
//! departure or an eviction releases exactly those placements.
//!
//! A job that does not fit is remembered with the number of releases seen so
//! far: a pod of the same shape (or the same gang) is not tried again until
//! something has been released, since placements only take room away.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Instant;

use phalanx_engine::policy::PolicyConfig;
use phalanx_engine::preemption::{
    plan_preemption, PreemptionPlan, PreemptionPolicy, PreemptionRules, Preemptor, RunningPod,
};
use phalanx_engine::queues::{QueueId, QueueLedger};
use phalanx_engine::{
    build_policy, place_gang, schedule_one, ClusterSnapshot, CycleOutcome, CycleScratch,
    DomainOrder, EngineError, GangError, GangSpec, NodeReservation, Placement, PlacementPolicy,
    PodDemand, PodShape, PolicyName, WorkloadSource,
};
use thiserror::Error;

use super::metrics::{DayRecorder, QueueLevels};
use super::policy::DayPolicy;
use super::tenants::queue_tree;
use super::workload::{DayJob, DayWorkload, JobId};

pub use super::metrics::DayResult;

#[derive(Debug, Error)]
pub enum DayError {
    #[error("{0}")]
    Trace(String),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Gang(#[from] GangError),
    #[error("{policy}: {message}")]
    Policy {
        policy: &'static str,
        message: String,
    },
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobPhase {
    /// Not arrived yet.
    Future,
    /// Arrived (or evicted) and not placed.
    Waiting,
    Running {
        started: u64,
        /// `(member, placement)` as the engine returned them.
        placements: Vec<(usize, Placement)>,
    },
    Finished,
}

/// What a failed fit is remembered by: a pod's shape and memory, or a gang.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FitKey {
    /// Shape, memory and priority (a held node keeps off pods of its holder's
    /// priority or lower only).
    Pod(PodShape, u64, i32),
    Gang(JobId),
}

/// The policy's view of the replay, and what it may do to it.
pub struct DayState<'w> {
    now: u64,
    workload: &'w DayWorkload,
    cluster: ClusterSnapshot,
    placement: Box<dyn PlacementPolicy>,
    scratch: CycleScratch,
    phases: Vec<JobPhase>,
    /// Waiting jobs by (arrival, id): arrival order, ties in workload order.
    waiting: BTreeSet<(u64, JobId)>,
    usage_milli: Vec<u64>,
    waiting_milli: Vec<u64>,
    /// `(end, job, run)`: a run's departure; stale once the job was evicted.
    departures: BinaryHeap<Reverse<(u64, JobId, u32)>>,
    runs: Vec<u32>,
    releases: u64,
    unfit: HashMap<FitKey, u64>,
    /// When each job was last placed.
    placed_at: Vec<Option<u64>>,
    preemptions: Preemptions,
    /// Jobs with nodes held for them, by reservation token.
    holds: HashMap<JobId, u64>,
    /// Every running pod as the engine's preemption reads it, kept as jobs
    /// start and stop (rebuilding it per attempt dominated the run time).
    pool: Vec<RunningPod>,
    /// The job of each pool entry, and each running job's entries.
    pool_jobs: Vec<JobId>,
    pool_at: Vec<Vec<usize>>,
    /// Each queue's engine id, when the policy uses queues.
    queue_ids: Option<Vec<QueueId>>,
    /// When a job of this fit class and queue may next ask for victims after
    /// finding none.
    preemption_backoff: HashMap<(FitKey, usize), u64>,
}

/// Seconds a job of one fit class and queue waits before asking for victims
/// again after finding none: kube-scheduler's default maximum pod backoff
/// (`podMaxBackoffSeconds`). Each attempt costs a pass over every running pod.
pub const PREEMPTION_BACKOFF_S: u64 = 10;

/// Evictions so far and the GPU time they threw away.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Preemptions {
    /// Jobs evicted (a gang counts once).
    pub jobs: u64,
    /// Pods evicted.
    pub pods: u64,
    /// Milli-GPU × seconds the evicted jobs had run.
    pub lost_milli_s: u128,
    /// Victim searches (`plan_preemption` calls) and the wall time they took.
    pub searches: u64,
    pub search_seconds: f64,
}

impl std::fmt::Debug for DayState<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DayState")
            .field("now", &self.now)
            .field("waiting", &self.waiting.len())
            .field("usage_milli", &self.usage_milli)
            .field("waiting_milli", &self.waiting_milli)
            .field("preemptions", &self.preemptions)
            .finish_non_exhaustive()
    }
}

impl<'w> DayState<'w> {
    fn new(
        workload: &'w DayWorkload,
        empty: &ClusterSnapshot,
        seed: u64,
        uses_queues: bool,
    ) -> Result<Self, DayError> {
        let queues = workload.queues.len();
        let queue_ids = if uses_queues {
            let tree = queue_tree(&workload.queues).map_err(|e| DayError::Config(e.to_string()))?;
            Some(
                workload
                    .queues
                    .iter()
                    .filter_map(|q| tree.id(&q.name))
                    .collect(),
            )
        } else {
            None
        };
        Ok(DayState {
            now: 0,
            workload,
            cluster: empty.clone(),
            placement: build_policy(
                PolicyName::Phalanx,
                &PolicyConfig {
                    seed,
                    workload: WorkloadSource::Online,
                },
            ),
            scratch: CycleScratch::default(),
            phases: vec![JobPhase::Future; workload.jobs.len()],
            waiting: BTreeSet::new(),
            usage_milli: vec![0; queues],
            waiting_milli: vec![0; queues],
            departures: BinaryHeap::new(),
            runs: vec![0; workload.jobs.len()],
            releases: 0,
            unfit: HashMap::new(),
            placed_at: vec![None; workload.jobs.len()],
            preemptions: Preemptions::default(),
            holds: HashMap::new(),
            pool: Vec::new(),
            pool_jobs: Vec::new(),
            pool_at: vec![Vec::new(); workload.jobs.len()],
            queue_ids,
            preemption_backoff: HashMap::new(),
        })
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn workload(&self) -> &'w DayWorkload {
        self.workload
    }

    pub fn job(&self, id: JobId) -> &'w DayJob {
        &self.workload.jobs[id]
    }

    pub fn phase(&self, id: JobId) -> &JobPhase {
        &self.phases[id]
    }

    pub fn cluster(&self) -> &ClusterSnapshot {
        &self.cluster
    }

    /// Waiting jobs in arrival order.
    pub fn waiting(&self) -> Vec<JobId> {
        self.waiting.iter().map(|&(_, id)| id).collect()
    }

    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Running jobs, in id order.
    pub fn running(&self) -> Vec<JobId> {
        (0..self.phases.len())
            .filter(|&id| matches!(self.phases[id], JobPhase::Running { .. }))
            .collect()
    }

    /// Milli-GPU placed for the queue's jobs now.
    pub fn usage_milli(&self, queue: usize) -> u64 {
        self.usage_milli[queue]
    }

    /// Milli-GPU the queue's waiting jobs ask for.
    pub fn waiting_milli(&self, queue: usize) -> u64 {
        self.waiting_milli[queue]
    }

    /// What decides whether the job fits.
    pub fn fit_key(&self, id: JobId) -> FitKey {
        match self.workload.jobs[id].members.as_slice() {
            [pod] => FitKey::Pod(pod.shape(), pod.memory_mib, pod.priority),
            _ => FitKey::Gang(id),
        }
    }

    /// Whether a job of this key did not fit since the last release.
    pub fn known_unfit(&self, key: &FitKey) -> bool {
        self.unfit.get(key) == Some(&self.releases)
    }

    /// Tries to place a waiting job through the engine; `Ok(false)` if it does
    /// not fit now (the cluster is unchanged).
    pub fn try_place(&mut self, id: JobId) -> Result<bool, DayError> {
        if self.phases[id] != JobPhase::Waiting {
            return Err(DayError::Config(format!(
                "job {} is not waiting ({:?})",
                self.workload.jobs[id].name, self.phases[id]
            )));
        }
        let job = &self.workload.jobs[id];
        let key = self.fit_key(id);
        if self.known_unfit(&key) {
            return Ok(false);
        }
        // A job with held nodes carries the hold's token, so the nodes admit it.
        let token = self.holds.get(&id).copied();
        let held: Vec<PodDemand>;
        let members: &[PodDemand] = match token {
            Some(token) => {
                held = job
                    .members
                    .iter()
                    .map(|m| PodDemand {
                        reservation: Some(token),
                        ..m.clone()
                    })
                    .collect();
                &held
            }
            None => &job.members,
        };
        let placements = match members {
            [pod] => match schedule_one(
                &self.cluster,
                self.placement.as_mut(),
                pod,
                &mut self.scratch,
            ) {
                CycleOutcome::Placed(placement) => {
                    self.cluster.place(pod, &placement)?;
                    Some(vec![(0, placement)])
                }
                CycleOutcome::Unschedulable { .. } => None,
            },
            members => {
                let gang = GangSpec {
                    name: &job.name,
                    members,
                    min_member: members.len(),
                    topology: &[],
                    domain_order: DomainOrder::TightestFit,
                };
                match place_gang(
                    &mut self.cluster,
                    self.placement.as_mut(),
                    &gang,
                    &mut self.scratch,
                )? {
                    Ok(plan) => Some(plan.placements),
                    Err(_) => None,
                }
            }
        };
        let Some(placements) = placements else {
            self.unfit.insert(key, self.releases);
            return Ok(false);
        };
        if let Some(token) = self.holds.remove(&id) {
            // What the hold kept off its nodes may fit again.
            self.cluster.release_reservations(token);
            self.releases += 1;
        }
        self.waiting.remove(&(job.arrival_s, id));
        self.waiting_milli[job.queue] -= job.gpu_milli;
        self.usage_milli[job.queue] += job.gpu_milli;
        self.phases[id] = JobPhase::Running {
            started: self.now,
            placements,
        };
        self.placed_at[id] = Some(self.now);
        self.pool_add(id);
        self.departures
            .push(Reverse((self.now + job.run_s, id, self.runs[id])));
        Ok(true)
    }

    /// Evicts a running job: its placements are released, the GPU time it had
    /// run is lost, and it waits again to start from scratch.
    pub fn evict(&mut self, id: JobId) -> Result<(), DayError> {
        let started = self.release(id)?;
        let job = &self.workload.jobs[id];
        self.preemptions.jobs += 1;
        self.preemptions.pods += job.members.len() as u64;
        self.preemptions.lost_milli_s +=
            u128::from(job.gpu_milli) * u128::from(self.now.saturating_sub(started));
        self.runs[id] += 1;
        self.phases[id] = JobPhase::Waiting;
        self.waiting.insert((job.arrival_s, id));
        self.waiting_milli[job.queue] += job.gpu_milli;
        Ok(())
    }

    /// Adds a job that started to the victim pool.
    fn pool_add(&mut self, id: JobId) {
        let JobPhase::Running {
            started,
            placements,
        } = &self.phases[id]
        else {
            return;
        };
        let job = &self.workload.jobs[id];
        let queue = self.queue_ids.as_ref().map(|ids| ids[job.queue]);
        for (member, placement) in placements {
            self.pool_at[id].push(self.pool.len());
            self.pool.push(RunningPod {
                demand: job.members[*member].clone(),
                placement: *placement,
                priority: job.priority,
                queue,
                gang: (job.members.len() > 1).then_some(id as u64),
                started_ms: started * 1000,
                budgets: Vec::new(),
                // Evictions in the day are instant: nothing is on its way out.
                leaving: false,
            });
            self.pool_jobs.push(id);
        }
    }

    /// Takes a job that stopped out of the victim pool.
    fn pool_remove(&mut self, id: JobId) {
        let mut at = std::mem::take(&mut self.pool_at[id]);
        at.sort_unstable_by(|a, b| b.cmp(a));
        for index in at {
            let last = self.pool.len() - 1;
            self.pool.swap_remove(index);
            self.pool_jobs.swap_remove(index);
            if index != last {
                // The last entry moved into `index`.
                let moved = self.pool_jobs[index];
                if let Some(slot) = self.pool_at[moved].iter_mut().find(|i| **i == last) {
                    *slot = index;
                }
            }
        }
    }

    /// Whether the job may ask for victims now (see [`PREEMPTION_BACKOFF_S`]).
    pub fn may_ask_for_victims(&self, id: JobId) -> bool {
        let key = (self.fit_key(id), self.workload.jobs[id].queue);
        self.preemption_backoff
            .get(&key)
            .is_none_or(|&until| self.now >= until)
    }

    /// Asks the engine's victim selection for room for a waiting job; if it
    /// finds some, evicts the victims' jobs (whole) and places the job.
    /// Returns the evicted jobs, or `None` when nothing may go for it.
    pub fn preempt_for(
        &mut self,
        id: JobId,
        ledger: Option<&QueueLedger>,
        min_runtime_s: u64,
    ) -> Result<Option<Vec<JobId>>, DayError> {
        let job = &self.workload.jobs[id];
        let (priority, queue) = (
            job.priority,
            self.queue_ids.as_ref().map(|ids| ids[job.queue]),
        );
        let Some(plan) = self.search_victims(id, priority, queue, None, ledger, min_runtime_s)
        else {
            return Ok(None);
        };
        let mut victims: Vec<JobId> = plan.victims.iter().map(|v| self.pool_jobs[v.pod]).collect();
        victims.sort_unstable();
        victims.dedup();
        for &victim in &victims {
            self.evict(victim)?;
        }
        if !self.try_place(id)? {
            return Err(DayError::Policy {
                policy: "preemption",
                message: format!(
                    "{} did not fit after its victims were evicted",
                    self.workload.jobs[id].name
                ),
            });
        }
        Ok(Some(victims))
    }

    /// Holds the nodes a waiting gang would use once the pods of its priority
    /// or lower there finish (the scheduler's starving-gang hold): nothing of
    /// its priority or lower is placed there meanwhile. Returns whether nodes
    /// are held.
    pub fn hold_for(&mut self, id: JobId) -> bool {
        if self.holds.contains_key(&id) {
            return true;
        }
        if !self.may_ask_for_victims(id) {
            return false;
        }
        // Without queues: every pod of its priority or lower counts as leaving.
        let pool: Vec<RunningPod> = self
            .pool
            .iter()
            .map(|pod| RunningPod {
                queue: None,
                ..pod.clone()
            })
            .collect();
        // Every pod of its priority or lower counts as one that will leave.
        let priority = self.workload.jobs[id].priority;
        let Some(plan) =
            self.search_victims(id, priority.saturating_add(1), None, Some(&pool), None, 0)
        else {
            return false;
        };
        let token = id as u64 + 1;
        for (node, held) in plan.held_rooms(&self.workload.jobs[id].members) {
            self.cluster.reserve(
                node,
                NodeReservation {
                    holder: token,
                    priority,
                    held,
                },
            );
        }
        self.holds.insert(id, token);
        true
    }

    /// One call of the engine's victim selection for waiting job `id` at
    /// `priority`, over `pool` (the running pods when `None`), timed and
    /// counted; a job that found nothing waits `PREEMPTION_BACKOFF_S` before
    /// it asks again.
    fn search_victims(
        &mut self,
        id: JobId,
        priority: i32,
        queue: Option<QueueId>,
        pool: Option<&[RunningPod]>,
        ledger: Option<&QueueLedger>,
        min_runtime_s: u64,
    ) -> Option<PreemptionPlan> {
        let job = &self.workload.jobs[id];
        let preemptor = Preemptor {
            gang: GangSpec {
                name: &job.name,
                members: &job.members,
                min_member: job.members.len(),
                topology: &[],
                domain_order: DomainOrder::TightestFit,
            },
            priority,
            queue,
            policy: PreemptionPolicy::PreemptLowerPriority,
        };
        let rules = PreemptionRules {
            now_ms: self.now * 1000,
            min_runtime_ms: min_runtime_s * 1000,
            ledger,
            budgets: &[],
        };
        let searching = Instant::now();
        let plan = plan_preemption(
            &mut self.cluster,
            self.placement.as_mut(),
            &preemptor,
            pool.unwrap_or(&self.pool),
            &rules,
            &mut self.scratch,
        );
        self.preemptions.searches += 1;
        self.preemptions.search_seconds += searching.elapsed().as_secs_f64();
        match plan {
            Ok(plan) => Some(plan),
            Err(_) => {
                let key = (self.fit_key(id), self.workload.jobs[id].queue);
                self.preemption_backoff
                    .insert(key, self.now + PREEMPTION_BACKOFF_S);
                None
            }
        }
    }

    /// Releases a running job's placements; returns when it started.
    fn release(&mut self, id: JobId) -> Result<u64, DayError> {
        let JobPhase::Running {
            started,
            placements,
        } = std::mem::replace(&mut self.phases[id], JobPhase::Finished)
        else {
            return Err(DayError::Config(format!(
                "job {} is not running",
                self.workload.jobs[id].name
            )));
        };
        let job = &self.workload.jobs[id];
        for (member, placement) in &placements {
            self.cluster.release(&job.members[*member], placement)?;
        }
        self.pool_remove(id);
        self.usage_milli[job.queue] -= job.gpu_milli;
        self.releases += 1;
        Ok(started)
    }

    fn next_departure(&mut self) -> Option<u64> {
        while let Some(&Reverse((end, id, run))) = self.departures.peek() {
            if run == self.runs[id] {
                return Some(end);
            }
            self.departures.pop();
        }
        None
    }

    /// When the job was last placed.
    pub fn placed_at(&self, id: JobId) -> Option<u64> {
        self.placed_at[id]
    }

    /// Applies the departures due now; returns the jobs that left.
    fn depart_due(&mut self) -> Result<Vec<JobId>, DayError> {
        let mut left = Vec::new();
        while let Some(&Reverse((end, id, run))) = self.departures.peek() {
            if end > self.now {
                break;
            }
            self.departures.pop();
            if run != self.runs[id] {
                continue;
            }
            self.release(id)?;
            left.push(id);
        }
        Ok(left)
    }

    fn arrive(&mut self, id: JobId) {
        let job = &self.workload.jobs[id];
        self.phases[id] = JobPhase::Waiting;
        self.waiting.insert((job.arrival_s, id));
        self.waiting_milli[job.queue] += job.gpu_milli;
    }

    fn levels(&self) -> QueueLevels<'_> {
        QueueLevels {
            usage_milli: &self.usage_milli,
            waiting_milli: &self.waiting_milli,
        }
    }
}

/// Replays the day under `policy` on a copy of `empty`; returns what was
/// measured and the cluster as the day left it.
pub fn run_day(
    workload: &DayWorkload,
    empty: &ClusterSnapshot,
    policy: &mut dyn DayPolicy,
) -> Result<(DayResult, ClusterSnapshot), DayError> {
    let started = Instant::now();
    let mut state = DayState::new(workload, empty, workload.config.seed, policy.uses_queues())?;
    let mut recorder = DayRecorder::new(workload)?;
    let mut next = 0;
    loop {
        let arrival = workload.jobs.get(next).map(|j| j.arrival_s);
        let now = match (arrival, state.next_departure()) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(d)) => d,
            (Some(a), Some(d)) => a.min(d),
        };
        recorder.advance(now);
        state.now = now;
        for id in state.depart_due()? {
            let job = &workload.jobs[id];
            let placed = state.placed_at[id].unwrap_or(job.arrival_s);
            recorder.finished(job, placed - job.arrival_s);
            policy.on_departure(&state, id);
        }
        while next < workload.jobs.len() && workload.jobs[next].arrival_s == now {
            state.arrive(next);
            policy.on_arrival(&state, next);
            next += 1;
        }
        policy.schedule(&mut state)?;
        recorder.observe(now, &state.levels());
    }
    for id in state.waiting() {
        recorder.never_placed(&workload.jobs[id], state.now);
    }
    let result = recorder.finish(
        policy.name(),
        state.now,
        state.preemptions,
        started.elapsed().as_secs_f64(),
    );
    Ok((result, state.cluster))
}
