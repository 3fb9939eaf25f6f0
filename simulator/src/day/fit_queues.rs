//! Waiting jobs grouped by what decides whether they fit (a pod's shape and
//! memory, or the gang itself), each group in the policy's order. A pass tries
//! the jobs in that order across groups, and once one job of a group does not
//! fit, skips the rest of the group: nothing was released in between, so they
//! would not fit either. A pass costs the number of groups (the openb trace
//! has 151 shapes), not the number of waiting jobs.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use super::state::{DayError, DayState, FitKey};
use super::workload::JobId;

#[derive(Debug)]
pub struct FitQueues<K> {
    groups: HashMap<FitKey, BTreeSet<(K, JobId)>>,
    len: usize,
}

impl<K> Default for FitQueues<K> {
    fn default() -> Self {
        FitQueues {
            groups: HashMap::new(),
            len: 0,
        }
    }
}

impl<K: Ord + Copy> FitQueues<K> {
    pub fn insert(&mut self, state: &DayState<'_>, order: K, id: JobId) {
        if self
            .groups
            .entry(state.fit_key(id))
            .or_default()
            .insert((order, id))
        {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, state: &DayState<'_>, order: K, id: JobId) {
        let key = state.fit_key(id);
        if let Some(group) = self.groups.get_mut(&key) {
            if group.remove(&(order, id)) {
                self.len -= 1;
            }
            if group.is_empty() {
                self.groups.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first job of every group not known not to fit, as a min-heap.
    pub fn heads(&self, state: &DayState<'_>) -> BinaryHeap<Reverse<(K, JobId)>> {
        // Job ids are unique, so (order, id) orders the heads totally.
        self.groups
            .iter()
            .filter(|(key, _)| !state.known_unfit(key))
            .filter_map(|(_, group)| group.first().map(|&head| Reverse(head)))
            .collect()
    }

    /// Removes a job (just placed) and returns the next of its group.
    pub fn take(&mut self, state: &DayState<'_>, order: K, id: JobId) -> Option<(K, JobId)> {
        let key = state.fit_key(id);
        let group = self.groups.get_mut(&key)?;
        if group.remove(&(order, id)) {
            self.len -= 1;
        }
        let next = group.first().copied();
        if next.is_none() {
            self.groups.remove(&key);
        }
        next
    }

    /// The first job of every group, in order (those that may preempt).
    pub fn heads_in_order(&self) -> Vec<(K, JobId)> {
        let mut heads: Vec<(K, JobId)> = self
            .groups
            .values()
            .filter_map(|group| group.first().copied())
            .collect();
        heads.sort_unstable();
        heads
    }

    /// Tries the jobs in order until every group has placed all its jobs or
    /// met one that does not fit; placed jobs leave the queues and are returned.
    pub fn place_in_order(&mut self, state: &mut DayState<'_>) -> Result<Vec<JobId>, DayError> {
        let mut heads = self.heads(state);
        let mut placed = Vec::new();
        while let Some(Reverse((order, id))) = heads.pop() {
            if !state.try_place(id)? {
                continue;
            }
            placed.push(id);
            if let Some(next) = self.take(state, order, id) {
                heads.push(Reverse(next));
            }
        }
        Ok(placed)
    }
}
