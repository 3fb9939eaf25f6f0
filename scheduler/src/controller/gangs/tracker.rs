//! How long each gang has waited to be placed, and how many of its members are
//! in each state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::membership::GangKey;

/// Since when each gang has been waiting to be placed, and whether its timeout
/// has been reported, so the timeout event is sent once.
#[derive(Debug, Default)]
pub struct GangTracker {
    waiting: HashMap<GangKey, GangWait>,
}

#[derive(Clone, Copy, Debug)]
struct GangWait {
    since: Instant,
    reported: bool,
}

impl GangTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// When the gang was first seen waiting; the first call records `now`.
    pub fn waiting_since(&mut self, key: &GangKey, now: Instant) -> Instant {
        self.waiting
            .entry(key.clone())
            .or_insert(GangWait {
                since: now,
                reported: false,
            })
            .since
    }

    /// Whether the gang has waited at least `timeout`; false for a gang not seen
    /// waiting (call [`GangTracker::waiting_since`] first).
    pub fn timed_out(&self, key: &GangKey, now: Instant, timeout: Duration) -> bool {
        self.waiting
            .get(key)
            .is_some_and(|wait| now.saturating_duration_since(wait.since) >= timeout)
    }

    /// Placed, or gone: a later wait starts a new clock and may be reported again.
    pub fn forget(&mut self, key: &GangKey) {
        self.waiting.remove(key);
    }

    /// The timeout has been reported. No effect on a gang not seen waiting.
    pub fn mark_reported(&mut self, key: &GangKey) {
        if let Some(wait) = self.waiting.get_mut(key) {
            wait.reported = true;
        }
    }

    pub fn reported(&self, key: &GangKey) -> bool {
        self.waiting.get(key).is_some_and(|wait| wait.reported)
    }

    /// Keeps only the gangs `keep` accepts (to drop gangs whose pods are gone).
    pub fn retain(&mut self, mut keep: impl FnMut(&GangKey) -> bool) {
        self.waiting.retain(|key, _| keep(key));
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// How many of a gang's pods are in each state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GangMemberCounts {
    /// Members that exist (not deleted).
    pub total: usize,
    /// Members bound to a node, whatever their phase since (running and finished
    /// ones included), as scheduler-plugins counts `status.scheduled`.
    pub scheduled: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_records_first_wait_and_times_out() {
        let t0 = Instant::now();
        let key = GangKey::new("ml", "train");
        let mut tracker = GangTracker::new();
        assert!(
            !tracker.timed_out(&key, t0, Duration::ZERO),
            "not seen waiting"
        );
        assert_eq!(tracker.waiting_since(&key, t0), t0);
        assert_eq!(tracker.waiting_since(&key, t0 + Duration::from_secs(5)), t0);
        let timeout = Duration::from_secs(60);
        assert!(!tracker.timed_out(&key, t0 + Duration::from_secs(59), timeout));
        assert!(tracker.timed_out(&key, t0 + timeout, timeout));
        // A clock that went backwards is not a timeout, and not a panic.
        assert!(!tracker.timed_out(&key, t0, timeout));
    }

    #[test]
    fn tracker_reports_once_until_forgotten() {
        let t0 = Instant::now();
        let key = GangKey::new("ml", "train");
        let mut tracker = GangTracker::new();
        tracker.mark_reported(&key);
        assert!(!tracker.reported(&key), "no wait to report");
        tracker.waiting_since(&key, t0);
        assert!(!tracker.reported(&key));
        tracker.mark_reported(&key);
        assert!(tracker.reported(&key));
        tracker.forget(&key);
        assert!(tracker.is_empty());
        let later = t0 + Duration::from_secs(10);
        assert_eq!(tracker.waiting_since(&key, later), later, "a new wait");
        assert!(!tracker.reported(&key));
        tracker.retain(|k| k.name != "train");
        assert_eq!(tracker.len(), 0);
    }
}
