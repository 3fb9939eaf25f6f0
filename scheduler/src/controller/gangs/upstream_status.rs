//! The `PodGroupInitiallyScheduled` condition of a `scheduling.k8s.io/v1beta1`
//! PodGroup, as the API defines it: `True` (reason `Scheduled`) once the gang's
//! minimum is bound, and then never back to `False`; `False` with
//! reason `Unschedulable` (the message says why, as the pods' events do) while
//! it cannot be placed, or `SchedulerError` for a group that is invalid.
//!
//! Pure: the loop hands in the condition the watch last showed and the one it
//! last handed to the writer, and gets the condition to write, if any.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const CONDITION_INITIALLY_SCHEDULED: &str = "PodGroupInitiallyScheduled";
pub const REASON_SCHEDULED: &str = "Scheduled";
pub const REASON_UNSCHEDULABLE: &str = "Unschedulable";
pub const REASON_SCHEDULER_ERROR: &str = "SchedulerError";

/// The API server refuses a condition message longer than this.
const MAX_MESSAGE_BYTES: usize = 32_768;

/// What a scheduling decision for the gang ended in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupOutcome {
    /// Its minimum is bound.
    Scheduled(String),
    /// It cannot be placed now.
    Unschedulable(String),
    /// The group itself is invalid.
    SchedulerError(String),
}

/// The condition to write after `outcome`, or `None` when nothing changes:
/// the group is already `True` (terminal), or already says exactly this.
/// `current`: what was last handed to the writer, else what the watch shows.
pub fn initially_scheduled(
    current: Option<&Condition>,
    outcome: &GroupOutcome,
    generation: Option<i64>,
    now: &Time,
) -> Option<Condition> {
    if current.is_some_and(|c| c.status == "True") {
        return None;
    }
    let (status, reason, message) = match outcome {
        GroupOutcome::Scheduled(m) => ("True", REASON_SCHEDULED, m),
        GroupOutcome::Unschedulable(m) => ("False", REASON_UNSCHEDULABLE, m),
        GroupOutcome::SchedulerError(m) => ("False", REASON_SCHEDULER_ERROR, m),
    };
    let message = truncate(message);
    if let Some(c) = current {
        if c.status == status && c.reason == reason && c.message == message {
            return None;
        }
    }
    let last_transition_time = match current {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    Some(Condition {
        type_: CONDITION_INITIALLY_SCHEDULED.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: generation,
    })
}

/// The condition of that type among `conditions`.
pub fn find_initially_scheduled(conditions: Option<&[Condition]>) -> Option<&Condition> {
    conditions?
        .iter()
        .find(|c| c.type_ == CONDITION_INITIALLY_SCHEDULED)
}

fn truncate(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn unschedulable(message: &str) -> GroupOutcome {
        GroupOutcome::Unschedulable(message.to_owned())
    }

    #[test]
    fn first_decision_writes_the_condition() {
        let c = initially_scheduled(None, &unschedulable("0/3 nodes"), Some(2), &at(10)).unwrap();
        assert_eq!(c.type_, "PodGroupInitiallyScheduled");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Unschedulable")
        );
        assert_eq!(c.message, "0/3 nodes");
        assert_eq!(c.observed_generation, Some(2));
        assert_eq!(c.last_transition_time, at(10));
    }

    #[test]
    fn same_condition_is_not_written_again_and_a_new_message_keeps_the_transition_time() {
        let first = initially_scheduled(None, &unschedulable("a"), None, &at(10)).unwrap();
        assert_eq!(
            initially_scheduled(Some(&first), &unschedulable("a"), None, &at(20)),
            None
        );
        let second = initially_scheduled(Some(&first), &unschedulable("b"), None, &at(20)).unwrap();
        assert_eq!(second.message, "b");
        assert_eq!(second.last_transition_time, at(10), "still False");
        let error = GroupOutcome::SchedulerError("spec.x bad".to_owned());
        let third = initially_scheduled(Some(&second), &error, None, &at(30)).unwrap();
        assert_eq!(third.reason, "SchedulerError");
    }

    #[test]
    fn true_is_terminal() {
        let before = initially_scheduled(None, &unschedulable("a"), None, &at(10)).unwrap();
        let scheduled = GroupOutcome::Scheduled("placed 4 of 4".to_owned());
        let done = initially_scheduled(Some(&before), &scheduled, None, &at(20)).unwrap();
        assert_eq!(
            (done.status.as_str(), done.reason.as_str()),
            ("True", "Scheduled")
        );
        assert_eq!(done.last_transition_time, at(20));
        assert_eq!(
            initially_scheduled(Some(&done), &unschedulable("evicted"), None, &at(30)),
            None
        );
        assert_eq!(
            initially_scheduled(Some(&done), &scheduled, None, &at(30)),
            None
        );
    }

    #[test]
    fn long_messages_are_cut_to_what_the_server_accepts() {
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        let c = initially_scheduled(None, &unschedulable(&long), None, &at(1)).unwrap();
        assert!(c.message.len() <= MAX_MESSAGE_BYTES);
    }
}
