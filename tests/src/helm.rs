//! The Helm chart (`deploy/helm/phalanx`) on the harness: rendering, linting
//! and installing it through the real Helm engine, checking every rendered
//! object with the apiserver's own validation, applying manifests, and running
//! Phalanx binaries as local processes with exactly the permissions the chart
//! gives their ServiceAccount.
//!
//! The Helm engine is Helm v4's Go SDK as PyPI's `helm-python-sdk` ships it
//! (no helm binary); `deploy/helm/tools/helmctl.py` drives it. It runs in a
//! virtualenv that `scripts/test-all.sh` creates once per machine:
//!
//! ```text
//! python3 -m venv ~/.cache/phalanx-helm/venv
//! ~/.cache/phalanx-helm/venv/bin/pip install helm-python-sdk==0.2.2
//! ```
//!
//! `$PHALANX_HELM_PYTHON` names another interpreter that has it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::Api;

use crate::binaries::{binary_for_test, or_skip};
use crate::cluster::{single_port, spawn_in_with_env, ControlPlane};
use crate::error::{HarnessError, Result};
use crate::probe;
use crate::tokens::{request_token, token_request};

/// Names the Python interpreter that has `helm-python-sdk`.
pub const PYTHON_ENV: &str = "PHALANX_HELM_PYTHON";
/// The field manager of objects this module applies.
pub const FIELD_MANAGER: &str = "phalanx-e2e";

/// Where `scripts/test-all.sh` puts the virtualenv.
pub fn default_python() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("phalanx-helm/venv/bin/python")
}

pub use crate::binaries::{locate_workspace_binary, workspace_root};

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("deploy/helm/phalanx")
}

/// A failure of the Helm engine, with its message (schema and template errors
/// name the key or template).
#[derive(Debug, thiserror::Error)]
#[error("helm {command}: {message}")]
pub struct HelmError {
    pub command: String,
    pub message: String,
}

/// One rendered Kubernetes object and the template it came from.
#[derive(Debug, Clone)]
pub struct RenderedObject {
    pub template: String,
    pub object: serde_json::Value,
}

impl RenderedObject {
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or_default()
    }

    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `Kind/name`, for messages.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// A rendered chart: its objects and NOTES.txt.
#[derive(Debug, Clone, Default)]
pub struct RenderedChart {
    pub objects: Vec<RenderedObject>,
    pub notes: String,
}

impl RenderedChart {
    /// The object of `kind` named `name`.
    pub fn get(&self, kind: &str, name: &str) -> Option<&serde_json::Value> {
        self.objects
            .iter()
            .find(|o| o.kind() == kind && o.name() == name)
            .map(|o| &o.object)
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&RenderedObject> {
        self.objects.iter().filter(|o| o.kind() == kind).collect()
    }
}

/// Splits multi-document YAML into objects; empty documents are dropped.
/// Strict YAML: a duplicated key is an error, as it is for kubectl.
pub fn parse_manifests(
    template: &str,
    text: &str,
) -> std::result::Result<Vec<RenderedObject>, String> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        // Through YAML's own Value, which refuses duplicated keys (a JSON map
        // would keep the last one silently).
        let yaml = serde_yaml_ng::Value::deserialize(document)
            .map_err(|e| format!("{template}: not valid YAML: {e}"))?;
        let value = serde_json::to_value(&yaml)
            .map_err(|e| format!("{template}: not representable as JSON: {e}"))?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(format!("{template}: a document is not an object: {value}"));
        }
        out.push(RenderedObject {
            template: template.to_owned(),
            object: value,
        });
    }
    Ok(out)
}

/// The Helm engine, through `deploy/helm/tools/helmctl.py`.
#[derive(Debug, Clone)]
pub struct HelmTool {
    python: PathBuf,
    script: PathBuf,
    chart: PathBuf,
    /// Values files; one directory per tool (and its clones), removed with the
    /// last of them, so that tests running side by side never share it.
    scratch: std::sync::Arc<tempfile::TempDir>,
}

impl HelmTool {
    /// The interpreter from `$PHALANX_HELM_PYTHON` or the default virtualenv,
    /// checked to import `helm_python`.
    pub fn locate() -> std::result::Result<Self, String> {
        let python = std::env::var_os(PYTHON_ENV).map_or_else(default_python, PathBuf::from);
        let check = Command::new(&python)
            .args(["-c", "import helm_python"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
        if !check.status.success() {
            return Err(format!(
                "{} cannot import helm_python: {}",
                python.display(),
                String::from_utf8_lossy(&check.stderr).trim()
            ));
        }
        let scratch = tempfile::Builder::new()
            .prefix("phalanx-helm-")
            .tempdir()
            .map_err(|e| format!("creating a scratch directory: {e}"))?;
        Ok(Self {
            python,
            script: workspace_root().join("deploy/helm/tools/helmctl.py"),
            chart: chart_dir(),
            scratch: std::sync::Arc::new(scratch),
        })
    }

    /// For tests: the tool, or `None` after printing why the test is skipped.
    pub fn for_test(test: &str) -> Option<Self> {
        or_skip(
            test,
            Self::locate().map_err(|err| {
                format!("the Helm engine is missing: {err} (scripts/test-all.sh installs it)")
            }),
        )
    }

    /// Runs one helmctl command with `values` (written to a file) and returns
    /// its JSON output.
    fn run(
        &self,
        command: &str,
        values: &serde_json::Value,
        extra: &[String],
    ) -> std::result::Result<serde_json::Value, HelmError> {
        let fail = |message: String| HelmError {
            command: command.to_owned(),
            message,
        };
        let file = tempfile::Builder::new()
            .prefix("values-")
            .suffix(".json")
            .tempfile_in(self.scratch.path())
            .map_err(|e| fail(format!("values file: {e}")))?;
        std::fs::write(file.path(), values.to_string())
            .map_err(|e| fail(format!("writing values: {e}")))?;
        let output = Command::new(&self.python)
            .arg(&self.script)
            .arg(command)
            .arg("--chart")
            .arg(&self.chart)
            .arg("--values")
            .arg(file.path())
            .args(extra)
            .output()
            .map_err(|e| fail(format!("running {}: {e}", self.python.display())))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let message = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .map_or_else(|| stderr.trim().to_owned(), str::to_owned);
            return Err(fail(message));
        }
        serde_json::from_slice(&output.stdout).map_err(|e| fail(format!("output is not JSON: {e}")))
    }

    /// `helm template`: the schema check, then every template, offline.
    pub fn render(
        &self,
        values: &serde_json::Value,
        release: &str,
        namespace: &str,
    ) -> std::result::Result<RenderedChart, HelmError> {
        let out = self.run(
            "render",
            values,
            &[
                format!("--release={release}"),
                format!("--namespace={namespace}"),
            ],
        )?;
        let manifests: BTreeMap<String, String> =
            serde_json::from_value(out).map_err(|e| HelmError {
                command: "render".to_owned(),
                message: format!("unexpected output: {e}"),
            })?;
        let mut chart = RenderedChart::default();
        for (template, text) in manifests {
            if template.ends_with("NOTES.txt") {
                chart.notes = text;
                continue;
            }
            chart
                .objects
                .extend(
                    parse_manifests(&template, &text).map_err(|message| HelmError {
                        command: "render".to_owned(),
                        message,
                    })?,
                );
        }
        Ok(chart)
    }

    /// `helm lint --strict` for Kubernetes 1.37: errors and warnings fail.
    pub fn lint(
        &self,
        values: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, HelmError> {
        self.run(
            "lint",
            values,
            &["--strict".to_owned(), "--kube-version=v1.37.0".to_owned()],
        )
    }

    /// The values against `values.schema.json` only.
    pub fn validate_values(
        &self,
        values: &serde_json::Value,
    ) -> std::result::Result<(), HelmError> {
        self.run("validate-values", values, &[]).map(|_| ())
    }

    /// `helm install` (creating the namespace) into the cluster of `kubeconfig`.
    pub fn install(
        &self,
        kubeconfig: &Path,
        release: &str,
        namespace: &str,
        values: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, HelmError> {
        self.release_command("install", kubeconfig, release, namespace, values)
    }

    /// `helm upgrade` of an installed release.
    pub fn upgrade(
        &self,
        kubeconfig: &Path,
        release: &str,
        namespace: &str,
        values: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, HelmError> {
        self.release_command("upgrade", kubeconfig, release, namespace, values)
    }

    fn release_command(
        &self,
        command: &str,
        kubeconfig: &Path,
        release: &str,
        namespace: &str,
        values: &serde_json::Value,
    ) -> std::result::Result<serde_json::Value, HelmError> {
        self.run(
            command,
            values,
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--release={release}"),
                format!("--namespace={namespace}"),
            ],
        )
    }
}

/// What the apiserver said about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCheck {
    /// Accepted (a dry run or a real apply).
    Accepted,
    /// Refused, with the apiserver's message.
    Refused(String),
    /// The cluster does not serve this kind (e.g. prometheus-operator's
    /// ServiceMonitor without its CRDs).
    NotServed,
}

fn gvk_of(object: &serde_json::Value) -> std::result::Result<GroupVersionKind, String> {
    let api_version = object["apiVersion"]
        .as_str()
        .ok_or("no apiVersion")?
        .to_owned();
    let kind = object["kind"].as_str().ok_or("no kind")?.to_owned();
    let (group, version) = api_version
        .split_once('/')
        .map_or(("", api_version.as_str()), |(g, v)| (g, v));
    Ok(GroupVersionKind::gvk(group, version, &kind))
}

/// Server-side applies `object` (a dry run when `dry_run`) with strict field
/// validation: the apiserver checks it against its own schemas (built-in
/// types of its version, CRD schemas) and refuses unknown or mistyped fields.
/// Namespaced objects without a namespace go to `default_namespace`.
pub async fn server_apply(
    client: &kube::Client,
    object: &serde_json::Value,
    default_namespace: &str,
    dry_run: bool,
) -> Result<ServerCheck> {
    let gvk = match gvk_of(object) {
        Ok(gvk) => gvk,
        Err(why) => return Ok(ServerCheck::Refused(why)),
    };
    let (resource, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
        Ok(found) => found,
        Err(_) => return Ok(ServerCheck::NotServed),
    };
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(default_namespace);
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    params.force = true;
    if dry_run {
        params = params.dry_run();
    }
    match api.patch(&name, &params, &Patch::Apply(object)).await {
        Ok(_) => Ok(ServerCheck::Accepted),
        Err(kube::Error::Api(status)) => Ok(ServerCheck::Refused(format!(
            "{} ({})",
            status.message, status.code
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Applies every object of a manifest file (multi-document YAML) in order.
pub async fn apply_manifest_file(
    client: &kube::Client,
    path: &Path,
    namespace: &str,
) -> Result<Vec<RenderedObject>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HarnessError::io(format!("reading {}", path.display()), e))?;
    let objects = parse_manifests(&path.display().to_string(), &text)
        .map_err(|message| HarnessError::io(message, std::io::ErrorKind::InvalidData.into()))?;
    for object in &objects {
        match server_apply(client, &object.object, namespace, false).await? {
            ServerCheck::Accepted => {}
            other => {
                return Err(HarnessError::io(
                    format!(
                        "applying {} from {}: {other:?}",
                        object.id(),
                        path.display()
                    ),
                    std::io::ErrorKind::InvalidData.into(),
                ))
            }
        }
    }
    Ok(objects)
}

/// A kubeconfig that authenticates as `namespace/service_account` with a
/// token from the TokenRequest API (valid for an hour), written to `path`.
/// The cluster and its CA are the admin kubeconfig's.
pub async fn service_account_kubeconfig(
    plane: &ControlPlane,
    namespace: &str,
    service_account: &str,
    path: &Path,
) -> Result<PathBuf> {
    let token = request_token(
        &plane.client(),
        namespace,
        service_account,
        &token_request(None),
    )
    .await?;
    let admin_text = std::fs::read_to_string(plane.kubeconfig())
        .map_err(|e| HarnessError::io(format!("reading {}", plane.kubeconfig().display()), e))?;
    let admin: serde_json::Value = serde_yaml_ng::from_str(&admin_text).map_err(|e| {
        HarnessError::io(
            "parsing the admin kubeconfig",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let user = format!("system:serviceaccount:{namespace}:{service_account}");
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "harness", "cluster": admin["clusters"][0]["cluster"] }],
        "users": [{ "name": user, "user": { "token": token } }],
        "contexts": [{ "name": "sa", "context": { "cluster": "harness", "user": user } }],
        "current-context": "sa",
    });
    std::fs::write(path, kubeconfig.to_string())
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
    Ok(path.to_owned())
}

/// The data key `key` of ConfigMap `namespace/name`, parsed as YAML.
pub async fn config_map_yaml(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<serde_json::Value> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = maps.get(name).await?;
    let text = map
        .data
        .and_then(|d| d.get(key).cloned())
        .unwrap_or_default();
    serde_yaml_ng::from_str(&text).map_err(|e| {
        HarnessError::io(
            format!("ConfigMap {namespace}/{name} key {key} is not YAML"),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

/// For tests: [`locate_workspace_binary`], or `None` after printing why the
/// test is skipped; a stale binary fails the test (see [`binary_for_test`]).
pub fn workspace_binary_for_test(test: &str, name: &str, env_var: &str) -> Option<PathBuf> {
    binary_for_test(test, locate_workspace_binary(name, env_var))
}

/// A Phalanx binary started as a local process with its own kubeconfig.
#[derive(Debug, Clone)]
pub struct LocalComponent {
    pub name: String,
    pub pid: u32,
    /// Where it serves /healthz, /readyz and /metrics.
    pub http: SocketAddr,
    pub log: PathBuf,
}

impl LocalComponent {
    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> std::result::Result<String, String> {
        match probe::http_get(self.http, "/metrics").await? {
            (200, body) => Ok(body),
            (status, _) => Err(format!("GET /metrics: status {status}")),
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl ControlPlane {
    /// Starts `program run --config FILE` as component `name`, with `config`
    /// (its `http.bindAddress` replaced by a free loopback port) and
    /// `KUBECONFIG=kubeconfig`, and waits until `ready_path` answers 200.
    pub async fn start_local_component(
        &mut self,
        name: &str,
        program: &Path,
        mut config: serde_json::Value,
        kubeconfig: &Path,
        ready_path: &str,
    ) -> Result<LocalComponent> {
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, single_port()?));
        config["http"]["bindAddress"] = serde_json::Value::String(http.to_string());
        let config_path = self.dir().join(format!("{name}.yaml"));
        std::fs::write(&config_path, config.to_string())
            .map_err(|e| HarnessError::io(format!("writing {}", config_path.display()), e))?;
        let args = vec![
            "run".to_owned(),
            "--config".to_owned(),
            config_path.display().to_string(),
        ];
        let env = vec![
            ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        crate::freshness::ensure_fresh_if_built_here(program)?;
        let mut component = spawn_in_with_env(self.dir(), name, program, &args, &env)?;
        let path = ready_path.to_owned();
        component
            .wait_ready(std::time::Duration::from_secs(60), || {
                let path = path.clone();
                async move { probe::http_ok(http, &path, "").await }
            })
            .await?;
        let started = LocalComponent {
            name: name.to_owned(),
            pid: component.pid(),
            http,
            log: component.log_path().to_owned(),
        };
        self.components.push(component);
        Ok(started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_split_into_objects_and_skip_empty_documents() {
        let text = "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n";
        let objects = parse_manifests("t.yaml", text).expect("parses");
        let ids: Vec<String> = objects.iter().map(RenderedObject::id).collect();
        assert_eq!(ids, ["ConfigMap/a", "Service/b"]);
    }

    #[test]
    fn a_duplicated_key_is_refused() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n";
        let err = parse_manifests("t.yaml", text).expect_err("duplicate key");
        assert!(err.contains("t.yaml"), "{err}");
    }

    #[test]
    fn core_and_grouped_api_versions_split() {
        let core = gvk_of(&serde_json::json!({"apiVersion": "v1", "kind": "Pod"})).expect("gvk");
        assert_eq!((core.group.as_str(), core.version.as_str()), ("", "v1"));
        let apps = gvk_of(&serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment"}))
            .expect("gvk");
        assert_eq!(
            (apps.group.as_str(), apps.kind.as_str()),
            ("apps", "Deployment")
        );
        assert!(gvk_of(&serde_json::json!({"kind": "Pod"})).is_err());
    }
}
