//! Real workload operators run against a test control plane, so a test can
//! create a custom resource as a user would and watch the operator's own
//! pods reach the scheduler.
//!
//! `tests/control-plane/build-operators.sh` builds each operator from its Go
//! module into
//! `${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/operators/<name>-<version>/<name>`;
//! [`Operator`] names the same binary, and
//! [`ControlPlane::start_operator`] installs its CRDs ([`crate::crds`]),
//! starts it as one more component of the plane (stopped with it, its log
//! beside the others) and waits until it answers its health probe.
//!
//! ```no_run
//! # async fn f(plane: &mut phalanx_e2e::ControlPlane) -> anyhow::Result<()> {
//! use phalanx_e2e::operators::RAY_OPERATOR;
//! let Some(binary) = RAY_OPERATOR.for_test("my_test") else { return Ok(()) };
//! plane.start_operator(&RAY_OPERATOR, &binary).await?;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::or_skip;
use crate::cluster::{single_port, spawn_in_with_env, ControlPlane};
use crate::crds::{self, CrdSource};
use crate::probe;

/// One operator: where `build-operators.sh` puts it, the CRDs it watches,
/// and how it is told to run against a test cluster.
#[derive(Debug, Clone, Copy)]
pub struct Operator {
    /// The binary's name and the component's name (`ray-operator`).
    pub name: &'static str,
    /// The release it is built from; must match `build-operators.sh`.
    pub version: &'static str,
    /// The CRDs it needs installed before it starts: its controllers watch
    /// every kind in them and would not start without them.
    pub crds: CrdSource,
    /// Its command line, given the admin kubeconfig and the address its
    /// health probe must serve on.
    pub args: fn(kubeconfig: &Path, health: SocketAddr) -> Vec<String>,
    /// Its health endpoint on that address (200 when it runs).
    pub ready_path: &'static str,
}

/// KubeRay's ray-operator v1.5.0: RayCluster, RayJob and RayService.
pub const RAY_OPERATOR: Operator = Operator {
    name: "ray-operator",
    version: "v1.5.0",
    crds: crds::KUBERAY,
    args: ray_operator_args,
    ready_path: "/readyz",
};

/// One process, no leader election, no metrics server, no webhooks (those
/// come only with `ENABLE_WEBHOOKS=true`), logs readable in a test's output.
fn ray_operator_args(kubeconfig: &Path, health: SocketAddr) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--enable-leader-election=false".to_owned(),
        "--metrics-addr=0".to_owned(),
        format!("--health-probe-bind-address={health}"),
        "--log-stdout-encoder=console".to_owned(),
    ]
}

/// How long an operator may take to answer its health probe.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `build-operators.sh` stores operators on this machine.
pub fn default_root() -> PathBuf {
    crate::binaries::cache_root().join("operators")
}

impl Operator {
    /// The binary under `root`, whether it exists or not.
    pub fn path_in(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-{}", self.name, self.version))
            .join(self.name)
    }

    /// The binary on this machine, or why not (for [`or_skip`]).
    pub fn locate(&self) -> Result<PathBuf, String> {
        self.locate_in(&default_root())
    }

    /// [`Operator::locate`] under another root.
    pub fn locate_in(&self, root: &Path) -> Result<PathBuf, String> {
        let path = self.path_in(root);
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "no {} {} binary at {} (tests/control-plane/build-operators.sh builds it)",
                self.name,
                self.version,
                path.display()
            ))
        }
    }

    /// For tests: the binary and its CRDs on this machine, or `None` after
    /// printing why the test is skipped (see [`or_skip`]).
    pub fn for_test(&self, test: &str) -> Option<PathBuf> {
        let found = self
            .locate()
            .and_then(|binary| self.crds.locate().map(|_| binary));
        or_skip(test, found)
    }
}

impl ControlPlane {
    /// Installs `operator`'s CRDs, starts `binary` as one more component of
    /// this plane (admin kubeconfig, log in the plane's directory) and waits
    /// until its health probe answers.
    pub async fn start_operator(
        &mut self,
        operator: &Operator,
        binary: &Path,
    ) -> anyhow::Result<()> {
        let files = operator
            .crds
            .locate()
            .map_err(|why| anyhow::anyhow!("starting {}: {why}", operator.name))?;
        crds::install(&self.client(), &files).await?;
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, single_port()?));
        let args = (operator.args)(self.kubeconfig(), health);
        let mut component = spawn_in_with_env(self.dir(), operator.name, binary, &args, &[])?;
        let path = operator.ready_path;
        component
            .wait_ready(READY_TIMEOUT, || probe::http_ok(health, path, ""))
            .await?;
        self.components.push(component);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_sits_in_a_directory_per_operator_and_release() {
        let root = Path::new("/cache/phalanx-e2e/operators");
        assert_eq!(
            RAY_OPERATOR.path_in(root),
            root.join("ray-operator-v1.5.0/ray-operator")
        );
        let why = RAY_OPERATOR.locate_in(root).unwrap_err();
        assert!(why.contains("build-operators.sh"), "{why}");
    }

    #[test]
    fn every_operator_matches_a_pin_of_the_build_script() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/build-operators.sh"),
        )
        .unwrap();
        let pin = format!("\"{} ", RAY_OPERATOR.name);
        let line = script
            .lines()
            .find(|line| line.trim_start().starts_with(&pin))
            .unwrap_or_else(|| panic!("build-operators.sh pins no {pin}"));
        assert!(
            line.contains(&format!("@{} ", RAY_OPERATOR.version)),
            "{line}"
        );
        assert_eq!(RAY_OPERATOR.crds.version, RAY_OPERATOR.version);
    }

    #[test]
    fn the_ray_operator_runs_alone_without_metrics_on_the_given_probe_address() {
        let health = SocketAddr::from((Ipv4Addr::LOCALHOST, 4321));
        let args = (RAY_OPERATOR.args)(Path::new("/plane/admin.kubeconfig"), health);
        assert!(args.contains(&"--kubeconfig=/plane/admin.kubeconfig".to_owned()));
        assert!(args.contains(&"--enable-leader-election=false".to_owned()));
        assert!(args.contains(&"--metrics-addr=0".to_owned()));
        assert!(args.contains(&"--health-probe-bind-address=127.0.0.1:4321".to_owned()));
    }
}
