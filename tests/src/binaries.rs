//! Where the control-plane binaries live, and whether tests may run.
//!
//! `tests/control-plane/build.sh` builds them once per machine into
//! `${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/<k8s-version>/bin`;
//! this module computes the same path so tests need no configuration.

use std::path::{Path, PathBuf};

use crate::error::{HarnessError, Result};

/// The Kubernetes release the binaries are built from; must match
/// `K8S_VERSION` in `tests/control-plane/versions.env` and the k8s-openapi feature.
pub const K8S_VERSION: &str = "v1.37.2";

/// The directory beside the binaries that holds KWOK's stages: from v0.8 KWOK
/// runs only the stages it is given (`tests/control-plane/fetch-kwok-stages.sh`).
const KWOK_STAGES: &str = "kwok-stages";

fn kwok_stage_files(bin_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bin_dir.join(KWOK_STAGES))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files
}

/// Environment variable that makes missing binaries a failure instead of a skip.
pub const REQUIRE_ENV: &str = "PHALANX_E2E";

/// Overrides the binary directory entirely (for binaries built elsewhere).
pub const BIN_DIR_ENV: &str = "PHALANX_E2E_BIN_DIR";

const NAMES: [&str; 5] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
];

/// Paths of the five control-plane binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The directory the build script writes to on this machine.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
            return PathBuf::from(dir);
        }
        cache_root().join(K8S_VERSION).join("bin")
    }

    /// Finds all binaries in [`Binaries::default_dir`].
    pub fn locate() -> Result<Self> {
        Self::in_dir(Self::default_dir())
    }

    /// Finds all binaries in `dir`, naming every one that is missing (and
    /// KWOK's stages, which `fetch-kwok-stages.sh` puts beside them).
    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        let mut missing: Vec<String> = NAMES
            .iter()
            .filter(|name| !is_executable(&dir.join(name)))
            .map(|name| (*name).to_owned())
            .collect();
        if kwok_stage_files(&dir).is_empty() {
            missing.push(KWOK_STAGES.to_owned());
        }
        if missing.is_empty() {
            Ok(Self { dir })
        } else {
            Err(HarnessError::BinariesMissing { dir, missing })
        }
    }

    /// For tests: the binaries, or `None` after printing why the test is
    /// skipped (see [`or_skip`]).
    pub fn for_test(test: &str) -> Option<Self> {
        or_skip(test, Self::locate().map_err(|err| err.to_string()))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }
    pub fn kube_scheduler(&self) -> PathBuf {
        self.dir.join("kube-scheduler")
    }
    /// KWOK's stage files (`--config`), in a stable order.
    pub fn kwok_stages(&self) -> Vec<PathBuf> {
        kwok_stage_files(&self.dir)
    }
    pub fn kwok(&self) -> PathBuf {
        self.dir.join("kwok")
    }
}

/// The per-machine cache the scripts in `tests/control-plane/` fill.
pub(crate) fn cache_root() -> PathBuf {
    match std::env::var_os("PHALANX_E2E_CACHE") {
        Some(root) => PathBuf::from(root),
        None => xdg_cache_home().join("phalanx-e2e"),
    }
}

/// The prometheus-operator release whose CRDs `tests/control-plane/fetch-crds.sh`
/// fetches.
pub const PROMETHEUS_OPERATOR_VERSION: &str = crate::crds::PROMETHEUS_OPERATOR.version;

/// prometheus-operator's CRDs the chart's optional objects use (ServiceMonitor,
/// PrometheusRule), as `fetch-crds.sh` stores them.
pub fn locate_prometheus_operator_crds() -> std::result::Result<Vec<PathBuf>, String> {
    crate::crds::PROMETHEUS_OPERATOR.locate()
}

/// Whether `PHALANX_E2E` asks for the end-to-end tests to run (set, not empty, not `0`).
pub(crate) fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

fn xdg_cache_home() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache")
        }
    }
}

/// For tests: what `found` found, or `None` after printing why the test is
/// skipped (`skipped: <test>: <why>`, on the real stdout and stderr, shown
/// even for a passing test; see [`crate::report`]). With `PHALANX_E2E` set, a
/// missing tool panics instead, so CI cannot pass by skipping everything.
pub fn or_skip<T>(test: &str, found: std::result::Result<T, String>) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(why) if required() => panic!("{test}: {REQUIRE_ENV} is set but {why}"),
        Err(why) => {
            crate::report::skipped(
                test,
                &format!("{why} (set {REQUIRE_ENV}=1 to make this a failure)"),
            );
            None
        }
    }
}

/// For tests: a Phalanx binary `locate` found, or `None` after printing why
/// the test is skipped (see [`or_skip`]). A binary older than its sources is
/// a failure whether `PHALANX_E2E` is set or not: the test would otherwise
/// run yesterday's code.
pub fn binary_for_test(test: &str, located: Result<PathBuf>) -> Option<PathBuf> {
    match located {
        Err(HarnessError::StaleBinary(stale)) => panic!("{test}: {stale}"),
        other => or_skip(test, other.map_err(|err| err.to_string())),
    }
}

/// The workspace root (the harness's crate, tests/, is one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A binary of this workspace (`phalanx-scheduler`, `phalanx-autoscaler`,
/// ...): `$env_var` when set, else the first of
/// [`workspace_binary_candidates`] that is executable. One in a target
/// directory of this workspace must not be older than its sources
/// ([`crate::freshness`]); one elsewhere is taken as it is.
pub fn locate_workspace_binary(name: &str, env_var: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(env_var) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !is_executable(&path) {
                return Err(HarnessError::BinaryMissing {
                    name: name.to_owned(),
                    env_var: env_var.to_owned(),
                    searched: vec![path],
                });
            }
            path
        }
        None => {
            let searched = workspace_binary_candidates(name);
            match searched.iter().find(|path| is_executable(path)) {
                Some(path) => path.clone(),
                None => {
                    return Err(HarnessError::BinaryMissing {
                        name: name.to_owned(),
                        env_var: env_var.to_owned(),
                        searched,
                    })
                }
            }
        }
    };
    crate::freshness::ensure_fresh_if_built_here(&path)?;
    Ok(path)
}

/// Where a binary of this workspace (`phalanx-scheduler`, ...) may have been
/// built, most likely first: next to the running test executable (a test runs
/// from target/<profile>/deps/, a binary sits in target/<profile>/, so the one
/// built with the same profile), then in `$CARGO_TARGET_DIR` or the
/// workspace's `target/`, release before debug.
pub fn workspace_binary_candidates(name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1).take(2) {
            out.push(dir.join(name));
        }
    }
    let mut roots: Vec<PathBuf> = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(dir) = option_env!("CARGO_TARGET_DIR") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(workspace_root().join("target"));
    for root in roots {
        for profile in ["release", "debug"] {
            out.push(root.join(profile).join(name));
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_missing_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("etcd"), "").expect("write");
        // Present but not executable counts as missing.
        let Err(HarnessError::BinariesMissing { missing, .. }) =
            Binaries::in_dir(dir.path().to_owned())
        else {
            panic!("an empty directory has no binaries");
        };
        let mut expected: Vec<&str> = NAMES.to_vec();
        expected.push(KWOK_STAGES);
        assert_eq!(missing, expected, "KWOK's stages are named too");
    }

    #[test]
    fn finds_executables() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        for name in NAMES {
            let path = dir.path().join(name);
            std::fs::write(&path, "").expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let stages = dir.path().join(KWOK_STAGES);
        std::fs::create_dir(&stages).expect("mkdir");
        for name in ["pod-ready.yaml", "node-initialize.yaml", "README.md"] {
            std::fs::write(stages.join(name), "").expect("write");
        }
        let binaries = Binaries::in_dir(dir.path().to_owned()).expect("all present");
        assert_eq!(binaries.kwok(), dir.path().join("kwok"));
        assert_eq!(
            binaries.kwok_stages(),
            vec![
                stages.join("node-initialize.yaml"),
                stages.join("pod-ready.yaml")
            ],
            "only the YAML files, sorted"
        );
    }
}
