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

    /// Tries the jobs in order until every group has placed all its jobs or
    /// met one that does not fit; placed jobs leave the queues and are returned.
    pub fn place_in_order(&mut self, state: &mut DayState<'_>) -> Result<Vec<JobId>, DayError> {
        // Job ids are unique, so (order, id) orders the heads totally.
        let mut heads: BinaryHeap<Reverse<(K, JobId)>> = self
            .groups
            .iter()
            .filter(|(key, _)| !state.known_unfit(key))
            .filter_map(|(_, group)| group.first().map(|&head| Reverse(head)))
            .collect();
        let mut placed = Vec::new();
        while let Some(Reverse((order, id))) = heads.pop() {
            if !state.try_place(id)? {
                continue;
            }
            placed.push(id);
            let key = state.fit_key(id);
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            group.remove(&(order, id));
            self.len -= 1;
            match group.first() {
                Some(&next) => heads.push(Reverse(next)),
                None => {
                    self.groups.remove(&key);
                }
            }
        }
        Ok(placed)
    }
}
