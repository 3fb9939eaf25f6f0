//! Other projects' CRDs on a test cluster: KubeRay, JobSet, LeaderWorkerSet,
//! Kubeflow Trainer, the Kubeflow training-operator and prometheus-operator.
//!
//! `tests/control-plane/fetch-crds.sh` downloads them from the Go module
//! proxy into
//! `${PHALANX_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/phalanx-e2e}/crds/<project>-<version>/`;
//! [`CrdSource`] names the same files, [`CrdSource::locate`] finds them and
//! [`install`] creates them on a cluster and waits until they are served, so
//! a test can create the custom resources as a user would.
//!
//! ```no_run
//! # async fn f(client: &kube::Client) -> anyhow::Result<()> {
//! use phalanx_e2e::crds::{self, KUBERAY};
//! let Some(files) = phalanx_e2e::binaries::or_skip("my_test", KUBERAY.locate()) else { return Ok(()) };
//! crds::install(client, &files).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::Api;

use crate::wait::until;

/// One project's pinned CRD files, as `fetch-crds.sh` stores them; each
/// constant must match a line of `projects` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrdSource {
    /// The cache directory's name before the version (`kuberay`).
    pub project: &'static str,
    /// The release the files come from (`v1.5.0`).
    pub version: &'static str,
    /// The files, one CRD each.
    pub files: &'static [&'static str],
}

/// prometheus-operator's ServiceMonitor and PrometheusRule, for the Helm
/// chart's optional objects.
pub const PROMETHEUS_OPERATOR: CrdSource = CrdSource {
    project: "prometheus-operator",
    version: "v0.79.2",
    files: &[
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ],
};

/// KubeRay's RayCluster, RayJob and RayService (ray-operator v1.5.0, whose
/// controllers watch all three: it does not start without each CRD).
pub const KUBERAY: CrdSource = CrdSource {
    project: "kuberay",
    version: "v1.5.0",
    files: &[
        "ray.io_rayclusters.yaml",
        "ray.io_rayjobs.yaml",
        "ray.io_rayservices.yaml",
    ],
};

/// JobSet's JobSet.
pub const JOBSET: CrdSource = CrdSource {
    project: "jobset",
    version: "v0.11.0",
    files: &["jobset.x-k8s.io_jobsets.yaml"],
};

/// LeaderWorkerSet's LeaderWorkerSet.
pub const LWS: CrdSource = CrdSource {
    project: "lws",
    version: "v0.7.0",
    files: &["leaderworkerset.x-k8s.io_leaderworkersets.yaml"],
};

/// Kubeflow Trainer's TrainJob.
pub const TRAINER: CrdSource = CrdSource {
    project: "trainer",
    version: "v2.0.0",
    files: &["trainer.kubeflow.org_trainjobs.yaml"],
};

/// The Kubeflow training-operator's PyTorchJob, TFJob and MPIJob.
pub const TRAINING_OPERATOR: CrdSource = CrdSource {
    project: "training-operator",
    version: "v1.8.1",
    files: &[
        "kubeflow.org_pytorchjobs.yaml",
        "kubeflow.org_tfjobs.yaml",
        "kubeflow.org_mpijobs.yaml",
    ],
};

/// Every workload operator's CRDs (not prometheus-operator's, which only
/// the chart tests need).
pub const WORKLOAD_OPERATORS: [CrdSource; 5] = [KUBERAY, JOBSET, LWS, TRAINER, TRAINING_OPERATOR];

/// Where `fetch-crds.sh` stores the CRDs on this machine.
pub fn default_root() -> PathBuf {
    crate::binaries::cache_root().join("crds")
}

impl CrdSource {
    /// This project's directory under `root`.
    pub fn dir_in(&self, root: &Path) -> PathBuf {
        root.join(format!("{}-{}", self.project, self.version))
    }

    /// This project's files under `root`, whether they exist or not.
    pub fn paths_in(&self, root: &Path) -> Vec<PathBuf> {
        let dir = self.dir_in(root);
        self.files.iter().map(|file| dir.join(file)).collect()
    }

    /// This project's files on this machine, or why not, naming every one
    /// that is missing (for [`crate::binaries::or_skip`]).
    pub fn locate(&self) -> Result<Vec<PathBuf>, String> {
        self.locate_in(&default_root())
    }

    /// [`CrdSource::locate`] under another root.
    pub fn locate_in(&self, root: &Path) -> Result<Vec<PathBuf>, String> {
        let paths = self.paths_in(root);
        let missing: Vec<String> = paths
            .iter()
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(paths)
        } else {
            Err(format!(
                "{} {} CRDs missing: {} (tests/control-plane/fetch-crds.sh fetches them)",
                self.project,
                self.version,
                missing.join(", ")
            ))
        }
    }
}

/// Reads one CRD file.
pub fn read(path: &Path) -> anyhow::Result<CustomResourceDefinition> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading CRD file {}", path.display()))?;
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("parsing {} as a CustomResourceDefinition", path.display()))
}

/// The field manager the harness applies CRDs as.
const FIELD_MANAGER: &str = "phalanx-e2e";

/// How long a CRD may take to become Established and served.
const SERVED_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates (server-side applies) the CRDs in `files` and waits until each is
/// Established and its resource lists, so custom resources can be created at
/// once. Returns their names (`plural.group`).
pub async fn install(client: &kube::Client, files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Applied, not created: a second install (or a CRD the test already
    // holds) is no error; forced, since nothing else manages them here.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut installed = Vec::with_capacity(files.len());
    for file in files {
        let mut crd = read(file)?;
        // Server-side apply rejects a body that carries these.
        crd.metadata.managed_fields = None;
        crd.metadata.resource_version = None;
        crd.status = None;
        let name = crd
            .metadata
            .name
            .clone()
            .with_context(|| format!("{}: metadata.name missing", file.display()))?;
        crds.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
        installed.push(crd);
    }
    let names: Vec<String> = installed
        .iter()
        .filter_map(|crd| crd.metadata.name.clone())
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    crate::wait::wait_crds_established(client, &name_refs, SERVED_TIMEOUT).await?;
    // Discovery can lag Established by a moment: wait until each resource
    // answers a list.
    for crd in &installed {
        let resource = served_resource(crd)?;
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let what = format!("{}.{} served", resource.plural, resource.group);
        until(&what, SERVED_TIMEOUT, || async {
            Ok(match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Err(e.message),
                Err(e) => return Err(e.into()),
            })
        })
        .await?;
    }
    Ok(names)
}

/// The resource a CRD serves at its storage version.
fn served_resource(crd: &CustomResourceDefinition) -> anyhow::Result<ApiResource> {
    let spec = &crd.spec;
    let version = spec
        .versions
        .iter()
        .find(|v| v.storage)
        .or_else(|| spec.versions.first())
        .with_context(|| format!("CRD {:?} lists no versions", crd.metadata.name))?;
    let gvk = GroupVersionKind::gvk(&spec.group, &version.name, &spec.names.kind);
    Ok(ApiResource::from_gvk_with_plural(&gvk, &spec.names.plural))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_sit_in_one_directory_per_project_and_release() {
        let root = Path::new("/cache/phalanx-e2e/crds");
        assert_eq!(
            KUBERAY.paths_in(root),
            vec![
                root.join("kuberay-v1.5.0/ray.io_rayclusters.yaml"),
                root.join("kuberay-v1.5.0/ray.io_rayjobs.yaml"),
                root.join("kuberay-v1.5.0/ray.io_rayservices.yaml"),
            ]
        );
        assert_eq!(
            TRAINING_OPERATOR.dir_in(root),
            root.join("training-operator-v1.8.1")
        );
    }

    #[test]
    fn locating_names_every_missing_file_and_the_script_that_fetches_it() {
        let root = tempfile::tempdir().unwrap();
        let dir = KUBERAY.dir_in(root.path());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ray.io_rayclusters.yaml"), "kind: x").unwrap();
        let why = KUBERAY.locate_in(root.path()).unwrap_err();
        assert!(why.contains("ray.io_rayjobs.yaml"), "{why}");
        assert!(!why.contains("ray.io_rayclusters.yaml"), "{why}");
        assert!(why.contains("fetch-crds.sh"), "{why}");

        std::fs::write(dir.join("ray.io_rayjobs.yaml"), "kind: x").unwrap();
        std::fs::write(dir.join("ray.io_rayservices.yaml"), "kind: x").unwrap();
        assert_eq!(
            KUBERAY.locate_in(root.path()).unwrap(),
            KUBERAY.paths_in(root.path())
        );
    }

    #[test]
    fn every_source_matches_a_pin_of_the_fetch_script() {
        let script = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("control-plane/fetch-crds.sh"),
        )
        .unwrap();
        for source in WORKLOAD_OPERATORS.iter().chain([&PROMETHEUS_OPERATOR]) {
            let dir = format!("\"{}-{} ", source.project, source.version);
            let line = script
                .lines()
                .find(|line| line.trim_start().starts_with(&dir))
                .unwrap_or_else(|| panic!("fetch-crds.sh pins no {dir}"));
            for file in source.files {
                assert!(line.contains(file), "{line} lacks {file}");
            }
        }
    }
}
