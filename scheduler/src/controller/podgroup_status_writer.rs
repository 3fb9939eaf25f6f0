//! The one writer of each kind of PodGroup status: the scheduler-plugins
//! PodGroup's whole status, and the `PodGroupInitiallyScheduled` condition of a
//! Kubernetes (`scheduling.k8s.io/v1beta1`) PodGroup. Each kind has its own
//! writer task, so no object has two.
//!
//! After each gang decision the loop computes what the PodGroup's status should
//! be ([`gangs::podgroup_status`](super::gangs::podgroup_status),
//! [`gangs::initially_scheduled`](super::gangs::initially_scheduled)) and hands
//! it here without waiting. One task writes, one PodGroup at a time, the latest
//! status it was handed for each: a status handed over later always lands
//! later, and one superseded before it was written is never written at all.
//! (Each decision used to spawn its own patch, so a timed-out gang's `Failed`
//! could be overwritten by an older patch that happened to land second.)
//!
//! A failed write is tried again a few times, unless a newer status for the
//! same PodGroup arrived meanwhile or the PodGroup is gone. Like a Binding, a
//! write is only sent while this replica's Lease fence allows it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::scheduling::v1beta1::PodGroup as UpstreamPodGroup;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use phalanx_api::{PodGroup, PodGroupStatus};
use phalanx_runtime::leader::LeaseFence;
use thiserror::Error;
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::gangs::GangKey;

/// How a failed write is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Writes of one status, the first included.
    pub attempts: u32,
    /// Wait before each retry.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            delay: Duration::from_secs(2),
        }
    }
}

/// Why a status was not written.
#[derive(Debug, Error)]
pub enum StatusWriteError {
    /// Not retried: there is nothing left to write to.
    #[error("PodGroup {0} no longer exists")]
    Gone(GangKey),
    #[error("PodGroup {0}: status not written, this replica's Lease is expiring or held by another replica")]
    Fenced(GangKey),
    #[error("PodGroup {key}: writing status failed: {message}")]
    Failed { key: GangKey, message: String },
}

impl StatusWriteError {
    fn retryable(&self) -> bool {
        !matches!(self, Self::Gone(_))
    }
}

/// The loop's handle on a writer: hands over the status (`S`) each PodGroup
/// should have now; never waits.
#[derive(Debug)]
pub struct StatusWriter<S> {
    tx: mpsc::UnboundedSender<(GangKey, S)>,
}

impl<S> Clone for StatusWriter<S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

/// What the handles sent, for the writer task to work through.
#[derive(Debug)]
pub struct StatusInbox<S> {
    rx: mpsc::UnboundedReceiver<(GangKey, S)>,
}

/// The writer of scheduler-plugins PodGroups' status.
pub type PodGroupStatusWriter = StatusWriter<PodGroupStatus>;
pub type PodGroupStatusInbox = StatusInbox<PodGroupStatus>;
/// The writer of Kubernetes PodGroups' `PodGroupInitiallyScheduled` condition.
pub type UpstreamConditionWriter = StatusWriter<Condition>;
pub type UpstreamConditionInbox = StatusInbox<Condition>;

impl<S: Clone> StatusWriter<S> {
    /// A handle and its inbox; the writer task is the inbox's `write_to_api`.
    pub fn channel() -> (Self, StatusInbox<S>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, StatusInbox { rx })
    }

    /// The status `key` should have now; replaces any not yet written.
    pub fn send(&self, key: GangKey, status: S) {
        if self.tx.send((key, status)).is_err() {
            tracing::debug!("the PodGroup status writer has stopped");
        }
    }
}

impl<S: Clone> StatusInbox<S> {
    /// Writes what the handles send through `write`, one PodGroup at a time,
    /// until every handle is dropped and all is written (or given up).
    pub async fn write_with<W, Fut>(self, write: W, retry: RetryPolicy)
    where
        W: FnMut(GangKey, S) -> Fut,
        Fut: Future<Output = Result<(), StatusWriteError>>,
    {
        run(self.rx, write, retry).await;
    }
}

impl PodGroupStatusInbox {
    /// The writer task: merge-patches the `status` of `scheduling.x-k8s.io`
    /// PodGroups.
    pub async fn write_to_api(self, client: Client, fence: LeaseFence) {
        self.write_with(
            move |key, status| patch_status(client.clone(), fence.clone(), key, status),
            RetryPolicy::default(),
        )
        .await;
    }
}

impl UpstreamConditionInbox {
    /// The writer task: patches the one condition Phalanx owns into the status
    /// of `scheduling.k8s.io/v1beta1` PodGroups. A strategic merge patch merges
    /// `status.conditions` by `type` (the API's patch strategy), so conditions
    /// other writers own are left alone.
    pub async fn write_to_api(self, client: Client, fence: LeaseFence) {
        self.write_with(
            move |key, condition| patch_condition(client.clone(), fence.clone(), key, condition),
            RetryPolicy::default(),
        )
        .await;
    }
}

async fn patch_condition(
    client: Client,
    fence: LeaseFence,
    key: GangKey,
    condition: Condition,
) -> Result<(), StatusWriteError> {
    if !fence.allows(SystemTime::now()) {
        return Err(StatusWriteError::Fenced(key));
    }
    let api: Api<UpstreamPodGroup> = Api::namespaced(client, &key.namespace);
    let patch = serde_json::json!({ "status": { "conditions": [condition] } });
    let result = api
        .patch_status(
            &key.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await;
    api_result(key, result)
}

/// A write's answer: a missing object is not retried.
fn api_result<T>(key: GangKey, result: Result<T, kube::Error>) -> Result<(), StatusWriteError> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Err(StatusWriteError::Gone(key)),
        Err(error) => Err(StatusWriteError::Failed {
            key,
            message: error.to_string(),
        }),
    }
}

async fn patch_status(
    client: Client,
    fence: LeaseFence,
    key: GangKey,
    status: PodGroupStatus,
) -> Result<(), StatusWriteError> {
    if !fence.allows(SystemTime::now()) {
        return Err(StatusWriteError::Fenced(key));
    }
    let api: Api<PodGroup> = Api::namespaced(client, &key.namespace);
    let patch = serde_json::json!({ "status": status });
    let result = api
        .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    api_result(key, result)
}

/// A status waiting to be written.
#[derive(Debug)]
struct Queued<S> {
    status: S,
    /// Failed writes of this status so far.
    failures: u32,
    /// A retry waits until then.
    not_before: Option<Instant>,
}

/// At most one status per PodGroup, the latest; PodGroups in the order they
/// were first queued, so one that changes often cannot starve the others.
#[derive(Debug)]
struct LatestPerPodGroup<S> {
    order: VecDeque<GangKey>,
    latest: HashMap<GangKey, Queued<S>>,
}

impl<S> Default for LatestPerPodGroup<S> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            latest: HashMap::new(),
        }
    }
}

impl<S> LatestPerPodGroup<S> {
    fn set(&mut self, key: GangKey, status: S) {
        let queued = Queued {
            status,
            failures: 0,
            not_before: None,
        };
        if self.latest.insert(key.clone(), queued).is_none() {
            self.order.push_back(key);
        }
    }

    fn retry(&mut self, key: GangKey, mut queued: Queued<S>, at: Instant) {
        queued.failures += 1;
        queued.not_before = Some(at);
        if self.latest.insert(key.clone(), queued).is_none() {
            self.order.push_back(key);
        }
    }

    /// The first status due at `now`, taken out.
    fn pop_due(&mut self, now: Instant) -> Option<(GangKey, Queued<S>)> {
        let due = |key: &GangKey| {
            self.latest
                .get(key)
                .is_some_and(|q| q.not_before.is_none_or(|t| t <= now))
        };
        let index = self.order.iter().position(due)?;
        let key = self.order.remove(index)?;
        let queued = self.latest.remove(&key)?;
        Some((key, queued))
    }

    fn contains(&self, key: &GangKey) -> bool {
        self.latest.contains_key(key)
    }

    fn next_retry(&self) -> Option<Instant> {
        self.latest.values().filter_map(|q| q.not_before).min()
    }

    fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

async fn run<S: Clone, W, Fut>(
    mut rx: mpsc::UnboundedReceiver<(GangKey, S)>,
    mut write: W,
    retry: RetryPolicy,
) where
    W: FnMut(GangKey, S) -> Fut,
    Fut: Future<Output = Result<(), StatusWriteError>>,
{
    let mut queue = LatestPerPodGroup::default();
    let mut open = true;
    loop {
        // Everything already handed over first: a newer status replaces an
        // older one for the same PodGroup before either is written.
        open &= drain(&mut rx, &mut queue);
        if let Some((key, queued)) = queue.pop_due(Instant::now()) {
            let Err(error) = write(key.clone(), queued.status.clone()).await else {
                continue;
            };
            // A status handed over during the write supersedes this one.
            open &= drain(&mut rx, &mut queue);
            let superseded = queue.contains(&key);
            if error.retryable() && !superseded && queued.failures + 1 < retry.attempts {
                tracing::debug!(%error, "will retry");
                queue.retry(key, queued, Instant::now() + retry.delay);
            } else if !superseded {
                tracing::warn!(%error, "could not update PodGroup status");
            }
            continue;
        }
        if !open && queue.is_empty() {
            return;
        }
        let next_retry = queue.next_retry();
        tokio::select! {
            received = rx.recv(), if open => match received {
                Some((key, status)) => queue.set(key, status),
                None => open = false,
            },
            () = sleep_until(next_retry), if next_retry.is_some() => {}
        }
    }
}

/// Moves what the channel holds into the queue; false once it is closed.
fn drain<S>(
    rx: &mut mpsc::UnboundedReceiver<(GangKey, S)>,
    queue: &mut LatestPerPodGroup<S>,
) -> bool {
    loop {
        match rx.try_recv() {
            Ok((key, status)) => queue.set(key, status),
            Err(TryRecvError::Empty) => return true,
            Err(TryRecvError::Disconnected) => return false,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::{mpsc, Semaphore};

    use super::*;

    fn status(phase: &str) -> PodGroupStatus {
        PodGroupStatus {
            phase: Some(phase.to_owned()),
            ..PodGroupStatus::default()
        }
    }

    fn key(name: &str) -> GangKey {
        GangKey::new("ml", name)
    }

    /// Writes as the fake API server saw them, in order.
    type Written = Arc<Mutex<Vec<(String, String)>>>;

    /// A fake API server: each write announces itself on `started`, then waits
    /// for a permit of `gate` (the test decides when a slow write lands), then
    /// answers with the next of `answers` (Ok once they run out).
    struct FakeApi {
        written: Written,
        started: mpsc::UnboundedReceiver<(String, String)>,
        gate: Arc<Semaphore>,
        writer: PodGroupStatusWriter,
        task: tokio::task::JoinHandle<()>,
    }

    fn fake_api(answers: Vec<Result<(), &'static str>>, retry: RetryPolicy) -> FakeApi {
        let written: Written = Arc::default();
        let (started_tx, started) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let (log, permits) = (written.clone(), gate.clone());
        let (writer, inbox) = PodGroupStatusWriter::channel();
        let task = inbox.write_with(
            move |key: GangKey, status: PodGroupStatus| {
                let (log, permits, answers) = (log.clone(), permits.clone(), answers.clone());
                let started_tx = started_tx.clone();
                async move {
                    let phase = status.phase.unwrap_or_default();
                    let _ = started_tx.send((key.name.clone(), phase.clone()));
                    permits.acquire().await.unwrap().forget();
                    let answer = answers.lock().unwrap().pop_front().unwrap_or(Ok(()));
                    log.lock().unwrap().push((key.name.clone(), phase));
                    answer.map_err(|message| StatusWriteError::Failed {
                        key,
                        message: message.to_owned(),
                    })
                }
            },
            retry,
        );
        FakeApi {
            written,
            started,
            gate,
            writer,
            task: tokio::spawn(task),
        }
    }

    impl FakeApi {
        async fn next_started(&mut self) -> (String, String) {
            tokio::time::timeout(Duration::from_secs(5), self.started.recv())
                .await
                .expect("no write started")
                .expect("writer gone")
        }

        /// Lets every write through, drops the handle and waits for the writer
        /// to finish; returns what was written.
        async fn finish(self) -> Vec<(String, String)> {
            self.gate.add_permits(Semaphore::MAX_PERMITS / 2);
            drop(self.writer);
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("the writer did not finish")
                .unwrap();
            Arc::try_unwrap(self.written).unwrap().into_inner().unwrap()
        }
    }

    fn pairs(written: &[(&str, &str)]) -> Vec<(String, String)> {
        written
            .iter()
            .map(|(k, p)| ((*k).to_owned(), (*p).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn a_timed_out_gangs_failed_is_not_overwritten_by_a_stale_status() {
        let mut api = fake_api(vec![], RetryPolicy::default());
        // The gang was Scheduling; that write is slow to land.
        api.writer.send(key("train"), status("Scheduling"));
        assert_eq!(
            api.next_started().await,
            ("train".into(), "Scheduling".into())
        );
        // Meanwhile the gang times out, and a later attempt repeats Failed.
        api.writer.send(key("train"), status("Pending"));
        api.writer.send(key("train"), status("Failed"));
        let written = api.finish().await;
        // Pending was superseded before it was written; Failed lands last.
        assert_eq!(
            written,
            pairs(&[("train", "Scheduling"), ("train", "Failed")])
        );
    }

    #[tokio::test]
    async fn statuses_land_in_the_order_they_were_decided() {
        let mut api = fake_api(vec![], RetryPolicy::default());
        for phase in ["Pending", "Scheduling", "Failed"] {
            api.writer.send(key("train"), status(phase));
            assert_eq!(api.next_started().await.1, phase);
            api.gate.add_permits(1);
        }
        assert_eq!(
            api.finish().await,
            pairs(&[
                ("train", "Pending"),
                ("train", "Scheduling"),
                ("train", "Failed")
            ])
        );
    }

    #[tokio::test]
    async fn a_pod_group_that_changes_often_does_not_starve_the_others() {
        let mut api = fake_api(vec![], RetryPolicy::default());
        api.writer.send(key("a"), status("Pending"));
        assert_eq!(api.next_started().await, ("a".into(), "Pending".into()));
        api.writer.send(key("b"), status("Scheduling"));
        api.writer.send(key("a"), status("Scheduling"));
        api.gate.add_permits(1);
        // b was queued before a's second status.
        assert_eq!(api.next_started().await, ("b".into(), "Scheduling".into()));
        assert_eq!(
            api.finish().await,
            pairs(&[("a", "Pending"), ("b", "Scheduling"), ("a", "Scheduling")])
        );
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_unless_superseded() {
        let retry = RetryPolicy {
            attempts: 3,
            delay: Duration::from_millis(10),
        };
        // Retried until it lands.
        let api = fake_api(vec![Err("timeout"), Err("timeout")], retry);
        api.writer.send(key("train"), status("Failed"));
        assert_eq!(api.finish().await, pairs(&[("train", "Failed"); 3]));

        // Given up after `attempts`.
        let api = fake_api(vec![Err("timeout"); 5], retry);
        api.writer.send(key("train"), status("Failed"));
        assert_eq!(api.finish().await, pairs(&[("train", "Failed"); 3]));

        // A newer status handed over during the failed write replaces it.
        let mut api = fake_api(vec![Err("timeout")], retry);
        api.writer.send(key("train"), status("Scheduling"));
        api.next_started().await;
        api.writer.send(key("train"), status("Failed"));
        assert_eq!(
            api.finish().await,
            pairs(&[("train", "Scheduling"), ("train", "Failed")])
        );
    }

    #[tokio::test]
    async fn a_newer_status_replaces_a_retry_waiting_for_its_turn() {
        let retry = RetryPolicy {
            attempts: 5,
            delay: Duration::from_millis(300),
        };
        let mut api = fake_api(vec![Err("timeout")], retry);
        api.writer.send(key("train"), status("Scheduling"));
        api.next_started().await;
        api.gate.add_permits(1);
        // The failed Scheduling now waits to be retried; Failed comes first and
        // the retry is dropped.
        tokio::time::sleep(Duration::from_millis(50)).await;
        api.writer.send(key("train"), status("Failed"));
        assert_eq!(api.next_started().await.1, "Failed");
        assert_eq!(
            api.finish().await,
            pairs(&[("train", "Scheduling"), ("train", "Failed")])
        );
    }

    #[tokio::test]
    async fn a_pod_group_that_is_gone_is_not_retried() {
        let (writer, inbox) = PodGroupStatusWriter::channel();
        let task = inbox.write_with(
            {
                let calls = Arc::new(Mutex::new(0));
                move |key: GangKey, _| {
                    let calls = calls.clone();
                    async move {
                        let mut calls = calls.lock().unwrap();
                        *calls += 1;
                        assert_eq!(*calls, 1, "retried a write to a deleted PodGroup");
                        Err(StatusWriteError::Gone(key))
                    }
                }
            },
            RetryPolicy {
                attempts: 5,
                delay: Duration::from_millis(1),
            },
        );
        let task = tokio::spawn(task);
        writer.send(key("train"), status("Failed"));
        drop(writer);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
