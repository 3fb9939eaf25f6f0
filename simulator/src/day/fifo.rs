//! FIFO without queues or priorities, as kube-scheduler orders pods that all
//! have the same priority: waiting pods are tried in arrival order, one that
//! does not fit keeps waiting and later ones may pass it; everything is tried
//! again when something leaves. Quotas, limits and priorities are ignored.

use super::policy::DayPolicy;
use super::state::{DayError, DayState};

#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl DayPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn schedule(&mut self, state: &mut DayState<'_>) -> Result<(), DayError> {
        for job in state.waiting() {
            state.try_place(job)?;
        }
        Ok(())
    }
}
