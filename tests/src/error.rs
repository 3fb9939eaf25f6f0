//! The harness's error type: every failure names the component and, where a
//! process is involved, carries the tail of its log, so a broken control
//! plane explains itself in the test output.

use std::path::PathBuf;
use std::time::Duration;

/// Errors from starting, probing or driving the control plane.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The binaries built by `tests/control-plane/ensure.sh` are not there.
    #[error(
        "control-plane binaries missing in {}: {}; build them with tests/control-plane/ensure.sh",
        dir.display(),
        missing.join(", ")
    )]
    BinariesMissing { dir: PathBuf, missing: Vec<String> },

    /// A Phalanx binary (`phalanx-scheduler`, ...) has not been built.
    #[error(
        "{name} binary not found (looked at {}); build it with `cargo build --bin {name}` \
         (add --release for the benchmark) or point {env_var} at it",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    BinaryMissing {
        name: String,
        env_var: String,
        searched: Vec<PathBuf>,
    },

    /// A Phalanx binary in the target directory is older than its sources.
    #[error("{0}")]
    StaleBinary(crate::freshness::Stale),

    /// A component's process could not be started at all.
    #[error("could not start {component} ({}): {source}", program.display())]
    Spawn {
        component: String,
        program: PathBuf,
        source: std::io::Error,
    },

    /// A component's process exited while the harness waited for it.
    #[error("{component} exited before it was ready ({status})\n--- last lines of {} ---\n{tail}", log.display())]
    Exited {
        component: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// A component kept running but did not become ready before its deadline.
    #[error("{component} not ready within {timeout:?} (last probe: {last_probe})\n--- last lines of {} ---\n{tail}", log.display())]
    NotReady {
        component: String,
        timeout: Duration,
        last_probe: String,
        log: PathBuf,
        tail: String,
    },

    /// A condition on cluster objects was not reached before its deadline.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },

    /// File or socket work around the processes failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// Certificate or key generation failed.
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),

    /// The Kubernetes client could not be configured.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),

    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias used throughout the harness.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
