//! A test hook that ends the process at a chosen point inside a gang bind, so
//! that the end-to-end tests can kill a leader deterministically between the
//! plan write and each Binding (`tests/tests/gang_failover.rs`).
//!
//! Set only by the test harness: `PHALANX_FAULT_EXIT_AFTER_GANG_BINDINGS=k`
//! makes the process exit at once (no shutdown, no Lease release: a crash)
//! after its k-th successful gang-member Binding, or right after a gang's plan
//! is written when k is 0. Unset, it costs one branch per gang Binding. Use it
//! with `binding.concurrency: 1` so that no other Binding is in flight when the
//! k-th returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The environment variable read at start.
pub const EXIT_AFTER_GANG_BINDINGS_ENV: &str = "PHALANX_FAULT_EXIT_AFTER_GANG_BINDINGS";

/// The exit status of a process the hook ended, so a test can tell it apart.
pub const FAULT_EXIT_CODE: i32 = 86;

/// Where to end the process, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct GangBindFault {
    exit_after: Option<usize>,
    bound: Arc<AtomicUsize>,
}

impl GangBindFault {
    /// From [`EXIT_AFTER_GANG_BINDINGS_ENV`]; a value that is not a count is
    /// logged and ignored (the hook is for tests, never worth refusing to start).
    pub fn from_env() -> Self {
        let value = std::env::var(EXIT_AFTER_GANG_BINDINGS_ENV).ok();
        match Self::parse(value.as_deref()) {
            Ok(fault) => {
                if let Some(k) = fault.exit_after {
                    tracing::warn!(
                        "test hook {EXIT_AFTER_GANG_BINDINGS_ENV}={k}: this process will exit \
                         inside its first gang bind"
                    );
                }
                fault
            }
            Err(error) => {
                tracing::error!("{error}; the test hook is off");
                Self::default()
            }
        }
    }

    /// The hook for the variable's `value` (`None`: unset).
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        let exit_after = match value.map(str::trim) {
            None | Some("") => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                format!("{EXIT_AFTER_GANG_BINDINGS_ENV}={v:?} is not a count of Bindings")
            })?),
        };
        Ok(GangBindFault {
            exit_after,
            bound: Arc::default(),
        })
    }

    /// A gang's plan was written on every member.
    pub fn plan_written(&self, gang: &str) {
        if self.exit_after == Some(0) {
            exit_now(&format!("after writing the plan of gang {gang}"));
        }
    }

    /// A gang member's Binding was accepted.
    pub fn member_bound(&self, pod: &str) {
        let Some(k) = self.exit_after else {
            return;
        };
        let n = self.bound.fetch_add(1, Ordering::SeqCst) + 1;
        if n == k {
            exit_now(&format!("after gang Binding {n} (pod {pod})"));
        }
    }
}

fn exit_now(point: &str) -> ! {
    // stderr is unbuffered: the line is in the log before the process is gone.
    eprintln!("{EXIT_AFTER_GANG_BINDINGS_ENV}: exiting {point}");
    std::process::exit(FAULT_EXIT_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_or_empty_is_off_and_garbage_is_refused() {
        assert_eq!(GangBindFault::parse(None).unwrap().exit_after, None);
        assert_eq!(GangBindFault::parse(Some(" ")).unwrap().exit_after, None);
        assert_eq!(GangBindFault::parse(Some("3")).unwrap().exit_after, Some(3));
        let err = GangBindFault::parse(Some("-1")).unwrap_err();
        assert!(err.contains(EXIT_AFTER_GANG_BINDINGS_ENV), "{err}");
    }

    #[test]
    fn off_never_counts_or_exits() {
        let off = GangBindFault::default();
        off.plan_written("ml/train");
        off.member_bound("ml/train-0");
        assert_eq!(off.bound.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn counts_bindings_before_the_chosen_one() {
        let fault = GangBindFault::parse(Some("3")).unwrap();
        fault.plan_written("ml/train");
        fault.member_bound("ml/train-0");
        fault.member_bound("ml/train-1");
        assert_eq!(fault.bound.load(Ordering::SeqCst), 2);
    }
}
