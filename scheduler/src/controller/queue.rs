//! The scheduling queue: which pending pod (or gang) to try next, and when to try
//! again one that did not fit.
//!
//! Modelled on kube-scheduler's `PriorityQueue`, so that users see the retry
//! behaviour they know:
//!
//! - **active**: ready to try now, ordered by priority (highest first), then by
//!   creation time (oldest first), then by key so the order is total. Entries
//!   belong to a tenant (a team's `Queue`); [`SchedulingQueue::pop_fair`] lets
//!   the tenants take turns by a rank the caller gives (distance below fair
//!   share), and inside a tenant the order is the one above;
//! - **backoff**: failed recently; waits `initial * 2^(attempts-1)` (capped at
//!   `max`) after its last attempt before it is active again;
//! - **unschedulable**: did not fit; trying again is pointless until the cluster
//!   changes ([`SchedulingQueue::cluster_changed`]), or until it has waited
//!   `max_unschedulable` (a safety net for changes we did not notice);
//! - **in flight**: popped and being scheduled. If the cluster changes while it is
//!   in flight, a verdict of "unschedulable" may be stale, so it goes to backoff
//!   instead of waiting for a change that has already happened (kube-scheduler's
//!   `moveRequestCycle`).
//!
//! Every key is in exactly one of these places. The queue is pure: time is passed
//! in, so tests drive it and the loop sleeps until [`SchedulingQueue::next_wakeup`].
//!
//! Costs: `add`, `pop`, `done`, `unschedulable`, `retry_after_error` and `remove`
//! are O(log n); `cluster_changed` is O(unschedulable · log n).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long failed attempts wait before they are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Backoff after the first failed attempt.
    pub initial: Duration,
    /// Backoff never grows beyond this.
    pub max: Duration,
    /// An unschedulable entry is retried after this long even if no cluster change
    /// was seen.
    pub max_unschedulable: Duration,
}

impl Default for BackoffPolicy {
    /// kube-scheduler's defaults: 1 s initial, 10 s max, 5 min unschedulable.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(5 * 60),
        }
    }
}

impl BackoffPolicy {
    /// `initial * 2^(attempts-1)`, capped at `max`; an entry with no failed
    /// attempt yet waits `initial`.
    pub fn backoff_for(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1);
        if doublings >= 32 {
            return self.max;
        }
        self.initial
            .checked_mul(1u32 << doublings)
            .map_or(self.max, |backoff| backoff.min(self.max))
    }
}

/// Entries in each part of the queue, for the pending-pods metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLengths {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    /// Popped and not yet reported back.
    pub in_flight: usize,
}

/// Where an entry is. The instants are the ones its ordered set is keyed by, so
/// the entry can be found there and removed in O(log n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active,
    Backoff { until: Instant },
    Unschedulable { since: Instant },
    InFlight { changed_meanwhile: bool },
}

/// Which team's queue an entry belongs to (the caller's stable number for it;
/// 0 when queues are not in use).
pub type Tenant = u32;

#[derive(Clone, Debug)]
struct Entry {
    tenant: Tenant,
    priority: i32,
    created: Instant,
    /// When the key was first added; for "time pending" metrics.
    queued_at: Instant,
    /// Failed attempts since it was added (reset only by `done`/`remove`).
    attempts: u32,
    /// When the last failed attempt was reported; backoff counts from here.
    last_failure: Option<Instant>,
    place: Place,
}

/// Order of the active set: highest priority, then oldest, then key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ActiveOrder<K> {
    priority: Reverse<i32>,
    created: Instant,
    key: K,
}

/// The pending work of the scheduler; see the module documentation.
#[derive(Debug)]
pub struct SchedulingQueue<K> {
    policy: BackoffPolicy,
    entries: HashMap<K, Entry>,
    /// Each tenant's active entries (no tenant is kept with an empty set).
    active: BTreeMap<Tenant, BTreeSet<ActiveOrder<K>>>,
    active_len: usize,
    /// Ordered by the instant the backoff ends.
    backoff: BTreeSet<(Instant, K)>,
    /// Ordered by the instant the entry became unschedulable.
    unschedulable: BTreeSet<(Instant, K)>,
}

impl<K> SchedulingQueue<K>
where
    K: Clone + Eq + Hash + Ord + Debug,
{
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
            active: BTreeMap::new(),
            active_len: 0,
            backoff: BTreeSet::new(),
            unschedulable: BTreeSet::new(),
        }
    }

    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// A new key becomes active. A key already queued keeps its place and gets the
    /// new priority (and creation time). A key in flight remembers that it changed,
    /// so an "unschedulable" verdict on the old version sends it to backoff rather
    /// than waiting for a cluster change.
    pub fn add(&mut self, key: K, priority: i32, created: Instant, now: Instant) {
        self.add_in(key, 0, priority, created, now);
    }

    /// [`Self::add`] for an entry of `tenant` (a key may move between tenants
    /// when its pod's queue label changes).
    pub fn add_in(
        &mut self,
        key: K,
        tenant: Tenant,
        priority: i32,
        created: Instant,
        now: Instant,
    ) {
        let Some(entry) = self.entries.get(&key) else {
            self.insert_new(key, tenant, priority, created, now);
            return;
        };
        let was_active = entry.place == Place::Active;
        if was_active {
            let (old_tenant, order) = (entry.tenant, order_of(entry, key.clone()));
            self.active_remove(old_tenant, &order);
        }
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.tenant = tenant;
        entry.priority = priority;
        entry.created = created;
        if let Place::InFlight { changed_meanwhile } = &mut entry.place {
            *changed_meanwhile = true;
        }
        if was_active {
            let order = order_of(entry, key);
            self.active_insert(tenant, order);
        }
    }

    /// The next key to schedule, which is then in flight until `done`,
    /// `unschedulable`, `retry_after_error` or `remove`. Entries whose backoff or
    /// unschedulable wait has ended by `now` become active first.
    pub fn pop(&mut self, now: Instant) -> Option<K> {
        self.pop_fair(now, |_| 0u8)
    }

    /// [`Self::pop`] with tenants taking turns: the tenant with the least
    /// `rank` goes (ties: the one whose first entry comes first), and its
    /// first entry is popped. `rank` is asked once per tenant with active
    /// entries.
    pub fn pop_fair<R: Ord>(
        &mut self,
        now: Instant,
        mut rank: impl FnMut(Tenant) -> R,
    ) -> Option<K> {
        self.flush_unschedulable_leftovers(now);
        self.flush_expired_backoff(now);
        let tenant = self
            .active
            .iter()
            .filter_map(|(tenant, set)| set.first().map(|first| (rank(*tenant), first, *tenant)))
            .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, _, tenant)| tenant)?;
        let set = self.active.get_mut(&tenant)?;
        let first = set.pop_first()?;
        if set.is_empty() {
            self.active.remove(&tenant);
        }
        self.active_len -= 1;
        if let Some(entry) = self.entries.get_mut(&first.key) {
            entry.place = Place::InFlight {
                changed_meanwhile: false,
            };
        }
        Some(first.key)
    }

    /// The tenant of a known key.
    pub fn tenant_of(&self, key: &K) -> Option<Tenant> {
        self.entries.get(key).map(|entry| entry.tenant)
    }

    /// How many entries of the key's tenant, wherever they wait, come before
    /// it in the order the active set pops them (higher priority, then older,
    /// then key): its position in its team's queue. O(entries); for reports.
    pub fn ahead_in_tenant(&self, key: &K) -> Option<(Tenant, usize)> {
        let own = self.entries.get(key)?;
        let mine = order_of(own, key);
        let ahead = self
            .entries
            .iter()
            .filter(|(k, e)| e.tenant == own.tenant && order_of(e, *k) < mine)
            .count();
        Some((own.tenant, ahead))
    }

    /// Active entries of one tenant, for its queue position.
    pub fn active_in(&self, tenant: Tenant) -> usize {
        self.active.get(&tenant).map_or(0, BTreeSet::len)
    }

    /// Scheduled: the key and its attempt count are forgotten.
    pub fn done(&mut self, key: &K) {
        self.remove(key);
    }

    /// The key did not fit. It waits for a cluster change (or `max_unschedulable`),
    /// unless the cluster or the key changed while it was in flight: then the
    /// verdict may already be stale and it goes to backoff. A key that is no longer
    /// known (removed while in flight) stays gone.
    pub fn unschedulable(&mut self, key: K, now: Instant) {
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        let changed_meanwhile = matches!(
            entry.place,
            Place::InFlight {
                changed_meanwhile: true
            }
        );
        self.take_from_place(&key);
        let attempts = self.record_failure(&key, now);
        if changed_meanwhile {
            let until = later(now, self.policy.backoff_for(attempts));
            self.place_backoff_or_active(key, until, now);
        } else {
            self.place(key, Place::Unschedulable { since: now });
        }
    }

    /// The attempt failed for a reason unrelated to fit (API error, conflict): back
    /// off and try again. A key that is no longer known stays gone.
    pub fn retry_after_error(&mut self, key: K, now: Instant) {
        if !self.entries.contains_key(&key) {
            return;
        }
        self.take_from_place(&key);
        let attempts = self.record_failure(&key, now);
        let until = later(now, self.policy.backoff_for(attempts));
        self.place(key, Place::Backoff { until });
    }

    /// Work on a key failed after it had left the queue (the API server refused
    /// its Binding): the key comes back and waits out a backoff, whether or not
    /// the queue still knew it. Without this a pod whose binding failed would
    /// wait for an update to itself that may never come.
    pub fn retry_later(
        &mut self,
        key: K,
        tenant: Tenant,
        priority: i32,
        created: Instant,
        now: Instant,
    ) {
        if !self.entries.contains_key(&key) {
            self.insert_new(key.clone(), tenant, priority, created, now);
        }
        self.retry_after_error(key, now);
    }

    /// Something changed that may make unschedulable keys fit: each goes to backoff
    /// if its backoff has not ended yet, else to active. Keys in flight remember it.
    pub fn cluster_changed(&mut self, now: Instant) {
        let waiting = std::mem::take(&mut self.unschedulable);
        for (_, key) in waiting {
            self.wake_unschedulable(key, now);
        }
        for entry in self.entries.values_mut() {
            if let Place::InFlight { changed_meanwhile } = &mut entry.place {
                *changed_meanwhile = true;
            }
        }
    }

    /// Deleted, or bound by someone else: forget the key wherever it is, in flight
    /// included (its later verdict is then ignored).
    pub fn remove(&mut self, key: &K) {
        self.take_from_place(key);
        self.entries.remove(key);
    }

    /// The earliest instant at which `pop` could return something that is not
    /// active now: the first backoff end or unschedulable timeout. `None` when
    /// nothing waits.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff_end = self.backoff.first().map(|(until, _)| *until);
        let unschedulable_timeout = self
            .unschedulable
            .first()
            .and_then(|(since, _)| since.checked_add(self.policy.max_unschedulable));
        match (backoff_end, unschedulable_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn lengths(&self) -> QueueLengths {
        QueueLengths {
            active: self.active_len,
            backoff: self.backoff.len(),
            unschedulable: self.unschedulable.len(),
            in_flight: self
                .entries
                .len()
                .saturating_sub(self.active_len + self.backoff.len() + self.unschedulable.len()),
        }
    }

    /// Whether the queue knows the key, in flight included.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether the key is popped and not yet reported back.
    pub fn is_in_flight(&self, key: &K) -> bool {
        self.entries
            .get(key)
            .is_some_and(|entry| matches!(entry.place, Place::InFlight { .. }))
    }

    /// Failed attempts of a known key.
    pub fn attempts(&self, key: &K) -> Option<u32> {
        self.entries.get(key).map(|entry| entry.attempts)
    }

    /// When the key was first added (it has been pending since).
    pub fn queued_since(&self, key: &K) -> Option<Instant> {
        self.entries.get(key).map(|entry| entry.queued_at)
    }

    /// Keys known to the queue, in flight included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert_new(
        &mut self,
        key: K,
        tenant: Tenant,
        priority: i32,
        created: Instant,
        now: Instant,
    ) {
        let entry = Entry {
            tenant,
            priority,
            created,
            queued_at: now,
            attempts: 0,
            last_failure: None,
            place: Place::Active,
        };
        let order = order_of(&entry, key.clone());
        self.entries.insert(key, entry);
        self.active_insert(tenant, order);
    }

    fn active_insert(&mut self, tenant: Tenant, order: ActiveOrder<K>) {
        if self.active.entry(tenant).or_default().insert(order) {
            self.active_len += 1;
        }
    }

    fn active_remove(&mut self, tenant: Tenant, order: &ActiveOrder<K>) {
        if let Some(set) = self.active.get_mut(&tenant) {
            if set.remove(order) {
                self.active_len -= 1;
            }
            if set.is_empty() {
                self.active.remove(&tenant);
            }
        }
    }

    /// Counts a failed attempt; returns the new count.
    fn record_failure(&mut self, key: &K, now: Instant) -> u32 {
        let Some(entry) = self.entries.get_mut(key) else {
            return 0;
        };
        entry.attempts = entry.attempts.saturating_add(1);
        entry.last_failure = Some(now);
        entry.attempts
    }

    /// Takes the key out of the ordered set it is in; its entry stays, marked in
    /// flight until `place` puts it somewhere.
    fn take_from_place(&mut self, key: &K) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        match entry.place {
            Place::Active => {
                let (tenant, order) = (entry.tenant, order_of(entry, key.clone()));
                entry.place = Place::InFlight {
                    changed_meanwhile: false,
                };
                self.active_remove(tenant, &order);
                return;
            }
            Place::Backoff { until } => {
                self.backoff.remove(&(until, key.clone()));
            }
            Place::Unschedulable { since } => {
                self.unschedulable.remove(&(since, key.clone()));
            }
            Place::InFlight { .. } => {}
        }
        entry.place = Place::InFlight {
            changed_meanwhile: false,
        };
    }

    /// Puts a known key, not in any set, into `place`.
    fn place(&mut self, key: K, place: Place) {
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.place = place;
        match place {
            Place::Active => {
                let (tenant, order) = (entry.tenant, order_of(entry, key));
                self.active_insert(tenant, order);
            }
            Place::Backoff { until } => {
                self.backoff.insert((until, key));
            }
            Place::Unschedulable { since } => {
                self.unschedulable.insert((since, key));
            }
            Place::InFlight { .. } => {}
        }
    }

    fn place_backoff_or_active(&mut self, key: K, until: Instant, now: Instant) {
        if until > now {
            self.place(key, Place::Backoff { until });
        } else {
            self.place(key, Place::Active);
        }
    }

    /// An unschedulable key already taken out of its set goes to backoff (until its
    /// last failure's backoff ends) or straight to active.
    fn wake_unschedulable(&mut self, key: K, now: Instant) {
        let Some(entry) = self.entries.get(&key) else {
            return;
        };
        let until = entry.last_failure.map_or(now, |failed| {
            later(failed, self.policy.backoff_for(entry.attempts))
        });
        self.place_backoff_or_active(key, until, now);
    }

    /// kube-scheduler's `flushUnschedulablePodsLeftover`: entries that waited
    /// `max_unschedulable` without a cluster change are woken anyway, in case we
    /// missed the change that would let them fit.
    fn flush_unschedulable_leftovers(&mut self, now: Instant) {
        while let Some((since, _)) = self.unschedulable.first() {
            let timed_out = since
                .checked_add(self.policy.max_unschedulable)
                .is_some_and(|deadline| deadline <= now);
            if !timed_out {
                break;
            }
            if let Some((_, key)) = self.unschedulable.pop_first() {
                self.wake_unschedulable(key, now);
            }
        }
    }

    fn flush_expired_backoff(&mut self, now: Instant) {
        while self.backoff.first().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, key)) = self.backoff.pop_first() {
                self.place(key, Place::Active);
            }
        }
    }

    /// Every entry is in exactly the set its place names, and the sets hold
    /// nothing else.
    #[cfg(test)]
    fn check_consistent(&self) {
        let mut placed = 0;
        for (key, entry) in &self.entries {
            let found = match entry.place {
                Place::Active => self
                    .active
                    .get(&entry.tenant)
                    .is_some_and(|set| set.contains(&order_of(entry, key.clone()))),
                Place::Backoff { until } => self.backoff.contains(&(until, key.clone())),
                Place::Unschedulable { since } => {
                    self.unschedulable.contains(&(since, key.clone()))
                }
                Place::InFlight { .. } => true,
            };
            assert!(
                found,
                "{key:?} is not where its entry says ({:?})",
                entry.place
            );
            if !matches!(entry.place, Place::InFlight { .. }) {
                placed += 1;
            }
        }
        assert_eq!(
            placed,
            self.active_len + self.backoff.len() + self.unschedulable.len(),
            "a set holds a key twice or a key the queue does not know"
        );
        assert_eq!(
            self.active_len,
            self.active.values().map(BTreeSet::len).sum::<usize>()
        );
        assert!(self.active.values().all(|set| !set.is_empty()));
    }
}

fn order_of<K>(entry: &Entry, key: K) -> ActiveOrder<K> {
    ActiveOrder {
        priority: Reverse(entry.priority),
        created: entry.created,
        key,
    }
}

/// `start + wait`, or `start` if that is beyond what `Instant` can represent (only
/// absurd policies get there; retrying early beats panicking).
fn later(start: Instant, wait: Duration) -> Instant {
    start.checked_add(wait).unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn queue() -> SchedulingQueue<&'static str> {
        SchedulingQueue::new(BackoffPolicy::default())
    }

    fn pop_all<K: Clone + Eq + Hash + Ord + Debug>(
        q: &mut SchedulingQueue<K>,
        now: Instant,
    ) -> Vec<K> {
        std::iter::from_fn(|| q.pop(now)).collect()
    }

    #[test]
    fn default_policy_matches_kube_scheduler() {
        let policy = BackoffPolicy::default();
        assert_eq!(policy.initial, secs(1));
        assert_eq!(policy.max, secs(10));
        assert_eq!(policy.max_unschedulable, secs(300));
    }

    #[test]
    fn position_counts_only_the_tenants_entries_that_pop_first() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add_in("team-a-high", 1, 10, t0 + secs(9), t0);
        q.add_in("team-a-old", 1, 0, t0, t0);
        q.add_in("team-a-me", 1, 0, t0 + secs(1), t0);
        q.add_in("team-a-young", 1, 0, t0 + secs(2), t0);
        q.add_in("team-b-high", 2, 100, t0, t0);
        // In flight or waiting out an unschedulable verdict, still ahead.
        assert_eq!(q.pop(t0), Some("team-b-high"));
        assert_eq!(q.pop(t0), Some("team-a-high"));
        q.unschedulable("team-a-high", t0);
        assert_eq!(q.ahead_in_tenant(&"team-a-me"), Some((1, 2)));
        assert_eq!(q.ahead_in_tenant(&"team-a-high"), Some((1, 0)));
        assert_eq!(q.ahead_in_tenant(&"team-b-high"), Some((2, 0)));
        assert_eq!(q.ahead_in_tenant(&"unknown"), None);
    }

    #[test]
    fn pops_highest_priority_then_oldest_then_key() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("low-old", 1, t0, t0);
        q.add("high-young", 10, t0 + secs(5), t0);
        q.add("high-old", 10, t0 + secs(1), t0);
        q.add("b-tie", 5, t0, t0);
        q.add("a-tie", 5, t0, t0);
        q.add("negative", -3, t0, t0);
        assert_eq!(
            pop_all(&mut q, t0),
            [
                "high-old",
                "high-young",
                "a-tie",
                "b-tie",
                "low-old",
                "negative"
            ]
        );
        assert_eq!(q.lengths().in_flight, 6);
    }

    #[test]
    fn backoff_doubles_from_initial_and_caps_at_max() {
        let policy = BackoffPolicy::default();
        let waits: Vec<u64> = (1..=6).map(|n| policy.backoff_for(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(policy.backoff_for(0), secs(1));
        assert_eq!(policy.backoff_for(u32::MAX), secs(10));
        let huge = BackoffPolicy {
            initial: Duration::MAX,
            ..policy
        };
        assert_eq!(huge.backoff_for(3), huge.max);
    }

    #[test]
    fn a_key_done_then_failed_comes_back_after_a_backoff() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        assert_eq!(q.pop(t0), Some("p"));
        q.done(&"p");
        assert_eq!(q.lengths().backoff, 0);
        // Its Binding was refused after it had left the queue.
        q.retry_later("p", 0, 0, t0, t0);
        assert_eq!(q.lengths().backoff, 1);
        assert_eq!(q.pop(t0), None, "not before its backoff");
        assert_eq!(q.pop(t0 + secs(1)), Some("p"));
    }

    #[test]
    fn errors_back_off_longer_each_time() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        let mut now = t0;
        for expected in [1, 2, 4, 8, 10, 10] {
            assert_eq!(q.pop(now), Some("p"));
            q.retry_after_error("p", now);
            assert_eq!(q.lengths().backoff, 1);
            assert_eq!(q.next_wakeup(), Some(now + secs(expected)));
            // Not a moment early.
            let just_before = now + secs(expected) - Duration::from_millis(1);
            assert_eq!(q.pop(just_before), None);
            now += secs(expected);
        }
        assert_eq!(q.attempts(&"p"), Some(6));
        assert_eq!(q.pop(now), Some("p"));
    }

    #[test]
    fn unschedulable_waits_for_a_cluster_change() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        assert_eq!(q.pop(t0), Some("p"));
        q.unschedulable("p", t0);
        assert_eq!(q.lengths().unschedulable, 1);
        // Long past its backoff, still waiting: nothing changed.
        assert_eq!(q.pop(t0 + secs(60)), None);
        q.cluster_changed(t0 + secs(60));
        assert_eq!(q.lengths().active, 1);
        assert_eq!(q.pop(t0 + secs(60)), Some("p"));
    }

    #[test]
    fn cluster_change_within_backoff_goes_to_backoff_first() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.pop(t0);
        q.unschedulable("p", t0);
        q.cluster_changed(t0 + Duration::from_millis(500));
        assert_eq!(q.lengths().backoff, 1);
        assert_eq!(q.next_wakeup(), Some(t0 + secs(1)));
        assert_eq!(q.pop(t0 + Duration::from_millis(900)), None);
        assert_eq!(q.pop(t0 + secs(1)), Some("p"));
    }

    #[test]
    fn cluster_change_while_in_flight_sends_unschedulable_to_backoff() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.add("q", 0, t0 + secs(1), t0);
        assert_eq!(q.pop(t0), Some("p"));
        q.cluster_changed(t0);
        q.unschedulable("p", t0);
        assert_eq!(q.lengths().backoff, 1, "the change may already let it fit");
        // Still backing off, so the younger entry goes first.
        assert_eq!(q.pop(t0), Some("q"));
        assert_eq!(q.pop(t0 + secs(1)), Some("p"));
        // The flag belongs to that flight only: next time it waits for a change.
        q.unschedulable("p", t0 + secs(1));
        assert_eq!(q.lengths().unschedulable, 1);
    }

    #[test]
    fn update_while_in_flight_also_sends_unschedulable_to_backoff() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.pop(t0);
        q.add("p", 7, t0, t0);
        assert!(
            q.is_in_flight(&"p"),
            "an update does not requeue a key in flight"
        );
        q.unschedulable("p", t0);
        assert_eq!(q.lengths().backoff, 1);
    }

    #[test]
    fn unschedulable_is_flushed_after_max_unschedulable() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.pop(t0);
        q.unschedulable("p", t0);
        assert_eq!(q.next_wakeup(), Some(t0 + secs(300)));
        assert_eq!(q.pop(t0 + secs(299)), None);
        assert_eq!(q.pop(t0 + secs(300)), Some("p"));
    }

    #[test]
    fn next_wakeup_is_the_earliest_wait() {
        let t0 = Instant::now();
        let mut q = queue();
        assert_eq!(q.next_wakeup(), None);
        q.add("u", 0, t0, t0);
        q.add("b", 0, t0 + secs(1), t0);
        q.pop(t0);
        q.pop(t0);
        q.unschedulable("u", t0);
        assert_eq!(q.next_wakeup(), Some(t0 + secs(300)));
        q.retry_after_error("b", t0 + secs(2));
        assert_eq!(q.next_wakeup(), Some(t0 + secs(3)));
    }

    #[test]
    fn remove_while_in_flight_forgets_the_later_verdict() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.pop(t0);
        q.remove(&"p");
        assert!(!q.contains(&"p"));
        q.unschedulable("p", t0);
        q.retry_after_error("p", t0);
        assert!(!q.contains(&"p"));
        assert_eq!(q.lengths(), QueueLengths::default());
        q.cluster_changed(t0);
        assert_eq!(q.pop(t0 + secs(600)), None);
    }

    #[test]
    fn remove_from_each_place() {
        let t0 = Instant::now();
        let mut q = queue();
        for key in ["active", "backoff", "unschedulable"] {
            q.add(key, 0, t0, t0);
        }
        q.add("stays", -1, t0, t0);
        assert_eq!(q.pop(t0), Some("active"));
        assert_eq!(q.pop(t0), Some("backoff"));
        q.retry_after_error("backoff", t0);
        assert_eq!(q.pop(t0), Some("unschedulable"));
        q.unschedulable("unschedulable", t0);
        q.add("active", 0, t0, t0); // in flight: only remembered
        for key in ["active", "backoff", "unschedulable"] {
            q.remove(&key);
            q.check_consistent();
        }
        assert_eq!(q.len(), 1);
        assert_eq!(pop_all(&mut q, t0 + secs(600)), ["stays"]);
    }

    #[test]
    fn done_forgets_the_attempt_count() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.pop(t0);
        q.retry_after_error("p", t0);
        q.pop(t0 + secs(1));
        q.done(&"p");
        assert!(!q.contains(&"p"));
        q.add("p", 0, t0, t0 + secs(2));
        assert_eq!(q.attempts(&"p"), Some(0));
        assert_eq!(q.queued_since(&"p"), Some(t0 + secs(2)));
    }

    #[test]
    fn priority_update_reorders_active_in_place() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("a", 1, t0, t0);
        q.add("b", 2, t0, t0);
        q.add("a", 3, t0, t0);
        assert_eq!(q.len(), 2, "an update does not add a second entry");
        assert_eq!(pop_all(&mut q, t0), ["a", "b"]);
    }

    #[test]
    fn priority_update_while_waiting_keeps_its_place() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("waits", 0, t0, t0);
        q.add("other", 5, t0, t0);
        q.add("waits", 0, t0, t0);
        assert_eq!(q.pop(t0), Some("other"));
        assert_eq!(q.pop(t0), Some("waits"));
        q.unschedulable("waits", t0);
        q.add("waits", 100, t0, t0);
        assert_eq!(q.lengths().unschedulable, 1, "still waits for a change");
        q.add("other", 50, t0, t0); // in flight; back in the queue below
        q.unschedulable("other", t0); // changed while in flight: backoff
        q.cluster_changed(t0 + secs(5));
        // Both active now; the new priority decides.
        assert_eq!(pop_all(&mut q, t0 + secs(5)), ["waits", "other"]);
    }

    #[test]
    fn unschedulable_on_a_key_that_is_not_in_flight_moves_it_without_duplicating() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("p", 0, t0, t0);
        q.unschedulable("p", t0);
        q.check_consistent();
        assert_eq!(q.lengths().unschedulable, 1);
        assert_eq!(q.lengths().active, 0);
        q.retry_after_error("p", t0);
        q.check_consistent();
        assert_eq!(q.lengths().backoff, 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn handles_many_entries() {
        let t0 = Instant::now();
        let mut q: SchedulingQueue<u32> = SchedulingQueue::new(BackoffPolicy::default());
        for i in 0..100_000u32 {
            let priority = i32::try_from(i % 7).unwrap_or(0);
            q.add(i, priority, t0 + Duration::from_millis(u64::from(i)), t0);
        }
        for i in 0..50_000u32 {
            if i % 2 == 0 {
                q.remove(&i);
            }
        }
        let popped = pop_all(&mut q, t0);
        assert_eq!(popped.len(), 75_000);
        assert_eq!(popped[0], 13, "priority 6, oldest left");
        let unique: HashSet<_> = popped.iter().collect();
        assert_eq!(unique.len(), popped.len());
    }

    #[test]
    fn tenants_take_turns_by_rank_and_keep_their_own_order() {
        use phalanx_engine::queues::TurnKey;
        let t0 = Instant::now();
        let mut q = queue();
        q.add_in("a-low", 1, 0, t0, t0);
        q.add_in("a-high", 1, 9, t0 + secs(1), t0);
        q.add_in("b-old", 2, 0, t0, t0);
        q.add_in("b-new", 2, 0, t0 + secs(5), t0);
        // Tenant 2 is further below its share: its entries go first, oldest
        // first; then tenant 1's, highest priority first.
        let rank = |tenant: Tenant| if tenant == 2 { 0.1 } else { 0.5 };
        let order: Vec<_> =
            std::iter::from_fn(|| q.pop_fair(t0, |t| TurnKey(vec![rank(t)]))).collect();
        assert_eq!(order, vec!["b-old", "b-new", "a-high", "a-low"]);
        q.check_consistent();
    }

    #[test]
    fn a_key_moves_to_its_new_tenant() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add_in("p", 1, 0, t0, t0);
        q.add_in("p", 2, 0, t0, t0);
        q.check_consistent();
        assert_eq!(q.tenant_of(&"p"), Some(2));
        assert_eq!((q.active_in(1), q.active_in(2)), (0, 1));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Add {
            key: u8,
            priority: i32,
            tenant: Tenant,
        },
        Pop,
        PopFair,
        Done(u8),
        Unschedulable(u8),
        RetryAfterError(u8),
        ClusterChanged,
        Remove(u8),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0u8..8;
        prop_oneof![
            3 => (key.clone(), -2i32..3, 0u32..3)
                .prop_map(|(key, priority, tenant)| Op::Add { key, priority, tenant }),
            2 => Just(Op::Pop),
            2 => Just(Op::PopFair),
            1 => key.clone().prop_map(Op::Done),
            2 => key.clone().prop_map(Op::Unschedulable),
            2 => key.clone().prop_map(Op::RetryAfterError),
            1 => Just(Op::ClusterChanged),
            1 => key.prop_map(Op::Remove),
            2 => (0u64..20_000).prop_map(Op::Advance),
        ]
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Modelled {
        Queued,
        InFlight,
    }

    proptest! {
        /// Against a model that knows only which keys exist and which are in
        /// flight: pop never returns an unknown, in-flight or removed key, the
        /// lengths add up, and after a cluster change and a long wait every queued
        /// key pops exactly once.
        #[test]
        fn no_key_is_lost_or_duplicated(ops in prop::collection::vec(op(), 0..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut q: SchedulingQueue<u8> = SchedulingQueue::new(BackoffPolicy::default());
            let mut model: HashMap<u8, Modelled> = HashMap::new();
            for op in ops {
                match op {
                    Op::Add { key, priority, tenant } => {
                        let created = t0 + Duration::from_millis(u64::from(key));
                        q.add_in(key, tenant, priority, created, now);
                        model.entry(key).or_insert(Modelled::Queued);
                    }
                    Op::Pop | Op::PopFair => {
                        // Fair turns with a rank that favours the last tenant.
                        let popped = if matches!(op, Op::Pop) {
                            q.pop(now)
                        } else {
                            q.pop_fair(now, Reverse)
                        };
                        if let Some(key) = popped {
                            prop_assert_eq!(model.get(&key), Some(&Modelled::Queued));
                            model.insert(key, Modelled::InFlight);
                        }
                    }
                    Op::Done(key) | Op::Remove(key) => {
                        q.remove(&key);
                        model.remove(&key);
                    }
                    Op::Unschedulable(key) | Op::RetryAfterError(key) => {
                        if matches!(op, Op::Unschedulable(_)) {
                            q.unschedulable(key, now);
                        } else {
                            q.retry_after_error(key, now);
                        }
                        if let Some(state) = model.get_mut(&key) {
                            *state = Modelled::Queued;
                        }
                    }
                    Op::ClusterChanged => q.cluster_changed(now),
                    Op::Advance(millis) => now += Duration::from_millis(millis),
                }
                q.check_consistent();
                let lengths = q.lengths();
                let in_flight = model.values().filter(|s| **s == Modelled::InFlight).count();
                prop_assert_eq!(q.len(), model.len());
                prop_assert_eq!(lengths.in_flight, in_flight);
                prop_assert_eq!(
                    lengths.active + lengths.backoff + lengths.unschedulable,
                    model.len() - in_flight
                );
                for key in 0u8..8 {
                    prop_assert_eq!(q.contains(&key), model.contains_key(&key));
                }
            }
            q.cluster_changed(now);
            let later = now + secs(3600);
            let drained = pop_all(&mut q, later);
            let unique: HashSet<u8> = drained.iter().copied().collect();
            prop_assert_eq!(unique.len(), drained.len(), "a key popped twice");
            let queued: HashSet<u8> = model
                .iter()
                .filter(|(_, s)| **s == Modelled::Queued)
                .map(|(k, _)| *k)
                .collect();
            prop_assert_eq!(unique, queued);
            prop_assert_eq!(q.next_wakeup(), None);
        }
    }
}
