//! FIFO without queues or priorities, as kube-scheduler orders pods that all
//! have the same priority: waiting pods are tried in arrival order, one that
//! does not fit keeps waiting and later ones may pass it; everything is tried
//! again when something leaves. Quotas, limits and priorities are ignored.

use super::fit_queues::FitQueues;
use super::policy::DayPolicy;
use super::state::{DayError, DayState};
use super::workload::JobId;

#[derive(Debug, Default)]
pub struct Fifo {
    /// Waiting jobs by arrival.
    waiting: FitQueues<u64>,
}

impl DayPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn on_arrival(&mut self, state: &DayState<'_>, job: JobId) {
        self.waiting.insert(state, state.job(job).arrival_s, job);
    }

    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        self.waiting.place_in_order(state)?;
        Ok(())
    }
}
