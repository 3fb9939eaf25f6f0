//! The Helm chart through the real Helm engine (Helm v4's Go SDK from PyPI's
//! `helm-python-sdk`): it renders and lints for the default values and every
//! documented option (`deploy/helm/phalanx/ci/*.yaml`), bad values are refused
//! by its schema, every rendered object passes the 1.37 apiserver's own
//! validation, and once installed the scheduler, the autoscaler and the device
//! plugin do their whole job holding nothing but their ServiceAccounts'
//! tokens — and stop doing it when a verb is taken away.
//!
//! Needs the virtualenv `scripts/test-all.sh` creates; the cluster tests also
//! need the control-plane binaries and `cargo build -p phalanx-scheduler`.
//! Without them each test prints `skipped: <test>: <why>`; with
//! `PHALANX_E2E=1` it fails.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::Api;
use phalanx_api::{PodGroup, ANNOTATION_GPU_ASSIGNMENT};
use phalanx_e2e::binaries::or_skip;
use phalanx_e2e::helm::{
    apply_manifest_file, chart_dir, config_map_yaml, server_apply, service_account_kubeconfig,
    workspace_root, HelmTool, LocalComponent, RenderedChart, ServerCheck,
};
use phalanx_e2e::phalanx::ensure_namespace;
use phalanx_e2e::wait::{
    self, namespace_ready_for_pods, wait_crds_established, wait_pod_bound, wait_pod_event,
    wait_selected_bound,
};
use phalanx_e2e::{
    assignment_of, create_gpu_nodes, gpu_worker_container, node_of, phalanx_scheduler_for_test,
    pod_events, Binaries, ControlPlane, ControlPlaneOptions, GpuNodeSpec, PodBuilder, PodSelector,
};

const RELEASE: &str = "phalanx";
const NAMESPACE: &str = "phalanx-system";

/// The default values plus every file under the chart's ci/ directory.
fn value_cases() -> Vec<(String, serde_json::Value)> {
    let mut cases = vec![("defaults".to_owned(), serde_json::json!({}))];
    let dir = chart_dir().join("ci");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let values: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        cases.push((
            file.file_name().unwrap().to_string_lossy().into_owned(),
            values,
        ));
    }
    cases
}

fn rules_of(chart: &RenderedChart, kind: &str, name: &str) -> Vec<(String, String, String)> {
    let Some(role) = chart.get(kind, name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        for group in rule["apiGroups"].as_array().into_iter().flatten() {
            for resource in rule["resources"].as_array().into_iter().flatten() {
                for verb in rule["verbs"].as_array().into_iter().flatten() {
                    out.push((
                        group.as_str().unwrap_or_default().to_owned(),
                        resource.as_str().unwrap_or_default().to_owned(),
                        verb.as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn grants(rules: &[(String, String, String)], group: &str, resource: &str, verb: &str) -> bool {
    rules
        .iter()
        .any(|(g, r, v)| g == group && r == resource && (v == verb || v == "*"))
}

/// Checks every chart must pass, whatever the values: names, namespaces,
/// selectors that select their own pods, references that resolve, and the
/// security settings each component is documented to have.
fn structural_problems(case: &str, chart: &RenderedChart) -> Vec<String> {
    let mut problems = Vec::new();
    let mut say = |p: String| problems.push(format!("{case}: {p}"));
    let cluster_scoped = [
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ];
    let names: BTreeSet<(String, String)> = chart
        .objects
        .iter()
        .map(|o| (o.kind().to_owned(), o.name().to_owned()))
        .collect();
    for object in &chart.objects {
        let meta = &object.object["metadata"];
        if object.name().is_empty() {
            say(format!(
                "{} from {} has no name",
                object.kind(),
                object.template
            ));
        }
        let labels = &meta["labels"];
        if labels["app.kubernetes.io/instance"] != RELEASE {
            say(format!("{} lacks the instance label", object.id()));
        }
        let namespaced = !cluster_scoped.contains(&object.kind());
        if namespaced != meta["namespace"].is_string() {
            say(format!(
                "{} namespace is {}",
                object.id(),
                meta["namespace"]
            ));
        }
    }
    for workload in chart
        .objects
        .iter()
        .filter(|o| matches!(o.kind(), "Deployment" | "DaemonSet"))
    {
        let spec = &workload.object["spec"];
        let selector = spec["selector"]["matchLabels"].as_object().unwrap();
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in selector {
            if &labels[k] != v {
                say(format!(
                    "{} selector {k}={v} misses its pods",
                    workload.id()
                ));
            }
        }
        let pod = &spec["template"]["spec"];
        let sa = pod["serviceAccountName"].as_str().unwrap_or_default();
        let bindings = chart.of_kind("ClusterRoleBinding");
        let bound = bindings
            .iter()
            .any(|b| b.object["subjects"][0]["name"] == sa);
        if !bindings.is_empty() && !bound {
            say(format!(
                "{} runs as {sa}, which no ClusterRoleBinding names",
                workload.id()
            ));
        }
        for volume in pod["volumes"].as_array().into_iter().flatten() {
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                if !names.contains(&("ConfigMap".to_owned(), cm.to_owned())) {
                    say(format!("{} mounts missing ConfigMap {cm}", workload.id()));
                }
            }
        }
        for container in pod["containers"].as_array().into_iter().flatten() {
            let security = &container["securityContext"];
            if security["privileged"] == true {
                say(format!("{} is privileged", workload.id()));
            }
            if security["allowPrivilegeEscalation"] != false {
                say(format!("{} allows privilege escalation", workload.id()));
            }
            if security["capabilities"]["drop"] != serde_json::json!(["ALL"]) {
                say(format!("{} keeps capabilities", workload.id()));
            }
            if security["readOnlyRootFilesystem"] != true {
                say(format!("{} has a writable root", workload.id()));
            }
            if workload.kind() == "Deployment" && pod["securityContext"]["runAsNonRoot"] != true {
                say(format!("{} may run as root", workload.id()));
            }
            if container["resources"]["requests"].is_null() {
                say(format!("{} requests no resources", workload.id()));
            }
        }
    }
    for binding in chart
        .objects
        .iter()
        .filter(|o| matches!(o.kind(), "ClusterRoleBinding" | "RoleBinding"))
    {
        let role_kind = binding.object["roleRef"]["kind"]
            .as_str()
            .unwrap_or_default();
        let role = binding.object["roleRef"]["name"]
            .as_str()
            .unwrap_or_default();
        if !names.contains(&(role_kind.to_owned(), role.to_owned())) {
            say(format!(
                "{} refers to missing {role_kind} {role}",
                binding.id()
            ));
        }
    }
    problems
}

#[test]
fn chart_renders_and_lints_for_the_defaults_and_every_documented_option() {
    let Some(helm) = HelmTool::for_test("chart_renders_and_lints") else {
        return;
    };
    let cases = value_cases();
    assert!(cases.len() >= 6, "expected the ci/ value files: {cases:?}");
    let mut problems = Vec::new();
    for (case, values) in &cases {
        if let Err(e) = helm.lint(values) {
            problems.push(format!("{case}: {e}"));
        }
        match helm.render(values, RELEASE, NAMESPACE) {
            Ok(chart) => problems.extend(structural_problems(case, &chart)),
            Err(e) => problems.push(format!("{case}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn default_values_install_every_component_with_least_privilege() {
    let Some(helm) = HelmTool::for_test("default_values_install_every_component") else {
        return;
    };
    let chart = helm
        .render(&serde_json::json!({}), RELEASE, NAMESPACE)
        .unwrap();
    let crds: BTreeSet<&str> = chart
        .of_kind("CustomResourceDefinition")
        .iter()
        .map(|o| o.name())
        .collect();
    assert!(crds.contains("gpunodes.phalanx.dev"), "{crds:?}");
    assert!(crds.contains("queues.phalanx.dev"), "{crds:?}");
    // Offline there is no cluster to serve PodGroup, so "auto" installs it.
    assert!(crds.contains("podgroups.scheduling.x-k8s.io"), "{crds:?}");
    let scheduler = chart.get("Deployment", "phalanx-scheduler").unwrap();
    assert_eq!(scheduler["spec"]["replicas"], 2);
    let container = &scheduler["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 10251);
    assert!(chart
        .get("PodDisruptionBudget", "phalanx-scheduler")
        .is_some());
    let rules = rules_of(&chart, "ClusterRole", "phalanx-scheduler");
    for (group, resource, verb) in [
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "nodes", "watch"),
        // Preemption (on by default): victims evicted, PDBs respected.
        ("", "pods/eviction", "create"),
        ("policy", "poddisruptionbudgets", "watch"),
        // Namespace labels for pod affinity terms' namespaceSelector.
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("", "pods/binding", "create"),
        // Gang plans are patched onto members; an undone gang's bound
        // members are deleted for their owners to recreate.
        ("", "pods", "patch"),
        ("", "pods", "delete"),
        // PodScheduled=False on pods that wait.
        ("", "pods/status", "patch"),
        ("phalanx.dev", "gpunodes", "watch"),
        ("scheduling.x-k8s.io", "podgroups", "watch"),
        ("scheduling.x-k8s.io", "podgroups/status", "patch"),
        // Kubernetes' own gangs, where served.
        ("scheduling.k8s.io", "podgroups", "list"),
        ("scheduling.k8s.io", "podgroups", "watch"),
        ("scheduling.k8s.io", "podgroups/status", "patch"),
        ("scheduling.k8s.io", "compositepodgroups", "watch"),
        ("events.k8s.io", "events", "create"),
        ("events.k8s.io", "events", "patch"),
        // Volumes: watched, then pre-bound before the Binding.
        ("", "persistentvolumeclaims", "watch"),
        ("", "persistentvolumeclaims", "get"),
        ("", "persistentvolumeclaims", "patch"),
        ("", "persistentvolumes", "watch"),
        ("", "persistentvolumes", "update"),
        ("storage.k8s.io", "storageclasses", "watch"),
        ("storage.k8s.io", "csinodes", "watch"),
        // Gangs found from the workloads that own pods (gangs.autoGroup).
        ("batch", "jobs", "watch"),
        ("jobset.x-k8s.io", "jobsets", "watch"),
        ("trainer.kubeflow.org", "trainjobs", "watch"),
        ("kubeflow.org", "pytorchjobs", "watch"),
        ("leaderworkerset.x-k8s.io", "leaderworkersets", "watch"),
        ("ray.io", "rayclusters", "list"),
    ] {
        assert!(
            grants(&rules, group, resource, verb),
            "{group}/{resource} {verb}: {rules:?}"
        );
    }
    // What the scheduler never does, it may not do.
    for (group, resource, verb) in [
        ("", "pods", "update"),
        ("", "pods/status", "update"),
        ("", "nodes", "patch"),
        ("", "namespaces", "update"),
        ("", "secrets", "get"),
        ("phalanx.dev", "gpunodes", "patch"),
        // Queues are off by default: not read.
        ("phalanx.dev", "queues", "watch"),
        ("", "persistentvolumes", "delete"),
        ("", "persistentvolumeclaims", "delete"),
    ] {
        assert!(
            !grants(&rules, group, resource, verb),
            "{group}/{resource} {verb}"
        );
    }
    assert!(rules
        .iter()
        .all(|(g, r, v)| g != "*" && r != "*" && v != "*"));
    // The autoscaler places replicas as the scheduler would: namespaceSelector too.
    let autoscaler = rules_of(&chart, "ClusterRole", "phalanx-autoscaler");
    assert!(
        grants(&autoscaler, "", "namespaces", "watch"),
        "{autoscaler:?}"
    );
    let lease = rules_of(&chart, "Role", "phalanx-scheduler-leader-election");
    assert!(grants(&lease, "coordination.k8s.io", "leases", "create"));
    let config = chart.get("ConfigMap", "phalanx-scheduler").unwrap();
    let config: serde_json::Value =
        serde_yaml_ng::from_str(config["data"]["config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(config["leaderElection"]["leaseNamespace"], NAMESPACE);
    assert_eq!(config["http"]["bindAddress"], "0.0.0.0:10251");
    assert_eq!(config["schedulerName"], "phalanx");

    let plugin = chart.get("DaemonSet", "phalanx-device-plugin").unwrap();
    let pod = &plugin["spec"]["template"]["spec"];
    let host_paths: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert_eq!(
        host_paths,
        BTreeSet::from([
            "/var/lib/kubelet/device-plugins",
            "/var/lib/kubelet/pod-resources"
        ])
    );
    assert!(pod["nodeSelector"].is_object() && pod["tolerations"].is_array());
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());

    for needle in [
        "schedulerName: phalanx",
        "kind: PodGroup",
        "kind: InferenceAutoscaler",
    ] {
        assert!(
            chart.notes.contains(needle),
            "NOTES lacks {needle:?}:\n{}",
            chart.notes
        );
    }
}

/// The policy that keeps each device plugin to its own node's GpuNode
/// (templates/device-plugin/admission-policy.yaml): bound with Deny, matching
/// every write of gpunodes and their status by the plugin's ServiceAccount
/// only, comparing the object's name and spec.nodeName with the token's node
/// claim; gone with the RBAC or the plugin. Its behaviour on a real API server
/// is tests/tests/device_plugin_trust.rs.
#[test]
fn the_device_plugin_admission_policy_confines_it_to_its_own_gpunode() {
    let Some(helm) = HelmTool::for_test("the_device_plugin_admission_policy") else {
        return;
    };
    let name = "phalanx-device-plugin-own-gpunode";
    let chart = helm
        .render(&serde_json::json!({}), RELEASE, NAMESPACE)
        .unwrap();
    let policy = chart.get("ValidatingAdmissionPolicy", name).unwrap();
    let binding = chart.get("ValidatingAdmissionPolicyBinding", name).unwrap();
    assert_eq!(binding["spec"]["policyName"], name);
    assert_eq!(
        binding["spec"]["validationActions"],
        serde_json::json!(["Deny"])
    );
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let rules = &policy["spec"]["matchConstraints"]["resourceRules"][0];
    assert_eq!(rules["apiGroups"], serde_json::json!(["phalanx.dev"]));
    assert_eq!(
        rules["operations"],
        serde_json::json!(["CREATE", "UPDATE", "DELETE"])
    );
    assert_eq!(
        rules["resources"],
        serde_json::json!(["gpunodes", "gpunodes/status"])
    );
    let who = policy["spec"]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        who.contains("'system:serviceaccount:phalanx-system:phalanx-device-plugin'"),
        "{who}"
    );
    let text = serde_json::to_string(&policy["spec"]).unwrap();
    for needle in [
        "authentication.kubernetes.io/node-name",
        "variables.target.metadata.name == variables.claimedNode",
        "variables.target.spec.nodeName == variables.claimedNode",
        "no node claim",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }

    // A renamed ServiceAccount is the one matched.
    let chart = helm
        .render(
            &serde_json::json!({"devicePlugin": {"serviceAccount": {"name": "gpu-agent"}}}),
            RELEASE,
            "gpu",
        )
        .unwrap();
    let who = chart.get("ValidatingAdmissionPolicy", name).unwrap()["spec"]["matchConditions"][0]
        ["expression"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        who.contains("'system:serviceaccount:gpu:gpu-agent'"),
        "{who}"
    );

    // Without the RBAC (managed by hand) or without the plugin: no policy.
    for values in [
        serde_json::json!({"rbac": {"create": false}}),
        serde_json::json!({"devicePlugin": {"enabled": false}}),
    ] {
        let chart = helm.render(&values, RELEASE, NAMESPACE).unwrap();
        assert!(
            chart.of_kind("ValidatingAdmissionPolicy").is_empty()
                && chart.of_kind("ValidatingAdmissionPolicyBinding").is_empty(),
            "{values}"
        );
    }
}

#[test]
fn each_option_changes_what_it_documents() {
    let Some(helm) = HelmTool::for_test("each_option_changes_what_it_documents") else {
        return;
    };
    let cases: BTreeMap<String, serde_json::Value> = value_cases().into_iter().collect();
    let render = |case: &str| helm.render(&cases[case], RELEASE, NAMESPACE).unwrap();

    let patch = render("annotation-patch.yaml");
    let rules = rules_of(&patch, "ClusterRole", "phalanx-scheduler");
    assert!(
        grants(&rules, "", "pods", "patch"),
        "patch mode needs pods patch"
    );

    let fake = render("kwok-fake-gpus.yaml");
    let plugin = fake.get("DaemonSet", "phalanx-device-plugin").unwrap();
    let pod = &plugin["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].to_string();
    assert!(args.contains("fake"), "{args}");
    assert!(pod["runtimeClassName"].is_null());
    assert_eq!(pod["nodeSelector"]["type"], "kwok");

    let single = render("single-replica.yaml");
    assert!(single
        .get("Role", "phalanx-scheduler-leader-election")
        .is_none());
    assert!(single
        .get("PodDisruptionBudget", "phalanx-scheduler")
        .is_none());
    assert_eq!(
        single.get("Deployment", "phalanx-scheduler").unwrap()["spec"]["replicas"],
        1
    );

    let monitoring = render("monitoring.yaml");
    let monitors: BTreeSet<&str> = monitoring
        .of_kind("ServiceMonitor")
        .iter()
        .map(|o| o.name())
        .collect();
    assert_eq!(
        monitors,
        BTreeSet::from([
            "phalanx-scheduler",
            "phalanx-autoscaler",
            "phalanx-device-plugin"
        ])
    );
    for monitor in monitoring.of_kind("ServiceMonitor") {
        // Each ServiceMonitor must select its component's metrics Service.
        let selector = monitor.object["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap();
        let service = format!("{}-metrics", monitor.name());
        let labels = &monitoring.get("Service", &service).unwrap()["metadata"]["labels"];
        assert!(selector.iter().all(|(k, v)| &labels[k] == v), "{service}");
    }
    let dashboard = monitoring
        .get("ConfigMap", "phalanx-grafana-dashboard")
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["phalanx.json"].as_str().unwrap()).unwrap();
    assert!(json["panels"].as_array().unwrap().len() > 5);

    // The plugin's ClusterRole: only gets and lists, of what it reads.
    assert!(render("defaults")
        .get("ClusterRole", "phalanx-inspector")
        .is_none());
    let plugin = render("kubectl-plugin.yaml");
    let rules = rules_of(&plugin, "ClusterRole", "phalanx-inspector");
    for (group, resource) in [
        ("", "pods"),
        ("", "events"),
        ("", "nodes"),
        ("", "namespaces"),
        ("", "persistentvolumeclaims"),
        ("", "persistentvolumes"),
        ("storage.k8s.io", "storageclasses"),
        ("storage.k8s.io", "csinodes"),
        ("phalanx.dev", "gpunodes"),
    ] {
        for verb in ["get", "list"] {
            assert!(
                grants(&rules, group, resource, verb),
                "{verb} {group}/{resource}"
            );
        }
    }
    assert!(
        rules
            .iter()
            .all(|(_, _, verb)| verb == "get" || verb == "list"),
        "{rules:?}"
    );
    let binding = plugin
        .get("ClusterRoleBinding", "phalanx-inspector")
        .unwrap();
    assert_eq!(binding["roleRef"]["name"], "phalanx-inspector");
    assert_eq!(binding["subjects"][1]["namespace"], "phalanx-system");

    let only = render("scheduler-only.yaml");
    let kinds: BTreeSet<&str> = only.objects.iter().map(|o| o.kind()).collect();
    assert!(!kinds.contains("DaemonSet"), "{kinds:?}");
    assert!(only.get("Deployment", "phalanx-autoscaler").is_none());
    assert!(only
        .get("CustomResourceDefinition", "podgroups.scheduling.x-k8s.io")
        .is_none());

    let production = render("production.yaml");
    assert!(production
        .get("ServiceAccount", "phalanx-scheduler")
        .is_none());
    let binding = production
        .get("ClusterRoleBinding", "phalanx-scheduler")
        .unwrap();
    assert_eq!(binding["subjects"][0]["name"], "phalanx-scheduler-existing");
    let image = production.get("Deployment", "phalanx-scheduler").unwrap()["spec"]["template"]
        ["spec"]["containers"][0]["image"]
        .clone();
    assert_eq!(
        image,
        "registry.example.com/phalanx/phalanx-scheduler:0.1.0"
    );
    let crd = production
        .get("CustomResourceDefinition", "gpunodes.phalanx.dev")
        .unwrap();
    assert!(crd["metadata"]["annotations"]["helm.sh/resource-policy"].is_null());
    let plugin = production
        .get("DaemonSet", "phalanx-device-plugin")
        .unwrap();
    assert_eq!(
        plugin["spec"]["template"]["spec"]["runtimeClassName"],
        "nvidia"
    );
}

/// With queues on, the scheduler may read Queues and patch their status;
/// with preemption on (the default), evict and watch PodDisruptionBudgets;
/// and no more.
/// Whether the install notes warn that monitoring objects were skipped.
fn chart_notes_warn(notes: &str) -> bool {
    notes.contains("does not serve")
}

/// The alerts of the rendered PrometheusRule: `(group, alert, rule)`.
fn alerts_of(chart: &RenderedChart) -> Vec<(String, String, serde_json::Value)> {
    let rule = chart.get("PrometheusRule", "phalanx-alerts").unwrap();
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        let name = group["name"].as_str().unwrap();
        for rule in group["rules"].as_array().unwrap() {
            let alert = rule["alert"].as_str().unwrap_or_default();
            out.push((name.to_owned(), alert.to_owned(), rule.clone()));
        }
    }
    out
}

/// GitHub's anchor of a Markdown heading (enough for ours: one word).
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .map(|heading| heading.trim().to_lowercase())
        .collect()
}

#[test]
fn prometheus_rule_ships_every_alert_with_severity_and_runbook() {
    let Some(helm) =
        HelmTool::for_test("prometheus_rule_ships_every_alert_with_severity_and_runbook")
    else {
        return;
    };
    let defaults = helm
        .render(&serde_json::json!({}), RELEASE, NAMESPACE)
        .unwrap();
    assert!(
        defaults.of_kind("PrometheusRule").is_empty(),
        "off by default"
    );

    // Turned on where the cluster does not serve the CRDs (an offline render
    // serves none): nothing that would fail the install, and the notes say so.
    let unserved = helm
        .render(
            &serde_json::json!({"prometheusRule": {"enabled": true}, "serviceMonitor": {"enabled": true}}),
            RELEASE,
            NAMESPACE,
        )
        .unwrap();
    assert!(unserved.of_kind("PrometheusRule").is_empty());
    assert!(unserved.of_kind("ServiceMonitor").is_empty());
    for needle in [
        "does not serve\nmonitoring.coreos.com/v1 PrometheusRule, so no alerts were installed",
        "does not serve\nmonitoring.coreos.com/v1 ServiceMonitor, so none was installed",
    ] {
        assert!(
            unserved.notes.contains(needle),
            "NOTES lacks {needle:?}:\n{}",
            unserved.notes
        );
    }
    assert!(!chart_notes_warn(&defaults.notes), "{}", defaults.notes);

    let cases: BTreeMap<String, serde_json::Value> = value_cases().into_iter().collect();
    let chart = helm
        .render(&cases["monitoring.yaml"], RELEASE, NAMESPACE)
        .unwrap();
    assert!(!chart_notes_warn(&chart.notes), "{}", chart.notes);
    let rule = chart.get("PrometheusRule", "phalanx-alerts").unwrap();
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        rule["metadata"]["labels"]["release"], "kube-prometheus-stack",
        "prometheusRule.labels"
    );

    let alerts = alerts_of(&chart);
    let groups: BTreeSet<&str> = alerts.iter().map(|(g, _, _)| g.as_str()).collect();
    assert_eq!(
        groups,
        BTreeSet::from(["phalanx-scheduler", "phalanx-gpus", "phalanx-autoscaler"])
    );
    let names: BTreeSet<&str> = alerts.iter().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(names.len(), alerts.len(), "alert names are unique");
    for expected in [
        "PhalanxGPUSaturated",
        "PhalanxGPUFragmented",
        "PhalanxPodPendingTooLong",
        "PhalanxGangPendingTooLong",
        "PhalanxGPUTelemetryStale",
        "PhalanxGPUUnhealthy",
        "PhalanxGPUXidErrors",
        "PhalanxSchedulerNoLeader",
        "PhalanxSchedulerBindingErrors",
        "PhalanxAutoscalerStaleMetrics",
        "PhalanxAutoscalerInvalidMetrics",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }

    // Every alert: a severity, a summary and description, and a runbook link
    // to its own section of docs/runbooks.md.
    let runbooks = std::fs::read_to_string(workspace_root().join("docs/runbooks.md")).unwrap();
    let anchors = heading_anchors(&runbooks);
    for (_, alert, rule) in &alerts {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{alert}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                !rule["annotations"][annotation]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "{alert}: no {annotation}"
            );
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let (page, anchor) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{alert}: runbook_url {url:?} has no section"));
        assert!(page.ends_with("docs/runbooks.md"), "{alert}: {url}");
        assert_eq!(anchor, alert.to_lowercase(), "{alert}: {url}");
        assert!(anchors.contains(anchor), "{alert}: no section {anchor}");
    }

    // The plain rules file in the repository is the chart's defaults.
    let plain: serde_json::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(workspace_root().join("deploy/alerts/phalanx-rules.yaml"))
            .unwrap(),
    )
    .unwrap();
    let enabled = helm
        .render(
            &serde_json::json!({"prometheusRule": {"enabled": true, "whenCrdMissing": "render"}}),
            RELEASE,
            NAMESPACE,
        )
        .unwrap();
    assert_eq!(
        enabled.get("PrometheusRule", "phalanx-alerts").unwrap()["spec"],
        plain,
        "deploy/alerts/phalanx-rules.yaml is stale: run scripts/check-alerts.sh --write"
    );

    // Thresholds and durations are values; a disabled component's group goes.
    let tuned = helm
        .render(
            &serde_json::json!({
                "prometheusRule": {
                    "enabled": true,
                    "whenCrdMissing": "render",
                    "gpuSaturation": {"ratio": 0.75, "for": "20m"},
                },
                "autoscaler": {"enabled": false},
            }),
            RELEASE,
            NAMESPACE,
        )
        .unwrap();
    let tuned = alerts_of(&tuned);
    let (_, _, saturated) = tuned
        .iter()
        .find(|(_, a, _)| a == "PhalanxGPUSaturated")
        .unwrap();
    assert!(
        saturated["expr"]
            .as_str()
            .unwrap()
            .trim_end()
            .ends_with("> 0.75"),
        "{saturated}"
    );
    assert_eq!(saturated["for"], "20m");
    assert!(tuned.iter().all(|(g, _, _)| g != "phalanx-autoscaler"));
}

#[test]
fn queues_and_preemption_grant_their_verbs_only_when_on() {
    let Some(helm) = HelmTool::for_test("queues_and_preemption_grant_their_verbs") else {
        return;
    };
    let queue_verbs = [
        ("phalanx.dev", "queues", "list"),
        ("phalanx.dev", "queues", "watch"),
        ("phalanx.dev", "queues/status", "patch"),
    ];
    let eviction_verbs = [
        ("", "pods/eviction", "create"),
        ("policy", "poddisruptionbudgets", "list"),
        ("policy", "poddisruptionbudgets", "watch"),
    ];
    let cases = [
        (serde_json::json!({}), false, true),
        (
            serde_json::json!({"scheduler": {"config": {"queues": {"enabled": true}}}}),
            true,
            true,
        ),
        (
            serde_json::json!({"scheduler": {"config": {
                "queues": {"enabled": true}, "preemption": {"enabled": false}
            }}}),
            true,
            false,
        ),
        (
            serde_json::json!({"scheduler": {"config": {"preemption": {"enabled": false}}}}),
            false,
            false,
        ),
    ];
    for (values, queues, preemption) in cases {
        let chart = helm.render(&values, RELEASE, NAMESPACE).unwrap();
        let rules = rules_of(&chart, "ClusterRole", "phalanx-scheduler");
        for (group, resource, verb) in queue_verbs {
            assert_eq!(
                grants(&rules, group, resource, verb),
                queues,
                "{values}: {group}/{resource} {verb}"
            );
        }
        for (group, resource, verb) in eviction_verbs {
            assert_eq!(
                grants(&rules, group, resource, verb),
                preemption,
                "{values}: {group}/{resource} {verb}"
            );
        }
        // The spec is the teams' to write; pods are evicted, never deleted
        // for preemption (delete is the gang undo's, granted anyway).
        for (group, resource, verb) in [
            ("phalanx.dev", "queues", "patch"),
            ("phalanx.dev", "queues", "update"),
            ("phalanx.dev", "queues/status", "update"),
            ("policy", "poddisruptionbudgets", "patch"),
        ] {
            assert!(
                !grants(&rules, group, resource, verb),
                "{values}: {group}/{resource} {verb}"
            );
        }
        let config = chart.get("ConfigMap", "phalanx-scheduler").unwrap();
        let config: serde_json::Value =
            serde_yaml_ng::from_str(config["data"]["config.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(config["queues"]["enabled"], queues, "{values}");
        assert_eq!(config["preemption"]["enabled"], preemption, "{values}");
        assert_eq!(config["queues"]["defaultQueue"], "default");
        assert_eq!(config["preemption"]["reservationSeconds"], 30);
    }
}

#[test]
fn bad_values_are_refused_with_a_message_naming_the_key() {
    let Some(helm) = HelmTool::for_test("bad_values_are_refused") else {
        return;
    };
    let cases = [
        (
            serde_json::json!({"scheduler": {"replicas": -1}}),
            "/scheduler/replicas",
        ),
        (
            serde_json::json!({"autoscaler": {"replicas": 0}}),
            "/autoscaler/replicas",
        ),
        (
            serde_json::json!({"devicePlugin": {"backend": "rocm"}}),
            "/devicePlugin/backend",
        ),
        (
            serde_json::json!({"crds": {"podGroup": "sometimes"}}),
            "/crds/podGroup",
        ),
        (
            serde_json::json!({"scheduler": {"config": {"policy": "spread"}}}),
            "/scheduler/config/policy",
        ),
        (
            serde_json::json!({"scheduler": {"metricsPort": 70000}}),
            "/scheduler/metricsPort",
        ),
        (
            serde_json::json!({"schedular": {"replicas": 2}}),
            "schedular",
        ),
        (
            serde_json::json!({"prometheusRule": {"gpuSaturation": {"ratio": 90, "for": "5m"}}}),
            "/prometheusRule/gpuSaturation/ratio",
        ),
        (
            serde_json::json!({"prometheusRule": {"noLeader": {"for": "two minutes"}}}),
            "/prometheusRule/noLeader/for",
        ),
        (
            serde_json::json!({"scheduler": {"config": {"binding": {"annotationWrite": "later"}}}}),
            "annotationWrite",
        ),
        (
            serde_json::json!({"devicePlugin": {"fakeGpus": {"count": 0, "model": "x", "memoryMiB": 1}}}),
            "/devicePlugin/fakeGpus/count",
        ),
        (
            serde_json::json!({"scheduler": {"config": {"queues": {"defaultQueue": "Team_A"}}}}),
            "/scheduler/config/queues/defaultQueue",
        ),
        (
            serde_json::json!({"scheduler": {"config": {"preemption": {"reservationSeconds": 0}}}}),
            "/scheduler/config/preemption/reservationSeconds",
        ),
        (
            serde_json::json!({"scheduler": {"config": {"queues": {"enable": true}}}}),
            "enable",
        ),
    ];
    for (values, key) in cases {
        let err = helm
            .validate_values(&values)
            .expect_err(&format!("{values} must be refused"));
        assert!(
            err.message.contains(key),
            "{values}: message {:?} does not name {key}",
            err.message
        );
        // The same refusal on render (what `helm install` runs first).
        let err = helm
            .render(&values, RELEASE, NAMESPACE)
            .expect_err("render refuses");
        assert!(err.message.contains(key), "{}", err.message);
    }
    let unelected = serde_json::json!({
        "scheduler": {"replicas": 2, "config": {"leaderElection": {"enabled": false}}}
    });
    helm.validate_values(&unelected)
        .expect("schema-valid on its own");
    let err = helm
        .render(&unelected, RELEASE, NAMESPACE)
        .expect_err("refused");
    assert!(
        err.message.contains("needs scheduler.replicas=1"),
        "{}",
        err.message
    );
    let no_name = serde_json::json!({"scheduler": {"serviceAccount": {"create": false}}});
    let err = helm
        .render(&no_name, RELEASE, NAMESPACE)
        .expect_err("refused");
    assert!(
        err.message
            .contains("scheduler.serviceAccount.name must be set"),
        "{}",
        err.message
    );
}

#[test]
fn secure_endpoints_wire_tls_delegated_auth_and_network_policies() {
    let Some(helm) = HelmTool::for_test("secure_endpoints_wire_tls") else {
        return;
    };
    let cases: BTreeMap<String, serde_json::Value> = value_cases().into_iter().collect();
    let chart = helm
        .render(&cases["secure-endpoints.yaml"], RELEASE, NAMESPACE)
        .unwrap();
    let components = [
        ("phalanx-scheduler", "Deployment", 10251),
        ("phalanx-autoscaler", "Deployment", 10252),
        ("phalanx-device-plugin", "DaemonSet", 9445),
    ];

    // The config files turn on HTTPS and delegated auth, with the mounted files.
    for name in ["phalanx-scheduler", "phalanx-autoscaler"] {
        let config = rendered_config(&chart, name);
        let http = &config["http"];
        assert_eq!(
            http["tls"]["certFile"], "/etc/phalanx-tls/tls.crt",
            "{name}"
        );
        assert_eq!(http["tls"]["keyFile"], "/etc/phalanx-tls/tls.key", "{name}");
        assert_eq!(
            http["tls"]["clientCAFile"], "/etc/phalanx-client-ca/ca.crt",
            "{name}"
        );
        assert_eq!(http["authentication"], "delegated", "{name}");
        assert_eq!(
            http["alwaysAllowPaths"],
            serde_json::json!(["/healthz", "/readyz", "/livez"]),
            "{name}"
        );
    }
    let secret = chart.get("Secret", "phalanx-metrics-tls").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    for key in ["tls.crt", "tls.key"] {
        let data = secret["data"][key].as_str().unwrap_or_default();
        assert!(data.len() > 100, "a generated {key}: {data:?}");
    }

    for (name, kind, port) in components {
        let workload = chart.get(kind, name).unwrap();
        let pod = &workload["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let mounts = container["volumeMounts"].to_string();
        assert!(mounts.contains("/etc/phalanx-tls"), "{name}: {mounts}");
        assert!(
            mounts.contains("/etc/phalanx-client-ca"),
            "{name}: {mounts}"
        );
        let volumes = pod["volumes"].to_string();
        assert!(
            volumes.contains("\"secretName\":\"phalanx-metrics-tls\""),
            "{name}: {volumes}"
        );
        assert!(
            volumes.contains("\"secretName\":\"metrics-client-ca\""),
            "{name}: {volumes}"
        );
        assert_eq!(
            container["livenessProbe"]["httpGet"]["scheme"], "HTTPS",
            "{name}"
        );

        // Its ServiceAccount may ask the API server about tokens and access.
        let account = pod["serviceAccountName"].as_str().unwrap();
        let binding = chart
            .get("ClusterRoleBinding", &format!("{name}-auth-delegation"))
            .unwrap();
        assert_eq!(binding["subjects"][0]["name"], account, "{name}");
        assert_eq!(binding["roleRef"]["name"], "phalanx-auth-delegation");

        // Ingress only to the metrics port, only from the monitoring namespace,
        // for exactly this component's pods.
        let policy = chart.get("NetworkPolicy", name).unwrap();
        let selector = policy["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .unwrap();
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        assert!(selector.iter().all(|(k, v)| &labels[k] == v), "{name}");
        assert_eq!(
            policy["spec"]["policyTypes"],
            serde_json::json!(["Ingress"])
        );
        let ingress = policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1, "{name}");
        assert_eq!(
            ingress[0]["ports"],
            serde_json::json!([{"port": port, "protocol": "TCP"}])
        );
        assert_eq!(
            ingress[0]["from"][0]["namespaceSelector"]["matchLabels"]
                ["kubernetes.io/metadata.name"],
            "monitoring"
        );

        let monitor = chart.get("ServiceMonitor", name).unwrap();
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["scheme"], "https", "{name}");
        assert_eq!(
            endpoint["bearerTokenFile"],
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        );
        assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], true);
    }
    let plugin_args = chart.get("DaemonSet", "phalanx-device-plugin").unwrap()["spec"]["template"]
        ["spec"]["containers"][0]["args"]
        .to_string();
    for flag in [
        "--metrics-tls-cert-file=/etc/phalanx-tls/tls.crt",
        "--metrics-tls-key-file=/etc/phalanx-tls/tls.key",
        "--metrics-client-ca-file=/etc/phalanx-client-ca/ca.crt",
        "--metrics-authentication=delegated",
    ] {
        assert!(plugin_args.contains(flag), "{flag}: {plugin_args}");
    }

    let delegation = rules_of(&chart, "ClusterRole", "phalanx-auth-delegation");
    assert_eq!(
        delegation,
        [
            (
                "authentication.k8s.io".to_owned(),
                "tokenreviews".to_owned(),
                "create".to_owned()
            ),
            (
                "authorization.k8s.io".to_owned(),
                "subjectaccessreviews".to_owned(),
                "create".to_owned()
            ),
        ]
    );
    let reader = chart.get("ClusterRole", "phalanx-metrics-reader").unwrap();
    assert_eq!(
        reader["rules"],
        serde_json::json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}])
    );
    let readers = chart
        .get("ClusterRoleBinding", "phalanx-metrics-reader")
        .unwrap();
    assert_eq!(
        readers["subjects"],
        serde_json::json!([
            {"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"},
            {"kind": "Group", "name": "metrics-scrapers", "apiGroup": "rbac.authorization.k8s.io"},
        ])
    );

    // The defaults keep plain HTTP and ship no policy, Secret or reader role.
    let defaults = helm
        .render(&serde_json::json!({}), RELEASE, NAMESPACE)
        .unwrap();
    assert!(defaults.of_kind("NetworkPolicy").is_empty());
    assert!(defaults.get("Secret", "phalanx-metrics-tls").is_none());
    assert!(defaults
        .get("ClusterRole", "phalanx-metrics-reader")
        .is_none());
    assert!(rendered_config(&defaults, "phalanx-scheduler")["http"]["tls"].is_null());
    // A certificate of one's own replaces the generated one.
    let own = helm
        .render(
            &serde_json::json!({"metricsSecurity": {"enabled": true, "certificateSecret": "mine"}}),
            RELEASE,
            NAMESPACE,
        )
        .unwrap();
    assert!(own.get("Secret", "phalanx-metrics-tls").is_none());
    let volumes = own.get("Deployment", "phalanx-scheduler").unwrap()["spec"]["template"]["spec"]
        ["volumes"]
        .to_string();
    assert!(volumes.contains("\"secretName\":\"mine\""), "{volumes}");
    assert!(
        !volumes.contains("client-ca"),
        "no client CA asked for: {volumes}"
    );
    // A reader ServiceAccount without its namespace is refused by the schema's
    // neighbour, the template.
    let err = helm
        .render(
            &serde_json::json!({"metricsSecurity": {"enabled": true, "readers": [{"kind": "ServiceAccount", "name": "p"}]}}),
            RELEASE,
            NAMESPACE,
        )
        .expect_err("refused");
    assert!(
        err.message.contains("needs its namespace"),
        "{}",
        err.message
    );
    // The schema names the key of a bad path, reader or switch.
    for (values, key) in [
        (
            serde_json::json!({"metricsSecurity": {"enabled": true, "alwaysAllowPaths": ["healthz"]}}),
            "/metricsSecurity/alwaysAllowPaths/0",
        ),
        (
            serde_json::json!({"metricsSecurity": {"enabled": true, "readers": [{"kind": "Robot", "name": "r"}]}}),
            "/metricsSecurity/readers/0/kind",
        ),
        (
            serde_json::json!({"networkPolicy": {"enabled": true, "from": []}}),
            "from",
        ),
    ] {
        let err = helm.validate_values(&values).expect_err("refused");
        assert!(err.message.contains(key), "{values}: {}", err.message);
    }
}

/// The config file a component's ConfigMap carries, parsed.
fn rendered_config(chart: &RenderedChart, name: &str) -> serde_json::Value {
    let map = chart.get("ConfigMap", name).unwrap();
    serde_yaml_ng::from_str(map["data"]["config.yaml"].as_str().unwrap()).unwrap()
}

/// The binaries' own parsers accept the configs the chart writes with
/// metricsSecurity on (`check-config` validates without reading the files).
#[test]
fn the_binaries_accept_the_secure_configs_the_chart_writes() {
    let test = "the_binaries_accept_the_secure_configs_the_chart_writes";
    let Some(helm) = HelmTool::for_test(test) else {
        return;
    };
    let Some(scheduler) = phalanx_scheduler_for_test(test) else {
        return;
    };
    let Some(autoscaler) = phalanx_e2e::helm::workspace_binary_for_test(
        test,
        "phalanx-autoscaler",
        "PHALANX_AUTOSCALER_BIN",
    ) else {
        return;
    };
    let cases: BTreeMap<String, serde_json::Value> = value_cases().into_iter().collect();
    let chart = helm
        .render(&cases["secure-endpoints.yaml"], RELEASE, NAMESPACE)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, binary) in [
        ("phalanx-scheduler", scheduler),
        ("phalanx-autoscaler", autoscaler),
    ] {
        let map = chart.get("ConfigMap", name).unwrap();
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, map["data"]["config.yaml"].as_str().unwrap()).unwrap();
        let output = std::process::Command::new(&binary)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {}{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.to_lowercase().contains("delegated"),
            "{name} prints the effective config: {stdout}"
        );
    }
}

/// How long a namespace or a CRD may take to be ready.
const READY: Duration = Duration::from_secs(60);

/// Creates prometheus-operator's ServiceMonitor and PrometheusRule CRDs from
/// `files` and waits until both are served.
async fn apply_prometheus_operator_crds(
    client: &kube::Client,
    files: &[PathBuf],
) -> anyhow::Result<()> {
    for file in files {
        let crd: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(file)?)?;
        let outcome = server_apply(client, &crd, NAMESPACE, false).await?;
        assert_eq!(outcome, ServerCheck::Accepted, "{}", file.display());
    }
    wait_crds_established(
        client,
        &[
            "servicemonitors.monitoring.coreos.com",
            "prometheusrules.monitoring.coreos.com",
        ],
        READY,
    )
    .await?;
    Ok(())
}

/// `kubectl phalanx` run as a ServiceAccount bound to the chart's
/// `<fullname>-inspector` ClusterRole answers `why`, `gpus` and `sim`, so the
/// role holds every read it makes; the same commands as an unbound
/// ServiceAccount are refused, so the check can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inspector_role_is_all_kubectl_phalanx_needs() -> anyhow::Result<()> {
    let test = "the_inspector_role_is_all_kubectl_phalanx_needs";
    let Some(plugin) = phalanx_e2e::helm::workspace_binary_for_test(
        test,
        "kubectl-phalanx",
        "PHALANX_KUBECTL_BIN",
    ) else {
        return Ok(());
    };
    let values = serde_json::json!({"kubectlPlugin": {
        "clusterRole": true,
        "users": [{"kind": "ServiceAccount", "name": "plugin-user", "namespace": NAMESPACE}],
    }});
    let Some(installed) = install_for(test, values).await? else {
        return Ok(());
    };
    let client = installed.plane.client();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NAMESPACE);
    for name in ["plugin-user", "stranger"] {
        let account: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        accounts.create(&PostParams::default(), &account).await?;
    }
    create_gpu_nodes(&client, "gpu", 1, &GpuNodeSpec::default()).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    pods.create(
        &PostParams::default(),
        &PodBuilder::new("waits", "phalanx", gpu_worker_container(1))
            .namespace(NAMESPACE)
            .build(),
    )
    .await?;
    let run = |kubeconfig: PathBuf, args: Vec<&'static str>| {
        let plugin = plugin.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new(plugin)
                    .args(&args)
                    .env("KUBECONFIG", kubeconfig)
                    .output()
            })
            .await
            .unwrap()
            .unwrap()
        }
    };
    let commands: [Vec<&'static str>; 3] = [
        vec!["why", "waits", "-n", NAMESPACE],
        vec!["gpus"],
        vec!["sim", "waits", "-n", NAMESPACE, "--gpus", "1"],
    ];
    for (account, allowed) in [("plugin-user", true), ("stranger", false)] {
        let kubeconfig = installed.plane.dir().join(format!("{account}.kubeconfig"));
        service_account_kubeconfig(&installed.plane, NAMESPACE, account, &kubeconfig).await?;
        for args in &commands {
            let out = run(kubeconfig.clone(), args.clone()).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.success(),
                allowed,
                "{account} {args:?}: {stderr}"
            );
            if !allowed {
                assert!(stderr.contains("forbidden"), "{account} {args:?}: {stderr}");
            }
        }
    }
    Ok(())
}

/// The ServiceMonitors and the PrometheusRule are rendered only when the
/// cluster serves their kinds: an install on a cluster without
/// prometheus-operator's CRDs goes through (it would fail on "no matches for
/// kind" otherwise), and once the CRDs are there an upgrade creates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_objects_are_installed_once_their_crds_are_served() -> anyhow::Result<()> {
    let test = "monitoring_objects_are_installed_once_their_crds_are_served";
    let Some(prometheus_operator_crds) = or_skip(
        test,
        phalanx_e2e::binaries::locate_prometheus_operator_crds(),
    ) else {
        return Ok(());
    };
    let values = serde_json::json!({
        "prometheusRule": {"enabled": true},
        "serviceMonitor": {"enabled": true},
    });
    let Some(installed) = install_for(test, values.clone()).await? else {
        return Ok(());
    };
    let client = installed.plane.client();
    let kind = |kind: &str| {
        ApiResource::from_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind))
    };
    let rules: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &kind("PrometheusRule"));
    let monitors: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NAMESPACE, &kind("ServiceMonitor"));
    assert!(
        rules.list(&ListParams::default()).await.is_err(),
        "the kind is not served yet"
    );

    apply_prometheus_operator_crds(&client, &prometheus_operator_crds).await?;
    installed
        .helm
        .upgrade(installed.plane.kubeconfig(), RELEASE, NAMESPACE, &values)
        .context("helm upgrade once the CRDs are served")?;
    let rule = rules
        .get("phalanx-alerts")
        .await
        .context("the PrometheusRule")?;
    assert!(rule.data["spec"]["groups"]
        .as_array()
        .is_some_and(|g| !g.is_empty()));
    let names: BTreeSet<String> = monitors
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.name)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "phalanx-autoscaler".to_owned(),
            "phalanx-device-plugin".to_owned(),
            "phalanx-scheduler".to_owned(),
        ])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_the_apiserver_validation() -> anyhow::Result<()> {
    let test = "every_rendered_object_passes_the_apiserver_validation";
    let Some(helm) = HelmTool::for_test(test) else {
        return Ok(());
    };
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(());
    };
    let Some(prometheus_operator_crds) = or_skip(
        test,
        phalanx_e2e::binaries::locate_prometheus_operator_crds(),
    ) else {
        return Ok(());
    };
    let options = ControlPlaneOptions {
        controller_manager: false,
        kwok: false,
        ..ControlPlaneOptions::default()
    };
    let plane = ControlPlane::start_with(binaries, options).await?;
    let client = plane.client();
    // No controller-manager here: dry runs need the namespace, not its account.
    ensure_namespace(&client, NAMESPACE).await?;
    // The CRDs first, for real: the rest may only be checked once they exist.
    let defaults = helm.render(&serde_json::json!({}), RELEASE, NAMESPACE)?;
    for crd in defaults.of_kind("CustomResourceDefinition") {
        let outcome = server_apply(&client, &crd.object, NAMESPACE, false).await?;
        assert_eq!(outcome, ServerCheck::Accepted, "{}", crd.id());
    }
    // prometheus-operator's own ServiceMonitor and PrometheusRule CRDs, so
    // that the chart's optional objects are checked against their real schema.
    apply_prometheus_operator_crds(&client, &prometheus_operator_crds).await?;
    let mut refused = Vec::new();
    let mut not_served = BTreeSet::new();
    let mut checked = 0;
    for (case, values) in value_cases() {
        let chart = helm.render(&values, RELEASE, NAMESPACE)?;
        for object in &chart.objects {
            match server_apply(&client, &object.object, NAMESPACE, true).await? {
                ServerCheck::Accepted => checked += 1,
                ServerCheck::Refused(why) => {
                    refused.push(format!("{case}: {}: {why}", object.id()))
                }
                ServerCheck::NotServed => {
                    not_served.insert(format!("{}/{}", object.api_version(), object.kind()));
                }
            }
        }
    }
    assert!(
        refused.is_empty(),
        "refused by the apiserver:\n{}",
        refused.join("\n")
    );
    assert!(not_served.is_empty(), "not served: {not_served:?}");
    let monitors = value_cases()
        .iter()
        .map(|(_, values)| helm.render(values, RELEASE, NAMESPACE))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|chart| chart.of_kind("ServiceMonitor").len())
        .sum::<usize>();
    assert!(monitors >= 3, "only {monitors} ServiceMonitors checked");
    let alert_rules = value_cases()
        .iter()
        .map(|(_, values)| helm.render(values, RELEASE, NAMESPACE))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|chart| chart.of_kind("PrometheusRule").len())
        .sum::<usize>();
    assert!(alert_rules >= 1, "no PrometheusRule checked");
    assert!(checked > 50, "only {checked} objects checked");
    eprintln!(
        "{checked} rendered objects accepted by a dry-run apply with strict field validation"
    );

    // The check can fail: a mistyped field is refused.
    let mut broken = defaults
        .get("Deployment", "phalanx-scheduler")
        .unwrap()
        .clone();
    broken["spec"]["replicas"] = serde_json::json!("two");
    let outcome = server_apply(&client, &broken, NAMESPACE, true).await?;
    assert!(matches!(outcome, ServerCheck::Refused(_)), "{outcome:?}");
    let mut unknown = defaults
        .get("Deployment", "phalanx-scheduler")
        .unwrap()
        .clone();
    unknown["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = serde_json::json!({});
    let outcome = server_apply(&client, &unknown, NAMESPACE, true).await?;
    assert!(
        matches!(&outcome, ServerCheck::Refused(why) if why.contains("livenessProbes")),
        "{outcome:?}"
    );
    // So can a ServiceMonitor with a field prometheus-operator does not know.
    let monitoring = helm.render(
        &value_cases()
            .into_iter()
            .find(|(_, values)| values.to_string().contains("serviceMonitor"))
            .context("an option file that turns ServiceMonitors on")?
            .1,
        RELEASE,
        NAMESPACE,
    )?;
    let mut monitor = monitoring
        .of_kind("ServiceMonitor")
        .first()
        .context("a rendered ServiceMonitor")?
        .object
        .clone();
    monitor["spec"]["endpoints"][0]["scrapeInterval"] = serde_json::json!("15s");
    let outcome = server_apply(&client, &monitor, NAMESPACE, true).await?;
    assert!(
        matches!(&outcome, ServerCheck::Refused(why) if why.contains("scrapeInterval")),
        "{outcome:?}"
    );
    Ok(())
}

/// A cluster with the chart installed through the Helm engine, nodes for the
/// examples, and the scheduler binary; `None` when the test is skipped.
struct Installed {
    plane: ControlPlane,
    helm: HelmTool,
    scheduler_bin: PathBuf,
}

async fn install_for(test: &str, values: serde_json::Value) -> anyhow::Result<Option<Installed>> {
    let Some(helm) = HelmTool::for_test(test) else {
        return Ok(None);
    };
    let Some(binaries) = Binaries::for_test(test) else {
        return Ok(None);
    };
    let Some(scheduler_bin) = phalanx_scheduler_for_test(test) else {
        return Ok(None);
    };
    let plane = ControlPlane::start(binaries).await?;
    helm.install(plane.kubeconfig(), RELEASE, NAMESPACE, &values)
        .context("helm install")?;
    wait_crds_established(
        &plane.client(),
        &["gpunodes.phalanx.dev", "podgroups.scheduling.x-k8s.io"],
        READY,
    )
    .await?;
    Ok(Some(Installed {
        plane,
        helm,
        scheduler_bin,
    }))
}

/// The scheduler's config as the chart's ConfigMap has it, with a local
/// identity; only the HTTP address is changed (to a loopback port).
async fn chart_scheduler_config(
    client: &kube::Client,
    identity: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut config = config_map_yaml(client, NAMESPACE, "phalanx-scheduler", "config.yaml").await?;
    config["leaderElection"]["identity"] = identity.into();
    config["logging"]["format"] = "text".into();
    Ok(config)
}

/// Starts phalanx-scheduler locally as the chart's ServiceAccount.
async fn start_scheduler_as_service_account(
    installed: &mut Installed,
    name: &str,
    config: serde_json::Value,
) -> anyhow::Result<LocalComponent> {
    let kubeconfig = installed.plane.dir().join(format!("{name}.kubeconfig"));
    service_account_kubeconfig(
        &installed.plane,
        NAMESPACE,
        "phalanx-scheduler",
        &kubeconfig,
    )
    .await?;
    let bin = installed.scheduler_bin.clone();
    Ok(installed
        .plane
        .start_local_component(name, &bin, config, &kubeconfig, "/readyz")
        .await?)
}

fn example(name: &str) -> PathBuf {
    workspace_root().join("deploy/examples").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_runs_the_scheduler_with_only_its_service_account() -> anyhow::Result<()> {
    let test = "installed_chart_runs_the_scheduler_with_only_its_service_account";
    let Some(mut installed) = install_for(test, serde_json::json!({})).await? else {
        return Ok(());
    };
    let client = installed.plane.client();

    // What the release created: CRDs served, RBAC in place, workloads defined.
    Api::<phalanx_api::GpuNode>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("GpuNodes served")?;
    Api::<PodGroup>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("PodGroups served")?;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    for name in [
        "phalanx-scheduler",
        "phalanx-autoscaler",
        "phalanx-device-plugin",
    ] {
        roles
            .get(name)
            .await
            .with_context(|| format!("ClusterRole {name}"))?;
    }
    let listed = installed
        .helm
        .upgrade(
            installed.plane.kubeconfig(),
            RELEASE,
            NAMESPACE,
            &serde_json::json!({}),
        )
        .context("helm upgrade of the installed release")?;
    assert_eq!(listed["revision"], 2, "{listed}");
    // An upgrade must not drop the PodGroup CRD it installed (auto mode sees
    // the API served now, but by this release).
    wait_crds_established(&client, &["podgroups.scheduling.x-k8s.io"], READY).await?;

    // The scheduler, as a local process with the ServiceAccount's token only.
    let identity = "phalanx-scheduler-local-0";
    let config = chart_scheduler_config(&client, identity).await?;
    let scheduler =
        start_scheduler_as_service_account(&mut installed, "phalanx-scheduler-sa-0", config)
            .await?;
    let holder = wait::until(
        "the scheduler to hold the Lease",
        Duration::from_secs(60),
        || async {
            let holder = phalanx_e2e::lease_holder(&client, NAMESPACE, "phalanx-scheduler").await?;
            Ok(match holder {
                Some(h) if h == identity => Ok(h),
                other => Err(format!("holder {other:?}")),
            })
        },
    )
    .await?;
    assert_eq!(holder, identity);

    let spec = GpuNodeSpec {
        gpus: 8,
        model: "H100".to_owned(),
        ..GpuNodeSpec::default()
    };
    // 6 nodes: the two single pods may take GPUs on two of them, and the gang
    // still needs 4 whole 8-GPU nodes.
    create_gpu_nodes(&client, "gpu", 6, &spec).await?;

    // deploy/examples/gpu-pod.yaml: a whole GPU and a quarter of one.
    namespace_ready_for_pods(&client, "examples", READY).await?;
    let examples: Api<Pod> = Api::namespaced(client.clone(), "examples");
    apply_manifest_file(&client, &example("gpu-pod.yaml"), "examples").await?;
    for name in ["cuda-whole-gpu", "cuda-quarter-gpu"] {
        let bound = wait_pod_bound(&examples, name, Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", scheduler.log_text()))?;
        let assignment = assignment_of(&bound)
            .with_context(|| format!("{name} has no {ANNOTATION_GPU_ASSIGNMENT}"))?
            .map_err(anyhow::Error::msg)?;
        assert_eq!(Some(assignment.node.as_str()), node_of(&bound), "{name}");
        let milli: u32 = assignment.gpus.iter().map(|g| g.milli).sum();
        assert_eq!(
            milli,
            if name == "cuda-whole-gpu" { 1000 } else { 250 },
            "{name}"
        );
    }
    let events = wait::until("Scheduled events", Duration::from_secs(30), || async {
        let events = pod_events(&client, "examples").await?;
        let scheduled = events.iter().filter(|e| e.reason == "Scheduled").count();
        Ok(if scheduled >= 2 {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        })
    })
    .await?;
    assert!(
        events
            .iter()
            .all(|e| e.reporting_controller.contains("phalanx")),
        "{events:?}"
    );

    // deploy/examples/pytorch-gang.yaml: the Job controller makes 4 pods of
    // 8 GPUs; the gang binds whole and its PodGroup says so.
    apply_manifest_file(&client, &example("pytorch-gang.yaml"), "examples").await?;
    let members = wait_selected_bound(
        &examples,
        &PodSelector::labels("scheduling.x-k8s.io/pod-group=resnet-ddp"),
        4,
        Duration::from_secs(90),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", scheduler.log_text()))?;
    let nodes: BTreeSet<&str> = members.iter().filter_map(node_of).collect();
    assert_eq!(
        nodes.len(),
        4,
        "8 GPUs each on 8-GPU nodes: one node per member"
    );
    for member in &members {
        let assignment = assignment_of(member).unwrap().unwrap();
        assert_eq!(assignment.gpus.len(), 8);
    }
    let groups: Api<PodGroup> = Api::namespaced(client.clone(), "examples");
    wait::until(
        "PodGroup status Scheduled",
        Duration::from_secs(30),
        || async {
            let group = groups.get("resnet-ddp").await?;
            let phase = group.status.and_then(|s| s.phase);
            Ok(if phase.as_deref() == Some("Scheduled") {
                Ok(())
            } else {
                Err(format!("{phase:?}"))
            })
        },
    )
    .await?;

    // The dashboard's scheduler panels query metrics this scheduler exports.
    // The cluster gauges are first set by the leader's housekeeping tick
    // (every second) after it leads and has synced, which can come after the
    // gang is bound; a family with no series yet is not in the text at all.
    let wanted = dashboard_metrics("phalanx_scheduler_");
    wait::until(
        "the scheduler exports every metric the dashboard queries",
        Duration::from_secs(15),
        || async {
            let exported = scheduler.metrics().await.map_err(anyhow::Error::msg)?;
            let missing = wanted
                .iter()
                .filter(|m| !exported.contains(m.as_str()))
                .collect::<Vec<_>>();
            Ok(if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "the dashboard queries metrics the scheduler lacks: {missing:?}"
                ))
            })
        },
    )
    .await?;
    Ok(())
}

/// Metric names with `prefix` that the dashboard's queries use, without the
/// `_total`/`_bucket`/`_sum`/`_count` suffixes (a family with no samples yet
/// is exported by its `# TYPE` line, which has none).
fn dashboard_metrics(prefix: &str) -> BTreeSet<String> {
    let path = chart_dir().join("files/grafana/phalanx-dashboard.json");
    let text = std::fs::read_to_string(path).unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find(prefix) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The ClusterRole `role_name` with one resource/verb removed, written back
/// as the admin (what a chart missing that verb would have installed);
/// returns once the API server refuses that verb to the role's ServiceAccount.
async fn remove_verb(
    client: &kube::Client,
    role_name: &str,
    resource: &str,
    verb: &str,
) -> anyhow::Result<()> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles.get(role_name).await?;
    let chart_rules = role.rules.take().unwrap_or_default();
    let group = group_of(&chart_rules, resource);
    let mut found = false;
    let mut rules = Vec::new();
    for rule in chart_rules {
        let has = rule
            .resources
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| r == resource))
            && rule.verbs.iter().any(|v| v == verb);
        if !has {
            rules.push(rule);
            continue;
        }
        found = true;
        // Split the rule so only this resource loses only this verb.
        let others: Vec<String> = rule
            .resources
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r != resource)
            .collect();
        if !others.is_empty() {
            let mut kept = rule.clone();
            kept.resources = Some(others);
            rules.push(kept);
        }
        let verbs: Vec<String> = rule.verbs.iter().filter(|v| *v != verb).cloned().collect();
        if !verbs.is_empty() {
            let mut kept = rule.clone();
            kept.resources = Some(vec![resource.to_owned()]);
            kept.verbs = verbs;
            rules.push(kept);
        }
    }
    assert!(found, "the chart grants no {verb} on {resource}");
    role.rules = Some(rules);
    roles
        .replace(role_name, &PostParams::default(), &role)
        .await?;
    wait_access(client, role_name, (&group, resource, verb), false).await
}

/// The ClusterRole `role_name` with `rules` again; returns once `verb` on
/// `resource` is allowed again.
async fn restore_rules(
    client: &kube::Client,
    role_name: &str,
    rules: &Option<Vec<PolicyRule>>,
    (resource, verb): (&str, &str),
) -> anyhow::Result<()> {
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let mut role = roles.get(role_name).await?;
    role.rules = rules.clone();
    roles
        .replace(role_name, &PostParams::default(), &role)
        .await?;
    let group = group_of(rules.as_deref().unwrap_or_default(), resource);
    wait_access(client, role_name, (&group, resource, verb), true).await
}

/// The API group of the rule that names `resource`.
fn group_of(rules: &[PolicyRule], resource: &str) -> String {
    rules
        .iter()
        .find(|r| {
            r.resources
                .as_ref()
                .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })
        .and_then(|r| r.api_groups.as_ref()?.first().cloned())
        .unwrap_or_default()
}

/// Waits until the API server's authorizer answers `allowed` for the chart's
/// ServiceAccount named like `role_name` doing `verb` on `resource`
/// (`pods/binding`: resource and subresource) in `group`, so that no test
/// step races the role change.
async fn wait_access(
    client: &kube::Client,
    role_name: &str,
    (group, resource, verb): (&str, &str, &str),
    allowed: bool,
) -> anyhow::Result<()> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, sub)) => (r, Some(sub.to_owned())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{NAMESPACE}:{role_name}")),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: Some("default".to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait::until(
        &format!("{role_name}: {verb} {resource} allowed={allowed}"),
        Duration::from_secs(30),
        || async {
            let answer = reviews.create(&PostParams::default(), &review).await?;
            let now = answer.status.is_some_and(|s| s.allowed);
            Ok(if now == allowed {
                Ok(())
            } else {
                Err(format!("allowed={now}"))
            })
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fails_without_each_verb_it_is_granted() -> anyhow::Result<()> {
    let test = "the_scheduler_fails_without_each_verb_it_is_granted";
    // One unelected replica, so that each run starts scheduling at once.
    let values = serde_json::json!({
        "scheduler": {"replicas": 1, "config": {"leaderElection": {"enabled": false}}},
    });
    let Some(mut installed) = install_for(test, values).await? else {
        return Ok(());
    };
    let client = installed.plane.client();
    create_gpu_nodes(&client, "gpu", 2, &GpuNodeSpec::default()).await?;
    namespace_ready_for_pods(&client, "verbs", READY).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "verbs");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let chart_rules = roles.get("phalanx-scheduler").await?.rules;

    // Each case: the verb taken away, and what the scheduler then cannot do,
    // as the API server's refusal shows up in an event or in its log.
    let cases: [(&str, &str, &str); 5] = [
        ("pods/binding", "create", "event"),
        // A gang's plan is patched onto its members before any Binding.
        ("pods", "patch", "gang-event"),
        ("events", "create", "log:could not write an event"),
        (
            "podgroups/status",
            "patch",
            "log:could not update PodGroup status",
        ),
        // An unfittable pod's PodScheduled condition.
        ("pods/status", "patch", "condition"),
    ];
    let mut previous: Option<LocalComponent> = None;
    for (n, &(resource, verb, symptom)) in cases.iter().enumerate() {
        if let Some(old) = previous.take() {
            installed.plane.kill_component(old.pid);
        }
        // Back to the chart's role, then without this one verb.
        if let Some(&(resource, verb, _)) = n.checked_sub(1).map(|p| &cases[p]) {
            restore_rules(&client, "phalanx-scheduler", &chart_rules, (resource, verb)).await?;
        }
        remove_verb(&client, "phalanx-scheduler", resource, verb).await?;
        let config = chart_scheduler_config(&client, &format!("verbs-{n}")).await?;
        let scheduler = start_scheduler_as_service_account(
            &mut installed,
            &format!("phalanx-scheduler-verbs-{n}"),
            config,
        )
        .await?;
        let name = format!("needs-{}", resource.replace('/', "-"));
        // More GPUs than any node has: the pod is unschedulable.
        let gpus = if symptom == "condition" { 64 } else { 1 };
        let mut pod = PodBuilder::new(&name, "phalanx", gpu_worker_container(gpus));
        if resource == "podgroups/status" || resource == "pods" {
            let group_name = format!("group-{n}");
            let group: PodGroup = serde_json::from_value(serde_json::json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": group_name}, "spec": {"minMember": 1},
            }))?;
            Api::<PodGroup>::namespaced(client.clone(), "verbs")
                .create(&PostParams::default(), &group)
                .await?;
            pod = pod.label("scheduling.x-k8s.io/pod-group", &group_name);
        }
        pods.create(&PostParams::default(), &pod.build()).await?;
        match symptom {
            "event" => {
                let note = wait_pod_event(
                    &client,
                    "verbs",
                    &name,
                    "FailedScheduling",
                    "forbidden",
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}\n{}", scheduler.log_text()))?
                .note;
                assert!(
                    note.contains("pods/binding") || note.contains("binding"),
                    "{note}"
                );
                assert_eq!(
                    node_of(&pods.get(&name).await?),
                    None,
                    "bound without the verb"
                );
                // The next cases are the control: with pods/binding back, their
                // pods bind (the events case's symptom follows a Scheduled event).
            }
            "gang-event" => {
                let note = wait_pod_event(
                    &client,
                    "verbs",
                    &name,
                    "FailedScheduling",
                    "forbidden",
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}\n{}", scheduler.log_text()))?
                .note;
                // The chart's config writes the GPU annotation with the
                // Binding; the patch refused is the gang's plan.
                assert!(note.contains("cannot patch"), "{note}");
                assert_eq!(
                    node_of(&pods.get(&name).await?),
                    None,
                    "a gang member bound without its plan written"
                );
            }
            "condition" => {
                wait_forbidden_in_log(&scheduler, "writing the PodScheduled condition failed")
                    .await?;
                // The event still says why.
                wait_pod_event(
                    &client,
                    "verbs",
                    &name,
                    "FailedScheduling",
                    "nodes are available",
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}\n{}", scheduler.log_text()))?;
            }
            log => {
                let needle = log.trim_start_matches("log:");
                wait_forbidden_in_log(&scheduler, needle).await?;
                // Only that call failed: with pods/binding granted again, the pod bound.
                wait_pod_bound(&pods, &name, Duration::from_secs(60)).await?;
            }
        }
        previous = Some(scheduler);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_chart_runs_the_autoscaler_and_device_plugin_with_only_their_accounts(
) -> anyhow::Result<()> {
    let test = "installed_chart_runs_the_autoscaler_and_device_plugin";
    let Some(prometheus_bin) = phalanx_e2e::autoscaler::prometheus_for_test(test) else {
        return Ok(());
    };
    let Some(autoscaler_bin) = phalanx_e2e::helm::workspace_binary_for_test(
        test,
        "phalanx-autoscaler",
        "PHALANX_AUTOSCALER_BIN",
    ) else {
        return Ok(());
    };
    let values: serde_json::Value = serde_yaml_ng::from_str(&std::fs::read_to_string(
        chart_dir().join("ci/kwok-fake-gpus.yaml"),
    )?)?;
    let Some(mut installed) = install_for(test, values).await? else {
        return Ok(());
    };
    let client = installed.plane.client();
    wait_crds_established(&client, &["inferenceautoscalers.phalanx.dev"], READY).await?;
    let nodes = create_gpu_nodes(
        &client,
        "gpu",
        2,
        &GpuNodeSpec {
            gpus: 8,
            model: "H100".to_owned(),
            ..GpuNodeSpec::default()
        },
    )
    .await?;

    // The device plugin, in this process, as its ServiceAccount, with the
    // fake GPUs the chart's ConfigMap describes: it publishes the node's
    // GpuNode (get/create, nodes get for the owner, status patch).
    // Its token is the one kubelet mounts into the plugin's pod on nodes[0]:
    // bound to that pod, so it carries the node claim the chart's admission
    // policy checks (a token bound to no pod may write no GpuNode).
    let token = phalanx_e2e::device_plugin::pod_bound_token(
        &client,
        NAMESPACE,
        "phalanx-device-plugin",
        "phalanx-device-plugin-local",
        Some(&nodes[0]),
    )
    .await?;
    let plugin_client =
        phalanx_e2e::device_plugin::client_for_plane(&installed.plane, Some(&token), None).await?;
    let fake_file = installed.plane.dir().join("fake-gpus.json");
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), NAMESPACE);
    let fake_json = maps
        .get("phalanx-device-plugin-fake-gpus")
        .await?
        .data
        .and_then(|d| d.get("fake-gpus.json").cloned())
        .context("fake-gpus.json in the chart's ConfigMap")?;
    std::fs::write(&fake_file, fake_json)?;
    let fake = phalanx_device_plugin::backend::FakeBackend::from_file(&fake_file)
        .map_err(|e| anyhow::anyhow!("the chart's fake file: {e}"))?;
    // First without `patch` on gpunodes/status: the GpuNode is created (its
    // spec), but no telemetry reaches it until the verb is back.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let plugin_rules = roles.get("phalanx-device-plugin").await?.rules;
    remove_verb(&client, "phalanx-device-plugin", "gpunodes/status", "patch").await?;
    let plugin = phalanx_e2e::device_plugin::start_device_plugin(
        &plugin_client,
        &nodes[0],
        fake,
        &phalanx_e2e::device_plugin::DevicePluginOptions::default(),
    )
    .await?;
    phalanx_e2e::device_plugin::wait_gpu_node(&client, &nodes[0], Duration::from_secs(60), |g| {
        if g.spec.gpus.len() == 4 {
            Ok(())
        } else {
            Err(format!("{} GPUs", g.spec.gpus.len()))
        }
    })
    .await?;
    // With the verb the status is written within a second (a 200 ms sample,
    // then one write): three seconds without one are telling.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gpu_nodes: Api<phalanx_api::GpuNode> = Api::all(client.clone());
    let status = gpu_nodes.get(&nodes[0]).await?.status;
    assert!(
        status.as_ref().is_none_or(|s| s.observed_at.is_none()),
        "telemetry written without the verb: {status:?}"
    );
    restore_rules(
        &client,
        "phalanx-device-plugin",
        &plugin_rules,
        ("gpunodes/status", "patch"),
    )
    .await?;
    let published = phalanx_e2e::device_plugin::wait_gpu_node(
        &client,
        &nodes[0],
        Duration::from_secs(60),
        |g| {
            let with_status = g.status.as_ref().is_some_and(|s| s.observed_at.is_some());
            let owned = g
                .metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty());
            if g.spec.gpus.len() == 4 && with_status && owned {
                Ok(())
            } else {
                Err(format!(
                    "{} GPUs, status {with_status}, owned {owned}",
                    g.spec.gpus.len()
                ))
            }
        },
    )
    .await?;
    assert_eq!(published.spec.gpus[0].model, "NVIDIA A100-SXM4-80GB");
    assert!(!plugin.has_ended(), "the plugin stopped");
    plugin.stop().await?;

    // The autoscaler binary, as its ServiceAccount, with the chart's config
    // (Prometheus pointed at a real one that scrapes a vLLM-like exporter).
    // The example's queue-wait sizing on the exporter's numbers: 5 replicas
    // first, then at least twice that (the 5 are still starting: only a
    // panic-sized need scales up again), then more again (the status value
    // changes).
    let (first, more, most) = (240, 640, 800);
    let need = |waiting| example_need(waiting).ceil();
    assert_eq!(
        need(first),
        5.0,
        "the example's sizing moved: pick new numbers"
    );
    assert!(
        need(more) >= 10.0 && need(most) > need(more),
        "the example's sizing moved: {} and {}",
        need(more),
        need(most)
    );
    let exporter = phalanx_e2e::autoscaler::TestExporter::start(&vllm_text(first)).await?;
    let prometheus =
        phalanx_e2e::autoscaler::PrometheusServer::start(&prometheus_bin, &[exporter.addr()])
            .await?;
    let mut config =
        config_map_yaml(&client, NAMESPACE, "phalanx-autoscaler", "config.yaml").await?;
    config["prometheus"]["url"] = prometheus.url().into();
    config["controlPeriodSeconds"] = 1.into();
    config["leaderElection"]["identity"] = "phalanx-autoscaler-local-0".into();
    config["logging"]["format"] = "text".into();
    let kubeconfig = installed.plane.dir().join("autoscaler.kubeconfig");
    service_account_kubeconfig(
        &installed.plane,
        NAMESPACE,
        "phalanx-autoscaler",
        &kubeconfig,
    )
    .await?;
    let autoscaler = installed
        .plane
        .start_local_component(
            "phalanx-autoscaler-sa-0",
            &autoscaler_bin,
            config,
            &kubeconfig,
            "/healthz",
        )
        .await?;

    // deploy/examples/vllm-autoscaled.yaml: its queue-wait target asks for 5
    // replicas, and 16 GPUs leave room for them.
    namespace_ready_for_pods(&client, "examples", READY).await?;
    apply_manifest_file(&client, &example("vllm-autoscaled.yaml"), "examples").await?;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "examples");
    wait_replicas(&deployments, "llama-8b", 5, Duration::from_secs(120))
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}\n{}\n{}", autoscaler.log_text(), prometheus.log_tail())
        })?;
    let autoscalers: Api<phalanx_api::InferenceAutoscaler> =
        Api::namespaced(client.clone(), "examples");
    let status = wait::until(
        "the InferenceAutoscaler's status",
        Duration::from_secs(30),
        || async {
            let status = autoscalers.get("llama-8b").await?.status;
            Ok(match status {
                Some(s) if s.desired_replicas == 5 => Ok(s),
                other => Err(format!("{other:?}")),
            })
        },
    )
    .await?;
    assert!(!status.conditions.is_empty(), "{status:?}");
    wait::until(
        "the autoscaler to hold its Lease",
        Duration::from_secs(30),
        || async {
            let holder =
                phalanx_e2e::lease_holder(&client, NAMESPACE, "phalanx-autoscaler").await?;
            Ok(if holder.as_deref() == Some("phalanx-autoscaler-local-0") {
                Ok(())
            } else {
                Err(format!("{holder:?}"))
            })
        },
    )
    .await?;

    // The dashboard's autoscaler panels query metrics it exports.
    let exported = autoscaler.metrics().await.map_err(anyhow::Error::msg)?;
    // A family with no sample yet (no invalid reading so far) is not in the
    // text: those must at least be registered under that name in its code.
    let registered =
        std::fs::read_to_string(workspace_root().join("autoscaler/src/controller/telemetry.rs"))?;
    let missing: Vec<String> = dashboard_metrics("phalanx_autoscaler_")
        .into_iter()
        .filter(|m| {
            let short = m.trim_start_matches("phalanx_autoscaler_");
            !exported.contains(m.as_str()) && !registered.contains(&format!("\"{short}\""))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the autoscaler lacks: {missing:?}"
    );

    // Each verb the chart grants is needed. Without `patch` on the target's
    // scale subresource nothing is scaled, and the status says why.
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let chart_rules = roles.get("phalanx-autoscaler").await?.rules;
    remove_verb(&client, "phalanx-autoscaler", "deployments/scale", "patch").await?;
    // Twice the 5 replicas still starting or more, so it scales up at once
    // (to its maximum of 8).
    exporter.set(&vllm_text(more));
    let message = wait::until(
        "a FailedRescale status that says forbidden",
        Duration::from_secs(60),
        || async {
            let object = autoscalers.get("llama-8b").await?;
            let scaling = object.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == phalanx_api::autoscaler::CONDITION_SCALING_ACTIVE)
                    .cloned()
            });
            Ok(match scaling {
                Some(c) if c.reason == "FailedRescale" && c.message.contains("forbidden") => {
                    Ok(c.message)
                }
                other => Err(format!(
                    "{other:?}; metrics {:?}",
                    object.status.as_ref().map(|s| &s.metrics)
                )),
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", autoscaler.log_text()))?;
    assert!(
        message.contains("the scale to 8 replicas failed"),
        "{message}"
    );
    let replicas = deployments.get("llama-8b").await?.spec.replicas;
    assert_eq!(replicas, Some(5), "scaled without the verb");
    restore_rules(
        &client,
        "phalanx-autoscaler",
        &chart_rules,
        ("deployments/scale", "patch"),
    )
    .await?;
    wait_replicas(&deployments, "llama-8b", 8, Duration::from_secs(60)).await?;

    // Without `patch` on the status the scaling goes on but the status cannot
    // be written; once the verb is back, the status catches up by itself.
    remove_verb(
        &client,
        "phalanx-autoscaler",
        "inferenceautoscalers/status",
        "patch",
    )
    .await?;
    exporter.set(&vllm_text(most));
    wait_forbidden_in_log(&autoscaler, "writing the status").await?;
    let shown = Some(example_need(most));
    let queue_value = |status: Option<phalanx_api::InferenceAutoscalerStatus>| {
        status.and_then(|s| {
            s.metrics
                .iter()
                .find(|m| m.name == "queue-wait")
                .and_then(|m| m.value)
        })
    };
    let stale = queue_value(autoscalers.get("llama-8b").await?.status);
    assert_ne!(stale, shown, "written without the verb");
    restore_rules(
        &client,
        "phalanx-autoscaler",
        &chart_rules,
        ("inferenceautoscalers/status", "patch"),
    )
    .await?;
    wait::until(
        "the status to show the need for the last numbers",
        Duration::from_secs(60),
        || async {
            let value = queue_value(autoscalers.get("llama-8b").await?.status);
            Ok(if value == shown {
                Ok(())
            } else {
                Err(format!("queue-wait {value:?}, want {shown:?}"))
            })
        },
    )
    .await?;
    Ok(())
}

/// What the exporter's vLLM runs: 32 requests at half its KV cache.
const EXAMPLE_RUNNING: f64 = 32.0;
const EXAMPLE_KV: f64 = 0.5;

/// A vLLM-like exporter's text with `waiting` requests queued. No
/// inference-time histogram: no request has finished, so the sizing gives
/// every request a slot.
fn vllm_text(waiting: u32) -> String {
    let model = "model_name=\"llama-8b\"";
    format!(
        "vllm:num_requests_running{{{model}}} {EXAMPLE_RUNNING}\n\
         vllm:num_requests_waiting{{{model}}} {waiting}\n\
         vllm:kv_cache_usage_perc{{{model}}} {EXAMPLE_KV}\n"
    )
}

/// The replicas deploy/examples/vllm-autoscaled.yaml's queue-wait target
/// (2 s, 64 slots, the defaults otherwise) asks for at [`vllm_text`]'s numbers.
fn example_need(waiting: u32) -> f64 {
    use phalanx_autoscaler::decision::{
        objective_defaults, replicas_for_objective, QueueObjective, ReplicaShape, ServingSignals,
    };
    replicas_for_objective(
        &ServingSignals {
            running: EXAMPLE_RUNNING,
            waiting: f64::from(waiting),
            mean_slot_seconds: None,
            kv_cache_usage: Some(EXAMPLE_KV),
            ready_replicas: 1,
        },
        &ReplicaShape {
            slots: 64,
            drain_seconds: objective_defaults::DRAIN_SECONDS,
        },
        &QueueObjective {
            wait_seconds: 2.0,
            attainment: objective_defaults::ATTAINMENT,
        },
    )
    .unwrap()
}

/// Waits until a line of `component`'s log says `needle` and `forbidden`.
async fn wait_forbidden_in_log(component: &LocalComponent, needle: &str) -> anyhow::Result<()> {
    wait::until(
        &format!("{needle:?} refused as forbidden in the log"),
        Duration::from_secs(60),
        || async {
            let text = component.log_text();
            let found = text
                .lines()
                .any(|l| l.contains(needle) && l.contains("forbidden"));
            Ok(if found {
                Ok(())
            } else {
                Err("not yet".to_owned())
            })
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", component.log_text()))
}

/// Waits until the Deployment `name` asks for `want` replicas.
async fn wait_replicas(
    deployments: &Api<k8s_openapi::api::apps::v1::Deployment>,
    name: &str,
    want: i32,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait::until(
        &format!("{name} scaled to {want} through its scale subresource"),
        timeout,
        || async {
            let replicas = deployments.get(name).await?.spec.replicas;
            Ok(if replicas == Some(want) {
                Ok(())
            } else {
                Err(format!("replicas {replicas:?}"))
            })
        },
    )
    .await
}
