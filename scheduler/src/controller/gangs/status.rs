//! A scheduler-plugins PodGroup's status, computed from its members.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use phalanx_api::PodGroupStatus;

use super::tracker::GangMemberCounts;

/// PodGroup phases, spelled as scheduler-plugins writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PodGroupPhase {
    Pending,
    Scheduling,
    Scheduled,
    Running,
    Finished,
    Failed,
}

impl PodGroupPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Scheduling => "Scheduling",
            Self::Scheduled => "Scheduled",
            Self::Running => "Running",
            Self::Finished => "Finished",
            Self::Failed => "Failed",
        }
    }
}

impl fmt::Display for PodGroupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The phase, first rule that matches:
///
/// 1. `Finished`: every member succeeded (and at least `min_member` did);
/// 2. `Failed`: a member failed, or the gang timed out before `min_member` were
///    scheduled. Our choice, and not scheduler-plugins': there a Permit timeout
///    only rejects the waiting pods, which go back to the queue, and the phase
///    stays where it was (`Failed` is the controller's final state for failed
///    members). Phalanx holds nothing while a gang waits, so its timeout is a
///    deadline for telling the user, and `Failed` is the phase that shows it in
///    `kubectl get pg`. It is not final: the phase is recomputed at every
///    attempt, so a gang placed later (no longer timed out) moves on;
/// 3. `Running`: at least `min_member` running (or already succeeded);
/// 4. `Scheduled`: at least `min_member` bound;
/// 5. `Pending`: fewer than `min_member` members exist yet;
/// 6. `Scheduling` otherwise.
pub fn podgroup_phase(
    counts: &GangMemberCounts,
    min_member: usize,
    timed_out: bool,
) -> PodGroupPhase {
    // A gang of zero is meaningless; treat it as one so no phase is reached by
    // having nothing.
    let min_member = min_member.max(1);
    if counts.total > 0 && counts.succeeded == counts.total && counts.succeeded >= min_member {
        PodGroupPhase::Finished
    } else if counts.failed > 0 || (timed_out && counts.scheduled < min_member) {
        PodGroupPhase::Failed
    } else if counts.running.saturating_add(counts.succeeded) >= min_member {
        PodGroupPhase::Running
    } else if counts.scheduled >= min_member {
        PodGroupPhase::Scheduled
    } else if counts.total < min_member {
        PodGroupPhase::Pending
    } else {
        PodGroupPhase::Scheduling
    }
}

/// The PodGroup status to write. `scheduleStartTime` is kept from `previous`, or
/// set to `now` once the gang has left `Pending` (enough members exist to try);
/// `occupiedBy` is kept as it is.
pub fn podgroup_status(
    previous: Option<&PodGroupStatus>,
    counts: &GangMemberCounts,
    min_member: usize,
    timed_out: bool,
    now: &Time,
) -> PodGroupStatus {
    let phase = podgroup_phase(counts, min_member, timed_out);
    let schedule_start_time = previous
        .and_then(|status| status.schedule_start_time.clone())
        .or_else(|| (phase != PodGroupPhase::Pending).then(|| now.clone()));
    PodGroupStatus {
        phase: Some(phase.as_str().to_owned()),
        occupied_by: previous.and_then(|status| status.occupied_by.clone()),
        scheduled: count_i32(counts.scheduled),
        running: count_i32(counts.running),
        succeeded: count_i32(counts.succeeded),
        failed: count_i32(counts.failed),
        schedule_start_time,
    }
}

fn count_i32(count: usize) -> i32 {
    i32::try_from(count).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn counts(
        total: usize,
        scheduled: usize,
        running: usize,
        succeeded: usize,
        failed: usize,
    ) -> GangMemberCounts {
        GangMemberCounts {
            total,
            scheduled,
            running,
            succeeded,
            failed,
        }
    }

    #[test]
    fn phases_follow_scheduler_plugins() {
        use PodGroupPhase::*;
        let cases = [
            (counts(0, 0, 0, 0, 0), false, Pending),
            (counts(3, 0, 0, 0, 0), false, Pending),
            (counts(4, 0, 0, 0, 0), false, Scheduling),
            (counts(4, 3, 0, 0, 0), false, Scheduling),
            (counts(4, 4, 0, 0, 0), false, Scheduled),
            (counts(5, 4, 3, 0, 0), false, Scheduled),
            (counts(4, 4, 4, 0, 0), false, Running),
            (counts(4, 4, 2, 2, 0), false, Running),
            (counts(4, 4, 0, 4, 0), false, Finished),
            (counts(4, 4, 3, 0, 1), false, Failed),
            (counts(4, 1, 0, 0, 0), true, Failed),
            (counts(3, 0, 0, 0, 0), true, Failed),
            // Timed out but placed since: not a failure.
            (counts(4, 4, 0, 0, 0), true, Scheduled),
        ];
        for (c, timed_out, expected) in cases {
            assert_eq!(
                podgroup_phase(&c, 4, timed_out),
                expected,
                "{c:?} timed_out={timed_out}"
            );
        }
        assert_eq!(
            podgroup_phase(&counts(0, 0, 0, 0, 0), 0, false),
            Pending,
            "min 0 acts as 1"
        );
    }

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    #[test]
    fn status_counts_and_start_time() {
        let now = time("2025-06-01T12:00:00Z");
        let pending = podgroup_status(None, &counts(1, 0, 0, 0, 0), 2, false, &now);
        assert_eq!(pending.phase.as_deref(), Some("Pending"));
        assert_eq!(
            pending.schedule_start_time, None,
            "not started while too few exist"
        );

        let scheduling = podgroup_status(Some(&pending), &counts(2, 1, 0, 0, 0), 2, false, &now);
        assert_eq!(scheduling.phase.as_deref(), Some("Scheduling"));
        assert_eq!(scheduling.schedule_start_time, Some(now.clone()));
        assert_eq!(scheduling.scheduled, 1);

        let later = time("2025-06-01T12:05:00Z");
        let previous = PodGroupStatus {
            occupied_by: Some("ml/job".to_owned()),
            ..scheduling
        };
        let running = podgroup_status(Some(&previous), &counts(2, 2, 2, 0, 0), 2, false, &later);
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.schedule_start_time, Some(now), "kept from previous");
        assert_eq!(running.occupied_by.as_deref(), Some("ml/job"));
        assert_eq!(
            (
                running.scheduled,
                running.running,
                running.succeeded,
                running.failed
            ),
            (2, 2, 0, 0)
        );
    }

    #[test]
    fn status_saturates_huge_counts() {
        let now = time("2025-06-01T12:00:00Z");
        let status = podgroup_status(
            None,
            &counts(usize::MAX, usize::MAX, 0, 0, 0),
            1,
            false,
            &now,
        );
        assert_eq!(status.scheduled, i32::MAX);
    }
}
